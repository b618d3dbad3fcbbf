"""Tool-use learning check (multi-turn environments): GRPO through the calculator raises accuracy on 3-digit
multiplication, which the same tiny model cannot do alone.

    python benchmarks/tool_use.py --seeds 0 1 2          # prints one JSON object; docs/results/tool_use*.{json,png}
    python benchmarks/tool_use.py --quick                # a few steps: checks that the script works

Per seed, two arms from the same random qwen2-tiny (character tokenizer), the same SFT and RL budgets:
1. `tool`: recipes/tool_use.yaml. SFT on scripted trajectories (call, the calculator's reply (not trained on),
   answer) stopped at `--sft-target` held-out accuracy, then GRPO through the calculator environment.
2. `alone`: the same recipe without the environment: SFT on the plain answers of the same problems (the `arithmetic`
   task, 3 digits, '*'), stopped at the same target or the same step cap, then GRPO.
Accuracy is greedy exact match on 256 held-out problems (task seed + 1,000,003), evaluated through each arm's own
sampler (the tool arm inside the environment) every `--eval-every` RL steps.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from machine import cpu_model

from rlvr.config import load_config
from rlvr.metrics import read_metrics
from rlvr.trainer import train
from rlvr.warm_start import sft

RECIPE = "recipes/tool_use.yaml"
ALONE = ["task.name=arithmetic", "task.kwargs={digits: 3, ops: '*'}", "env.name=none"]
ARMS = {"tool": [], "alone": ALONE}


def one_run(args, arm: str, seed: int, out: Path) -> dict:
    name = f"{arm}-s{seed}"
    warm = out / f"{name}-sft" / "model"
    cfg = load_config(RECIPE, ARMS[arm] + [
        f"seed={seed}", f"name={name}", f"output_dir={out}", f"model.path={warm}", f"sft.output={warm}",
        f"sft.steps={args.sft_steps}", f"sft.target_accuracy={args.sft_target}", f"train.steps={args.steps}",
        f"train.eval_every={args.eval_every}", "train.save_every=0", "train.progress=false"])
    t0 = time.perf_counter()
    warm_start = sft(cfg)
    t1 = time.perf_counter()
    summary = train(cfg, overwrite=True)
    rows = read_metrics(cfg.run_dir / "metrics.jsonl")
    curve = [{"step": r["step"], "accuracy": r["eval/accuracy"]} for r in rows if "eval/accuracy" in r]
    train_rows = [r for r in rows if "reward" in r]
    return {"seed": seed, "sft_steps": warm_start["history"][-1][0], "sft_accuracy": warm_start["history"][-1][1],
            "before_rl": summary["eval_before"]["eval/accuracy"], "after_rl": summary["eval_after"]["eval/accuracy"],
            "lift": summary["eval_after"]["eval/accuracy"] - summary["eval_before"]["eval/accuracy"],
            "curve": curve, "reward_first_25": statistics.mean(r["reward"] for r in train_rows[:25]),
            "reward_last_25": statistics.mean(r["reward"] for r in train_rows[-25:]),
            "turns_last_25": statistics.mean(r.get("env/turns", 1.0) for r in train_rows[-25:]),
            "sft_seconds": t1 - t0, "rl_seconds": time.perf_counter() - t1}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for i, (arm, runs) in enumerate(results.items()):
        for j, r in enumerate(runs):
            ax.plot([p["step"] for p in r["curve"]], [p["accuracy"] for p in r["curve"]], color=f"C{i}", alpha=0.8,
                    label=arm if j == 0 else None)
    ax.set_xlabel("RL step (16 prompts x 8 completions)")
    ax.set_ylabel("held-out greedy accuracy")
    ax.set_title("3-digit multiplication: with the calculator vs alone")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--steps", type=int, default=300, help="GRPO steps per run")
    p.add_argument("--sft-steps", type=int, default=1500, help="SFT step cap")
    p.add_argument("--sft-target", type=float, default=0.3)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--out", default="runs/tool-use-bench")
    p.add_argument("--docs", default="docs/results")
    p.add_argument("--quick", action="store_true", help="a few steps per run: checks that the script works")
    args = p.parse_args()
    if args.quick:
        args.steps, args.sft_steps, args.eval_every, args.seeds = 2, 2, 1, args.seeds[:1]
    torch.set_num_threads(2)
    out, docs = Path(args.out), Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    t0, results = time.perf_counter(), {arm: [] for arm in args.arms}
    with contextlib.redirect_stdout(sys.stderr):  # progress to stderr; stdout holds only the JSON
        for seed in args.seeds:
            for arm in args.arms:
                results[arm].append(one_run(args, arm, seed, out))
    summary = {arm: {k: statistics.mean(r[k] for r in runs) for k in ("before_rl", "after_rl", "lift")}
               for arm, runs in results.items()}
    report = {"benchmark": "tool_use", "quick": args.quick, "args": vars(args), "summary": summary,
              "runs": results, "seconds": time.perf_counter() - t0,
              "machine": {"cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__}}
    if not args.quick:
        (docs / "tool_use.json").write_text(json.dumps(report, indent=1))
        plot(results, docs / "tool_use_accuracy.png")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
