"""How a run fits its model in memory: activation checkpointing, chunked log-probs and sharding, applied to the
policy once it is built (rlvr.run.setup), before the optimizer sees its parameters.

1. model.activation_checkpointing turns on HF gradient checkpointing; the lean forward then checkpoints each of its
   own decoder layers (rlvr.policies.lean), the HF forward its modules.
2. model.logp_chunk_tokens sets the policy's lm_head chunk (rlvr.policies.hf_forward, rlvr.ops.head_logprobs).
3. distributed.strategy: fsdp shards the model over the data-parallel ranks (rlvr.distributed.fsdp).

A policy that cannot do what the config asks is refused in one line naming the key.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from rlvr.config import Config, ConfigError
from rlvr.distributed import World


def prepare_policy(cfg: Config, policy, world: World, device: torch.device) -> None:
    """Memory options, then the device move, then sharding (FSDP shards what is already on the device)."""
    model = getattr(policy, "model", None)
    if cfg.distributed.strategy == "fsdp" and (reason := fsdp_reason(cfg, policy)):
        raise ConfigError(f"distributed.strategy fsdp: {reason}")
    if cfg.model.activation_checkpointing:
        enable_checkpointing(model, f"model.activation_checkpointing: {type(policy).__name__}")
    if cfg.model.logp_chunk_tokens:
        if not hasattr(policy, "logp_chunk"):
            raise ConfigError(f"model.logp_chunk_tokens: {type(policy).__name__} computes its log-probs in one pass "
                              "(chunking is for causal LMs: rlvr.policies.causal_lm)")
        policy.logp_chunk = cfg.model.logp_chunk_tokens
        policy.logp_late_head_grad = cfg.model.logp_chunk_late_head_grad
    policy.to(device)
    if cfg.distributed.strategy == "replicate" and world.size > 1 and (short := replica_shortfall(policy, device)):
        raise ConfigError(f"distributed.strategy replicate: {short}; shard the model with distributed.strategy: fsdp")
    if cfg.distributed.strategy == "fsdp" and world.size > 1:
        from rlvr.distributed.fsdp import shard_model

        compute = getattr(torch, cfg.model.autocast) if cfg.model.autocast else None
        shard_model(model, world, compute_dtype=compute, offload=cfg.distributed.fsdp_offload,
                    reshard_after_forward=cfg.distributed.fsdp_reshard_after_forward)


def in_turns(cfg: Config, world: World, build):
    """build() on every rank; under FSDP one rank after the other (each builds the full model, shards it and frees
    the rest before the next starts), so the machine holds one full model at a time, not one per rank."""
    if cfg.distributed.strategy != "fsdp" or world.size == 1:
        return build()
    from rlvr.distributed import barrier
    from rlvr.distributed.fsdp import device_mesh

    device_mesh(world, "cuda" if torch.cuda.is_available() else "cpu")  # collectively, before the turns
    built = None
    for turn in range(world.size):
        if turn == world.rank:
            built = build()
        barrier(world)
    return built


def fsdp_reason(cfg: Config, policy=None) -> str | None:
    """Why distributed.strategy: fsdp cannot shard this run's policy (once built; before: what the config says), or
    None."""
    from rlvr.config import _names_vlm

    if policy is None and cfg.model.config is not None and _names_vlm(cfg.model):
        return f"model.config '{cfg.model.config}' is not a causal LM with decoder layers (vision-language models " \
               "train with strategy: replicate)"
    model = getattr(policy, "model", None)
    if policy is not None and (not hasattr(getattr(model, "model", None), "layers") or not hasattr(policy,
                                                                                                  "logp_chunk")):
        return f"{type(policy).__name__} is not a causal LM with decoder layers (model.model.layers)"
    if cfg.model.lora:
        return "model.lora: LoRA adapters train a few weights; run them with distributed.strategy: replicate"
    if cfg.rollout.max_staleness:
        return "rollout.max_staleness > 0 samples from a copy of the policy; run it with strategy: replicate"
    if cfg.distributed.backend == "ray" and cfg.distributed.rollout_workers:
        return (f"distributed.rollout_workers {cfg.distributed.rollout_workers}: Ray rollout workers hold a full copy "
                "of the policy; set distributed.rollout_workers: 0 (the ranks sample on their gathered weights)")
    return None


def replica_shortfall(policy, device: torch.device) -> str | None:
    """Why full replicas cannot train here (the gradients and AdamW state every rank adds to the weights it already
    holds, 3 x the weights, over the memory left: on CPU for all local ranks together, on a GPU for its rank), or
    None. Activations come on top, so passing this check does not promise the run fits."""
    params = [p for p in policy.parameters() if p.requires_grad]
    need = 3 * sum(p.numel() * p.element_size() for p in params)  # grad + exp_avg + exp_avg_sq
    if device.type == "cuda":
        free, ranks = torch.cuda.mem_get_info(device)[0], 1
    else:
        free, ranks = available_memory(), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if free is None or ranks * need <= free:
        return None
    n = sum(p.numel() for p in params)
    return (f"{ranks} local rank(s) x {n / 1e9:.2f}B trainable parameters need {ranks * need / 2**30:.1f} GiB more "
            f"for gradients and AdamW state, {free / 2**30:.1f} GiB is available")


def available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def enable_checkpointing(model, who: str) -> None:
    """HF activation checkpointing with torch's non-reentrant checkpoint (transformers >= 5.2x names it
    activation_checkpointing_enable, older ones gradient_checkpointing_enable)."""
    enable = getattr(model, "activation_checkpointing_enable", None) or getattr(model, "gradient_checkpointing_enable",
                                                                                None)
    if enable is None:
        raise ConfigError(f"{who} has no Hugging Face model to checkpoint")
    enable({"use_reentrant": False})
