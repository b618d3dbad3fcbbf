"""Quickstart lift over seeds: warm start (SFT) then GRPO, held-out greedy accuracy before and after RL.

    python benchmarks/quickstart.py --seeds 0 1 2        # prints one JSON object; ~3-4 min per seed on 2 cores

Each seed runs exactly what `make demo` runs (recipes/quickstart.yaml) with `seed=<s>` and its own run names.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time

import torch
from machine import cpu_model

from rlvr.config import load_config
from rlvr.trainer import train
from rlvr.warm_start import sft


def one_seed(seed: int, recipe: str, output_dir: str) -> dict:
    name = f"bench-quickstart-s{seed}"
    sft_out = f"{output_dir}/{name}-sft/model"
    cfg = load_config(recipe, [f"seed={seed}", f"name={name}", f"output_dir={output_dir}", f"model.path={sft_out}",
                               f"sft.output={sft_out}", "train.progress=false"])
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # progress lines to stderr; stdout holds only the JSON
        warm = sft(cfg)
        t1 = time.perf_counter()
        summary = train(cfg, overwrite=True)
    t2 = time.perf_counter()
    before = summary["eval_before"]["eval/accuracy"]
    after = summary["eval_after"]["eval/accuracy"]
    return {"seed": seed, "sft_steps": warm["history"][-1][0], "before_rl": before, "after_rl": after,
            "lift": after - before, "sft_seconds": t1 - t0, "rl_seconds": t2 - t1, "total_seconds": t2 - t0}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--recipe", default="recipes/quickstart.yaml")
    p.add_argument("--output-dir", default="runs")
    args = p.parse_args()
    rows = [one_seed(s, args.recipe, args.output_dir) for s in args.seeds]
    lifts = [r["lift"] for r in rows]
    print(json.dumps({
        "benchmark": "quickstart", "recipe": args.recipe, "runs": rows,
        "mean_before_rl": statistics.mean(r["before_rl"] for r in rows),
        "mean_after_rl": statistics.mean(r["after_rl"] for r in rows),
        "mean_lift": statistics.mean(lifts), "min_lift": min(lifts),
        "max_total_seconds": max(r["total_seconds"] for r in rows),
        "machine": {"cpu": cpu_model(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__},
    }, indent=1))


if __name__ == "__main__":
    main()
