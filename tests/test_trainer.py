"""Whole runs on a tiny random model: the loop writes its files, resume equals an uninterrupted run,
non-finite losses stop the run with the checkpoint intact, reward crashes are reported, DAPO options run."""

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlvr import trainer
from rlvr.algos import LOSSES
from rlvr.metrics import read_metrics
from rlvr.rewards import RewardError

_calls = {"n": 0}
DENSE = Path(__file__).parent / "gpu" / "digit_reward.py"


@LOSSES.register("test_nan_after_four")
def _nan_after_four(logp, old_logp, advantages, mask):
    """Test-only loss: finite for four calls (two steps of two micro-batches), then NaN."""
    _calls["n"] += 1
    loss = -(logp - old_logp.detach()).exp() * (advantages[:, None] if advantages.dim() == 1 else advantages)
    return (loss * math.nan if _calls["n"] > 4 else loss), {}


def stop_after(n):
    """A StopRequest that asks to stop (as a first Ctrl-C would) at the end of step n."""

    class StopAfter(trainer.StopRequest):
        checks = 0

        @property
        def requested(self):
            StopAfter.checks += 1
            return StopAfter.checks == n

        @requested.setter
        def requested(self, value):
            pass

    return StopAfter


def comparable(rows):
    drop = ("time/", "tokens_per_second", "completions_per_second")
    return [{k: v for k, v in r.items() if not k.startswith(drop)} for r in rows]


def interrupt_and_resume(cfg, monkeypatch, after: int) -> None:
    """Train `cfg`, stopped (as by Ctrl-C) at the end of step `after`, then resumed to the end."""
    monkeypatch.setattr(trainer, "StopRequest", stop_after(after))
    trainer.train(cfg)
    monkeypatch.undo()
    trainer.train(cfg, resume=True)


def same_run(a, b, *, weights: bool = True) -> bool:
    """Two run folders hold the same metrics (all but timings) and, with `weights`, the same final weights."""
    if comparable(read_metrics(a.run_dir / "metrics.jsonl")) != comparable(read_metrics(b.run_dir / "metrics.jsonl")):
        return False
    if not weights:
        return True
    wa = AutoModelForCausalLM.from_pretrained(a.run_dir / "final").state_dict()
    wb = AutoModelForCausalLM.from_pretrained(b.run_dir / "final").state_dict()
    return all(torch.equal(wa[k], wb[k]) for k in wa)


def test_smoke_run_writes_everything(tiny_cfg):
    cfg = tiny_cfg("train.eval_every=2", "train.eval_pass_k=4")
    summary = trainer.train(cfg)
    run = cfg.run_dir
    rows = read_metrics(run / "metrics.jsonl")
    steps = [r for r in rows if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    for key in ("reward", "reward_std", "frac_reward_zero_std", "completions/mean_length",
                "completions/clipped_ratio", "entropy", "policy_loss", "grad_norm", "time/rollout",
                "time/reward", "time/update", "tokens_per_second", "clip_ratio/region_mean"):
        assert key in steps[0], key
    assert "eval/accuracy" in rows[0] and "eval/accuracy" in steps[1]
    assert 0.0 <= rows[0]["eval/pass@4"] <= 1.0 and "eval/pass@4" in steps[1]
    assert (run / "plot.png").stat().st_size > 1000
    samples = [json.loads(line) for line in open(run / "samples.jsonl")]
    assert samples and {"prompt", "completion", "reward"} <= set(samples[0])
    model = AutoModelForCausalLM.from_pretrained(summary["final_model"])
    assert model.config.model_type == "qwen2"


def test_resume_equals_uninterrupted(tiny_cfg, monkeypatch):
    overrides = ["algo.mini_batches=2", "algo.ppo_epochs=2", "train.eval_every=2", "optim.warmup_steps=3"]
    full = tiny_cfg("name=full", *overrides)
    trainer.train(full)

    part = tiny_cfg("name=part", *overrides)
    monkeypatch.setattr(trainer, "StopRequest", stop_after(2))
    out = trainer.train(part)
    assert out["interrupted"] and out["step"] == 2
    monkeypatch.undo()
    trainer.train(part, resume=True)
    a = comparable(read_metrics(full.run_dir / "metrics.jsonl"))
    b = comparable(read_metrics(part.run_dir / "metrics.jsonl"))
    assert a == b
    wa = AutoModelForCausalLM.from_pretrained(full.run_dir / "final").state_dict()
    wb = AutoModelForCausalLM.from_pretrained(part.run_dir / "final").state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_non_finite_loss_stops_with_checkpoint_intact(tiny_cfg):
    _calls["n"] = 0
    cfg = tiny_cfg("algo.loss=test_nan_after_four", "algo.loss_kwargs={}", "train.save_every=1",
                   "train.max_bad_steps=2", "train.steps=10")
    with pytest.raises(trainer.TrainingError, match=r"step 4: non-finite.*2 steps in a row.*step-000003"):
        trainer.train(cfg)
    rows = [r for r in read_metrics(cfg.run_dir / "metrics.jsonl") if "skipped_steps" in r]
    assert [r["skipped_steps"] for r in rows] == [0, 0, 1, 1]
    assert AutoModelForCausalLM.from_pretrained(cfg.run_dir / "checkpoints" / "step-000002" / "model")


def test_reward_crash_is_reported(tiny_cfg, tmp_path):
    bad = tmp_path / "bad_reward.py"
    bad.write_text("def reward(samples, completions, **kw):\n    raise KeyError('oops')\n")
    cfg = tiny_cfg(f"rewards=[{{name: python, kwargs: {{function: '{bad}:reward'}}}}]")
    with pytest.raises(RewardError, match="python"):
        trainer.train(cfg)
    cfg = tiny_cfg("name=zero", f"rewards=[{{name: python, kwargs: {{function: '{bad}:reward'}}}}]",
                   "train.on_reward_error=zero", "train.steps=1")
    trainer.train(cfg)
    row = [r for r in read_metrics(cfg.run_dir / "metrics.jsonl") if "reward" in r][0]
    assert row["rewards/python/errors"] == 16


def test_dapo_options_run(tiny_cfg):
    cfg = tiny_cfg("algo.dynamic_sampling={enabled: true, max_rounds: 3, on_exhaust: partial}",
                   "algo.overlong={enabled: true, cache: 2}", "algo.mask_truncated=true", "algo.kl_coef=0.05",
                   "algo.entropy_coef=0.01", "train.steps=2")
    trainer.train(cfg)
    rows = [r for r in read_metrics(cfg.run_dir / "metrics.jsonl") if "reward" in r]
    assert "dynamic_sampling/rounds" in rows[0] and "kl" in rows[0]


def test_lora_run_and_resume(tiny_cfg, monkeypatch):
    pytest.importorskip("peft")
    lora = "model.lora={r: 4, lora_alpha: 8, target_modules: [q_proj, v_proj]}"
    full = tiny_cfg("name=lora_full", lora, "train.steps=3")
    trainer.train(full)
    merged = AutoModelForCausalLM.from_pretrained(full.run_dir / "final")
    assert merged.config.model_type == "qwen2" and not any("lora" in k for k in merged.state_dict())

    part = tiny_cfg("name=lora_part", lora, "train.steps=3")
    monkeypatch.setattr(trainer, "StopRequest", stop_after(1))
    trainer.train(part)
    monkeypatch.undo()
    trainer.train(part, resume=True)
    a = comparable(read_metrics(full.run_dir / "metrics.jsonl"))
    b = comparable(read_metrics(part.run_dir / "metrics.jsonl"))
    assert a == b


@pytest.mark.parametrize("recipe", ["grpo", "dapo", "dr_grpo", "gspo", "diver_td", "diver_ed", "exgrpo",
                                    "exgrpo_replay_only"])
def test_recipes_run(recipe, tmp_path):
    """Each recipe's algorithm settings run end to end (on a micro model instead of the quickstart's, with a dense
    reward so that every group is informative and dynamic sampling keeps all of them)."""
    from rlvr.config import load_config

    path = Path(__file__).parents[1] / "recipes" / f"{recipe}.yaml"
    cfg = load_config(path, [f"output_dir={tmp_path}", "model.path=null", "model.config=qwen2-micro",
                             "task.kwargs={digits: 1, ops: '+'}", "task.eval_size=8", "rollout.prompts_per_step=4",
                             "rollout.group_size=4", "rollout.max_new_tokens=4", "train.steps=1", "train.eval_every=0",
                             "train.save_every=0", "train.progress=false", "train.threads=0",
                             f"rewards=[{{name: python, kwargs: {{function: '{DENSE}:digit_fraction'}}}}]"])
    summary = trainer.train(cfg)
    assert summary["steps"] == 1
    row = [r for r in read_metrics(cfg.run_dir / "metrics.jsonl") if "reward" in r][0]
    assert row["optimizer_steps"] == cfg.algo.mini_batches * cfg.algo.ppo_epochs


@pytest.mark.parametrize("recipe", ["diver_td", "diver_ed"])
def test_diver_recipes_score_diversity(recipe, tmp_path):
    """The DIVER recipes run with their own rewards: the diversity reward gets group ids and the step from the
    loop, and gates on the task's verifier (a random model is never correct, so its bonus is 0 here)."""
    from rlvr.config import load_config

    path = Path(__file__).parents[1] / "recipes" / f"{recipe}.yaml"
    cfg = load_config(path, [f"output_dir={tmp_path}", "model.path=null", "model.config=qwen2-micro",
                             "task.kwargs={digits: 1, ops: '+'}", "task.eval_size=4", "rollout.prompts_per_step=2",
                             "rollout.group_size=4", "rollout.max_new_tokens=4", "train.steps=1", "train.eval_every=0",
                             "train.save_every=0", "train.progress=false", "train.threads=0"])
    trainer.train(cfg)
    row = [r for r in read_metrics(cfg.run_dir / "metrics.jsonl") if "reward" in r][0]
    assert row["rewards/diversity/mean"] == 0.0 and row["rewards/diversity/errors"] == 0


def test_diversity_weight_zero_refused(tiny_cfg):
    from rlvr.config import ConfigError

    cfg = tiny_cfg("rewards=[{name: task}, {name: diversity, weight: 0, kwargs: {correctness: task}}]")
    with pytest.raises(ConfigError, match="lambda"):
        trainer.train(cfg)


def test_exgrpo_replays_and_resumes(tiny_cfg, monkeypatch):
    """ExGRPO in the loop: once more than start_threshold of a step's trajectories are correct, stored correct
    trajectories are replayed in mixed groups (G - 1 fresh + 1 stored) with the exgrpo_mixed loss; the buffer is
    checkpointed, so an interrupted and resumed run equals an uninterrupted one."""
    overrides = ["buffer={name: exgrpo, kwargs: {replay_ratio: 0.5, start_threshold: 0.0}}",
                 "algo.loss=exgrpo_mixed", "algo.loss_kwargs={beta: 0.1}", "algo.advantage=dr_grpo",
                 f"rewards=[{{name: python, kwargs: {{function: '{DENSE}:digit_fraction'}}}}]",
                 "buffer.kwargs.correct_threshold=0.2", "train.steps=4"]
    import rlvr.algos.exgrpo as exgrpo_algo

    modes, real_mode = [], exgrpo_algo._mode
    monkeypatch.setattr(exgrpo_algo, "_mode", lambda m: modes.append(real_mode(m)) or modes[-1])
    full = tiny_cfg("name=ex_full", *overrides)
    trainer.train(full)
    monkeypatch.undo()
    assert modes[0] is False and modes[-1] is True  # the loss sees the switch to mixed mode (unclipped fresh rows)
    rows = [r for r in read_metrics(full.run_dir / "metrics.jsonl") if "reward" in r]
    assert rows[0]["exgrpo/replayed_questions"] == 0  # nothing stored before the switch
    assert any(r["exgrpo/replayed_questions"] > 0 for r in rows[1:])
    assert any(r.get("exgrpo/replay_frac", 0) > 0 for r in rows)

    part = tiny_cfg("name=ex_part", *overrides)
    interrupt_and_resume(part, monkeypatch, after=2)
    assert same_run(full, part, weights=False)


def _recipe_cfg(recipe: str, tmp_path, *overrides):
    from rlvr.config import load_config

    path = Path(__file__).parents[1] / "recipes" / f"{recipe}.yaml"
    dense = f"rewards=[{{name: python, kwargs: {{function: '{DENSE}:digit_fraction'}}}}]"
    return load_config(path, [f"output_dir={tmp_path}", "model.path=null", "model.config=qwen2-micro",
                              "task.kwargs={digits: 1, ops: '+'}", "task.eval_size=4", "rollout.prompts_per_step=4",
                              "rollout.group_size=4", "rollout.max_new_tokens=4", "train.steps=3",
                              "train.eval_every=0", "train.save_every=0", "train.progress=false", "train.threads=0",
                              "optim.lr=1e-3", dense, *overrides])


def test_exgrpo_replay_only_equals_grpo_until_replay_starts(tmp_path):
    """recipes/exgrpo_replay_only.yaml is GRPO plus ExGRPO's buffer and f(w) on replayed rows: while the buffer never
    switches on (start_threshold 1.0: the switch needs a solved fraction > 1), metrics and weights equal grpo.yaml's
    exactly; with replay on from the start, it replays and the runs part."""
    grpo = _recipe_cfg("grpo", tmp_path, "name=grpo")
    never = _recipe_cfg("exgrpo_replay_only", tmp_path, "name=never", "buffer.kwargs.start_threshold=1.0")
    trainer.train(grpo)
    trainer.train(never)
    a, b = (comparable(read_metrics(c.run_dir / "metrics.jsonl")) for c in (grpo, never))
    a = [{k: v for k, v in r.items() if k != "clip_ratio/dual_mean"} for r in a]  # exgrpo_mixed has no dual clip
    b = [{k: v for k, v in r.items() if not k.startswith("exgrpo/")} for r in b]
    assert a == b and len(a) == 5  # eval before, 3 steps, eval after
    wa = AutoModelForCausalLM.from_pretrained(grpo.run_dir / "final").state_dict()
    wb = AutoModelForCausalLM.from_pretrained(never.run_dir / "final").state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    replay = _recipe_cfg("exgrpo_replay_only", tmp_path, "name=replay", "buffer.kwargs.start_threshold=0.0",
                         "buffer.kwargs.correct_threshold=0.2")
    trainer.train(replay)
    rows = [r for r in read_metrics(replay.run_dir / "metrics.jsonl") if "reward" in r]
    assert any(r["exgrpo/replayed_questions"] > 0 for r in rows[1:]) and any(r["exgrpo/replay_frac"] > 0 for r in rows)
    wr = AutoModelForCausalLM.from_pretrained(replay.run_dir / "final").state_dict()
    assert not all(torch.equal(wa[k], wr[k]) for k in wa)


def test_hf_forward_option_trains_like_the_lean_forward(tiny_cfg, monkeypatch):
    """model.lean_forward=false (the HF forward) and the default lean forward: the same first rollout and the same
    update up to float rounding (one step: 2 PPO epochs x 2 mini-batches, so pi_old and clipping are exercised)."""
    import rlvr.policies.hf_forward as hf_forward

    calls, real = [], hf_forward.lean_completion_logits
    monkeypatch.setattr(hf_forward, "lean_completion_logits", lambda *a, **k: calls.append(1) or real(*a, **k))
    runs, used = {}, {}
    for lean in ("true", "false"):
        calls.clear()
        cfg = tiny_cfg(f"name=lean-{lean}", f"model.lean_forward={lean}", "train.steps=1", "algo.ppo_epochs=2",
                       "algo.mini_batches=2", "rewards=[{name: python, kwargs: {function: "
                       f"'{Path(__file__).parent / 'gpu' / 'digit_reward.py'}:digit_fraction'}}}}]")
        trainer.train(cfg)
        runs[lean] = [r for r in read_metrics(cfg.run_dir / "metrics.jsonl") if "reward" in r][0]
        used[lean] = len(calls)
    assert used["true"] > 0 and used["false"] == 0  # the option really switches the forward
    a, b = runs["true"], runs["false"]
    assert a["reward"] == b["reward"] and a["reward_std"] > 0  # same samples, and advantages that are not all 0
    for key in ("policy_loss", "grad_norm", "entropy"):
        assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-6), key


def test_multi_turn_run_resumes_exactly(tiny_cfg, monkeypatch):
    """A guessing-game run interrupted after step 2 and resumed writes the same metrics and weights as an
    uninterrupted one: every episode (turns, replies, samples) is replayed from its row's counter-based stream."""
    overrides = ["task.name=guess_number", "task.kwargs={hi: 8}", "env.name=guess_number", "env.max_turns=3",
                 "env.max_tokens=16", f"rewards=[{{name: env}}, {{name: python, weight: 0.5, kwargs: {{function: "
                 f"'{DENSE}:digit_fraction'}}}}]", "algo.mini_batches=2", "train.eval_every=2"]
    full = tiny_cfg("name=env_full", *overrides)
    trainer.train(full)
    rows = [r for r in read_metrics(full.run_dir / "metrics.jsonl") if "reward" in r]
    assert all(r["env/turns"] > 1 for r in rows) and "eval/accuracy" in rows[1]
    part = tiny_cfg("name=env_part", *overrides)
    interrupt_and_resume(part, monkeypatch, after=2)
    assert same_run(full, part)


def test_high_entropy_token_weights_are_selectable_and_applied(tiny_cfg):
    """algo.token_weights=high_entropy (arXiv 2506.01939) trains on the top 20% entropy tokens: the update differs
    from the unweighted one from the first step on, on the same samples."""
    dense = f"rewards=[{{name: python, kwargs: {{function: '{DENSE}:digit_fraction'}}}}]"
    runs = {}
    for name in ("none", "high_entropy"):
        cfg = tiny_cfg(f"name=tw-{name}", dense, f"algo.token_weights={name}", "train.steps=1",
                       "algo.token_weights_kwargs={quantile: 0.2}" if name != "none" else "train.progress=false")
        trainer.train(cfg)
        runs[name] = [r for r in read_metrics(cfg.run_dir / "metrics.jsonl") if "reward" in r][0]
    plain, weighted = runs["none"], runs["high_entropy"]
    assert "token_weights/mean" not in plain and 0.15 <= weighted["token_weights/mean"] <= 0.35
    assert plain["reward"] == weighted["reward"] and plain["policy_loss"] != weighted["policy_loss"]


def test_exgrpo_never_draws_a_retired_question_again(tiny_cfg, tmp_path):
    """Questions whose whole group is correct retire (arXiv 2510.02245 Algorithm 1) and are not drawn as fresh prompts
    again while more than B + 20 other items remain: here a quarter of a 40-item task retires in the first pass, and
    the second pass over the task (step 5 on) skips them."""
    reward = tmp_path / "quarter.py"
    reward.write_text("def solved(samples, completions, **kw):\n"
                      "    return [float(s.index % 4 == 0) for s in samples]\n")
    cfg = tiny_cfg("buffer={name: exgrpo, kwargs: {start_threshold: 1.0}}", "algo.loss=exgrpo_mixed",
                   "algo.loss_kwargs={}", "task.kwargs={digits: 2, ops: '+', size: 40}", "rollout.prompts_per_step=8",
                   "rollout.group_size=2", "train.steps=7", f"rewards=[{{name: python, kwargs: {{function: "
                                                                 f"'{reward}:solved'}}}}]")
    trainer.train(cfg)
    from rlvr.checkpoint import latest_checkpoint, load_trainer_state

    pool = load_trainer_state(latest_checkpoint(cfg.run_dir / "checkpoints"))["buffer"]
    assert sorted(pool["retired"]) == list(range(0, 40, 4))
    drawn = {q: [step for step, _, _ in h] for q, h in pool["history"].items()}
    assert all(len(drawn[q]) == 1 for q in pool["retired"])  # retired at their first draw, never drawn again
    assert sum(len(steps) for steps in drawn.values()) == 7 * 8 and max(len(s) for s in drawn.values()) == 2
