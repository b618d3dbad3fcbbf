"""Linear probes of the saved models of a `benchmarks/videossr.py --probe` run, at a probe strength chosen on the fit
rows (issue 21: the benchmark's probe uses C = 1 with no tuning, which can overfit ~50 fit rows of 128 features).

    python benchmarks/videossr_probe.py runs/videossr-48 --qa-videos 120 --name videossr_48_probe --threads 1

1. The transfer rows (RUN/qa.jsonl, the videos under RUN/raw/qa) read as the benchmark reads them (16 frames).
2. Models: the random init (seed 0, as the benchmark builds it), RUN/warm and every RUN/grpo*/final.
3. Per model the frozen features (videossr.pooled_hidden) and two probes on the same split (the first half of the
   transfer videos fit, the second half scored): C = 1 (the benchmark's; it reproduces its numbers) and C chosen by
   5-fold cross-validation on the fit rows alone (10^-4 .. 10^2), so the test rows never pick the strength.
4. Output: one JSON object on stdout and docs/results/<--name>.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from videossr import pooled_hidden, probe

from rlvr.policies import load_policy_of
from rlvr.tasks import TASKS


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run", help="the --out folder of a benchmarks/videossr.py --probe run")
    p.add_argument("--qa-videos", type=int, required=True, help="the run's --qa-videos (the split is half of it)")
    p.add_argument("--name", default="videossr_probe")
    p.add_argument("--docs", default="docs/results")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    task = TASKS.build("dataset", path=str(run / "qa.jsonl"), video_field="video", video_frames=16, scorer="exact")
    qa = [task[i] for i in range(len(task))]
    models = {"init": None, "warm_start": str(run / "warm")}
    models |= {d.name: str(d / "final") for d in sorted(run.glob("grpo*")) if (d / "final").exists()}
    out = {}
    for name, path in models.items():
        torch.manual_seed(0)
        policy = load_policy_of(path=path) if path else load_policy_of(config="qwen2.5-vl-tiny")
        policy.eval()
        features = pooled_hidden(policy, qa)
        out[name] = probe(features, qa, args.qa_videos // 2) | probe(features, qa, args.qa_videos // 2, c=None,
                                                                      prefix="probe_cv")
    result = {"benchmark": "videossr_probe", "args": vars(args), "models": out}
    Path(args.docs).mkdir(parents=True, exist_ok=True)
    (Path(args.docs) / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
