"""Rollout throughput: rlvr's `generate` (fast KV-cached path) vs Hugging Face `model.generate`, same batch.

Standard CPU workload: qwen2-tiny (hidden 256, 4 layers, 4 heads, intermediate 1024) with the char tokenizer,
64 sequences = 8 prompts x 8 samples, prompts ~6 tokens, 16 new tokens, temperature 1.0, no top-k/top-p,
2 torch threads. The two samplers alternate (warm-up, then timed repeats) so drift hits both equally;
medians are reported. Tokens/s counts the completion width actually produced (N x T).

    python benchmarks/rollout.py [--repeats 20] [--warmup 5] [--config qwen2-tiny] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch
from machine import cpu_model

from rlvr.policies import encode_prompts, load_policy
from rlvr.policies.sampling import generate
from rlvr.seeding import row_seeds

PROMPTS = ["12+34=", "7*8=?", "99-5=", "abc+d", "(3+4)=", "x=5,y=", "hi ok?", "10/2=:"]


def time_once(fn) -> tuple[float, int]:
    start = time.perf_counter()
    n_tokens = fn()
    return time.perf_counter() - start, n_tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="qwen2-tiny")
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model, tok = load_policy(config=args.config)
    ids, mask = encode_prompts(tok, [p for p in PROMPTS for _ in range(args.group)])  # (64, P)
    torch.manual_seed(0)
    calls = iter(range(1 << 30))

    def rlvr_run() -> int:
        seeds = row_seeds(0, "bench", torch.arange(len(ids)), torch.full((len(ids),), next(calls)))  # fresh draws
        return generate(model, tok, ids, mask, max_new_tokens=args.new_tokens, temperature=1.0, seeds=seeds)[
            "completion_ids"
        ].numel()

    def hf_run() -> int:
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=mask,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=args.new_tokens,
            )
        return out[:, ids.shape[1] :].numel()

    times: dict[str, list[float]] = {"rlvr": [], "hf": []}
    tokens: dict[str, list[int]] = {"rlvr": [], "hf": []}
    for i in range(args.warmup + args.repeats):
        for name, fn in (("rlvr", rlvr_run), ("hf", hf_run)) if i % 2 == 0 else (("hf", hf_run), ("rlvr", rlvr_run)):
            seconds, n = time_once(fn)
            if i >= args.warmup:
                times[name].append(seconds)
                tokens[name].append(n)

    med = {k: statistics.median(v) for k, v in times.items()}
    tps = {k: statistics.median(n / s for n, s in zip(tokens[k], times[k])) for k in times}
    result = {
        "workload": {
            "config": args.config,
            "sequences": ids.shape[0],
            "prompt_tokens": ids.shape[1],
            "new_tokens": args.new_tokens,
            "temperature": 1.0,
            "vocab": len(tok),
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        "rlvr_generate": {
            "median_s": round(med["rlvr"], 4),
            "min_s": round(min(times["rlvr"]), 4),
            "tokens_per_s": round(tps["rlvr"]),
        },
        "hf_model_generate": {
            "median_s": round(med["hf"], 4),
            "min_s": round(min(times["hf"]), 4),
            "tokens_per_s": round(tps["hf"]),
        },
        "speedup": round(med["hf"] / med["rlvr"], 2),
        "repeats": args.repeats,
        "warmup": args.warmup,
        "machine": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "loadavg_1min_after": round(os.getloadavg()[0], 2),  # ~1 is this run; more = shared cores
            "python": platform.python_version(),
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
