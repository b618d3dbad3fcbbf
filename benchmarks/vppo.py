"""VPPO's learning check (arXiv 2510.09285): DAPO vs VPPO, TGF only and TAS only, from one warm-started tiny VLM.

    python benchmarks/vppo.py                       # 3 seeds x 4 variants; JSON on stdout, docs/results/vppo.json
    python benchmarks/vppo.py --seeds 0 --steps 20  # fewer seeds / steps
    python benchmarks/vppo.py --quick               # a smoke run of a few steps (checks the script, not claims)

1. Policy: qwen2.5-vl-tiny (a 4-layer Qwen2.5-VL text model, d = 128, with a 2-block vision tower; random init, the
   character tokenizer with the vision tokens), warm-started once (seed 0) on the references of the six visual tasks
   (recipes/vl_dapo.yaml's sft section) until held-out greedy accuracy reaches --sft-target.
2. From that warm start, four variants train with the same seeds, prompts and generated budget per step
   (16 prompts x G = 8; dynamic sampling may draw more rounds, so the x axis is the rollouts generated):
   dapo (recipes/vl_dapo.yaml), vppo (recipes/vppo.yaml: TGF top 40% + TAS beta_min 0.9), tgf_only, tas_only.
3. Held-out greedy accuracy (32 held-out items per task, 192 in all, the trainer's periodic evaluation) every
   --eval-every steps, against the rollouts generated so far; per task at the end.
4. Before RL, on the warm start: the mean visual dependency of the answer tokens (after "answer: "), of the evidence
   tokens (the image description before it) and of the fixed template (". answer: ") over held-out references, and
   the share of answer tokens the top-40% mask keeps (the paper's premise: few tokens depend on the image).
5. Output: one JSON object on stdout, docs/results/vppo.json with every curve, docs/results/vppo_*.png.
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
from rlvr.algos.vppo import top_k_mask, visual_dependency
from rlvr.config import load_config
from rlvr.metrics import read_metrics
from rlvr.policies import load_policy_of
from rlvr.run import build_task
from rlvr.trainer import train
from rlvr.warm_start import sft, sft_batch

VARIANTS = {
    "dapo": ("recipes/vl_dapo.yaml", []),
    "vppo": ("recipes/vppo.yaml", []),
    "tgf_only": ("recipes/vppo.yaml", ["algo.advantage_shaping=none", "algo.advantage_shaping_kwargs={}"]),
    "tas_only": ("recipes/vppo.yaml", ["algo.token_weights=none", "algo.token_weights_kwargs={}"]),
}


def common(args, out: Path) -> list[str]:
    warm = out / "warm"
    return [f"output_dir={out}", f"model.path={warm}", f"sft.output={warm}", f"sft.steps={args.sft_steps}",
            f"sft.target_accuracy={args.sft_target}", f"optim.lr={args.lr}", f"train.eval_every={args.eval_every}",
            "train.save_every=0", "train.progress=false", "train.threads=2",
            "rollout.top_p=1.0"]  # as the published runs (docs/results/vppo*.json) sampled; the recipe: 0.99


def token_types(policy, cfg, n: int) -> dict[str, float]:
    """Mean visual dependency of answer, evidence and template tokens of held-out references (module docstring 4)."""
    task = build_task(cfg, eval_split=True)
    samples = [task[i] for i in range(n)]
    batch = sft_batch(policy, samples, [task.reference_turns(s) for s in samples])
    aug = policy.corrupt(batch, torch.arange(len(batch)), p=0.5)
    with torch.no_grad():
        dep = visual_dependency(policy.logp(batch)[0], policy.logp(aug)[0], batch.loss_mask)  # (N, T)
    kinds = torch.zeros_like(dep, dtype=torch.long)  # 0 evidence, 1 template, 2 answer, 3 EOS / padding
    for i, text in enumerate(batch.texts):
        cut = text.rfind(". answer: ")
        kinds[i, cut : cut + len(". answer: ")] = 1
        kinds[i, cut + len(". answer: ") : len(text)] = 2
        kinds[i, len(text) :] = 3
    keep = top_k_mask(dep, batch.loss_mask * (kinds < 3), k=0.4)
    out = {name: float(dep[kinds == k].mean()) for k, name in enumerate(("evidence", "template", "answer"))}
    out["answer_kept_by_top40"] = float(keep[kinds == 2].mean())
    out["template_kept_by_top40"] = float(keep[kinds == 1].mean())
    return out


def run_variant(args, name: str, seed: int, out: Path) -> dict:
    recipe, extra = VARIANTS[name]
    run_name = f"{name}-s{seed}"
    shutil.rmtree(out / run_name, ignore_errors=True)
    cfg = load_config(recipe, common(args, out) + extra + [f"seed={seed}", f"name={run_name}",
                                                           f"train.steps={args.steps}"])
    t0 = time.perf_counter()
    train(cfg)
    rows = read_metrics(cfg.run_dir / "metrics.jsonl")
    generated, curve, train_rows = 0.0, [], []
    for r in rows:
        generated += r.get("rollouts/generated", 0.0)
        if "reward" in r:
            train_rows.append({k: r.get(k) for k in ("step", "reward", "entropy", "token_weights/mean",
                                                     "vppo/dependency_mean", "vppo/alpha_max", "grad_norm")})
        if "eval/accuracy" in r:
            point = {"step": r["step"], "rollouts": generated, "accuracy": r["eval/accuracy"]}
            point.update({k[5:]: v for k, v in r.items() if k.endswith("/accuracy") and k != "eval/accuracy"})
            if curve and curve[-1]["step"] == r["step"]:
                curve[-1] = point  # the run's final evaluation of its last step
            else:
                curve.append(point)
    return {"heldout": curve, "train": train_rows, "seconds": time.perf_counter() - t0}


def at_budget(curve: list[dict], budget: float) -> float:
    """Accuracy of the last evaluation within `budget` rollouts."""
    return [p for p in curve if p["rollouts"] <= budget + 1e-9][-1]["accuracy"]


def summarise(results: dict) -> dict:
    budget = min(r["heldout"][-1]["rollouts"] for seeds in results.values() for r in seeds)
    summary = {"common_budget_rollouts": budget}
    for name, seeds in results.items():
        final = seeds[0]["heldout"][-1]
        s = {"accuracy@budget": seed_stats([at_budget(r["heldout"], budget) for r in seeds]),
             "accuracy@start": seed_stats([r["heldout"][0]["accuracy"] for r in seeds]),
             "auc_accuracy": seed_stats([statistics.mean(p["accuracy"] for p in r["heldout"]) for r in seeds]),
             "seconds": seed_stats([r["seconds"] for r in seeds])}
        for key in final:
            if key not in ("step", "rollouts", "accuracy"):
                s[f"final/{key}"] = seed_stats([r["heldout"][-1][key] for r in seeds])
        summary[name] = s
    return summary


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=40, help="RL steps per run (16 prompts x 8 completions each)")
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-4, help="RL learning rate")
    p.add_argument("--sft-target", type=float, default=0.35, help="stop the warm start at this greedy accuracy")
    p.add_argument("--sft-steps", type=int, default=400)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ", ".join(VARIANTS))
    p.add_argument("--out", default="runs/vppo-bench")
    p.add_argument("--docs", default="docs/results")
    p.add_argument("--name", default="vppo", help="output names: docs/results/<name>.json, <name>_accuracy.png")
    p.add_argument("--quick", action="store_true", help="a few steps: checks that the script works")
    args = p.parse_args()
    if args.quick:
        args.steps, args.eval_every, args.sft_steps, args.seeds = 2, 1, 60, args.seeds[:1]
    variants = args.variants.split(",")
    if unknown := [v for v in variants if v not in VARIANTS]:
        p.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    torch.set_num_threads(2)
    out, docs = Path(args.out), Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    t0, results = time.perf_counter(), {v: [] for v in variants}
    with contextlib.redirect_stdout(sys.stderr):
        base = load_config(VARIANTS["dapo"][0], common(args, out) + ["seed=0", "name=warm"])
        warm = sft(base)
        probe = token_types(load_policy_of(path=warm["model"]), base, n=64)
        for seed in args.seeds:
            for name in variants:
                results[name].append(run_variant(args, name, seed, out))
    name = f"{args.name}_quick" if args.quick else args.name
    (docs / f"{name}.json").write_text(json.dumps({"args": vars(args), "warm_start": warm, "token_types": probe,
                                                   "curves": results}, indent=1))
    held = {n: [r["heldout"] for r in seeds] for n, seeds in results.items()}
    plot(held, docs, ["accuracy"], prefix=name, x="rollouts", xlabel="rollouts generated")
    print(json.dumps({"benchmark": "vppo", "quick": args.quick, "steps": args.steps, "seeds": args.seeds,
                      "warm_start": {"sft_steps": warm["history"][-1][0], "greedy_accuracy": warm["history"][-1][1],
                                     "seconds": warm["seconds"]},
                      "token_types_at_warm_start": probe, "summary": summarise(results),
                      "seconds": time.perf_counter() - t0,
                      "machine": {"cpu": cpu_model(), "threads": torch.get_num_threads()}}, indent=1))


if __name__ == "__main__":
    main()
