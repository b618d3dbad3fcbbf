"""Ray rollout workers vs sampling in the trainer's process: seconds per step on this machine.

    python benchmarks/ray_rollouts.py            # JSON on stdout (docs/bench/ray_rollouts.json keeps a run)

A rollout-heavy setting (random-weight qwen2-tiny, 64 completions of 48 tokens per step, a dense reward, 10 steps):
one process with 2 torch threads vs `distributed: {backend: ray, rollout_workers: 2, worker_threads: 1}` (a local
Ray), each run twice in alternation; the median of steps 3-10 of the step, its rollout and its update. The Ray step
also holds the weight sync to the workers. Run it alone on the machine.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys

import torch

from rlvr.config import load_config
from rlvr.metrics import read_metrics
from rlvr.trainer import train

ARMS = {"one_process_2_threads": [], "ray_2_workers_1_thread": ["distributed.backend=ray",
                                                                "distributed.rollout_workers=2"]}


def alternate(arms: dict[str, list[str]], common: list[str], keys: tuple[str, ...]) -> dict:
    """Each arm (config overrides on top of `common`) trained twice in alternation; per run the median of steps 3 on
    of each `time/<key>`."""
    out = {}
    for rep in (1, 2):
        for name, over in arms.items():
            cfg = load_config(None, [*common, f"name={name}", *over])
            with contextlib.redirect_stdout(sys.stderr):
                train(cfg, overwrite=True)
            rows = [r for r in read_metrics(cfg.run_dir / "metrics.jsonl") if "reward" in r][2:]
            out[f"{name}_run{rep}"] = {k: statistics.median(r[f"time/{k}"] for r in rows) for k in keys}
    return out


def main() -> int:
    torch.set_num_threads(2)
    common = ["model.config=qwen2-tiny", "task.name=arithmetic", "output_dir=/tmp/rlvr_bench_ray",
              "rollout.prompts_per_step=8", "rollout.group_size=8", "rollout.max_new_tokens=48", "train.steps=10",
              "train.eval_every=0", "task.eval_size=0", "train.progress=false", "optim.lr=1e-4",
              "rewards=[{name: python, kwargs: {function: tests/gpu/digit_reward.py:digit_fraction}}]"]
    print(json.dumps(alternate(ARMS, common, ("step", "rollout", "update")), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
