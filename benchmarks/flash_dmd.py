"""DMD2 vs Flash-DMD (reconstruction) vs joint RL on the 2-D Gaussian mixture: arms on the same seeds.

    python benchmarks/flash_dmd.py --seeds 0 1 2 --steps 5000 --threads 1 --out runs/bench_flash_dmd.json

1. Teacher: a ScoreMLP trained on data for 2000 steps at the start of each run (recipes/dmd2.yaml); every student
   starts from its weights, as DMD2 initialises the generator (and the fake score) from the teacher. The teacher is
   evaluated with 100-step DDIM; its numbers and sampling time are the reference row.
2. Arms (rlvr.images.dmd_train, one run each per seed): dmd2_1step (DM + diffusion-GAN, K = 1), dmd2_1step_t399
   (the same, its one step told t = 399 as one of DMD2's SDXL configs does), dmd2_4step (DM +
   GAN summed at every step, backward simulation), flash_4step (DM at t_k >= 500, data-space GAN below), joint_rl
   (flash_4step + lambda_R (-distance to mode 0), distillation on), rl_alone (the same reward, no distillation: the
   generator is updated every iteration, 5x as often as in the distilled arms, whose ratio is 5).
3. Metrics (on 1000 samples vs 1000 fresh data points, see dmd_train's docstring): Fréchet distance of Gaussian fits
   of the 2-D points (this scale's "feature-FID"), energy distance, modes covered, precision / recall (k = 3), mean
   reward, in-mode share, the share at the rewarded mode 0, within-mode std; curves of Fréchet distance / recall /
   reward at every evaluation; sampling wall time per 1000 samples (students: K steps; teacher: 100 DDIM steps);
   where DM and GAN act on the same samples (dmd2 arms), the mean cosine between their gradients on x0 per student
   timestep (Flash-DMD's stated reason for the split is that they conflict).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from rlvr.config import from_dict, merge
from rlvr.images.dmd_train import RunConfig, train
from rlvr.metrics import read_metrics

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "dmd2.yaml"
ARMS = {
    "dmd2_1step": {"student": {"steps": 1}},
    "dmd2_1step_t399": {"student": {"steps": 1, "start": 399}},
    "dmd2_4step": {},
    "flash_4step": {"distill": {"preset": "flash", "split": 500}},
    "joint_rl": {"distill": {"preset": "flash", "split": 500}, "rl": {"lambda_R": 0.1}},
    "rl_alone": {"rl": {"lambda_R": 0.1, "distill": False}},
}
KEYS = ("frechet", "energy", "recall", "precision", "modes_covered", "in_mode", "target_share", "reward", "mode_std")
CURVE = ("frechet", "recall", "reward", "modes_covered")


def arm_config(arm: str, seed: int, steps: int, root: Path) -> RunConfig:
    raw = yaml.safe_load(RECIPE.read_text())
    raw = merge(raw, ARMS[arm])
    raw = merge(raw, {"name": f"{arm}-s{seed}", "seed": seed, "output_dir": str(root),
                      "rl": {"reward": "distance", "mode": 0},
                      "train": {"steps": steps, "eval_every": max(1, steps // 5), "save_every": steps}})
    return from_dict(RunConfig, raw, "")


def run_arm(arm: str, seed: int, steps: int, root: Path) -> tuple[dict, dict]:
    cfg = arm_config(arm, seed, steps, root)
    start = time.perf_counter()
    summary = train(cfg, overwrite=True)
    rows = [r for r in read_metrics(cfg.run_dir / "metrics.jsonl") if "eval/frechet" in r]
    curve = {k: [[r["step"], r[f"eval/{k}"]] for r in rows] for k in CURVE}
    final = {k: summary["final"][k] for k in KEYS}
    final["sample_s_per_1000"] = summary["final"]["time/sample_per_1000"]
    final["train_s"] = time.perf_counter() - start
    by_t: dict[int, list[float]] = {}
    for r in read_metrics(cfg.run_dir / "metrics.jsonl"):
        if r.get("gen/dm_gan_cos") is not None:
            by_t.setdefault(int(r["gen/t_k"]), []).append(r["gen/dm_gan_cos"])
    cos = {t: statistics.fmean(v) for t, v in sorted(by_t.items())}
    return {"final": final, "curve": curve, "dm_gan_cos_by_t": cos}, summary["teacher"]


def _mean_std(values: list[float]) -> list[float]:
    return [statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0]


def aggregate(per_seed: dict[int, dict]) -> dict:
    """{metric: [mean, std over seeds]} of each arm's final metrics."""
    first = next(iter(per_seed.values()))
    return {k: _mean_std([s["final"][k] for s in per_seed.values()]) for k in first["final"]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=5000, help="training iterations per arm")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--runs", type=Path, default=None, help="run folders (default: a temporary folder)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = args.runs or Path(tempfile.mkdtemp(prefix="bench_flash_dmd_"))
    start = time.perf_counter()
    arms, teachers = {arm: {} for arm in args.arms}, {}
    for seed in args.seeds:
        for arm in args.arms:
            arms[arm][seed], teacher = run_arm(arm, seed, args.steps, root)
            teachers[seed] = {k: teacher[k] for k in (*KEYS, "time/sample_per_1000")}
            print(f"seed {seed} {arm}: " + json.dumps({k: round(v, 3) for k, v in arms[arm][seed]["final"].items()}),
                  file=sys.stderr, flush=True)
    teacher_mean = {k: _mean_std([t[k] for t in teachers.values()]) for k in next(iter(teachers.values()))}
    result = {
        "setting": {"seeds": args.seeds, "steps": args.steps, "threads": args.threads, "recipe": "recipes/dmd2.yaml",
                    "teacher": "ScoreMLP trained 2000 steps on data; students start from its weights; "
                               "teacher samples: DDIM 100 steps", "arms": ARMS, "runs": str(root)},
        "teacher": {"mean_std": teacher_mean, "per_seed": teachers},
        "arms": {arm: {"mean_std": aggregate(per), "per_seed": per} for arm, per in arms.items()},
        "wall_s": time.perf_counter() - start,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return result


if __name__ == "__main__":
    main()
