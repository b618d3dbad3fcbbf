"""Ray trainer ranks vs torchrun ranks: seconds per step and to start, on this machine.

    python benchmarks/ray_trainers.py            # JSON on stdout (docs/bench/ray_trainers.json keeps a run)

The same 2-rank data-parallel run launched both ways (recipes/quickstart.yaml with random-weight qwen2-tiny, 8
prompts x 8 completions of 16 tokens per step, a dense reward, 12 steps, one torch thread per rank): `torchrun
--nproc_per_node 2 -m rlvr.cli train` vs `rlvr train` with `distributed: {backend: ray, trainers: 2,
rollout_workers: 0}` (a local Ray, started by the run). Each arm twice in alternation; the median of steps 3-12 of
the step, and the launch's wall time (process and Ray start-up included). Run it alone on the machine.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rlvr.metrics import read_metrics

OUT = Path("/tmp/rlvr_bench_ray_trainers")
COMMON = ["model.config=qwen2-tiny", "task.name=arithmetic", f"output_dir={OUT}", "rollout.prompts_per_step=8",
          "rollout.group_size=8", "rollout.max_new_tokens=16", "train.steps=12", "train.eval_every=0",
          "task.eval_size=0", "train.progress=false", "optim.lr=1e-4", "train.threads=1",
          "rewards=[{name: python, kwargs: {function: tests/gpu/digit_reward.py:digit_fraction}}]"]
ARMS = {  # (launcher, overrides)
    "torchrun_2_ranks": ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29561", "-m", "rlvr.cli", "train"], []),
    "ray_2_trainer_ranks": ([sys.executable, "-m", "rlvr.cli", "train"],
                            ["distributed.backend=ray", "distributed.trainers=2", "distributed.rollout_workers=0"]),
}


def main() -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = {}
    for rep in (1, 2):
        for name, (cmd, over) in ARMS.items():
            t0 = time.perf_counter()
            subprocess.run([*cmd, "recipes/quickstart.yaml", "model.path=null", *COMMON, *over, f"name={name}",
                            "--overwrite"],
                           check=True, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
            rows = [r for r in read_metrics(OUT / name / "metrics.jsonl") if "reward" in r][2:]
            out[f"{name}_run{rep}"] = {"wall_s": wall, **{k: statistics.median(r[f"time/{k}"] for r in rows)
                                                          for k in ("step", "rollout", "update")}}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
