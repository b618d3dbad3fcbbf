"""Ray reward workers vs scoring in the trainer's process: seconds per step on this machine.

    python benchmarks/ray_rewards.py            # JSON on stdout (docs/bench/ray_rewards.json keeps a run)

A reward-heavy setting: random-weight qwen2-tiny, 64 completions of 16 tokens per step, a CPU-bound verifier of
about 3.6 ms per row (benchmarks/slow_reward.py), 8 steps. One process with 2 torch threads vs
`distributed: {backend: ray, rollout_workers: 0, reward_workers: 2}` (a local Ray; sampling stays in the trainer),
each run twice in alternation; the median of steps 3-8 of the step, its reward stage and its rollout. Run it alone
on the machine.
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

ARMS = {"one_process": [], "ray_2_reward_workers": ["distributed.backend=ray", "distributed.rollout_workers=0",
                                                    "distributed.reward_workers=2"]}


def main() -> int:
    torch.set_num_threads(2)
    out = {}
    for rep in (1, 2):
        for name, over in ARMS.items():
            cfg = load_config(None, [
                "model.config=qwen2-tiny", "task.name=arithmetic", "output_dir=/tmp/rlvr_bench_ray_rewards",
                f"name={name}", "rollout.prompts_per_step=8", "rollout.group_size=8", "rollout.max_new_tokens=16",
                "train.steps=8", "train.eval_every=0", "task.eval_size=0", "train.progress=false", "optim.lr=1e-4",
                "rewards=[{name: python, kwargs: {function: benchmarks/slow_reward.py:checked_digit_fraction}}]",
                *over])
            with contextlib.redirect_stdout(sys.stderr):
                train(cfg, overwrite=True)
            rows = [r for r in read_metrics(cfg.run_dir / "metrics.jsonl") if "reward" in r][2:]
            out[f"{name}_run{rep}"] = {k: statistics.median(r[f"time/{k}"] for r in rows)
                                       for k in ("step", "reward", "rollout", "update")}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
