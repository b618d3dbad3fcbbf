"""Recipes head to head (issue 3): GRPO, ExGRPO (and its replay-only ablation), DIVER-TD and DIVER-ED from the same
warm start, equal budgets.

    python benchmarks/recipes.py                      # 3 seeds x 5 recipes; prints JSON, writes docs/results/
    python benchmarks/recipes.py --recipes grpo,exgrpo_replay_only   # a subset
    python benchmarks/recipes.py --quick              # a smoke run of a few steps (checks the script, not claims)

1. Per seed: one supervised warm start of the tiny Qwen2 (character tokenizer) on a mixture of gym tasks
   (`TASKS` below), stopped at `--sft-target` held-out accuracy, shared by all recipes of that seed.
2. Each recipe trains from that warm start with the same number of *generated* completions (`--budget`);
   replayed rows (ExGRPO, exgrpo_replay_only) are not generated, so those run until they have generated as
   many as the others.
3. Every `--eval-every` steps: held-out greedy accuracy and pass@k per task (mean over tasks), and the group
   diversity metrics of the training batch (distinct-n, self-BLEU); plotted against completions generated.
4. Output: one JSON object on stdout (per recipe: mean and per-seed final metrics), `docs/results/recipes.json`
   with every curve, and `docs/results/recipes_*.png`.
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

TASKS = ("[{name: arithmetic, key: add, kwargs: {digits: 1, ops: '+'}, eval_size: 96},"
         " {name: string_reverse, key: rev, kwargs: {difficulty: 1}, eval_size: 96},"
         " {name: sorting, key: sort, kwargs: {difficulty: 1}, eval_size: 96}]")
RECIPES = {"grpo": "recipes/grpo.yaml", "exgrpo": "recipes/exgrpo.yaml",
           "exgrpo_replay_only": "recipes/exgrpo_replay_only.yaml", "diver_td": "recipes/diver_td.yaml",
           "diver_ed": "recipes/diver_ed.yaml"}


def recipe_list(text: str) -> list[str]:
    """argparse type of --recipes: 'a,b' -> ['a', 'b'], each a key of RECIPES."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in RECIPES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown recipe(s) {unknown or text!r}; choose from {','.join(RECIPES)}")
    return names


def common(args, seed: int, out: Path) -> list[str]:
    return [f"seed={seed}", f"output_dir={out}", f"tasks={TASKS}", "model.path=" + str(out / f"warm-s{seed}"),
            f"sft.output={out / f'warm-s{seed}'}", "sft.init=qwen2-tiny", f"sft.target_accuracy={args.sft_target}",
            f"sft.steps={args.sft_steps}", "rollout.max_new_tokens=8", f"train.eval_every={args.eval_every}",
            f"train.eval_pass_k={args.k}", "train.progress=false", "train.save_every=0", "train.threads=2",
            "train.diversity_unit=char"]


def run_recipe(args, name: str, seed: int, out: Path) -> list[dict]:
    steps = args.budget // (16 * 8)  # quickstart batches: 16 prompts x 8 completions
    cfg = load_config(RECIPES[name], common(args, seed, out) + [f"name={name}-s{seed}", f"train.steps={steps}"])
    if cfg.algo.aggregation == "seq_mean_token_sum_norm":  # ExGRPO's constant length: this benchmark's maximum
        cfg.algo.aggregation_kwargs["C"] = cfg.rollout.max_new_tokens
    if cfg.buffer.name != "none":  # replayed rows are not generated: a few more steps reach the same budget
        cfg.train.steps = int(steps * 1.1) + 1  # G - 1 fresh rows per replayed question
    train(cfg, overwrite=True)
    rows, generated = [], 0.0
    for r in read_metrics(cfg.run_dir / "metrics.jsonl"):
        generated += r.get("rollouts/generated", 0.0)
        if generated > args.budget:
            break
        if "eval/accuracy" in r or "diversity/self_bleu" in r:
            kept = {k: v for k, v in r.items() if k.startswith(("eval/", "diversity/"))}
            rows.append({"generated": generated, **kept})
    return rows


def final(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return vals[-1] if vals else None


def seed_stats(values: list) -> dict:
    got = [v for v in values if v is not None]
    return {"per_seed": values, "mean": statistics.mean(got) if got else None}


def plot(results: dict, out: Path, keys: list[str], *, prefix: str = "recipes", x: str = "generated",
         xlabel: str = "completions generated") -> None:
    """One PNG per key, out/<prefix>_<key>.png: every run's curve against `x`, one colour per recipe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for key in keys:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for name, seeds in results.items():
            for i, rows in enumerate(seeds):
                pts = [(r[x], r[key]) for r in rows if r.get(key) is not None]
                if pts:
                    xs, ys = zip(*pts)
                    ax.plot(xs, ys, color=f"C{list(results).index(name)}", alpha=0.8, label=name if i == 0 else None)
        ax.set_xlabel(xlabel)
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"{prefix}_{key.replace('/', '_').replace('@', 'at')}.png", dpi=100)
        plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--recipes", type=recipe_list, default=list(RECIPES), help="comma-separated subset of "
                   + ",".join(RECIPES))
    p.add_argument("--budget", type=int, default=128 * 200, help="completions generated per run")
    p.add_argument("--sft-target", type=float, default=0.3)
    p.add_argument("--sft-steps", type=int, default=1500)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--out", default="runs/recipes-bench")
    p.add_argument("--docs", default="docs/results")
    p.add_argument("--quick", action="store_true", help="a few steps per run: checks that the script works")
    args = p.parse_args()
    if args.quick:
        args.budget, args.sft_steps, args.eval_every, args.k, args.seeds = 128 * 2, 2, 1, 2, args.seeds[:1]
    torch.set_num_threads(2)
    out, docs = Path(args.out), Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    t0, results = time.perf_counter(), {n: [] for n in args.recipes}
    with contextlib.redirect_stdout(sys.stderr):
        for seed in args.seeds:
            sft(load_config(RECIPES["grpo"], common(args, seed, out) + [f"name=warm-s{seed}"]))
            for name in args.recipes:
                results[name].append(run_recipe(args, name, seed, out))
    keys = ["eval/accuracy", f"eval/pass@{args.k}", "diversity/self_bleu", "diversity/distinct_2"]
    summary = {name: {key: seed_stats([final(rows, key) for rows in seeds]) for key in keys}
               for name, seeds in results.items()}
    (docs / "recipes.json").write_text(json.dumps({"args": vars(args), "curves": results}, indent=1))
    plot(results, docs, keys)
    print(json.dumps({"benchmark": "recipes", "quick": args.quick, "budget": args.budget, "seeds": args.seeds,
                      "summary": summary, "seconds": time.perf_counter() - t0,
                      "machine": {"cpu": cpu_model(), "threads": torch.get_num_threads()}}, indent=1))


if __name__ == "__main__":
    main()
