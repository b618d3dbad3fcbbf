"""The sampler's index search at a real vocabulary: the token whose CDF interval holds each row's draw.

Before issue 8: a float64 copy of probs (N, V), its cumsum, a comparison with each row's draw and a bool sum over V.
Now (rlvr.policies.sampling._sample): the cumsum straight into float64 and a binary search (torch.searchsorted).
Both run on the same probabilities and draws, alternating, medians of `--reps` after warm-ups; the tokens must be the
same. Default shape: 64 rows x 49,152 words (SmolLM2's vocabulary). Prints one JSON object.

    .venv/bin/python benchmarks/sampler_index.py [--rows 64] [--vocab 49152] [--reps 50] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from machine import cpu_model

from rlvr.policies.sampling import _sample


def compare_and_sum(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The previous index search, kept here as the baseline."""
    cdf = probs.double().cumsum(-1)
    return (cdf <= u[:, None] * cdf[:, -1:]).sum(-1).clamp_(max=probs.shape[-1] - 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=49152)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    probs = (torch.randn(args.rows, args.vocab, generator=gen) * 3).softmax(-1)  # peaked, as a trained LM's
    variants = {"compare_and_sum": compare_and_sum, "binary_search": _sample}
    times: dict[str, list[float]] = {k: [] for k in variants}
    same = True
    load = os.getloadavg()[0]
    for rep in range(args.reps + 3):
        u = torch.rand(args.rows, generator=gen, dtype=torch.float64)
        out = {}
        for name, fn in variants.items():
            t0 = time.perf_counter()
            out[name] = fn(probs, u)
            if rep >= 3:  # warm-up
                times[name].append(time.perf_counter() - t0)
        same &= bool(torch.equal(out["compare_and_sum"], out["binary_search"]))
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    print(json.dumps({
        "benchmark": "sampler_index",
        "shape": [args.rows, args.vocab],
        "median_ms": {k: round(v, 3) for k, v in med.items()},
        "speedup": round(med["compare_and_sum"] / med["binary_search"], 2),
        "same_tokens": same,
        "reps": args.reps,
        "machine": {"cpu": cpu_model(), "threads": torch.get_num_threads(),
                    "load_average_1min": [round(load, 2), round(os.getloadavg()[0], 2)], "torch": torch.__version__},
    }, indent=2))


if __name__ == "__main__":
    main()
