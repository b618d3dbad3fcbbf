"""Mixture of tasks and rewards (Intern-S1, arXiv 2508.15763): weighted task sampling, per-task reward routing,
per-source normalisation, per-task metrics and evaluation, pass-rate filtering of groups."""

import math
from collections import Counter

import pytest
import torch

from rlvr import trainer
from rlvr.batch import Sample
from rlvr.errors import TrainingError
from rlvr.metrics import Metrics, read_metrics
from rlvr.rewards.router import route_rewards
from rlvr.tasks import TASKS
from rlvr.tasks.mixture import MixtureTask


def make_mixture(seed=0):
    tasks = {"add": TASKS.build("arithmetic", digits=1, ops="+"), "sort": TASKS.build("sorting")}
    return MixtureTask(tasks, {"add": 3.0, "sort": 1.0}, seed=seed)


def test_mixture_sampling_is_weighted_and_deterministic():
    mix = make_mixture()
    counts = Counter(mix[i].task for i in range(4000))
    assert abs(counts["add"] / 4000 - 0.75) < 0.03  # weight 3 : 1
    assert mix[17] == make_mixture()[17]
    s = next(mix[i] for i in range(50) if mix[i].task == "sort")
    assert mix.score(s, mix.reference(s)) == 1.0 and mix.score(s, "nonsense") < 1.0


def test_mixture_rejects_bad_weights():
    with pytest.raises(ValueError, match="weights must be > 0"):
        MixtureTask({"a": TASKS.build("sorting")}, {"a": 0.0})


def const(value):
    return lambda samples, completions, **kw: [value] * len(samples)


def test_route_rewards_sends_each_sample_to_its_task():
    samples = [Sample("p", task="a"), Sample("p", task="b"), Sample("p", task="a")]
    routes = {"a": [("one", 2.0, const(1.0))], "b": [("ten", 1.0, const(10.0)), ("none", 1.0, const(None))]}
    log = Metrics()
    rewards, sources = route_rewards(routes, samples, ["x"] * 3, log=log)
    metrics = log.local()
    assert rewards.tolist() == [2.0, 10.0, 2.0]
    assert metrics["tasks/a/reward"] == 2.0 and metrics["tasks/b/reward"] == 10.0
    assert sources["one"].tolist()[::2] == [1.0, 1.0] and math.isnan(sources["one"][1])
    with pytest.raises(ValueError, match="no reward route for task 'c'"):
        route_rewards(routes, [Sample("p", task="c")], ["x"])


def test_two_sources_with_one_name_keep_their_own_values_and_weights():
    """Two `python` rewards (or two DIVER `diversity` entries) in one route used to collapse into the last one."""
    samples = [Sample("p", task="a"), Sample("p", task="b")]
    routes = {"a": [("python", 1.0, const(1.0)), ("python", 0.5, const(4.0))], "b": [("python", 1.0, const(3.0))]}
    log = Metrics()
    rewards, sources = route_rewards(routes, samples, ["x"] * 2, log=log)
    assert rewards.tolist() == [1.0 + 0.5 * 4.0, 3.0]
    assert sources["python"].tolist() == [1.0, 3.0] and sources["python#1"].tolist()[0] == 4.0
    assert log.local()["tasks/a/rewards/python#1/mean"] == 4.0
    single = {"a": routes["a"]}  # one task: the same, without the tasks/ prefix
    rewards, _ = route_rewards(single, samples[:1], ["x"], log=(log := Metrics()))
    assert rewards.tolist() == [3.0] and log.local()["rewards/python#1/mean"] == 4.0


def test_per_source_normalisation():
    # source s has values 0, 1 on task a and 4 on task b (pooled mean 5/3, population std sqrt(26/9))
    samples = [Sample("p", task="a"), Sample("p", task="a"), Sample("p", task="b")]
    vals = {"a": [0.0, 1.0], "b": [4.0]}

    def src(key):
        return lambda samples, completions, **kw: list(vals[key])

    routes = {"a": [("s", 1.0, src("a"))], "b": [("s", 1.0, src("b"))]}
    rewards, _ = route_rewards(routes, samples, ["x"] * 3, normalize="per_source")
    mean, std = 5 / 3, math.sqrt(((0 - 5 / 3) ** 2 + (1 - 5 / 3) ** 2 + (4 - 5 / 3) ** 2) / 3)
    expected = [(v - mean) / (std + 1e-6) for v in (0.0, 1.0, 4.0)]
    torch.testing.assert_close(rewards, torch.tensor(expected), rtol=1e-5, atol=1e-6)


def test_mixture_run_logs_per_task(tiny_cfg):
    cfg = tiny_cfg(
        "tasks=[{name: arithmetic, key: add, kwargs: {digits: 1, ops: '+'}, weight: 1, eval_size: 4},"
        " {name: string_reverse, key: rev, weight: 1, eval_size: 4,"
        "   rewards: [{name: task}, {name: length_penalty, weight: 0.5, kwargs: {target: 2}}]}]",
        "mixture.normalize=per_source", "train.steps=2", "train.eval_every=1")
    trainer.train(cfg)
    rows = read_metrics(cfg.run_dir / "metrics.jsonl")
    assert {"eval/add/accuracy", "eval/rev/accuracy", "eval/accuracy"} <= set(rows[0])
    step = [r for r in rows if "reward" in r][0]
    assert "tasks/rev/rewards/length_penalty/mean" in step
    assert any(k.startswith("tasks/add/") for k in step)


def test_pass_rate_filter_drops_groups(tiny_cfg):
    """A random model never solves 2-digit sums: every group has pass rate 0, outside (0.25, 1.0), so no group
    can be kept and the run says so instead of training on filtered-out data."""
    cfg = tiny_cfg("task.kwargs={digits: 2, ops: '+'}", "task.keep_pass_rate=[0.25, 1.0]",
                   "algo.dynamic_sampling={max_rounds: 2, on_exhaust: partial}")
    with pytest.raises(TrainingError, match="found 0 of 4"):
        trainer.train(cfg)


def test_bad_mixture_config_fails_before_training():
    from rlvr.config import ConfigError, load_config, validate

    cfg = load_config(None, ["model.config=qwen2-micro", "tasks=[{name: sorting}, {name: sortng}]"])
    with pytest.raises(ConfigError, match=r"tasks\[1\].name.*'sorting'"):
        validate(cfg)
    cfg = load_config(None, ["model.config=qwen2-micro", "tasks=[{name: sorting, rewards: [{name: maths}]}]"])
    with pytest.raises(ConfigError, match=r"tasks\[0\].rewards\[0\].name.*'math'"):
        validate(cfg)
    cfg = load_config(None, ["model.config=qwen2-micro", "task.keep_pass_rate=[1.0, 0.2]"])
    with pytest.raises(ConfigError, match="keep_pass_rate"):
        validate(cfg)


def test_exgrpo_diver_and_mixture_in_one_run(tiny_cfg):
    """The three issue-3 recipes compose: a two-task mixture, each task with its own rewards including DIVER's
    diversity bonus, trained with ExGRPO's buffer and mixed loss."""
    from pathlib import Path

    dense = Path(__file__).parent / "gpu" / "digit_reward.py"
    digits = f"{{name: python, kwargs: {{function: '{dense}:digit_fraction'}}}}"
    div = "{name: diversity, weight: 0.1, kwargs: {kind: textual, correctness: task, schedule: constant, unit: char}}"
    add = f"{{name: arithmetic, key: add, kwargs: {{digits: 1, ops: '+'}}, eval_size: 4, rewards: [{digits}, {div}]}}"
    cfg = tiny_cfg(
        f"tasks=[{add}, {{name: string_reverse, key: rev, eval_size: 4, rewards: [{digits}]}}]",
        "buffer={name: exgrpo, kwargs: {start_threshold: 0.0, correct_threshold: 0.2}}",
        "algo.loss=exgrpo_mixed", "algo.loss_kwargs={beta: 0.1}", "algo.advantage=dr_grpo", "train.steps=4")
    trainer.train(cfg)
    rows = [r for r in read_metrics(cfg.run_dir / "metrics.jsonl") if "reward" in r]
    assert "tasks/add/rewards/diversity/mean" in rows[0] and "tasks/rev/reward" in rows[0]
    assert any(r["exgrpo/replayed_questions"] > 0 for r in rows)
