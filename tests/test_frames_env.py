"""rlvr.envs.frames: FrameThinker's frame-selection environment and the frame_quest task (arXiv 2509.24304): the
first look, a choose showing its frames as images, a time query's reply, malformed actions ending the episode; the
task's hidden segment, its scripted search scoring 1; a vision-language policy trains a step through it with the
framethinker reward, observation image tokens never trained."""

import json
import re

import pytest

from rlvr.envs import ENVS, Observation
from rlvr.rewards.framethinker import GATES, transition
from rlvr.tasks import TASKS


def test_the_environment_shows_frames_on_request():
    task = TASKS.build("frame_quest", seed=0, frames=200, n=8)
    sample = task[0]
    env = ENVS.build("frame_select", n=8)
    first = env.reset(sample)
    assert isinstance(first, Observation) and len(first.images) == 8
    assert first.text.strip().splitlines()[0] == "frame 0: <image>" and "frame 199: <image>" in first.text
    obs, reward, done = env.step("<think>between 10 and 90</think><action>choose frames between 10 and 90</action>")
    assert isinstance(obs, Observation) and len(obs.images) == 8 and not done and reward == 0.0
    assert obs.images[0] is sample.meta["frames"][11]  # linspace(11, 89, 8) starts at 11
    obs, _, done = env.step("<think>when</think><action>get frame number at time 0:05</action>")
    assert obs.strip() == "Frame number at time 0:05 is: 40." and not done  # 5 s at 8 fps
    for bad in ("<action>choose frames between 300 and 400</action>",
                "<action>choose frames between 90 and 10</action>", "no action", "<action>output answer: B</action>"):
        env2 = ENVS.build("frame_select", n=8)
        env2.reset(sample)
        assert env2.step(bad) == (None, 0.0, True)
    assert env.frames_used == 16


def test_the_first_look_floors_as_the_reference_code_does():
    """The reference code's first look is np.linspace(0, N − 1, n, dtype=int): for 128 frames and 8, 127 · i / 7 =
    0, 18.14, 36.29, 54.43, 72.57, 90.71, 108.86, 127 -> 0, 18, 36, 54, 72, 90, 108, 127 (rounding: 73, 91, 109)."""
    task = TASKS.build("frame_quest", seed=0)  # 128 frames, 8 per look
    sample = task[0]
    first = ENVS.build("frame_select", n=8).reset(sample)
    shown = [int(t) for t in re.findall(r"frame (\d+): <image>", first.text)]
    assert shown == task.look == [0, 18, 36, 54, 72, 90, 108, 127]
    assert first.images[4] is sample.meta["frames"][72]


def test_strict_reaches_the_environment_and_the_task():
    """`output answer: B (red)` answers B by default (the reference reads the action's start); strict: it is no
    action, the episode ends invalid and the transcript fails the final-answer gate."""
    task, strict_task = TASKS.build("frame_quest", seed=0), TASKS.build("frame_quest", seed=0, strict=True)
    s = task[0]
    turn = f"<think>x</think><action>output answer: {s.answer} (it turned)</action>"
    for strict, correct in ((False, 1.0), (True, 0.0)):
        env = ENVS.build("frame_select", n=8, strict=strict)
        env.reset(s)
        assert env.step(turn) == (None, 0.0, True)
        m = env.metrics()
        assert (m["correct"], m["invalid_action"], m["gate_no_answer"]) == (correct, 1 - correct, 1 - correct)
    assert (task.score(s, turn), strict_task.score(s, turn)) == (1.0, 0.0)


def test_the_task_hides_the_change_and_its_search_scores_one():
    from rlvr.envs.frames import BLACK, COLOURS, GREY, LIGHT

    task = TASKS.build("frame_quest", seed=1, frames=120, n=8, timed=0.5)
    looks = 0
    for i in range(40):
        s = task[i]
        m = s.meta
        frames = m["frames"]
        centre = (m["x"] + task.side // 2, task.image_size // 2)
        assert len(frames) == 120 and task.segment[0] <= m["length"] <= task.segment[1]
        for t, frame in enumerate(frames):  # the labels, read back from the pixels that were drawn
            inside = m["start"] <= t < m["start"] + m["length"]
            assert frame.getpixel(centre) == (COLOURS[m["new"]] if inside else BLACK)
            assert frame.getpixel((0, 0)) == (GREY if t >= m["start"] else LIGHT)
        assert s.answer == "ABCD"[list(COLOURS).index(m["new"])]
        assert task.score(s, task.reference(s)) == 1.0
        wrong = task.reference(s).replace(f"output answer: {s.answer}", "output answer: Z")
        assert task.score(s, wrong) == 0.0
        assert ("around" in s.prompt) == m["timed"]
        script = task._script(s)  # the agent answers from the first look only when it shows the change
        shown_first = any(m["start"] <= t < m["start"] + m["length"] for t in task.look)
        assert len(script) == (1 if shown_first else 2)
        looks += len(script) == 2
    assert 0 < looks < 40  # both kinds of episode occur
    with pytest.raises(ValueError, match="first-look gaps of 5 frames"):
        TASKS.build("frame_quest", frames=40, n=8)
    with pytest.raises(ValueError, match="segment lengths 1-2 must lie in"):
        TASKS.build("frame_quest", segment=[1, 2])


def test_the_uniform_baseline_sees_the_same_videos_and_answers_at_once():
    search, uniform = (TASKS.build("frame_quest", seed=3, **kw) for kw in ({}, {"initial": 16, "script": "answer"}))
    env = ENVS.build("frame_select", n=8)
    for i in range(10):
        a, b = search[i], uniform[i]
        assert {k: v for k, v in a.meta.items() if k not in ("frames", "initial")} == \
               {k: v for k, v in b.meta.items() if k not in ("frames", "initial")}
        assert len(env.reset(b).images) == 16 and len(uniform._script(b)) == 1  # 16 uniform frames, then the answer


def test_the_budget_refuses_looks_and_the_metrics_name_the_failed_gate():
    task = TASKS.build("frame_quest", seed=0)
    s = task[0]
    env = ENVS.build("frame_select", n=8, budget=16)
    env.reset(s)
    turn = "<think>between 10 and 40</think><action>choose frames between 10 and 40</action>"
    assert len(env.step(turn)[0].images) == 8
    reply, _, done = env.step(turn.replace("10 and 40", "50 and 80"))
    assert reply.strip() == "no frames left (budget 16): answer now" and not done
    env.step(f"<think>x</think><action>output answer: {s.answer}</action>")
    m = env.metrics()
    assert (m["frames_used"], m["looks"], m["refused_looks"], m["correct"]) == (16, 2, 1, 1.0)
    assert sum(v for k, v in m.items() if k.startswith("gate_")) == 0
    env = ENVS.build("frame_select", n=8)  # the think block names other frames than the action asks for
    env.reset(s)
    env.step("<think>between 10 and 41</think><action>choose frames between 10 and 40</action>")
    env.step(f"<think>x</think><action>output answer: {s.answer}</action>")
    m = env.metrics()
    fired = sum(v for k, v in m.items() if k.startswith("gate_"))
    assert m["gate_fidelity"] == 1.0 and m["correct"] == 0.0 and fired == 1
    env = ENVS.build("frame_select", n=8)  # no action at all
    env.reset(s)
    assert env.step("I think it is red") == (None, 0.0, True)
    m = env.metrics()
    assert m["invalid_action"] == 1 and m["gate_count"] == 1.0
    with pytest.raises(ValueError, match="budget"):
        ENVS.build("frame_select", n=8, budget=4)


def test_a_vision_language_model_trains_through_the_environment(tmp_path):
    from rlvr.config import load_config
    from rlvr.trainer import train

    cfg = load_config(None, [
        "model.config=qwen2.5-vl-micro", "task.name=frame_quest", "task.kwargs={frames: 40, n: 4, image_size: 28}",
        "task.eval_size=2", "env.name=frame_select", "env.kwargs={n: 4}", "env.max_turns=2", "env.max_tokens=400",
        "rewards=[{name: framethinker, kwargs: {span_n: 4}}]", "rollout.prompts_per_step=2", "rollout.group_size=2",
        "rollout.max_new_tokens=8", "train.steps=1", f"output_dir={tmp_path}", "name=ft", "train.progress=false",
        "train.diversity_unit=char"])
    assert train(cfg)["steps"] == 1
    step = [json.loads(x) for x in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines() if '"reward"' in x][0]
    assert step["skipped_steps"] == 0 and step["env/turns"] >= 1
    assert all(f"env/gate_{k}" in step for k in GATES.values())
    rows = [json.loads(x) for x in (tmp_path / "ft" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 4  # every episode of the step (2 prompts x 2) is logged: the means are recomputed from them
    shown = [len(re.findall(r"^frame \d+: ", r["completion"], re.M)) for r in rows]  # the first look's and each look's
    invalid = [transition(last_turn(r["completion"]), frames=40, fps=8.0, n=4).kind == "invalid" for r in rows]
    assert step["env/frames_used"] == sum(shown) / 4 and min(shown) >= 4  # FrameThinker's efficiency metric
    assert step["env/invalid_action"] == sum(invalid) / 4
    assert step["env/correct"] == sum(r["reward"] > 0 for r in rows) / 4  # the reward pays only a correct answer


def last_turn(completion: str) -> str:
    """An episode's last model turn, as the environment read it: the text after the last </action> (an observation
    may come before it), or that last action when nothing follows."""
    head, sep, tail = completion.rpartition("</action>")
    return tail if tail.strip() or not sep else head + sep


def test_multi_turn_rows_with_frames_resume_exactly_and_micro_batching_does_not_change_the_gradient(tmp_path):
    import torch
    from safetensors.torch import load_file

    from rlvr.config import load_config
    from rlvr.trainer import train

    def cfg(name, steps, micro):
        return load_config(None, [
            "model.config=qwen2.5-vl-micro", "task.name=frame_quest", "task.kwargs={frames: 40, n: 4, image_size: 28}",
            "task.eval_size=1", "env.name=frame_select", "env.kwargs={n: 4}", "env.max_turns=2", "env.max_tokens=300",
            "rewards=[{name: python, kwargs: {function: 'tests/dp_rewards.py:digit_fraction'}}]",
            "rollout.prompts_per_step=2", "rollout.group_size=2", "rollout.max_new_tokens=6", f"train.steps={steps}",
            f"algo.micro_batch_size={micro}", "optim.lr=1e-3", f"output_dir={tmp_path}", f"name={name}",
            "train.progress=false", "train.diversity_unit=char"])

    train(cfg("whole", 2, 4))
    train(cfg("parts", 1, 4))
    train(cfg("parts", 2, 4), resume=True)
    train(cfg("micro", 2, 1))  # 1 row per forward instead of 4: the same gradient (global normalisers)
    a, b, c = (load_file(tmp_path / n / "final" / "model.safetensors") for n in ("whole", "parts", "micro"))
    rows = [json.loads(x) for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines() if '"reward"' in x]
    assert all(r["grad_norm"] > 0 for r in rows)  # the updates were not empty
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6)
        torch.testing.assert_close(c[k], a[k], rtol=0, atol=1e-4)


def test_sft_warm_starts_on_scripted_searches_with_image_observations(tmp_path):
    from rlvr.config import load_config
    from rlvr.policies import HFVisionLM
    from rlvr.warm_start import sft, sft_batch

    task = TASKS.build("frame_quest", seed=0, frames=40, n=4, image_size=28)
    policy = HFVisionLM.load(config="qwen2.5-vl-micro")
    samples = [task[i] for i in range(2)]
    batch = sft_batch(policy, samples, [task.reference_turns(s) for s in samples])
    slots = batch.completion_ids == policy.image_token_id
    assert [len(g) for g in batch.extras["image_grid_thw"]] == [8, 8]  # the first look's 4 frames, the look's 4
    assert slots.any(-1).all() and (batch.loss_mask[slots] == 0).all()  # shown, never trained
    logp, _ = policy.logp(batch)  # the forward reads every observed image in place
    assert logp.shape == batch.loss_mask.shape
    cfg = load_config(None, [
        "model.config=qwen2.5-vl-micro", "task.name=frame_quest", "task.kwargs={frames: 40, n: 4, image_size: 28}",
        "task.eval_size=2", "env.name=frame_select", "env.kwargs={n: 4}", "env.max_turns=2", "env.max_tokens=400",
        "rollout.max_new_tokens=80", "sft.steps=20", "sft.batch_size=4", "sft.lr=3e-3", "sft.eval_every=20",
        f"output_dir={tmp_path}", "name=fq", "train.progress=false"])
    sft(cfg)
    losses = [json.loads(x)["sft/loss"] for x in (tmp_path / "fq-sft" / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.6 * losses[0]


def test_observation_tokens_get_no_gradient_and_the_frames_they_show_do(logp_grads):
    """The trainer's loss on an episode with image observations: d loss / d logp is zero at every observation token
    (the frame lines and their image tokens) and non-zero at the model's own tokens; the vision tower still gets a
    gradient, through the model's tokens that attend to the frames."""
    import torch

    from rlvr.algos import AGGREGATIONS, LOSSES
    from rlvr.policies import HFVisionLM
    from rlvr.update import LossFns
    from rlvr.warm_start import sft_batch

    task = TASKS.build("frame_quest", seed=0, frames=40, n=4, image_size=28)
    policy = HFVisionLM.load(config="qwen2.5-vl-micro", seed=0)
    samples = [task[i] for i in range(2)]
    batch = sft_batch(policy, samples, [task.reference_turns(s) for s in samples])
    batch.advantages = torch.tensor([1.0, -0.5])
    fns = LossFns(loss=LOSSES.bind("ppo_clip", clip_low=0.2, clip_high=0.2),
                  aggregate=AGGREGATIONS.lookup("token_mean"))
    grad = logp_grads(policy, batch, fns)
    observed = (batch.completion_mask == 1) & (batch.loss_mask == 0)
    assert observed.sum() > 0 and (batch.completion_ids[observed] == policy.image_token_id).any()
    assert (grad[observed] == 0).all() and (grad[batch.loss_mask == 1] != 0).all()
    vision = [p.grad for n, p in policy.model.named_parameters() if "visual" in n and p.grad is not None]
    assert vision and any(g.abs().sum() > 0 for g in vision)


def test_the_held_out_evaluation_reports_the_environment():
    """evaluate() under an environment: its per-episode numbers as means (eval/env/... in the run's metrics)."""
    from rlvr.config import load_config
    from rlvr.evaluate import evaluate
    from rlvr.policies import HFVisionLM
    from rlvr.run import build_sampler, build_task

    cfg = load_config(None, [
        "model.config=qwen2.5-vl-micro", "task.name=frame_quest", "task.kwargs={frames: 40, n: 4, image_size: 28}",
        "env.name=frame_select", "env.kwargs={n: 4, budget: 8}", "env.max_turns=2", "env.max_tokens=300",
        "rollout.max_new_tokens=8"])
    policy = HFVisionLM.load(config="qwen2.5-vl-micro", seed=0)
    result = evaluate(build_sampler(cfg, policy), build_task(cfg, eval_split=True), size=3)
    assert result["env/frames_used"] == 4.0 and 1 <= result["env/turns"] <= 2  # 8 tokens: no look gets written
    assert {f"env/gate_{k}" for k in GATES.values()} <= set(result)
    assert result["env/correct"] == result["accuracy"]  # the environment's verdict is the task's score


def test_text_observations_caption_the_frames_the_images_would_show():
    """observe="text" (issue 21): each shown frame is one line `frame {t}: <caption>`, no image; the caption names
    what the image of the same frame draws (the square's new colour, else the background and a black square), and
    the rule-based
    agent's episode replayed through the environment gets the same observations and is right, having seen the
    change."""
    from rlvr.envs.frames import BLACK, COLOURS, GREY, LIGHT

    text, image = TASKS.build("frame_quest", seed=2, observe="text"), TASKS.build("frame_quest", seed=2)
    for i in range(12):
        s, pictured = text[i], image[i]
        assert "frames" not in s.meta and len(s.meta["captions"]) == 128
        centre = (s.meta["x"] + image.side // 2, image.image_size // 2)
        for caption, frame in zip(s.meta["captions"], pictured.meta["frames"]):
            assert frame.getpixel(centre) == COLOURS.get(caption, BLACK)
            assert caption in COLOURS or frame.getpixel((0, 0)) == {"grey": GREY, "light": LIGHT}[caption]
        env = ENVS.build("frame_select", n=8, budget=16, observe="text")
        replies = [env.reset(s)]
        assert replies[0].images == [] and replies[0].text.split("\n")[1:-1] == [
            f"frame {t}: {s.meta['captions'][t]}" for t in text.look]
        turns = text.reference_turns(s)
        for turn, trained in turns[1:]:
            if trained:
                replies.append(env.step(turn)[0])
        assert [r.text for r in replies if r is not None] == [t.text for t, trained in turns if not trained]
        m = env.metrics()
        assert (m["correct"], m["saw_evidence"], m["correct_seen"]) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="observe='text'"):
        ENVS.build("frame_select", n=8).reset(text[0])
    with pytest.raises(ValueError, match="observe must be one of"):
        ENVS.build("frame_select", n=8, observe="audio")


def test_the_metrics_tell_search_from_reading():
    """A right answer from a first look that missed the change counts as correct but not as read (saw_evidence 0,
    correct_seen 0); after a choose that shows it, a wrong answer is seen but not read."""
    task = TASKS.build("frame_quest", seed=0, observe="text")
    s = next(task[i] for i in range(50) if len(task._script(task[i])) == 2)  # the first look misses the change
    env = ENVS.build("frame_select", n=8, observe="text")
    env.reset(s)
    env.step(f"<think>x</think><action>output answer: {s.answer}</action>")
    m = env.metrics()
    assert (m["correct"], m["saw_evidence"], m["correct_seen"]) == (1.0, 0.0, 0.0)
    look, _ = task._script(s)[0]
    wrong = "ABCD".replace(s.answer, "")[0]
    env = ENVS.build("frame_select", n=8, observe="text")
    env.reset(s)
    env.step(look)
    env.step(f"<think>x</think><action>output answer: {wrong}</action>")
    m = env.metrics()
    assert (m["correct"], m["saw_evidence"], m["correct_seen"]) == (0.0, 1.0, 0.0)
