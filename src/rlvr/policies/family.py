"""What the lean training forward (policies/lean.py) and the fast decoder (policies/fast_decode.py) share: which models
they can run (the Llama / Qwen2 / Qwen3 family with plain layers), RMSNorm in fp32 as HF computes it, and rope tables
from the model's own rotary embedding.
"""

from __future__ import annotations

import torch

_FAMILIES = ("llama", "qwen2", "qwen3")


def family_reason(model) -> str | None:
    """None if the lean forward and the fast decoder can run `model` (same weights and math as its HF forward),
    else a short reason (rlvr then uses the HF forward / decode loop)."""
    cfg = model.config
    if cfg.model_type not in _FAMILIES:
        return f"model_type '{cfg.model_type}' is not one of {_FAMILIES}"
    try:  # adapters (PEFT LoRA) and quantized layers replace nn.Linear: their weights are not the whole story
        layer = model.model.layers[0]
        linears = [getattr(layer.self_attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
        linears += [getattr(layer.mlp, n) for n in ("gate_proj", "up_proj", "down_proj")]
        model.model.rotary_emb  # noqa: B018
    except (AttributeError, IndexError, TypeError):
        return "not the plain HF module layout (model.model.layers[i].self_attn/mlp, model.model.rotary_emb)"
    if any(type(lin) is not torch.nn.Linear for lin in linears):
        return "projections are not plain nn.Linear (adapter or quantized layers)"
    if any(t != "full_attention" for t in getattr(cfg, "layer_types", None) or ()):
        return "sliding-window attention layers"
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    if any(k in str(rope.get("rope_type", rope.get("type", "default"))) for k in ("dynamic", "longrope")):
        return "position-dependent rope scaling (dynamic / longrope)"
    if getattr(cfg, "pretraining_tp", 1) != 1:
        return "pretraining_tp > 1"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"hidden_act '{cfg.hidden_act}'"
    return None


def rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x / rms(x) over the last dim, in fp32 as HF does (the norm weight is folded into the next matmul)."""
    xf = x.float()
    inv = (xf * xf).sum(-1, keepdim=True).mul_(1.0 / x.shape[-1]).add_(eps).rsqrt_()  # (..., 1)
    return (xf * inv).to(x.dtype)


def rope_tables(model, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, signed sin (N, L, 1, D) from the model's rotary_emb, laid out for `x * cos + roll(x, D/2) * sin`.

    rotate_half(x) = cat(-x2, x1) = roll(x, D/2) * cat(-1, +1), so the sign is folded into the sin table once.
    """
    probe = torch.empty(0, device=positions.device, dtype=dtype)
    cos, sin = model.model.rotary_emb(probe, positions)  # (N, L, D) each
    half = sin.shape[-1] // 2
    sin = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)
    return cos.unsqueeze(2).contiguous(), sin.unsqueeze(2).contiguous()
