"""FrameThinker's learning check (arXiv 2509.24304): frames as actions against uniformly sampled frames.

    python benchmarks/framethinker.py                       # 3 seeds x 2 arms; JSON on stdout and in docs/results/
    python benchmarks/framethinker.py --seeds 0 --steps 10  # fewer seeds / steps
    python benchmarks/framethinker.py --quick               # a smoke run of a few steps (checks the script only)
    python benchmarks/framethinker.py --observe text --out runs/framethinker-text --name framethinker_text
                                                            # frames as captions: search without colour reading

1. Task: frame_quest (recipes/framethinker.yaml): a black square turns one of four colours in a hidden segment of
   3-6 of 128 frames; the background stays grey from the segment's start on. Held-out items (a hash split) for the
   evaluation, the same items for both arms.
2. Arms, each warm-started once (seed 0, --sft-steps) on its own scripted episodes, then GRPO from that warm start
   with every seed:
   - frames (recipes/framethinker.yaml): a first look of 8 uniform frames, then at most 2 more turns: choose 8
     frames between two indices (a budget of 16 frames in all), ask the frame of a time, or answer;
   - uniform (recipes/framethinker_uniform.yaml): 16 uniform frames (the same budget) and one turn, the answer.
3. Held-out greedy accuracy (the reward's gates applied: a right letter in a transcript that fails a gate is
   wrong) with its standard error, frames used, turns and how often each gate fires, every --eval-every steps;
   search and reading apart: the share of episodes shown a frame of the change (saw_evidence) and the accuracy of
   those (reading = correct_seen / saw_evidence); the training batches' own numbers (sampled) per step.
4. Ceilings on each seed's held-out items: a perfect searcher (the rule-based agent: always right, 8 frames when
   the first look shows the change, else 16) and a perfect reader of the uniform arm's frames (right when they
   show the change, else a guess among four colours).
5. `--observe text` (issue 21): every frame is shown as its caption (`frame 54: red`, `frame 72: grey`) in both
   arms, so the colour reading that the image arms fail at is a copy and the search is what is left to learn.
6. Output: one JSON object on stdout; docs/results/<name>.json with every curve.
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

from recipes import seed_stats
from rlvr.config import load_config
from rlvr.envs.frames import first_look
from rlvr.metrics import read_metrics
from rlvr.trainer import train
from rlvr.warm_start import sft

ARMS = {"frames": "recipes/framethinker.yaml", "uniform": "recipes/framethinker_uniform.yaml"}
EVAL_KEYS = ("accuracy", "env/frames_used", "env/turns", "env/looks", "env/invalid_action", "env/refused_looks",
             "env/saw_evidence", "env/correct_seen")


def common(args, arm: str, out: Path) -> list[str]:
    warm = out / f"{arm}-warm" / "model"
    return [f"output_dir={out}", f"model.path={warm}", f"sft.output={warm}", f"sft.steps={args.sft_steps}",
            f"sft.eval_every={args.sft_steps}", f"train.eval_every={args.eval_every}",
            f"task.eval_size={args.eval_size}",
            "train.save_every=0", "train.progress=false", f"train.threads={args.threads}"] + (
        [f"task.kwargs.observe={args.observe}", f"env.kwargs.observe={args.observe}"] if args.observe != "image"
        else [])


def run_arm(args, arm: str, seed: int, out: Path) -> dict:
    name = f"{arm}-s{seed}"
    shutil.rmtree(out / name, ignore_errors=True)
    cfg = load_config(ARMS[arm], common(args, arm, out) + [f"seed={seed}", f"name={name}",
                                                          f"train.steps={args.steps}"]
                      + ([f"optim.lr={args.lr}"] if args.lr else []))
    t0 = time.perf_counter()
    train(cfg)
    curve, steps = [], []
    for r in read_metrics(cfg.run_dir / "metrics.jsonl"):
        if "reward" in r:
            steps.append({k: r.get(k) for k in ("step", "reward", "env/correct", "env/frames_used", "env/turns",
                                                 "env/looks", "grad_norm")}
                         | {k: v for k, v in r.items() if k.startswith("env/gate_")})
        if "eval/accuracy" in r:
            point = {"step": r["step"]} | {k: r.get(f"eval/{k}") for k in EVAL_KEYS}
            point |= {k[5:]: v for k, v in r.items() if k.startswith("eval/env/gate_")}
            if curve and curve[-1]["step"] == r["step"]:
                curve[-1] = point
            else:
                curve.append(point)
    return {"heldout": curve, "train": steps, "seconds": time.perf_counter() - t0}


def reading(point: dict) -> float | None:
    """Accuracy on the episodes that were shown a frame of the change: correct_seen / saw_evidence."""
    seen = point.get("env/saw_evidence")
    return point["env/correct_seen"] / seen if seen else None


def ceilings(args, seed: int) -> dict:
    """A perfect searcher and a perfect reader of the uniform arm's frames on this seed's held-out items."""
    from rlvr.run import build_task

    cfg = load_config(ARMS["uniform"], common(args, "uniform", Path(args.out)) + [f"seed={seed}"])
    task = build_task(cfg, eval_split=True)
    items = [task[i].meta for i in range(min(args.eval_size, len(task)))]
    shows = lambda look, m: any(m["evidence"][0] <= t < m["evidence"][1] for t in look)  # noqa: E731
    first, uniform = first_look(task.frames, task.n), first_look(task.frames, task.initial)
    return {"items": len(items),
            "searcher_frames": statistics.mean(task.n if shows(first, m) else 2 * task.n for m in items),
            "first_look_shows": statistics.mean(shows(first, m) for m in items),
            "uniform_shows": statistics.mean(shows(uniform, m) for m in items),
            "uniform_reader_accuracy": statistics.mean(1.0 if shows(uniform, m) else 0.25 for m in items)}


def standard_error(p: float, n: int) -> float:
    return (p * (1 - p) / n) ** 0.5


def summarise(runs: list[dict], eval_size: int) -> dict:
    first, last = (lambda r: r["heldout"][0]), (lambda r: r["heldout"][-1])
    out = {}
    for key in ("accuracy", "env/frames_used", "env/turns", "env/saw_evidence"):
        out[f"heldout_{key}@start"] = seed_stats([first(r).get(key) for r in runs])
        out[f"heldout_{key}@end"] = seed_stats([last(r).get(key) for r in runs])
    out["heldout_reading@start"] = seed_stats([reading(first(r)) for r in runs])
    out["heldout_reading@end"] = seed_stats([reading(last(r)) for r in runs])
    out["heldout_accuracy_se@end"] = [standard_error(last(r)["accuracy"], eval_size) for r in runs]
    for key in ("env/correct", "env/frames_used", "reward"):
        out[f"train_{key}_first10"] = seed_stats([statistics.mean(s[key] for s in r["train"][:10]) for r in runs])
        out[f"train_{key}_last10"] = seed_stats([statistics.mean(s[key] for s in r["train"][-10:]) for r in runs])
    gates = sorted({k for r in runs for s in r["train"] for k in s if k.startswith("env/gate_")})
    out["train_gate_rates"] = {g[9:]: statistics.mean(s[g] for r in runs for s in r["train"]) for g in gates}
    out["seconds"] = seed_stats([r["seconds"] for r in runs])
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=30, help="GRPO steps per run (8 prompts x 8 episodes each)")
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--eval-size", type=int, default=64)
    p.add_argument("--sft-steps", type=int, default=400)
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--out", default="runs/framethinker-bench")
    p.add_argument("--docs", default="docs/results")
    p.add_argument("--lr", type=float, default=None, help="RL learning rate (default: the recipe's, 1e-4)")
    p.add_argument("--name", default="framethinker", help="output name: docs/results/<name>.json")
    p.add_argument("--threads", type=int, default=2, help="torch threads (1 when another job shares the machine)")
    p.add_argument("--reuse-warm", action="store_true", help="keep warm starts an earlier run of this script left")
    p.add_argument("--observe", choices=("image", "text"), default="image",
                   help="frames as images (the recipes) or as captions (search without colour reading)")
    p.add_argument("--quick", action="store_true", help="a few steps: checks that the script works")
    args = p.parse_args()
    if args.quick:
        args.steps, args.eval_every, args.sft_steps, args.seeds, args.eval_size = 2, 1, 4, args.seeds[:1], 4
    arms = args.arms.split(",")
    if unknown := [a for a in arms if a not in ARMS]:
        p.error(f"--arms: unknown {unknown}; choose from {list(ARMS)}")
    torch.set_num_threads(args.threads)
    out, docs = Path(args.out), Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    t0, results, warm = time.perf_counter(), {a: [] for a in arms}, {}
    with contextlib.redirect_stdout(sys.stderr):
        for arm in arms:
            done = out / f"{arm}-warm" / "warm.json"
            if args.reuse_warm and done.exists():  # a warm start this script wrote before, with these settings
                warm[arm] = json.loads(done.read_text())
                continue
            w = sft(load_config(ARMS[arm], common(args, arm, out) + ["seed=0", f"name={arm}-warm"]))
            warm[arm] = {"sft_steps": args.sft_steps, "greedy_accuracy": w["history"][-1][1], "seconds": w["seconds"]}
            done.write_text(json.dumps(warm[arm]))
        for seed in args.seeds:
            for arm in arms:
                results[arm].append(run_arm(args, arm, seed, out))
    name = f"{args.name}_quick" if args.quick else args.name
    summary = {arm: summarise(runs, args.eval_size) for arm, runs in results.items()}
    limits = {seed: ceilings(args, seed) for seed in args.seeds}
    (docs / f"{name}.json").write_text(json.dumps({"args": vars(args), "warm_start": warm, "summary": summary,
                                                   "ceilings": limits, "curves": results}, indent=1))
    print(json.dumps({"benchmark": "framethinker", "quick": args.quick, "steps": args.steps, "seeds": args.seeds,
                      "warm_start": warm, "summary": summary, "ceilings": limits,
                      "seconds": time.perf_counter() - t0,
                      "machine": {"cpu": cpu_model(), "threads": torch.get_num_threads()}}, indent=1))


if __name__ == "__main__":
    main()
