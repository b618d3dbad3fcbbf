"""Rollout and reward workers as Ray actors (rlvr.distributed.ray_rollout, ray_reward) on a local Ray: 3 steps with 2
rollout and 2 reward workers train as one process does (every metric but timings within 1e-6, weights within 1e-4:
Adam turns float rounding of near-zero gradients into steps of up to lr, as in tests/test_distributed.py), and so do
asynchronous rollouts sampled by the workers and multi-turn episodes scored with the environment's rewards; 2 Ray
trainer ranks train as one process; a worker killed mid-run is replaced and its shard done again (the same batch, the
same rewards, restarts 1); a reward's error reads as in one process; what Ray cannot run with is refused with one
line."""

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
RAY = ["distributed.backend=ray", "distributed.rollout_workers=2", "distributed.reward_workers=2"]
ASYNC = ["rollout.max_staleness=1", "train.async_thread=false"]
ENV = ["task.name=guess_number", "task.kwargs={hi: 8}", "env.name=guess_number", "env.max_turns=3",
       "env.max_tokens=24", "rewards=[{name: env}, {name: python, weight: 0.5, kwargs: {function: "
                            "tests/gpu/digit_reward.py:digit_fraction}}]"]  # multi-turn episodes, the env's rewards
TRAINERS = ["distributed.backend=ray", "distributed.trainers=2", "distributed.rollout_workers=1",
            "distributed.reward_workers=1", "rollout.max_staleness=1"]  # synchronous ranks: tests/test_ray_cluster.py
FSDP = ["distributed.backend=ray", "distributed.trainers=2", "distributed.strategy=fsdp",
        "distributed.rollout_workers=0", "distributed.reward_workers=1"]  # sharded ranks sample on gathered weights
TIMING = ("time/", "tokens_per_second", "completions_per_second", "ray/")


def metrics(folder):
    return [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in read_metrics(folder / "metrics.jsonl")]


def close(a: dict, b: dict) -> bool:
    # the workers' sampler log-probs come from another process (one torch thread): rounding of 1e-7 in a log-prob is
    # 1e-6 relative in a stale token's ratio exp(delta) of 2.6 (mismatch/ratio_max of an asynchronous run)
    def tol(k):
        return 1e-5 if k.startswith("mismatch/") else 1e-6

    return a.keys() == b.keys() and all(
        abs(a[k] - b[k]) <= tol(k) * max(1.0, abs(a[k])) if isinstance(a[k], float) else a[k] == b[k] for k in a)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module (each run would otherwise start and stop its own): 6 CPUs, what the 2-rank run
    with a rollout and a reward worker per rank asks for (rlvr.distributed.ray_cluster.needed_cpus)."""
    ray.init(num_cpus=6, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ray")
    dying = (f"rewards=[{{name: python, kwargs: {{function: tests/ray_dying_reward.py:digit_fraction_dying_once, "
             f"options: {{marker: '{out / 'died'}'}}}}}}]")
    for name, over in (("one", []), ("ray", RAY), ("async", ASYNC), ("ray_async", [*RAY, *ASYNC]),
                       ("trainers", TRAINERS), ("killed", [*RAY, dying]), ("env", ENV), ("env_ray", [*ENV, *RAY]),
                       ("fsdp", FSDP)):
        train(load_config(None, [*BASE, f"output_dir={out}", f"name={name}", *over]))
    return out


@pytest.mark.parametrize("pair", [("one", "ray"), ("async", "ray_async"), ("one", "killed"), ("env", "env_ray")])
def test_ray_workers_train_as_one_process(runs, pair):
    one, two = runs / pair[0], runs / pair[1]
    rows_one, rows_two = metrics(one), metrics(two)
    assert len(rows_one) == len(rows_two) == 5
    assert all(close(a, b) for a, b in zip(rows_one, rows_two))
    wa, wb = load_file(one / "final" / "model.safetensors"), load_file(two / "final" / "model.safetensors")
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-4
    trained = [r for r in read_metrics(two / "metrics.jsonl") if "reward" in r]
    if pair[1] == "killed":  # a reward worker's process died at step 1: replaced, its groups scored again
        assert (runs / "died").exists()
        assert [r["ray/reward_restarts"] for r in trained] == [0, 1, 1]
        return
    assert all(r["ray/restarts"] == 0 and r["ray/reward_restarts"] == 0 for r in trained)
    if "async" in pair[0]:
        assert [r["async/staleness"] for r in trained] == [0, 1, 1]
    if pair[0] == "env":  # episodes of several turns, scored with the environment's rewards on the workers
        assert any(r["env/turns"] > 1 for r in trained) and "rewards/env/mean" in trained[0]


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


@pytest.mark.parametrize("pair", [("async", "trainers"), ("one", "fsdp")])
def test_two_ray_trainer_ranks_train_as_one_process(runs, pair):
    """A placement group of 2 trainer actors forming a gloo group, each with its own rollout and reward worker and
    asynchronous rollouts, or sharded with FSDP (distributed.strategy: fsdp, a reward worker each): the tolerances
    of torchrun's 2 ranks against one process (tests/test_distributed.py)."""
    one, two = runs / pair[0], runs / pair[1]
    if pair[1] == "fsdp":  # the ranks did shard: each wrote its own shard of the checkpoint
        saved = list((two / "checkpoints").glob("step-*"))
        assert saved and all((c / "sharded").is_dir() for c in saved)
    rows_one, rows_two = metrics(one), metrics(two)
    assert len(rows_one) == len(rows_two) == 5
    for a, b in zip(rows_one, rows_two):
        assert a.keys() == b.keys()
        for k in a:
            assert (a[k] == b[k] if not isinstance(a[k], float) else
                    abs(a[k] - b[k]) <= 1e-4 * max(1.0, abs(a[k]))), (k, a[k], b[k])
    wa, wb = load_file(one / "final" / "model.safetensors"), load_file(two / "final" / "model.safetensors")
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-4


def routes_and_rows(tmp_path):
    from rlvr.batch import Sample
    from rlvr.rewards.core import REWARDS

    (tmp_path / "r.py").write_text("def boom(samples, completions, **kw):\n"
                                    "    return [1 / (len(c) - 3) for c in completions]\n")
    digits = REWARDS.build("python", function="tests/gpu/digit_reward.py:digit_fraction")
    groups = REWARDS.build("diversity", condition="correct", correctness="exact", schedule="constant")
    routes = {"a": [("python", 1.0, digits), ("diversity", 0.5, groups)],
              "b": [("python", 2.0, REWARDS.build("python", function=f"{tmp_path / 'r.py'}:boom"))]}
    texts = ["12 a", "1 b c", "zz", "7", "x y 1", "42", "9 9 9", "abcd", "3", "3 3"]
    samples = [Sample(f"q{i // 2}", answer=texts[i][0], task="ab"[(i // 2) % 2], index=i // 2) for i in range(10)]
    return routes, samples, texts, [i // 2 for i in range(10)]


def test_reward_workers_score_as_one_process_and_survive_a_killed_worker(tmp_path):
    from rlvr.distributed.ray_reward import RewardPool, group_shards
    from rlvr.rewards.core import RewardError
    from rlvr.rewards.router import route_rewards

    routes, samples, texts, ids = routes_and_rows(tmp_path)
    texts[2] = "zz.."  # row 2 (task b) is fine: 4 characters
    local, local_sources = route_rewards(routes, samples, texts, group_ids=ids, step=0)
    pool = RewardPool.start(routes, workers=3)
    try:
        remote, remote_sources = route_rewards(routes, samples, texts, group_ids=ids, step=0, runner=pool)
        ray.kill(pool.workers[0])
        again, _ = route_rewards(routes, samples, texts, group_ids=ids, step=0, runner=pool)
        bad = list(texts)
        bad[6] = "xyz"  # 1 / 0 in task b's reward, group 3
        with pytest.raises(RewardError, match=r"^reward 'python' raised ZeroDivisionError on sample \d+ "
                                              r"\(task='b', index=3\)"):
            route_rewards(routes, samples, bad, group_ids=ids, step=0, runner=pool)
    finally:
        pool.close()
    assert pool.restarts == 1
    assert torch.equal(local.isnan(), remote.isnan()) and torch.allclose(local.nan_to_num(), remote.nan_to_num())
    assert torch.allclose(again.nan_to_num(), local.nan_to_num())
    assert local_sources.keys() == remote_sources.keys()
    assert local_sources["diversity"].nan_to_num().abs().sum() > 0  # the group-level reward did apply
    shards = group_shards(ids, 10, 3)
    assert sorted(r for s in shards for r in s) == list(range(10))
    assert all(len({ids[r] for r in s} & {ids[r] for r in t}) == 0 for s in shards for t in shards if s is not t)


def test_what_ray_cannot_run_with_is_refused(monkeypatch):
    with pytest.raises(ConfigError, match=r"distributed.strategy fsdp: distributed.rollout_workers 2: Ray rollout "
                                          r"workers hold a full copy of the policy; set distributed.rollout_workers"):
        validate(load_config(None, [*BASE, *FSDP, "distributed.rollout_workers=2"]))
    with pytest.raises(ConfigError, match=r"rollout.prompts_per_step \(4\) must be divisible by distributed.trainers"):
        validate(load_config(None, [*BASE, *RAY, "distributed.trainers=3"]))
    with pytest.raises(ConfigError, match="distributed.reward_workers must be >= 0"):
        validate(load_config(None, [*BASE, *RAY, "distributed.reward_workers=-1"]))
    with pytest.raises(ConfigError, match="distributed.backend must be 'none' or 'ray'"):
        validate(load_config(None, [*BASE, "distributed.backend=dask"]))
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="starts its own trainer ranks .distributed.trainers.: run it with plain "
                                          "`rlvr train`, not under torchrun"):
        validate(load_config(None, [*BASE, *RAY]))
