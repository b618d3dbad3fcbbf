"""Asynchronous rollouts (rollout.max_staleness, rlvr.rollout.pipeline): sampling in a background thread gives the same
run as sampling in the foreground (metrics and weights), the first step equals the synchronous run's and later ones
are sampled one update behind (staleness metric, a non-zero mismatch), a run resumed at step 2 equals an
uninterrupted one, versions are kept and dropped as the batches need them, and what cannot run asynchronously is
refused with one line. Under torchrun: tests/test_distributed.py (case async); with Ray workers: tests/test_ray.py."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlvr.config import ConfigError, load_config, validate
from rlvr.metrics import Metrics, read_metrics
from rlvr.trainer import train

DENSE = "rewards=[{name: python, kwargs: {function: tests/gpu/digit_reward.py:digit_fraction}}]"
BASE = ["model.config=qwen2-tiny", "task.name=arithmetic", "rollout.prompts_per_step=4", "rollout.group_size=4",
        "rollout.max_new_tokens=8", "train.steps=4", "train.eval_every=0", "task.eval_size=8", "train.progress=false",
        "optim.lr=1e-3", "algo.ppo_epochs=2", DENSE]


def run(tmp_path, name, *over, resume=False):
    cfg = load_config(None, [*BASE, f"output_dir={tmp_path}", f"name={name}", *over])
    train(cfg, resume=resume)
    return tmp_path / name


def rows(folder: Path):
    return [{k: v for k, v in r.items() if not k.startswith("time/") and k not in ("tokens_per_second",
                                                                                  "completions_per_second")}
            for r in read_metrics(folder / "metrics.jsonl")]


def weights(folder: Path):
    return load_file(folder / "final" / "model.safetensors")


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("async")
    return {"sync": run(out, "sync"),
            "thread": run(out, "thread", "rollout.max_staleness=1"),
            "fg": run(out, "fg", "rollout.max_staleness=1", "train.async_thread=false")}


def test_the_background_thread_changes_nothing(runs):
    assert rows(runs["thread"]) == rows(runs["fg"])
    assert same_weights(runs["thread"], runs["fg"])


def test_later_steps_are_sampled_one_update_behind(runs):
    sync, thread = rows(runs["sync"]), rows(runs["thread"])
    assert [r["async/staleness"] for r in thread[1:5]] == [0.0, 1.0, 1.0, 1.0]
    step0 = {k: v for k, v in thread[1].items() if k != "async/staleness"}
    assert step0 == sync[1]  # the first batch is sampled with the starting weights in both
    assert thread[2]["reward"] != sync[2]["reward"]
    # the trainer's log-probs differ from the stale sampler's: the mismatch weight has something to correct
    assert all(r["mismatch/abs_log_ratio_mean"] > 0.01 for r in thread[2:5])
    assert all(r["mismatch/abs_log_ratio_mean"] < 1e-4 for r in sync[1:5])  # float rounding only


def test_resume_equals_an_uninterrupted_asynchronous_run(tmp_path, runs):
    run(tmp_path, "thread", "rollout.max_staleness=1", "train.steps=2")
    resumed = run(tmp_path, "thread", "rollout.max_staleness=1", resume=True)
    trained = lambda folder: [r for r in rows(folder) if "reward" in r]  # noqa: E731 - the 2-step run's end eval aside
    assert trained(resumed) == trained(runs["thread"]) and len(trained(resumed)) == 4
    assert same_weights(resumed, runs["thread"])


EXGRPO = ["buffer.name=exgrpo", "buffer.kwargs={replay_ratio: 0.5, start_threshold: 0.05}", "algo.loss=exgrpo_mixed",
          "algo.loss_kwargs={beta: 0.1, clip_low: 0.2, clip_high: 0.2}", "train.steps=5",
          "rewards=[{name: python, kwargs: {function: tests/dp_rewards.py:starts_with_digit}}]"]


def test_a_replay_buffer_runs_asynchronously_deterministically_and_resumes_exactly(tmp_path):
    """ExGRPO's plan for batch k + 1 is made after step k's observe, in the sampling thread: the thread gives the
    foreground's run, replay happens, and a run resumed at step 3 equals the uninterrupted one."""
    thread = run(tmp_path, "x_thread", *EXGRPO, "rollout.max_staleness=1")
    fg = run(tmp_path, "x_fg", *EXGRPO, "rollout.max_staleness=1", "train.async_thread=false")
    assert rows(thread) == rows(fg) and same_weights(thread, fg)
    trained = [r for r in rows(thread) if "reward" in r]
    assert [r["async/staleness"] for r in trained] == [0, 1, 1, 1, 1]
    assert sum(r["exgrpo/replayed_questions"] for r in trained) > 0  # stored rows were replayed
    run(tmp_path, "x_resumed", *EXGRPO, "rollout.max_staleness=1", "train.steps=3")
    resumed = run(tmp_path, "x_resumed", *EXGRPO, "rollout.max_staleness=1", resume=True)
    assert [r for r in rows(resumed) if "reward" in r] == trained and same_weights(resumed, thread)


def test_versions_are_kept_while_a_batch_needs_them(tmp_path):
    from types import SimpleNamespace

    from rlvr.policies import HFCausalLM
    from rlvr.rollout.pipeline import RolloutPipeline

    policy = HFCausalLM.load(config="qwen2-tiny", seed=0)
    from rlvr.buffers import NoBuffer
    from rlvr.distributed import World

    fake_run = SimpleNamespace(policy=policy, sampler=SimpleNamespace(policy=policy), world=World(), buffer=NoBuffer())
    import dataclasses

    @dataclasses.dataclass
    class Sampler:
        policy: object

    fake_run.sampler = Sampler(policy)
    pipe = RolloutPipeline(fake_run, None, staleness=2, versions=None, current=0, threaded=False)
    for v in (1, 2, 3):
        pipe.publish(v)
    # after update 3 the next batch to train is step 3's (version 1: resampled on a resume); step 4's takes 2
    assert sorted(pipe.versions) == [1, 2, 3]
    assert sorted(pipe.saved_versions(4)) == [2, 3] and sorted(pipe.saved_versions(5)) == [3]
    assert pipe.version_for(1) == 0 and pipe.version_for(7) == 5


def test_what_cannot_run_asynchronously_is_refused():
    with pytest.raises(ConfigError, match="rollout.max_staleness must be >= 0"):
        validate(load_config(None, [*BASE, "rollout.max_staleness=-1"]))


def test_metrics_merge_keeps_each_reduction():
    a, b = Metrics(), Metrics()
    a.mean("m", 1.0, weight=1)
    b.mean("m", 4.0, weight=3)
    a.sum("s", 2)
    b.sum("s", 5)
    b.max("x", 7)
    b.add("time/t", 0.5, "time")
    a.merge(b)
    out = a.local()
    assert out["m"] == pytest.approx((1 + 12) / 4) and out["s"] == 7 and out["x"] == 7 and out["time/t"] == 0.5
