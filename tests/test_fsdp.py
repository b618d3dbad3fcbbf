"""FSDP2 sharding, whole runs (distributed.strategy: fsdp; tests/fsdp_train.py): two gloo ranks, each holding half of
every weight, gradient and AdamW state, train exactly as one process with the whole batch (every metric but timings
within 1e-4 relative, final weights within 1e-4) for GRPO with 2 mini-batches x 2 epochs and uneven micro-batches,
the memory options together (checkpointed lean layers, chunked lm_head log-probs, token-budget micro-batches), and a
3-task mixture with DAPO dynamic sampling, and ExGRPO replay (one experience pool per rank, fed by the gathered
groups); a 2-rank run killed with SIGKILL between checkpoints and resumed from its
sharded checkpoint ends with the weights of the uninterrupted run; the final model is one Hugging Face folder; what
FSDP cannot shard is refused in one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_distributed import TIMING, close

from rlvr.config import ConfigError, load_config, validate
from rlvr.distributed import World
from rlvr.metrics import read_metrics

WORKER = Path(__file__).with_name("fsdp_train.py")
CASES = ["grpo", "lean", "mixture", "exgrpo"]


def run(args, cwd, **env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", **env_extra)
    return subprocess.run([sys.executable, *args], env=env, cwd=cwd, timeout=600, capture_output=True, text=True)


def torchrun(*args):
    return ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541", str(WORKER), *args]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    for args in ([str(WORKER), str(out / "one"), *CASES], torchrun(str(out / "two"), *CASES, "resume")):
        done = run(args, out)
        assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.parametrize("case", CASES)
def test_two_sharded_ranks_train_as_one_process(runs, case):
    one, two = runs / "one" / case, runs / "two" / case
    rows_one, rows_two = read_metrics(one / "metrics.jsonl"), read_metrics(two / "metrics.jsonl")
    assert len(rows_one) == len(rows_two) == 5  # evaluation before, 3 steps (one with evaluation), after
    for a, b in zip(rows_one, rows_two):
        keys = {k for k in a if not k.startswith(TIMING)}
        assert keys == {k for k in b if not k.startswith(TIMING)}
        wrong = {k: (a[k], b[k]) for k in keys if not close(a[k], b[k], k)}
        assert not wrong, f"step {a['step']}: {wrong}"
    wa, wb = (load_file(r / "final" / "model.safetensors") for r in (one, two))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=1e-4)
    assert json.loads((two / "final" / "config.json").read_text())["architectures"] == ["Qwen2ForCausalLM"]
    assert any(r.get("grad_norm", 0) > 0 for r in rows_one)
    assert (two / "checkpoints" / "step-000003" / "sharded" / ".metadata").is_file()  # DCP shards, no model folder
    assert not (two / "checkpoints" / "step-000003" / "model").exists()


def test_cases_exercise_what_they_claim(runs):
    steps = [r for r in read_metrics(runs / "two" / "mixture" / "metrics.jsonl") if "reward" in r]
    assert any(r["dynamic_sampling/rounds"] > 1 for r in steps)
    assert any(r["dynamic_sampling/kept_fraction"] * r["dynamic_sampling/rounds"] < 1 for r in steps)  # partial
    replay = [r for r in read_metrics(runs / "two" / "exgrpo" / "metrics.jsonl") if "reward" in r]
    assert replay[0]["exgrpo/replayed_questions"] == 0 < replay[-1]["exgrpo/replayed_questions"]
    assert replay[-1]["exgrpo/replay_frac"] > 0


def test_kill_and_resume_equals_uninterrupted(runs):
    """Both ranks die by SIGKILL in step 4 (after the step-2 checkpoint); the resumed run redoes steps 3 and 4."""
    out = runs / "killed"
    died = run(torchrun(str(out), "resume"), runs, RLVR_DIE_AT="4")
    assert died.returncode != 0
    assert (out / "resume" / "checkpoints" / "latest").read_text().strip() == "step-000002"
    resumed = run(torchrun(str(out), "--resume", "resume"), runs)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    want = load_file(runs / "two" / "resume" / "final" / "model.safetensors")
    got = load_file(out / "resume" / "final" / "model.safetensors")
    start = load_file(runs / "two" / "grpo" / "final" / "model.safetensors")
    assert any(not torch.equal(want[k], start[k]) for k in want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-6)


def test_sharded_checkpoint_resumes_in_one_process_refused(runs, tmp_path):
    """A sharded checkpoint read back without torchrun: one line naming the strategy to use."""
    from rlvr import trainer

    folder = runs / "two" / "resume" / "checkpoints" / "step-000004"
    cfg = load_config(None, ["model.config=qwen2-micro", f"output_dir={tmp_path}"])
    from rlvr.run import setup

    run_ = setup(cfg)
    with pytest.raises(ConfigError, match="written with distributed.strategy fsdp") as err:
        trainer.restore(run_, folder)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("overrides,match", [
    (["model.config=qwen2.5-vl-micro"], "not a causal LM with decoder layers"),
    (["model.lora={r: 4}"], "LoRA"),
    (["rollout.max_staleness=1"], "copy of the policy"),
])
def test_what_fsdp_cannot_shard_is_refused_in_one_line(monkeypatch, overrides, match):
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = load_config(None, ["model.config=qwen2-micro", "distributed.strategy=fsdp", *overrides])
    with pytest.raises(ConfigError, match=match) as err:
        validate(cfg)
    assert "\n" not in str(err.value) and "distributed.strategy" in str(err.value)


def test_replicas_that_cannot_fit_are_refused_before_training(monkeypatch):
    """Each local rank adds 3x its weights (gradients, AdamW moments); when that exceeds the memory available, the
    replica run is refused in one line pointing at strategy fsdp."""
    from rlvr import scale
    from rlvr.policies import HFCausalLM

    policy = HFCausalLM.load(config="qwen2-micro", seed=0)
    need = 3 * sum(p.numel() * p.element_size() for p in policy.parameters())
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(scale, "available_memory", lambda: 2 * need)
    assert scale.replica_shortfall(policy, torch.device("cpu")) is None
    monkeypatch.setattr(scale, "available_memory", lambda: 2 * need - 1)
    short = scale.replica_shortfall(policy, torch.device("cpu"))
    assert short is not None and "2 local rank(s)" in short and "\n" not in short
    cfg = load_config(None, ["model.config=qwen2-micro"])
    with pytest.raises(ConfigError, match="distributed.strategy replicate: .*distributed.strategy: fsdp"):
        scale.prepare_policy(cfg, policy, World(rank=0, size=2), torch.device("cpu"))
