"""GPU scale checks for issue 12 (need CUDA for real numbers; not collected by pytest): on a lent GPU machine

    PYTHONPATH=src python tests/gpu/check_scale.py              # one JSON object; exit 1 on a failed check
    PYTHONPATH=src python tests/gpu/check_scale.py --dry-run    # the same code on the CPU with a small config

1. The lean training forward (rlvr/policies/lean.py) against the HF forward for a 0.5B-class Qwen2 shape with random
   weights (hidden 896, 24 layers, 14 heads / 2 KV heads, MLP 4864, vocabulary 151936: Qwen2-0.5B's): log-probs and
   parameter gradients, fp32 and bf16 autocast.
2. Training throughput of that model: forward + backward + AdamW step through rlvr's `completion_logp` (bf16
   autocast, fp32 weights), tokens per second and MFU = 6 N tokens/s / peak (peak bf16 dense: H100 / H200 989
   TFLOP/s, A100 312; N = parameters without the embedding table).
3. vLLM rollout throughput and log-prob agreement with the trainer, and rlvr vs TRL's GRPO step: reported as skipped
   with the reason when vllm / trl are not importable there (the vLLM engine is issue 12's item 3).
The dry run shrinks the model (2 layers, vocabulary 4096) and the batch, so that it checks the script, not a number.
"""

from __future__ import annotations

import json
import sys
import time

import torch

from rlvr.policies import load_policy
from rlvr.policies.hf_forward import completion_logp

QWEN2_05B = {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
             "intermediate_size": 4864, "vocab_size": 151936, "max_position_embeddings": 4096}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
results: dict = {"checks": {}}
failed: list[str] = []


def check(name: str, ok: bool, **info) -> None:
    results["checks"][name] = {"ok": bool(ok), **info}
    if not ok:
        failed.append(name)


def model_and_batch(device: str, dry: bool, rows: int, prompt: int, completion: int):
    over = {**QWEN2_05B, **({"num_hidden_layers": 2, "vocab_size": 4096} if dry else {})}
    model, _ = load_policy(config="qwen2-tiny", config_overrides=over, seed=0)
    model.to(device).train()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, over["vocab_size"], (rows, prompt + completion), generator=g)
    attn = torch.ones_like(ids)
    attn[: rows // 2, : prompt // 4] = 0  # left padding on half of the rows
    return model, ids.to(device), attn.to(device)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def lean_vs_hf(model, ids, attn, completion: int, autocast) -> dict:
    grads, logps = {}, {}
    weights = torch.randn(ids.shape[0], completion, generator=torch.Generator().manual_seed(1)).to(ids.device)
    for lean in (False, True):
        model.zero_grad(set_to_none=True)
        logp, _ = completion_logp(model, ids, attn, completion, autocast=autocast, lean=lean)
        (logp * weights).sum().backward()
        logps[lean] = logp.detach().float()
        grads[lean] = [p.grad.detach().float().clone() for p in model.parameters() if p.grad is not None]
    rel = max(((a - b).norm() / b.norm().clamp(min=1e-12)).item() for a, b in zip(grads[True], grads[False]))
    return {"max_logp_diff": float((logps[True] - logps[False]).abs().max()), "max_grad_rel_diff": rel}


def throughput(model, ids, attn, completion: int, device: str, steps: int) -> dict:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    for i in range(steps + 2):  # two warm-up steps
        if i == 2:
            sync(device)
            t0 = time.perf_counter()
        logp, _ = completion_logp(model, ids, attn, completion, autocast=torch.bfloat16)
        (-logp.mean()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync(device)
    seconds = (time.perf_counter() - t0) / steps
    tokens = int(attn.sum())
    n = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name)
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    out = {"seconds_per_step": seconds, "tokens_per_step": tokens, "tokens_per_second": tokens / seconds,
           "non_embedding_parameters": n, "device": name}
    if peak:
        out["mfu"] = 6 * n * tokens / seconds / peak
    return out


def skipped(module: str, why: str) -> dict:
    try:
        __import__(module)
        return {"skipped": f"{module} is importable but this check is not written yet: {why}"}
    except ImportError:
        return {"skipped": f"{module} is not installed here: {why}"}


def main() -> int:
    dry = "--dry-run" in sys.argv
    if not dry and not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device (use --dry-run to check the script on a CPU)"}))
        return 1
    device = "cpu" if dry else "cuda"
    results["device"] = torch.cuda.get_device_name(0) if device == "cuda" else "cpu (dry run)"
    rows, prompt, completion = (4, 16, 16) if dry else (16, 256, 256)
    model, ids, attn = model_and_batch(device, dry, rows, prompt, completion)
    for name, autocast, tol in (("float32", None, (1e-3, 1e-3)), ("bf16_autocast", torch.bfloat16, (0.1, 0.1))):
        d = lean_vs_hf(model, ids, attn, completion, autocast)
        check(f"lean_vs_hf/qwen2-0.5b-shape/{name}", d["max_logp_diff"] < tol[0] and d["max_grad_rel_diff"] < tol[1],
              **d)
    t = throughput(model, ids, attn, completion, device, steps=2 if dry else 10)
    check("train_throughput/qwen2-0.5b-shape/bf16", t["tokens_per_second"] > 0, **t)
    results["checks"]["vllm_rollout"] = skipped("vllm", "the vLLM rollout engine is issue 12's item 3")
    results["checks"]["rlvr_vs_trl_grpo_step"] = skipped("trl", "carry trl's wheels to the GPU machine "
                                                         "(benchmarks/grpo_step.py is the CPU version)")
    results["failed"] = failed
    print(json.dumps(results, indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
