"""Ray reward workers vs scoring in the trainer's process: seconds per step on this machine.

    python benchmarks/ray_rewards.py            # JSON on stdout (docs/bench/ray_rewards.json keeps a run)

A reward-heavy setting: random-weight qwen2-tiny, 64 completions of 16 tokens per step, a CPU-bound verifier of
about 3.6 ms per row (benchmarks/slow_reward.py), 8 steps. One process with 2 torch threads vs
`distributed: {backend: ray, rollout_workers: 0, reward_workers: 2}` (a local Ray; sampling stays in the trainer),
each run twice in alternation; the median of steps 3-8 of the step, its reward stage and its rollout. Run it alone
on the machine.
"""

from __future__ import annotations

import json
import sys

import torch
from ray_rollouts import alternate

ARMS = {"one_process": [], "ray_2_reward_workers": ["distributed.backend=ray", "distributed.rollout_workers=0",
                                                    "distributed.reward_workers=2"]}


def main() -> int:
    torch.set_num_threads(2)
    common = ["model.config=qwen2-tiny", "task.name=arithmetic", "output_dir=/tmp/rlvr_bench_ray_rewards",
              "rollout.prompts_per_step=8", "rollout.group_size=8", "rollout.max_new_tokens=16", "train.steps=8",
              "train.eval_every=0", "task.eval_size=0", "train.progress=false", "optim.lr=1e-4",
              "rewards=[{name: python, kwargs: {function: benchmarks/slow_reward.py:checked_digit_fraction}}]"]
    print(json.dumps(alternate(ARMS, common, ("step", "reward", "rollout", "update")), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
