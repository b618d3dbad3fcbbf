"""DIVER's learning check (docs/methods.md §3.9): GRPO, DIVER-TD and DIVER-ED on countdown-lite from one warm start.

    python benchmarks/diver.py                        # 3 seeds x 3 recipes x 400 steps; JSON on stdout, docs/results/
    python benchmarks/diver.py --seeds 0 --steps 100  # fewer seeds / steps
    python benchmarks/diver.py --quick                # a smoke run of a few steps (checks the script, not claims)
    python benchmarks/diver.py --recipes diver_td,diver_ed --diver-set rewards.1.kwargs.schedule=constant \
        --name diver_constant                        # DIVER's bonus kept on for all steps (an ablation)

1. Task `countdown_lite`: 3 numbers in 1-9 and a target in 10-40, answers such as `$3 * 4 - 2 = 10$`. Most prompts
   have several correct answers, and every answer is one `$...$` equation, so DIVER-ED's equational diversity fires.
2. Per seed: a supervised warm start of qwen2-micro (2 layers, d = 64: the check's policy; random init, character
   tokenizer) on the task's references (batch 64, lr 3e-3), stopped once held-out greedy accuracy reaches
   `--sft-target` (0.45, about 800 steps; sampled pass@1 is then about 0.3, so groups are mixed and sometimes all
   correct, which DIVER-TD's gate needs).
3. From that warm start recipes/grpo.yaml, diver_td.yaml and diver_ed.yaml train with equal budgets: G = 8,
   16 prompts per step, `--steps` steps, clip 0.2 / 0.28 for all three (DIVER's eps_high). DIVER's bonus is on
   for steps < 100 (the recipes' t_cut, as the reference code), so afterwards DIVER trains exactly as GRPO.
4. Every `--eval-every` steps (each run is trained in segments and resumed; resume equals an uninterrupted run):
   `--n` samples on each of `--eval-prompts` held-out prompts (holdout split): pass@1, pass@k for k in 8, 16, 32,
   distinct correct answers per prompt, length (`rlvr.evaluate.evaluate_sampled`, one sampling seed per seed).
   From metrics.jsonl: mean pairwise BLEU of the training groups (`diversity/self_bleu`, characters), token
   entropy, the fraction of groups with a non-zero advantage (1 - `frac_reward_zero_std` of the shaped reward),
   completion length, training accuracy and DIVER's bonus, averaged over the bonus phase and the last 100 steps.
5. Output: one JSON object on stdout (per recipe: per-seed and mean metrics), `docs/results/diver.json` with every
   curve, and `docs/results/diver_*.png`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch
from machine import cpu_model

from recipes import plot, seed_stats
from rlvr.config import load_config
from rlvr.evaluate import evaluate_sampled, text_sampler
from rlvr.metrics import read_metrics
from rlvr.policies import HFCausalLM
from rlvr.run import build_task
from rlvr.trainer import train
from rlvr.warm_start import sft

RECIPES = {"grpo": "recipes/grpo.yaml", "diver_td": "recipes/diver_td.yaml", "diver_ed": "recipes/diver_ed.yaml"}
T_CUT = 100  # the DIVER recipes' t_cut: the bonus phase is steps [0, 100)
TRAIN_KEYS = ("rewards/task/mean", "rewards/diversity/mean", "diversity/self_bleu", "entropy", "nonzero_adv_frac",
              "completions/mean_length")  # rewards/diversity/mean: DIVER's bonus before lambda (absent for GRPO)
MAX_NEW_TOKENS = 20  # every answer (`$9 * 4 - 1 = 35$`) is 16 characters + EOS; the slack shows length drift


def common(args, seed: int, out: Path) -> list[str]:
    warm = out / f"warm-s{seed}"
    return [f"seed={seed}", f"output_dir={out}", "task.name=countdown_lite", "task.kwargs={}", "task.eval_size=128",
            f"model.path={warm}", f"sft.output={warm}", "sft.init=qwen2-micro", f"sft.steps={args.sft_steps}",
            f"sft.target_accuracy={args.sft_target}", f"sft.lr={args.sft_lr}", "sft.batch_size=64",
            "sft.eval_every=50", f"rollout.max_new_tokens={MAX_NEW_TOKENS}", "algo.loss_kwargs.clip_high=0.28",
            "algo.aggregation=token_mean",  # DIVER's base settings for all three, so only the diversity term differs
            f"optim.lr={args.lr}", "train.eval_every=0", "train.save_every=0", "train.progress=false",
            "train.threads=2", "train.diversity_unit=char"]


def held_out(args, cfg, model_dir: str) -> dict[str, float]:
    """n samples on each held-out prompt of the saved model (same sampling seed for every recipe and step)."""
    policy = HFCausalLM.load(path=model_dir, tokenizer=model_dir)
    ks = tuple(k for k in (1, 8, 16, 32) if k <= args.n)
    sampler = text_sampler(policy, max_new_tokens=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature)
    return evaluate_sampled(sampler, build_task(cfg, eval_split=True), size=args.eval_prompts, n=args.n, ks=ks,
                            seed=10_007 + cfg.seed)


def run_recipe(args, name: str, seed: int, out: Path, warm_eval: dict) -> dict[str, list[dict]]:
    """Train `name` from the warm start in segments of --eval-every steps, evaluating after each."""
    shutil.rmtree(out / f"{name}-s{seed}", ignore_errors=True)
    heldout, stops = [{"step": 0, **warm_eval}], list(range(args.eval_every, args.steps, args.eval_every))
    for i, stop in enumerate(stops + [args.steps]):
        extra = args.diver_set if name != "grpo" else []
        cfg = load_config(RECIPES[name], common(args, seed, out) + extra + [f"name={name}-s{seed}",
                                                                          f"train.steps={stop}"])
        summary = train(cfg, resume=i > 0)
        heldout.append({"step": stop, **held_out(args, cfg, summary["final_model"])})
    rows = [r for r in read_metrics(cfg.run_dir / "metrics.jsonl") if "reward" in r]
    train_rows = [{"step": r["step"], "nonzero_adv_frac": 1 - r["frac_reward_zero_std"],
                   **{k: r[k] for k in TRAIN_KEYS if k in r}} for r in rows]
    return {"heldout": heldout, "train": train_rows}


def window_mean(rows: list[dict], key: str, lo: int, hi: int) -> float | None:
    """Mean of `key` over the rows with lo < step <= hi (steps count from 1: step s trained on batch s - 1)."""
    vals = [r[key] for r in rows if lo < r["step"] <= hi and r.get(key) is not None]
    return statistics.mean(vals) if vals else None


def smoothed(rows: list[dict], keys: tuple[str, ...], width: int) -> list[dict]:
    """Means over consecutive windows of `width` steps, for readable training curves."""
    out = []
    for start in range(0, len(rows), width):
        chunk = rows[start : start + width]
        out.append({"step": chunk[-1]["step"], **{k: window_mean(chunk, k, -1, 1 << 30) for k in keys}})
    return out


def summarise(args, results: dict) -> dict:
    last = max(0, args.steps - 100)
    summary = {}
    for name, seeds in results.items():
        final = seeds[0]["heldout"][-1]
        s = {f"heldout/{k}": seed_stats([r["heldout"][-1][k] for r in seeds]) for k in final if k != "step"}
        for key in TRAIN_KEYS:
            s[f"train/{key}@bonus"] = seed_stats([window_mean(r["train"], key, 0, T_CUT) for r in seeds])
            s[f"train/{key}@last100"] = seed_stats([window_mean(r["train"], key, last, args.steps) for r in seeds])
        summary[name] = s
    return summary


def write_outputs(args, results: dict, warm: list, docs: Path) -> None:
    (docs / f"{args.name}.json").write_text(json.dumps({"args": vars(args), "warm_start": warm, "curves": results},
                                                indent=1))
    held = {n: [r["heldout"] for r in seeds] for n, seeds in results.items()}
    keys = [k for k in held[next(iter(held))][0][0] if k.startswith(("pass@", "distinct"))]
    plot(held, docs, keys, prefix=args.name, x="step", xlabel="RL step")
    width = max(1, args.steps // 40)
    curves = {n: [smoothed(r["train"], TRAIN_KEYS, width) for r in seeds] for n, seeds in results.items()}
    plot(curves, docs, list(TRAIN_KEYS), prefix=f"{args.name}_train", x="step", xlabel="RL step")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=400, help="RL steps per recipe (16 prompts x 8 completions each)")
    p.add_argument("--eval-every", type=int, default=50, help="held-out sampled evaluation every N steps")
    p.add_argument("--eval-prompts", type=int, default=128, help="held-out prompts per evaluation")
    p.add_argument("--n", type=int, default=32, help="samples per held-out prompt")
    p.add_argument("--lr", type=float, default=2e-4, help="RL learning rate")
    p.add_argument("--sft-target", type=float, default=0.45, help="stop the warm start at this greedy accuracy")
    p.add_argument("--sft-steps", type=int, default=1200, help="at most (greedy accuracy plateaus near 0.45-0.55)")
    p.add_argument("--sft-lr", type=float, default=3e-3)
    p.add_argument("--out", default="runs/diver-bench")
    p.add_argument("--docs", default="docs/results")
    p.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated subset of " + ", ".join(RECIPES))
    p.add_argument("--diver-set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for the DIVER recipes only, e.g. rewards.1.kwargs.schedule=constant")
    p.add_argument("--name", default="diver", help="output names: docs/results/<name>.json, <name>_*.png")
    p.add_argument("--quick", action="store_true", help="a few steps: checks that the script works")
    args = p.parse_args()
    if args.quick:
        args.steps, args.eval_every, args.eval_prompts, args.n, args.sft_steps = 4, 2, 8, 8, 50
        args.seeds = args.seeds[:1]
    args.recipes = args.recipes.split(",")
    if unknown := [r for r in args.recipes if r not in RECIPES]:
        p.error(f"--recipes: unknown {unknown}; choose from {list(RECIPES)}")
    if args.eval_every < 1 or args.steps < 1:
        p.error("--steps and --eval-every must be >= 1")
    torch.set_num_threads(2)
    out, docs = Path(args.out), Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    t0, results, warm = time.perf_counter(), {n: [] for n in args.recipes}, []
    with contextlib.redirect_stdout(sys.stderr):
        for seed in args.seeds:
            base = load_config(RECIPES["grpo"], common(args, seed, out) + [f"name=warm-s{seed}"])
            w = sft(base)
            warm_eval = held_out(args, base, w["model"])
            warm.append({"seed": seed, "history": w["history"], "seconds": w["seconds"], "heldout": warm_eval})
            for name in args.recipes:
                results[name].append(run_recipe(args, name, seed, out, warm_eval))
    write_outputs(args, results, warm, docs)
    warm_summary = [{"seed": w["seed"], "sft_steps": w["history"][-1][0], "greedy_accuracy": w["history"][-1][1],
                     "seconds": w["seconds"], "heldout": w["heldout"]} for w in warm]
    print(json.dumps({"benchmark": "diver", "quick": args.quick, "steps": args.steps, "seeds": args.seeds,
                      "warm_start": warm_summary, "summary": summarise(args, results),
                      "seconds": time.perf_counter() - t0,
                      "machine": {"cpu": cpu_model(), "threads": torch.get_num_threads()}}, indent=1))


if __name__ == "__main__":
    main()
