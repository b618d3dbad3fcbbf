"""DMD2 vs Flash-DMD (reconstruction) vs joint RL on the 2-D Gaussian mixture: arms on the same seeds.

    python benchmarks/flash_dmd.py --seeds 0 1 2 --steps 5000 --threads 1 --out runs/bench_flash_dmd.json

1. Teacher: a ScoreMLP trained on data for 2000 steps at the start of each run (recipes/dmd2.yaml); every student
   starts from its weights, as DMD2 initialises the generator (and the fake score) from the teacher. The teacher is
   evaluated with 100-step DDIM; its numbers and sampling time are the reference row.
2. Arms (rlvr.images.dmd_train, one run each per seed, recipes/dmd2.yaml's DMD2 weights unless named): dmd2_4step
   (DM + GAN summed at every step, backward simulation), _lr1e-5 / _lr1e-4 (the learning-rate choice), _issue11
   (the weights issue 11 ran: GAN 0.01, discriminator 1.0, guidance lr 1e-3, no warm-up); dmd2_1step (K = 1, told
   t = 999), _t399 (told 399, as one of DMD2's SDXL configs), _scaled (the scaled-linear schedule); flash_4step (DM
   at t_k >= 500, data-space GAN below) and a GAN weight of 0.05; joint_rl (flash_4step + lambda_R 0.1 or 0.01 times
   -distance to mode 0, distillation on), rl_alone (the same reward, no distillation: the generator is updated every
   iteration, 5x as often as in the distilled arms, whose ratio is 5); biased_* (the teacher learns the ring at
   radius 3.5, the data's is 4: DM pulls toward the teacher, the GAN toward the data): DM only, DMD2 summed and Flash
   split at GAN weights 5e-3, 0.05, 0.5; flow_* (a flow-matching teacher, pretrained by v-MSE under rectified
   flow; student and fake score predict the velocity too): dmd2 4-step and 1-step, flash 4-step.
   --merge joins the JSON of processes that ran disjoint arm lists side by side (the metrics do not depend on it;
   the sampling times of such a run are not timings to quote).
3. Metrics (on 1000 samples vs 1000 fresh data points, see dmd_train's docstring): Fréchet distance of Gaussian fits
   of the 2-D points (this scale's "feature-FID"), energy distance, modes covered, precision / recall (k = 3), mean
   reward, in-mode share, the share at the rewarded mode 0, within-mode std; curves of Fréchet distance / recall /
   reward at every evaluation (every steps / 20), the first evaluation at or below a Fréchet target (TARGETS; 0 when
   the start already is), each arm's teacher (biased arms have their own); sampling wall time per 1000 samples
   (students: K steps; teacher: 100 DDIM steps); where DM and GAN act on the same samples (dmd2 arms), the mean
   cosine between their gradients on x0 per student
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
BIASED = {"teacher": {"radius": 3.5}}  # the teacher learns the ring at 3.5 while the data (and the GAN's) sit at 4
ISSUE11 = {"distill": {"gan_weight": 0.01, "disc_weight": 1.0}, "optim": {"lr": 1e-5, "guidance_lr": 1e-3, "warmup": 0}}
FLASH = {"distill": {"preset": "flash", "split": 500}}
FLOW = {"teacher": {"schedule": "flow"}}  # rectified flow: every network predicts the velocity (issue 22)
ARMS = {
    "dmd2_4step": {},
    "dmd2_4step_lr1e-5": {"optim": {"lr": 1e-5}},
    "dmd2_4step_lr1e-4": {"optim": {"lr": 1e-4}},
    "dmd2_4step_lr3e-4": {"optim": {"lr": 3e-4}},  # seed 0 only in docs/results/dmd2_lr_sweep_seed0.json
    "dmd2_4step_lr1e-3": {"optim": {"lr": 1e-3}},  # likewise
    "dmd2_4step_issue11": ISSUE11,
    "dmd2_1step": {"student": {"steps": 1}},
    "dmd2_1step_t399": {"student": {"steps": 1, "start": 399}},
    "dmd2_1step_scaled": {"student": {"steps": 1}, "teacher": {"schedule": "scaled_linear"}},
    "flash_4step": FLASH,
    "flash_4step_gan0.05": merge(FLASH, {"distill": {"gan_weight": 0.05}}),
    "joint_rl": merge(FLASH, {"rl": {"lambda_R": 0.1}}),
    "joint_rl_lambda0.01": merge(FLASH, {"rl": {"lambda_R": 0.01}}),
    "rl_alone": {"rl": {"lambda_R": 0.1, "distill": False}},
    "biased_dm_only": merge(BIASED, {"distill": {"gan_weight": 0.0}}),
    "biased_dmd2_4step": BIASED,
    "biased_dmd2_gan0.05": merge(BIASED, {"distill": {"gan_weight": 0.05}}),
    "biased_dmd2_gan0.5": merge(BIASED, {"distill": {"gan_weight": 0.5}}),
    "biased_flash_4step": merge(BIASED, FLASH),
    "biased_flash_gan0.05": merge(merge(BIASED, FLASH), {"distill": {"gan_weight": 0.05}}),
    "biased_flash_gan0.5": merge(merge(BIASED, FLASH), {"distill": {"gan_weight": 0.5}}),
    "flow_dmd2_4step": FLOW,
    "flow_dmd2_1step": merge(FLOW, {"student": {"steps": 1}}),
    "flow_flash_4step": merge(FLOW, FLASH),
}
TARGETS = (0.1, 0.3)  # Fréchet distances whose first crossing (iterations) each run reports
KEYS = ("frechet", "energy", "recall", "precision", "modes_covered", "in_mode", "target_share", "reward", "mode_std",
        "radius")
CURVE = ("frechet", "recall", "reward", "modes_covered")


def arm_config(arm: str, seed: int, steps: int, root: Path) -> RunConfig:
    raw = yaml.safe_load(RECIPE.read_text())
    raw = merge(raw, ARMS[arm])
    raw = merge(raw, {"name": f"{arm}-s{seed}", "seed": seed, "output_dir": str(root),
                      "rl": {"reward": "distance", "mode": 0},
                      "train": {"steps": steps, "eval_every": max(1, steps // 20), "save_every": steps}})
    return from_dict(RunConfig, raw, "")


def run_arm(arm: str, seed: int, steps: int, root: Path) -> tuple[dict, dict]:
    cfg = arm_config(arm, seed, steps, root)
    start = time.perf_counter()
    summary = train(cfg, overwrite=True)
    rows = [r for r in read_metrics(cfg.run_dir / "metrics.jsonl") if "eval/frechet" in r]
    curve = {k: [[r["step"], r[f"eval/{k}"]] for r in rows] for k in CURVE}
    final = {k: summary["final"][k] for k in KEYS}
    final["sample_s_per_1000"] = summary["final"]["time/sample_per_1000"]
    for target in TARGETS:  # iterations to the target (None: not within the run), from the evaluations
        final[f"iters_to_{target}"] = next((r["step"] for r in rows if r["eval/frechet"] <= target), None)
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
    out = {k: _mean_std([s["final"][k] for s in per_seed.values()]) for k in first["final"] if "iters_to" not in k}
    for k in (k for k in first["final"] if "iters_to" in k):  # per seed: None never reached
        out[k] = [s["final"][k] for s in per_seed.values()]
    return out


def _teacher_mean(per_seed: dict[int, dict]) -> dict:
    first = next(iter(per_seed.values()))["teacher"]
    return {k: _mean_std([s["teacher"][k] for s in per_seed.values()]) for k in first}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=5000, help="training iterations per arm")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="instead of running: merge these JSON outputs (disjoint arms, same seeds) into one")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--runs", type=Path, default=None, help="run folders (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.merge:
        return _merge(args.merge, args.out)
    torch.set_num_threads(args.threads)
    root = args.runs or Path(tempfile.mkdtemp(prefix="bench_flash_dmd_"))
    start = time.perf_counter()
    arms = {arm: {} for arm in args.arms}
    for seed in args.seeds:
        for arm in args.arms:
            record, teacher = run_arm(arm, seed, args.steps, root)
            record["teacher"] = {k: teacher[k] for k in (*KEYS, "time/sample_per_1000")}  # per arm: biased ones differ
            arms[arm][seed] = record
            print(f"seed {seed} {arm}: " + json.dumps({k: v if v is None else round(v, 3)
                                                        for k, v in record["final"].items()}), file=sys.stderr,
                  flush=True)
    result = {
        "setting": {"seeds": args.seeds, "steps": args.steps, "threads": args.threads, "recipe": "recipes/dmd2.yaml",
                    "teacher": "ScoreMLP trained 2000 steps on data (biased arms: on the ring at teacher.radius); "
                               "students start from its weights; teacher samples: DDIM 100 steps",
                    "arms": {arm: ARMS[arm] for arm in args.arms}, "targets": TARGETS, "runs": str(root)},
        "arms": {arm: {"mean_std": aggregate(per), "teacher_mean_std": _teacher_mean(per), "per_seed": per}
                 for arm, per in arms.items()},
        "wall_s": time.perf_counter() - start,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return result


def _merge(paths: list[Path], out: Path | None) -> dict:
    """One result from runs of disjoint arm lists (two processes side by side on one machine's two cores; the metrics
    are deterministic, but the sampling times of such runs are not comparable with a run alone)."""
    parts = [json.loads(p.read_text()) for p in paths]
    result = {**parts[0], "arms": {k: v for p in parts for k, v in p["arms"].items()},
              "wall_s": [p["wall_s"] for p in parts]}
    result["setting"] = {**parts[0]["setting"], "merged_from": [str(p) for p in paths],
                         "arms": {k: v for p in parts for k, v in p["setting"]["arms"].items()}}
    text = json.dumps(result, indent=1)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    return result


if __name__ == "__main__":
    main()
