"""Asynchronous rollouts (rollout.max_staleness) vs synchronous training on the quickstart: learning and wall time.

    python benchmarks/async_rollouts.py                 # 3 seeds; JSON on stdout and docs/results/async_rollouts.json
    python benchmarks/async_rollouts.py --seeds 0 --steps 100
    python benchmarks/async_rollouts.py --recipe exgrpo --no-timing   # ExGRPO's replay buffer, asynchronously

1. Per seed, the quickstart's warm start (recipes/quickstart.yaml's SFT; reused from runs/bench-quickstart-s<seed>-sft
   when benchmarks/quickstart.py made it, else made here), then GRPO from it twice with the same seed: synchronous
   (max_staleness 0) and asynchronous (max_staleness 1: the next batch is sampled in a background thread with
   weights one update old while this step updates; the token-level mismatch correction on, as by default).
2. Reported per arm: held-out greedy accuracy before and after, the training reward of the last 50 steps, seconds per
   step (the step's own wall time, evaluation excluded; median and mean), the RL run's total seconds, and for the
   asynchronous arm the trainer's wait for its batch and the mismatch between trainer and sampler log-probs.
   `--recipe exgrpo` trains recipes/exgrpo.yaml (the same warm start) instead, into docs/results/async_exgrpo.json.
3. Timing alone (skipped with --no-timing): a rollout-heavy setting (the random-weight qwen2-tiny, 64 completions of
   48 tokens per step, a dense reward, 12 steps) synchronous vs asynchronous with 1 and with 2 torch threads, the
   median seconds per step of steps 3-12, each pair run twice in alternation. Run the benchmark alone on the machine.
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

ROOT = Path(__file__).resolve().parents[1]


def warm_start(seed: int, output_dir: str) -> str:
    sft_out = f"{output_dir}/bench-quickstart-s{seed}-sft/model"
    if not (Path(sft_out) / "config.json").is_file():
        cfg = load_config(ROOT / "recipes" / "quickstart.yaml", [f"seed={seed}", f"sft.output={sft_out}",
                                                                 f"model.path={sft_out}", "train.progress=false"])
        with contextlib.redirect_stdout(sys.stderr):
            sft(cfg)
    return sft_out


def arm(seed: int, staleness: int, steps: int, model: str, output_dir: str, recipe: str = "quickstart") -> dict:
    name = f"bench-async-{recipe}-s{seed}-stale{staleness}"
    cfg = load_config(ROOT / "recipes" / f"{recipe}.yaml", [
        f"seed={seed}", f"name={name}", f"output_dir={output_dir}", f"model.path={model}", f"train.steps={steps}",
        f"rollout.max_staleness={staleness}", "train.progress=false", f"train.save_every={steps}"])
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        summary = train(cfg, overwrite=True)
    total = time.perf_counter() - t0
    rows = [r for r in read_metrics(cfg.run_dir / "metrics.jsonl") if "reward" in r]
    step_s = [r["time/step"] for r in rows]
    out = {"before": summary["eval_before"]["eval/accuracy"], "after": summary["eval_after"]["eval/accuracy"],
           "reward_last50": statistics.fmean(r["reward"] for r in rows[-50:]),
           "step_s_median": statistics.median(step_s), "step_s_mean": statistics.fmean(step_s), "rl_seconds": total,
           "rollout_s_mean": statistics.fmean(r["time/rollout"] for r in rows),
           "update_s_mean": statistics.fmean(r["time/update"] for r in rows),
           "curve": [[r["step"], r["eval/accuracy"]] for r in read_metrics(cfg.run_dir / "metrics.jsonl")
                     if "eval/accuracy" in r]}
    if staleness:
        out["wait_s_mean"] = statistics.fmean(r["time/rollout_wait"] for r in rows)
        out["mismatch_abs_log_ratio"] = statistics.fmean(r["mismatch/abs_log_ratio_mean"] for r in rows[1:])
        out["mismatch_clipped_frac"] = statistics.fmean(r["mismatch/clipped_frac"] for r in rows[1:])
    return out


def timing(threads: int, staleness: int, output_dir: str) -> dict:
    torch.set_num_threads(threads)
    cfg = load_config(None, [
        "model.config=qwen2-tiny", "task.name=arithmetic", f"output_dir={output_dir}", "name=bench-async-timing",
        "rollout.prompts_per_step=8", "rollout.group_size=8", "rollout.max_new_tokens=48", "train.steps=12",
        "train.eval_every=0", "task.eval_size=0", "train.progress=false", "optim.lr=1e-4",
        f"rollout.max_staleness={staleness}",
        "rewards=[{name: python, kwargs: {function: tests/gpu/digit_reward.py:digit_fraction}}]"])
    with contextlib.redirect_stdout(sys.stderr):
        train(cfg, overwrite=True)
    rows = [r for r in read_metrics(cfg.run_dir / "metrics.jsonl") if "reward" in r][2:]
    med = lambda key: statistics.median(r.get(key, 0.0) for r in rows)  # noqa: E731
    return {"step_s": med("time/step"), "rollout_s": med("time/rollout"), "update_s": med("time/update"),
            "wait_s": med("time/rollout_wait")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--staleness", type=int, default=1)
    p.add_argument("--output-dir", default=str(ROOT / "runs"))
    p.add_argument("--recipe", default="quickstart", choices=["quickstart", "exgrpo"])
    p.add_argument("--no-timing", action="store_true", help="skip the timing runs (item 3)")
    p.add_argument("--out", default=None, help="default docs/results/async_rollouts.json (async_exgrpo.json)")
    args = p.parse_args()
    out = args.out or str(ROOT / "docs" / "results" / ("async_rollouts.json" if args.recipe == "quickstart" else
                                                       f"async_{args.recipe}.json"))
    t0 = time.perf_counter()
    timings = {} if args.no_timing else {
        f"threads{n}": {f"{arm}_run{k}": timing(n, st, args.output_dir)
                        for k in (1, 2) for arm, st in (("sync", 0), ("async", 1))} for n in (1, 2)}
    print("timing: " + json.dumps(timings), file=sys.stderr, flush=True)
    torch.set_num_threads(2)
    results = {}
    for seed in args.seeds:
        model = warm_start(seed, args.output_dir)
        results[seed] = {"sync": arm(seed, 0, args.steps, model, args.output_dir, args.recipe),
                         "async": arm(seed, args.staleness, args.steps, model, args.output_dir, args.recipe)}
        print(f"seed {seed}: " + json.dumps({a: {k: round(v, 4) for k, v in r.items() if k != "curve"}
                                             for a, r in results[seed].items()}), file=sys.stderr, flush=True)
    mean = {a: {k: statistics.fmean(results[s][a][k] for s in args.seeds)
                for k in results[args.seeds[0]][a] if k != "curve"} for a in ("sync", "async")}
    report = {"benchmark": "async_rollouts", "recipe": args.recipe, "machine": cpu_model(), "torch_threads": 2,
              "steps": args.steps,
              "staleness": args.staleness, "seconds": time.perf_counter() - t0, "timing": timings, "mean": mean,
              "per_seed": results}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=1))
    print(json.dumps({"timing": timings, "mean": mean}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
