"""The cost of the tied head's late weight gradient (rlvr.ops.TiedGrad): seconds of forward + backward of the
embedding lookup and the chunked lm_head, the head's weight gradient made in its own backward ("early": autograd
then sums it with the lookup's dense gradient) vs in the tied lookup's backward ("late": the chunks' logits
recomputed once more, no vocabulary-sized gradient while the decoder layers' backward runs). Prints one JSON object.

Workload: random fp32 weights of a tied (V, hidden) embedding at Qwen2's 152k vocabulary and the widths of
Qwen2.5-0.5B (896) and Qwen2-1.5B (1536); K = 1024 tokens, chunks of 256, log-prob and entropy both in the
objective, one (hidden, hidden) linear + tanh between lookup and head standing in for the decoder; 2 threads. The
arms alternate, --reps times each after one warm-up of each; the median is reported, and the ratio late / early.
The extra work is one (chunk, hidden) x (hidden, V) matmul per chunk, so its share of a whole training step shrinks
with the decoder's size: the JSON also gives that share for each width from the parameter counts (an estimate in
matmul FLOPs, not a measurement).

    .venv/bin/python benchmarks/chunked_head.py [--reps 5] > docs/bench/chunked_head.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from machine import cpu_model

from rlvr.ops import TiedGrad, head_logprobs, tied_embedding

V, K, CHUNK = 151936, 1024, 256
WIDTHS = {"qwen2.5-0.5b": (896, 494_032_768), "qwen2-1.5b": (1536, 1_543_714_304)}  # hidden, parameters (tied)


def one_step(weight: torch.Tensor, mix: torch.Tensor, ids: torch.Tensor, targets: torch.Tensor, late: bool) -> float:
    weight.grad = None
    start = time.perf_counter()
    tied = TiedGrad() if late else None
    x = torch.nn.functional.embedding(ids, weight) if tied is None else tied_embedding(ids, weight, None, tied)
    h = torch.tanh(x @ mix)
    logp, entropy = head_logprobs(h, weight, None, targets, chunk=CHUNK, with_entropy=True, tied=tied)
    (logp.sum() + 0.1 * entropy.sum()).backward()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    out = {"benchmark": "chunked_head", "machine": {"cpu": cpu_model(), "python": platform.python_version(),
                                                    "torch": torch.__version__, "threads": 2},
           "workload": {"vocab": V, "tokens": K, "chunk": CHUNK, "dtype": "float32", "reps": args.reps}, "widths": {}}
    for name, (H, params) in WIDTHS.items():
        weight = (torch.randn(V, H, generator=g) * 0.02).requires_grad_()
        mix = torch.randn(H, H, generator=g) / H**0.5
        ids, targets = torch.randint(0, V, (K,), generator=g), torch.randint(0, V, (K,), generator=g)
        times = {"early": [], "late": []}
        for arm in times:
            one_step(weight, mix, ids, targets, arm == "late")  # warm-up
        for _ in range(args.reps):
            for arm in times:
                times[arm].append(one_step(weight, mix, ids, targets, arm == "late"))
        med = {arm: statistics.median(t) for arm, t in times.items()}
        head, rest = V * H, params - V * H
        # matmul FLOPs per token: decoder 3 x 2 rest (forward, backward), chunked head 4 x 2 head (forward, and in
        # backward the recomputed logits, d h and d W); late adds one recomputed logits matmul
        early_flops = 6 * rest + 8 * head
        out["widths"][name] = {"hidden": H, "seconds": times, "median_s": med,
                               "late_over_early": round(med["late"] / med["early"], 3),
                               "estimated_step_share": round((early_flops + 2 * head) / early_flops, 3)}
        del weight
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
