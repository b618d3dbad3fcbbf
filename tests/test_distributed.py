"""Data parallelism, whole runs: `torchrun --nproc_per_node 2` (gloo, CPU) with half of every step's prompts per rank
trains exactly as one process with the whole batch: the same metrics (all but timings, within 1e-4 relative), the
same final weights (within 1e-4; Adam turns float-rounding differences of near-zero gradients into steps of up to lr)
and the same data positions on every rank, over 3 steps, for GRPO (2 mini-batches x 2 epochs), DAPO with dynamic
sampling, a 3-task mixture with a reward that returns None and per-source normalisation, DIVER, REINFORCE++
whitening with CISPO, high-entropy token weights and KL, SAPO with batch-std advantages, ExGRPO replay, a multi-turn
environment, VPPO on a vision-language model with image and text-only rows and 2 corruption masks per row,
FrameThinker's environment (the first look's frames as an image observation), asynchronous rollouts with dynamic
sampling in each rank's sampling thread, and a run through the Python API with rows, a reward callable and a model
object (tests/dp_train.py).
What cannot run under data parallelism is refused with one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlvr.config import ConfigError, load_config, validate
from rlvr.metrics import read_metrics

WORKER = Path(__file__).with_name("dp_train.py")
TIMING = ("time/", "tokens_per_second", "completions_per_second")


def run(args, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    subprocess.run([sys.executable, *args], check=True, env=env, cwd=cwd, timeout=600, capture_output=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("dp")
    run([str(WORKER), str(out / "one")], out)
    run(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517", str(WORKER),
         str(out / "two")], out)
    return out / "one", out / "two"


def close(a, b, key: str = "") -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        # a correlation near 0 of dependencies near 0 (VPPO) turns the 1e-6 rounding of the weights after two steps
        # into 1e-4: within 1e-3 there
        tol = 1e-3 if key.endswith("_corr") else 1e-4
        return abs(a - b) <= tol * max(1.0, abs(a))
    return a == b


CASES = ["grpo", "dapo", "mixture", "diver", "whiten", "sapo", "exgrpo", "multiturn", "vppo", "frames", "async", "api"]


@pytest.mark.parametrize("case", CASES)
def test_two_ranks_train_as_one_process(runs, case):
    one, two = (root / case for root in runs)
    rows_one, rows_two = read_metrics(one / "metrics.jsonl"), read_metrics(two / "metrics.jsonl")
    assert len(rows_one) == len(rows_two) == 5  # evaluation before, 3 steps (one with evaluation), after
    for a, b in zip(rows_one, rows_two):
        keys = {k for k in a if not k.startswith(TIMING)}
        assert keys == {k for k in b if not k.startswith(TIMING)}
        wrong = {k: (a[k], b[k]) for k in keys if not close(a[k], b[k], k)}
        assert not wrong, f"step {a['step']}: {wrong}"
    wa, wb = (load_file(r / "final" / "model.safetensors") for r in (one, two))
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=1e-4)
    start = load_file(two.parent / "grpo" / "final" / "model.safetensors")  # a run of another case: weights moved
    if set(start) == set(wa):
        assert any(not torch.equal(wa[k], start[k]) for k in wa) or case == "grpo"
    else:  # another architecture (the vision-language case): its updates were not empty
        assert any(r.get("grad_norm", 0) > 0 for r in rows_one)
    positions = [json.loads((r / f"rank{i}.json").read_text())["data_pos"] for r, i in ((one, 0), (two, 0), (two, 1))]
    assert len(set(positions)) == 1 and positions[0] >= (10 if case == "exgrpo" else 12)  # replay draws fewer


def test_the_cases_exercise_what_they_claim(runs):
    """Guards against a comparison that passes because nothing happened: filters dropped groups over several rounds,
    a per-task metric is missing on some steps, a reward returned None, rows held observations, clipping occurred."""
    one = runs[0]
    steps = {c: [r for r in read_metrics(one / c / "metrics.jsonl") if "reward" in r] for c in CASES}
    assert any(r["dynamic_sampling/rounds"] > 1 for r in steps["dapo"])
    assert any(r["dynamic_sampling/kept_fraction"] < 1 for r in steps["dapo"])
    assert any(r["dynamic_sampling/kept_fraction"] * r["dynamic_sampling/rounds"] < 1 for r in steps["dapo"])  # partial
    assert any(0 < (r.get("tasks/rev/rewards/python/none_frac") or 0) < 1 for r in steps["mixture"])
    assert any(r["rewards/diversity/mean"] > 0 for r in steps["diver"])
    assert any(r["env/turns"] > 1 for r in steps["multiturn"])
    assert any(r["cispo_clip_ratio"] > 0 for r in steps["whiten"]) and steps["sapo"][0]["token_weights/mean"] < 1
    assert all("rewards/python/mean" in r and "rewards/task/mean" in r for r in steps["api"])  # the callable and a name
    assert all(r["vppo/dependency_mean"] > 0 and r["token_weights/mean"] < 1 for r in steps["vppo"])
    assert any(r["vppo/alpha_max"] > 1 for r in steps["vppo"])
    assert [r["async/staleness"] for r in steps["async"]] == [0, 1, 1]
    assert steps["exgrpo"][0]["exgrpo/replayed_questions"] == 0 < steps["exgrpo"][-1]["exgrpo/replayed_questions"]
    assert any(r["dynamic_sampling/rounds"] > 1 for r in steps["async"])  # collectives in the sampling thread


def test_what_data_parallelism_cannot_run_is_refused_in_one_line(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="divisible by the number of data-parallel ranks"):
        validate(load_config(None, ["model.config=qwen2-micro", "rollout.prompts_per_step=3"]))
