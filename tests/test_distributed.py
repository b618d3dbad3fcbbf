"""Data parallelism: `torchrun --nproc_per_node 2` (gloo, CPU) makes the same update as one process with
the same global batch (global normalisers + gradient averaging), within float tolerance."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from rlvr.policies import load_policy

WORKER = Path(__file__).with_name("dp_worker.py")


def run(args, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    subprocess.run([sys.executable, *args], check=True, env=env, cwd=tmp_path, timeout=300)


def test_two_ranks_equal_one_process(tmp_path):
    run([str(WORKER), str(tmp_path / "one.pt")], tmp_path)
    run(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517", str(WORKER),
         str(tmp_path / "two.pt")], tmp_path)
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert abs(one["grad_norm"] - two["grad_norm"]) < 1e-5 * one["grad_norm"]
    init = load_policy(config="qwen2-micro", seed=0)[0].state_dict()
    for k, v in one["params"].items():
        delta_one, delta_two = v - init[k], two["params"][k] - init[k]
        torch.testing.assert_close(delta_two, delta_one, rtol=1e-4, atol=1e-7)
    assert one["grad_norm"] > 0 and any(not torch.equal(v, init[k]) for k, v in one["params"].items())
