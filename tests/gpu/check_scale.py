"""GPU scale checks for issue 12 (need CUDA for real numbers; not collected by pytest): on a lent GPU machine

    PYTHONPATH=src python tests/gpu/check_scale.py              # one JSON object; exit 1 on a failed check
    PYTHONPATH=src python tests/gpu/check_scale.py --dry-run    # the same code on the CPU with a small config

1. The lean training forward (rlvr/policies/lean.py) against the HF forward for a 0.5B-class Qwen2 shape with random
   weights (hidden 896, 24 layers, 14 heads / 2 KV heads, MLP 4864, vocabulary 151936: Qwen2-0.5B's): log-probs and
   parameter gradients, fp32 and bf16 autocast.
2. Training throughput of that model: forward + backward + AdamW step through rlvr's `completion_logp` (bf16
   autocast, fp32 weights), tokens per second and MFU = 6 N tokens/s / peak (peak bf16 dense: H100 / H200 989
   TFLOP/s, A100 312; N = parameters without the embedding table).
3. vLLM rollout (rlvr.policies.vllm_engine, colocated, sleep level 1, bf16) of that model: tokens per second, and the
   mean / max |log-prob difference| between vLLM's sampler log-probs and the trainer's (`policy.logp`, bf16 autocast)
   on the same tokens; twice: on the exported weights, then after the policy's weights moved (noise added), a
   `sync` and a sleep / wake round, so a weight sync that failed shows as a large gap (fails above a mean of 0.1).
   A round's seconds include waking (and loading the weights) and going back to sleep. Skipped with the reason
   without vllm (and in the dry run: vLLM needs CUDA); an exception is reported as that row's failure.
4. rlvr vs TRL's GRPO step at that shape (benchmarks/grpo_step.py's comparison, imported, with TRL on the GPU and bf16
   on both sides): skipped with the reason when trl is not importable there. The dry run runs it on the CPU for one
   tiny step to check the code path.
The dry run shrinks the model (2 layers, vocabulary 4096) and the batch, so that it checks the script, not a number.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from pathlib import Path

import torch

from rlvr.config import VLLMConfig
from rlvr.policies import SamplingParams, load_policy
from rlvr.policies.causal_lm import HFCausalLM
from rlvr.policies.hf_forward import completion_logp
from rlvr.seeding import row_seeds
from rlvr.tasks import TASKS

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

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


def importable(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def logp_gap(policy: HFCausalLM, batch) -> dict:
    """|vLLM's sampler log-probs - the trainer's| over the sampled tokens (mean and max)."""
    with torch.no_grad():
        logp, _ = policy.logp(batch, temperature=1.0)
    diff = (logp.float() - batch.rollout_logp).abs()[batch.loss_mask.bool()]
    return {"mean_abs_logp_diff": float(diff.mean()), "max_abs_logp_diff": float(diff.max())}


def vllm_rollout(rows: int, completion: int) -> dict:
    """Item 3: two rounds of colocated vLLM sampling; the second after the weights moved, a sync and a sleep / wake."""
    from rlvr.policies.vllm_engine import VLLMSampler

    policy = HFCausalLM.load(config="qwen2-tiny", config_overrides=QWEN2_05B, seed=0, autocast=torch.bfloat16)
    policy.to("cuda")
    task = TASKS.build("arithmetic", digits=2, ops="+", seed=0)
    groups, G = rows // 8, 8
    samples = [task[i] for i in range(groups) for _ in range(G)]
    group_ids = torch.arange(groups).repeat_interleave(G)
    params = SamplingParams(max_new_tokens=completion, dtype=torch.bfloat16)
    settings = VLLMConfig(colocate=True, gpu_memory_utilization=0.3, sleep_level=1)
    t0 = time.perf_counter()
    sampler = VLLMSampler.start(policy, params, G, settings=settings)
    out = {"start_s": time.perf_counter() - t0, "rows": len(samples), "max_new_tokens": completion}
    try:
        for name in ("exported_weights", "after_sync"):
            if name == "after_sync":
                with torch.no_grad():
                    for p in policy.parameters():
                        p.add_(torch.randn_like(p) * 0.02)  # the trainer's weights move; the engine must follow
                sampler.sync(policy)
            seeds = row_seeds(0, name, group_ids, torch.arange(G).repeat(groups))
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            batch = sampler.generate(samples, group_ids, seeds)  # wake (+ weight load), sample, sleep
            torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            tokens = int(batch.completion_mask.sum())
            out[name] = {"seconds": seconds, "tokens": tokens, "tokens_per_second": tokens / seconds,
                         "gpu_free_gib_asleep": torch.cuda.mem_get_info()[0] / 2**30, **logp_gap(policy, batch)}
    finally:
        sampler.close()
    return out


def trl_step(dry: bool) -> dict:
    """Item 4: benchmarks/grpo_step.py's rlvr-vs-TRL comparison (its main, imported), TRL on the GPU."""
    sys.path.insert(0, str(BENCHMARKS))
    import grpo_step

    class TrlOnDevice(grpo_step.TrlBench):
        """grpo_step's TrlBench with use_cpu off (it is a CPU benchmark), so TRL trains where rlvr does."""

        def __init__(self, *args, **kwargs):
            import trl

            config = trl.GRPOConfig
            trl.GRPOConfig = lambda **kw: config(**{**kw, "use_cpu": dry})
            try:
                super().__init__(*args, **kwargs)
            finally:
                trl.GRPOConfig = config

    over = {**QWEN2_05B, **({"num_hidden_layers": 2, "vocab_size": 4096} if dry else {})}
    w = grpo_step.Workload(name="grpo_step_qwen2-0.5b-shape", model={"config": "qwen2-tiny", "config_overrides": over},
                           prompts=2 if dry else 8, group=2 if dry else 8, new_tokens=4 if dry else 64,
                           target_ratio=None, target_ratio_bf16=None)
    argv = ["grpo_step", "--bf16", "--threads", "2" if dry else "8"]
    argv += ["--steps", "1", "--warmup", "1", "--rounds", "1"] if dry else ["--steps", "6", "--warmup", "2"]
    saved, sys.argv = sys.argv, argv
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            grpo_step.main(w, trl_bench=TrlOnDevice)
    finally:
        sys.argv = saved
    report = json.loads(printed.getvalue())
    return {k: report.get(k) for k in ("ratio", "precision", "rlvr", "trl", "workload", "differences", "note")}


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
    del model, ids, attn  # the GPU's memory for the GRPO comparison and the engine (last: vLLM stays initialised)
    if device == "cuda":
        torch.cuda.empty_cache()
    if importable("trl"):
        try:
            t = trl_step(dry)
            check("rlvr_vs_trl_grpo_step/qwen2-0.5b-shape/bf16", t["ratio"] is not None, **t)
        except Exception as err:  # first run on a GPU: report it with the other rows
            check("rlvr_vs_trl_grpo_step/qwen2-0.5b-shape/bf16", False, error=f"{type(err).__name__}: {err}")
    else:
        results["checks"]["rlvr_vs_trl_grpo_step"] = {"skipped": "trl is not installed here: carry its wheels "
                                                      "(pip install 'rlvr[bench]')"}
    if dry:
        results["checks"]["vllm_rollout"] = {"skipped": "dry run: vLLM needs CUDA"}
    elif not importable("vllm"):
        results["checks"]["vllm_rollout"] = {"skipped": "vllm is not installed here: pip install 'rlvr[vllm]'"}
    else:
        try:
            v = vllm_rollout(rows * 8, completion)
            gaps = [v[k]["mean_abs_logp_diff"] for k in ("exported_weights", "after_sync")]
            check("vllm_rollout/qwen2-0.5b-shape/bf16", max(gaps) < 0.1 and v["after_sync"]["tokens_per_second"] > 0,
                  **v)
        except Exception as err:  # the engine has never run on a GPU: report it with the other rows
            check("vllm_rollout/qwen2-0.5b-shape/bf16", False, error=f"{type(err).__name__}: {err}")
    results["failed"] = failed
    print(json.dumps(results, indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
