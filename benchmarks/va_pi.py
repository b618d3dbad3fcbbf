"""VA-π's learning check (arXiv 2512.19680): does RL with a pixel reward under teacher forcing improve an AR image
generator over the same steps of plain cross-entropy fine-tuning?

    python benchmarks/va_pi.py                          # 3 seeds; JSON on stdout and docs/results/va_pi.json
    python benchmarks/va_pi.py --seeds 0 --steps 50     # fewer seeds / steps
    python benchmarks/va_pi.py --quick                  # a smoke run (checks the script, not claims)

1. Per seed, one `rlvr train recipes/va_pi.yaml` run (loop va_pi) trains the VQ tokenizer, the metric classifier and
   the starting AR model (next-code CE for policy.pretrain_steps: deliberately short, so the generator is imperfect)
   and then VA-π for --steps. The other arms start from that run's tokenizer and starting model (vq.path,
   policy.path): `va_pi_noise` (token noise p = 0.5 in the context, as the T2I script), `ce` (plain next-code CE on
   the same batches, same optimizer and steps) and `va_pi_no_ce` (λ_CE = 0: the pixel reward alone, an ablation).
2. Reported per arm and seed, before and after: teacher-forced greedy reconstruction MSE on held-out images (VA-π's
   target; [0, 1] pixels, beside the tokenizer's own floor eval/vq_mse), the held-out CE of the ground-truth codes,
   and free-running samples (64 per class) scored by the classifier: class accuracy, feature-FID, precision, recall.
   The classifier's held-out accuracy is reported with them.
3. Output: one JSON object on stdout, docs/results/va_pi.json with every number, and each arm's last sample grid
   copied beside it (docs/results/va_pi_<arm>_seed<k>.png).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch
from machine import cpu_model

from rlvr.config import from_dict, raw_config
from rlvr.images.va_pi_train import RunConfig, train
from rlvr.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("eval/recon_mse", "eval/ce", "eval/class_accuracy", "eval/fid", "eval/precision", "eval/recall")


def arm_overrides(arm: str, first: Path | None) -> dict:
    shared = {} if first is None else {"vq.path": str(first / "vq"), "policy.path": str(first / "init")}
    return {"va_pi": {}, "va_pi_noise": {"algo.token_noise": 0.5}, "ce": {"algo.mode": "ce"},
            "va_pi_no_ce": {"algo.lambda_ce": 0.0}}[arm] | shared


def run_arm(arm: str, seed: int, args, out: Path, first: Path | None) -> dict:
    over = {"name": f"{arm}_seed{seed}", "output_dir": str(out), "seed": seed, "train.steps": args.steps,
            "train.eval_every": args.eval_every, "train.save_every": 0,
            "train.samples_per_class": args.samples_per_class, "policy.pretrain_steps": args.pretrain_steps,
            **({"data.train_size": args.train_size} if args.train_size else {}),
            "optim.lr": args.lr, **arm_overrides(arm, first)}
    if args.quick:
        over |= {"vq.steps": 50, "policy.pretrain_steps": 20, "train.classifier_steps": 50, "data.train_size": 200,
                 "train.samples_per_class": 8, "data.eval_size": 32}
    cfg = from_dict(RunConfig, raw_config(ROOT / "recipes" / "va_pi.yaml", over), "")
    t0 = time.perf_counter()
    summary = train(cfg, overwrite=True)
    rows = read_metrics(cfg.run_dir / "metrics.jsonl")
    curve = [{"step": r["step"], **{k: r[k] for k in KEYS if k in r}} for r in rows if "eval/fid" in r]
    rewards = [r["reward"] for r in rows if "reward" in r]
    return {"seconds": time.perf_counter() - t0, "classifier_accuracy": summary["classifier_accuracy"],
            "vq_mse": summary["eval_before"]["eval/vq_mse"], "before": {k: summary["eval_before"][k] for k in KEYS},
            "after": {k: summary["eval_after"][k] for k in KEYS}, "curve": curve,
            "train_reward_first10": statistics.mean(rewards[:10]) if rewards else None,
            "train_reward_last10": statistics.mean(rewards[-10:]) if rewards else None}


def summarise(results: dict) -> dict:
    """Per arm: the mean over seeds of before, after and after − before for each key."""
    table = {}
    for arm, seeds in results.items():
        runs = list(seeds.values())
        table[arm] = {k: {"before": statistics.mean(r["before"][k] for r in runs),
                          "after": statistics.mean(r["after"][k] for r in runs),
                          "per_seed_after": [r["after"][k] for r in runs]} for k in KEYS}
    return table


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--pretrain-steps", type=int, default=300, help="next-code CE steps of the starting generator")
    p.add_argument("--train-size", type=int, default=None, help="training images (default: the recipe's 2000)")
    p.add_argument("--samples-per-class", type=int, default=64, help="free-running samples per class per evaluation")
    p.add_argument("--arms", nargs="+", default=["va_pi", "va_pi_noise", "ce", "va_pi_no_ce"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "va_pi.json"))
    p.add_argument("--runs", default="/tmp/rlvr_bench_va_pi")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.steps, args.eval_every, args.out = 4, 2, "/tmp/rlvr_bench_va_pi_quick.json"
    torch.set_num_threads(args.threads)
    runs, t0 = Path(args.runs), time.perf_counter()
    results: dict = {arm: {} for arm in args.arms}
    for seed in args.seeds:
        first = None
        for arm in args.arms:
            results[arm][seed] = run_arm(arm, seed, args, runs, first)
            first = first or runs / f"{arm}_seed{seed}"
            if not args.quick:
                grid = sorted((runs / f"{arm}_seed{seed}" / "samples").glob("step-*.png"))[-1]
                out = Path(args.out)
                shutil.copy(grid, out.with_name(f"{out.stem}_{arm}_seed{seed}.png"))
            print(f"{arm} seed {seed}: {json.dumps(results[arm][seed]['after'])}", file=sys.stderr)
    report = {"benchmark": "va_pi", "machine": cpu_model(), "torch_threads": args.threads, "steps": args.steps,
              "lr": args.lr, "seeds": args.seeds, "pretrain_steps": args.pretrain_steps,
              "train_size": args.train_size,
              "samples_per_class": args.samples_per_class, "seconds": time.perf_counter() - t0,
              "summary": summarise(results), "runs": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
