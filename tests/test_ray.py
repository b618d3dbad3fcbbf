"""Rollout workers as Ray actors (rlvr.distributed.ray_rollout) on a local Ray: 3 steps with 2 workers train as one
process does (every metric but timings within 1e-6, weights within 1e-4: Adam turns float rounding of near-zero
gradients into steps of up to lr, as in tests/test_distributed.py), a worker killed mid-run is replaced and its shard
sampled again (the same batch, `ray/restarts` 1), and what Ray cannot run with is refused with one line."""

import pytest
import torch
from safetensors.torch import load_file

from rlvr.config import ConfigError, load_config, validate
from rlvr.metrics import read_metrics
from rlvr.trainer import train

ray = pytest.importorskip("ray")

DENSE = "rewards=[{name: python, kwargs: {function: tests/gpu/digit_reward.py:digit_fraction}}]"
BASE = ["model.config=qwen2-tiny", "task.name=arithmetic", "rollout.prompts_per_step=4", "rollout.group_size=4",
        "rollout.max_new_tokens=8", "train.steps=3", "train.eval_every=0", "task.eval_size=8", "train.progress=false",
        "optim.lr=1e-3", DENSE]
RAY = ["distributed.backend=ray", "distributed.rollout_workers=2"]
TIMING = ("time/", "tokens_per_second", "completions_per_second", "ray/")


def metrics(folder):
    return [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in read_metrics(folder / "metrics.jsonl")]


def close(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        abs(a[k] - b[k]) <= 1e-6 * max(1.0, abs(a[k])) if isinstance(a[k], float) else a[k] == b[k] for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ray")
    for name, over in (("one", []), ("ray", RAY)):
        train(load_config(None, [*BASE, f"output_dir={out}", f"name={name}", *over]))
    return out / "one", out / "ray"


def test_two_workers_train_as_one_process(runs):
    one, two = runs
    rows_one, rows_two = metrics(one), metrics(two)
    assert len(rows_one) == len(rows_two) == 5
    assert all(close(a, b) for a, b in zip(rows_one, rows_two))
    wa, wb = load_file(one / "final" / "model.safetensors"), load_file(two / "final" / "model.safetensors")
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-4
    assert all(r["ray/restarts"] == 0 for r in read_metrics(two / "metrics.jsonl") if "reward" in r)


def test_a_killed_worker_is_replaced_and_its_shard_sampled_again():
    from rlvr.batch import Sample
    from rlvr.distributed.ray_rollout import RaySampler
    from rlvr.policies import SamplingParams
    from rlvr.policies.causal_lm import HFCausalLM
    from rlvr.rollout.collect import TextSampler

    policy = HFCausalLM.load(config="qwen2-tiny", seed=0)
    inner = TextSampler(policy, SamplingParams(max_new_tokens=6), 2)
    samples = [Sample(f"{i}+{i}=") for i in range(4) for _ in range(2)]
    ids, seeds = torch.arange(8) // 2, torch.arange(8)
    local = inner.generate(samples, ids, seeds)
    sampler = RaySampler.start(inner, workers=2)
    try:
        first = sampler.generate(samples, ids, seeds)
        ray.kill(sampler.workers[1])  # its process is gone: the next call finds it dead
        again = sampler.generate(samples, ids, seeds)
    finally:
        sampler.close()
    assert sampler.restarts == 1
    for batch in (first, again):
        assert torch.equal(batch.completion_ids, local.completion_ids)
        assert torch.allclose(batch.rollout_logp, local.rollout_logp, atol=1e-5)


def test_what_ray_cannot_run_with_is_refused(monkeypatch):
    with pytest.raises(ConfigError, match="distributed.backend 'ray' does not run with asynchronous rollouts yet"):
        validate(load_config(None, [*BASE, *RAY, "rollout.max_staleness=1"]))
    with pytest.raises(ConfigError, match="distributed.backend must be 'none' or 'ray'"):
        validate(load_config(None, [*BASE, "distributed.backend=dask"]))
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="starts its own workers: run it with plain `rlvr train`, not under torchrun"):
        validate(load_config(None, [*BASE, *RAY]))
