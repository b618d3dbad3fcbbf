"""GPU checks for issue 20 (need CUDA for real numbers; not collected by pytest): FSDP2, activation checkpointing and
chunked log-probs at a Qwen2-1.5B shape, peak GPU memory and tokens/s; on a lent GPU machine

    PYTHONPATH=src:benchmarks torchrun --nproc_per_node $(nvidia-smi -L | wc -l) tests/gpu/check_fsdp.py
    PYTHONPATH=src:benchmarks torchrun --nproc_per_node 2 tests/gpu/check_fsdp.py --dry-run   # CPU, small model

prints one JSON object (rank 0) and exits 1 on a failed check.

1. rlvr.run.setup with distributed.strategy: fsdp (nccl on CUDA, gloo in the dry run), bf16 compute with fp32 master
   weights (model.autocast), a random Qwen2-1.5B-shaped model (hidden 1536, 28 layers, 12 heads / 2 KV heads, MLP
   8960, vocabulary 151936), built once with activation checkpointing on and model.logp_chunk_tokens 1024.
2. For completion lengths T = 1024 and 4096 (64 prompt tokens, 2 rows per rank, benchmarks/memory.py's synthetic
   batch: random ids, random advantages), three settings toggled on that model: checkpointing off + unchunked
   (today's defaults), checkpointing on + unchunked, checkpointing on + chunked. Each: one warm-up
   rlvr.update.optimizer_step (forward, backward, clip, AdamW), then one measured step: peak
   torch.cuda.max_memory_allocated over the step (the largest over ranks), seconds, tokens per second per rank.
3. Checks: every loss and gradient norm finite; at T = 4096 checkpointing lowers the peak and chunking lowers it
   further. A setting that runs out of memory is reported as such (and fails only the check that needs it).
The dry run shrinks the model (2 layers, hidden 128, vocabulary 4096) and T (32, 64) and checks the code path only:
no memory is measured on the CPU.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time

import torch
from memory import rlvr_config, synthetic_batch  # benchmarks/memory.py (PYTHONPATH=src:benchmarks)

from rlvr.distributed import all_gather_object, barrier, shutdown
from rlvr.metrics import Metrics
from rlvr.run import setup
from rlvr.update import optimizer_step

QWEN2_1_5B = {"hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
              "intermediate_size": 8960, "vocab_size": 151936, "max_position_embeddings": 8192}
DRY = {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
       "intermediate_size": 256, "vocab_size": 4096, "max_position_embeddings": 512}
SETTINGS = {"checkpointing_off_unchunked": (False, 0), "checkpointing_on_unchunked": (True, 0),
            "checkpointing_on_chunked": (True, 1024)}
ROWS, PROMPT = 2, 64


def measure(run, batch, checkpointing: bool, chunk: int, cuda: bool) -> dict:
    run.policy.logp_chunk = chunk
    run.policy.model.model.gradient_checkpointing = checkpointing  # what the lean and HF forwards read
    log = Metrics()

    def step() -> None:
        optimizer_step(run.policy, run.optimizer, run.scheduler, batch, run.loss, micro_batch_size=len(batch),
                       grad_clip=1.0, world=run.world, log=log)

    try:
        step()  # warm-up
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
    except torch.OutOfMemoryError as e:
        if cuda:
            torch.cuda.empty_cache()
        return {"error": f"out of memory: {str(e).splitlines()[0]}"}
    seconds = time.perf_counter() - t0
    summary = {k: v for k, v in log.local().items() if k in ("policy_loss", "grad_norm")}
    return {"seconds": seconds, "tokens_per_second": int(batch.completion_mask.sum()) / seconds,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None, **summary}


def main() -> None:
    dry = "--dry-run" in sys.argv
    cuda = torch.cuda.is_available() and not dry
    shape = DRY if dry else QWEN2_1_5B
    lengths = (32, 64) if dry else (1024, 4096)
    results: dict = {"shape": shape, "rows_per_rank": ROWS, "prompt_tokens": PROMPT, "dry_run": dry, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="rlvr-gpu-fsdp-") as tmpdir:
        run = setup(rlvr_config({"cfg": {
            "model.config": "qwen2-tiny", "model.config_overrides": shape, "model.autocast": "bfloat16",
            "model.activation_checkpointing": True, "model.logp_chunk_tokens": 1024,
            "distributed.strategy": "fsdp", "rollout.max_new_tokens": max(lengths)}}, tmpdir))
        results.update(world=run.world.size, device=torch.cuda.get_device_name(0) if cuda else "cpu",
                       parameters=sum(p.numel() for p in run.policy.parameters()))  # DTensor numel: the full size
        run.policy.train()
        for T in lengths:
            batch = synthetic_batch(shape["vocab_size"], ROWS, PROMPT, T).to(run.policy.device)
            batch.group_ids = batch.group_ids + run.world.rank * ROWS  # groups of their own on each rank
            for name, (checkpointing, chunk) in SETTINGS.items():
                got = measure(run, batch, checkpointing, chunk, cuda)
                ranks = all_gather_object(got, run.world)
                peak = [r["peak_gib"] for r in ranks if r.get("peak_gib") is not None]
                results["runs"][f"T{T}/{name}"] = {**ranks[0], "peak_gib": max(peak) if peak else None,
                                                  "errors": [r["error"] for r in ranks if "error" in r]}
                barrier(run.world)
        main_rank = run.world.is_main
        if run.logger:
            run.logger.close()
        shutdown(run.world)
    if not main_rank:
        return
    checks, runs, last = {}, results["runs"], max(lengths)
    checks["finite"] = all(r.get("errors") == [] and all(v == v and abs(v) != float("inf") for k, v in r.items()
                                                          if k in ("policy_loss", "grad_norm"))
                          for r in runs.values())
    if cuda:
        off, ac, chunked = (runs[f"T{last}/{n}"].get("peak_gib") for n in SETTINGS)
        checks["checkpointing_lowers_peak"] = None not in (off, ac) and ac < off
        checks["chunking_lowers_peak"] = None not in (ac, chunked) and chunked < ac
    results["checks"] = checks
    print(json.dumps(results, indent=2))
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
