"""Rollout time with and without dropping the rows that have ended (FastDecoder.keep), on a checkpoint whose
completions are short but uneven: by default SmolLM2-135M-Instruct after recipes/smollm2.yaml's warm start
(runs/smollm2-sft/model; `rlvr sft recipes/smollm2.yaml` writes it).

Workload: the recipe's task and prompts through the chat template, 8 prompts x 8 completions, up to 16 new tokens,
temperature 1.0, the same seeds for both variants (so the same tokens: tests/test_sampler.py), alternating, medians
of `--reps` after one warm-up each. Prints one JSON object.

    .venv/bin/python benchmarks/ended_rows.py [--checkpoint runs/smollm2-sft/model] [--reps 6] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from machine import cpu_model

import rlvr.policies.sampling as sampling
from rlvr.policies import HFCausalLM
from rlvr.policies.fast_decode import FastDecoder
from rlvr.seeding import row_seeds
from rlvr.tasks import TASKS


class KeepAll(FastDecoder):
    """The fast decoder without row dropping: every row runs until the longest one ends."""

    keep = None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="runs/smollm2-sft/model")
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    policy = HFCausalLM.load(path=args.checkpoint)
    task = TASKS.build("arithmetic", digits=[1, 2], ops="+", seed=0,
                       prompt_format="What is {expr}? Reply with the number only.")
    samples = [task[i] for i in range(8) for _ in range(8)]
    ids, mask = policy.encode(samples)
    seeds = row_seeds(0, "bench", torch.arange(len(samples)))
    times: dict[str, list[float]] = {"drop_ended_rows": [], "keep_all_rows": []}
    outs = {}

    def run(name: str) -> float:
        sampling.FastDecoder = FastDecoder if name == "drop_ended_rows" else KeepAll
        t0 = time.perf_counter()
        with torch.no_grad():
            outs[name] = sampling.generate(policy.model, policy.tokenizer, ids, mask, max_new_tokens=args.new_tokens,
                                           seeds=seeds, backend="fast")
        return time.perf_counter() - t0

    load = os.getloadavg()[0]
    for name in times:  # warm-up
        run(name)
    for _ in range(args.reps):
        for name in times:
            times[name].append(run(name))
    sampling.FastDecoder = FastDecoder
    a, b = outs["drop_ended_rows"], outs["keep_all_rows"]
    lengths = a["completion_mask"].sum(-1).float()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({
        "benchmark": "ended_rows",
        "checkpoint": args.checkpoint,
        "completions": len(samples),
        "max_new_tokens": args.new_tokens,
        "decode_steps": a["completion_ids"].shape[1],
        "completion_tokens_mean": round(float(lengths.mean()), 2),
        "completion_tokens_max": int(lengths.max()),
        "same_tokens": bool(torch.equal(a["completion_ids"], b["completion_ids"])),
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "times_s": {k: [round(t, 4) for t in v] for k, v in times.items()},
        "speedup": round(med["keep_all_rows"] / med["drop_ended_rows"], 2),
        "machine": {"cpu": cpu_model(), "threads": torch.get_num_threads(),
                    "load_average_1min": [round(load, 2), round(os.getloadavg()[0], 2)], "torch": torch.__version__},
    }, indent=2))


if __name__ == "__main__":
    main()
