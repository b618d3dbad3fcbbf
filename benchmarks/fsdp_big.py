"""A model two replicas cannot hold, trained under `torchrun --nproc_per_node 2` with distributed.strategy: fsdp.

The model: a Qwen2ForCausalLM with random weights, hidden 2048, 19 layers, 16 query / 4 key-value heads,
intermediate 5504, the 99-symbol char tokenizer (tied), about 0.84B parameters, fp32 master weights, bf16 compute
(model.autocast bfloat16; under FSDP the gathered weights are bf16). Replicas need 16 bytes per parameter per rank
(weights, gradient, two AdamW moments): 2 x 13.5 GB on a 24 GiB machine. FSDP needs 8 per rank plus one gathered bf16
copy (2 per rank) for sampling.

1. `distributed.strategy=replicate`: expected refused in one line before the first step (rlvr.scale.replica_shortfall).
2. `distributed.strategy=fsdp`: 3 GRPO steps (2 prompts x group 2 per rank, 8 new tokens, arithmetic, the
   dense reward `letter_share` below: a random model's completions all score 0 on arithmetic, so its advantages and
   gradients would be zero), activation checkpointing and chunked log-probs on; metrics from metrics.jsonl.

Each command runs alone; a thread samples /proc/meminfo every 0.2 s for the machine-wide low-water mark of
MemAvailable, and getrusage(RUSAGE_CHILDREN) gives the largest rank's peak RSS. Prints one JSON object.

    .venv/bin/python benchmarks/fsdp_big.py [--steps 3] [--layers 19] [--out /tmp/fsdp_big]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def overrides(args, strategy: str) -> list[str]:
    shape = (f"{{hidden_size: 2048, intermediate_size: 5504, num_hidden_layers: {args.layers}, num_attention_heads: 16,"
             " num_key_value_heads: 4, max_position_embeddings: 512, tie_word_embeddings: true}")
    return ["model.config=qwen2-tiny", f"model.config_overrides={shape}", "model.autocast=bfloat16",
            "model.activation_checkpointing=true", "model.logp_chunk_tokens=64", "task.name=arithmetic",
            "task.kwargs={digits: 1, ops: '+'}", "task.eval_size=4", "rollout.prompts_per_step=4",
            f"rewards=[{{name: python, kwargs: {{function: '{__file__}:letter_share'}}}}]",
            "rollout.group_size=2", "rollout.max_new_tokens=8", f"train.steps={args.steps}", "train.eval_every=0",
            "train.progress=false", "train.threads=1", "train.diversity_metrics=false", "optim.lr=1e-5",
            "algo.micro_batch_size=2", f"distributed.strategy={strategy}", f"output_dir={args.out}",
            f"name={strategy}", "--overwrite"]


def letter_share(samples, completions, **kwargs) -> list[float]:
    """The share of ASCII letters in a completion: dense and varied on a random model's text."""
    return [sum(ch.isascii() and ch.isalpha() for ch in c) / max(len(c), 1) for c in completions]


def available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def run(args, strategy: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = Path(args.out) / "base.yaml"  # everything is in the overrides
    base.parent.mkdir(parents=True, exist_ok=True)
    base.write_text("seed: 0\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29561", "-m",
           "rlvr.cli", "train", str(base), *overrides(args, strategy)]
    low, done = [available()], threading.Event()

    def watch():
        while not done.wait(0.2):
            low.append(available())

    thread = threading.Thread(target=watch, daemon=True)
    before, start = low[0], time.perf_counter()
    thread.start()
    proc = subprocess.run(cmd, env=env, cwd=HERE, capture_output=True, text=True)
    done.set()
    thread.join()
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("rlvr: error")]
    out = {"strategy": strategy, "returncode": proc.returncode, "seconds": round(time.perf_counter() - start, 1),
           "error_lines": sorted(set(errors)),
           "machine_peak_used_gib": round((before - min(low)) / 2**30, 2),
           "largest_process_peak_rss_gib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 2)}
    metrics = Path(args.out) / strategy / "metrics.jsonl"
    if proc.returncode == 0 and metrics.is_file():
        rows = [json.loads(line) for line in metrics.read_text().splitlines()]
        keep = ("step", "policy_loss", "grad_norm", "reward", "entropy", "time/step", "time/update", "time/rollout")
        out["steps"] = [{k: r[k] for k in keep if k in r} for r in rows if "policy_loss" in r]
    elif proc.returncode != 0 and not errors:
        out["stderr_tail"] = proc.stderr[-2000:]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--layers", type=int, default=19)
    parser.add_argument("--out", default="/tmp/fsdp_big")
    parser.add_argument("--only", choices=["replicate", "fsdp"])
    args = parser.parse_args()
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    shape = AutoConfig.for_model("qwen2", hidden_size=2048, intermediate_size=5504, num_hidden_layers=args.layers,
                                 num_attention_heads=16, num_key_value_heads=4, vocab_size=99,
                                 tie_word_embeddings=True)
    with torch.device("meta"):  # the parameter count, without allocating
        n = sum(p.numel() for p in AutoModelForCausalLM.from_config(shape).parameters())
    result = {"parameters": n, "total_memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                                                          / 2**30, 1),
              "runs": [run(args, s) for s in ("replicate", "fsdp") if args.only in (None, s)]}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
