"""A lean KV-cached decoder for the Llama / Qwen2 / Qwen3 family: same weights, far fewer ops than the HF forward.

On a small CPU model most of a Hugging Face decode step is per-op dispatch, not matmuls (see
/work/shared/notes/cpu-performance.md). This decoder runs the same math with fewer, fused ops:

1. per `generate` call (weights change between RL steps) fuse the weights: q/k/v into one ((Hq + 2 Hkv) D, hidden)
   matrix and gate/up into one (2 I, hidden) matrix; fold each RMSNorm weight into the matrix that follows it
   (W @ (g * n) == (W * g) @ n) and the attention scale 1/sqrt(D) into the q rows (or Qwen3's q_norm weight);
2. preallocate the KV cache (layers, N, Hkv, P + T, D); rope cos/sin for every cache slot from the model's own
   `rotary_emb` (rope_theta and rope scaling match), positions counted from 0 at the first real prompt token;
3. prefill the left-padded prompt with a causal & padding boolean mask (SDPA); logits of the last position only;
4. decode step: embed -> per layer [rms, fused qkv, rope, cache write, attention over the filled cache,
   o_proj + residual in one addmm, rms, fused gate_up, silu * up, down_proj + residual in one addmm] -> lm_head.
   On CPU the one-query attention is baddbmm + softmax + bmm (SDPA's kernel costs ~4x more at this size).

Grouped-query attention needs no repeat_kv: the rep = Hq / Hkv query heads of a group share one kv head, so they are
laid along the query axis of that group. `unsupported_reason(model)` says why a model must use the HF loop instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

_FAMILIES = ("llama", "qwen2", "qwen3")


def unsupported_reason(model) -> str | None:
    """None if FastDecoder can run `model`, else a short reason (the sampler then uses the HF loop)."""
    cfg = model.config
    if cfg.model_type not in _FAMILIES:
        return f"model_type '{cfg.model_type}' is not one of {_FAMILIES}"
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


@dataclass
class _Layer:
    qkv: torch.Tensor  # ((Hq + 2 Hkv) D, hidden), input_layernorm and q scale folded in
    qkv_b: torch.Tensor | None  # ((Hq + 2 Hkv) D,)
    qk_norm: torch.Tensor | None  # (Hq + Hkv, D) per-head q/k RMSNorm weight (Qwen3), q scale folded in
    o_t: torch.Tensor  # (Hq D, hidden) view of o_proj.weight.T
    o_b: torch.Tensor | None
    gate_up: torch.Tensor  # (2 I, hidden), post_attention_layernorm folded in
    gate_up_b: torch.Tensor | None
    down_t: torch.Tensor  # (I, hidden) view of down_proj.weight.T
    down_b: torch.Tensor | None


def _cat_bias(*linears) -> torch.Tensor | None:
    if all(lin.bias is None for lin in linears):
        return None
    return torch.cat([lin.bias if lin.bias is not None else lin.weight.new_zeros(lin.out_features) for lin in linears])


def _fold(weight: torch.Tensor, norm_weight: torch.Tensor, row_scale: torch.Tensor | None = None) -> torch.Tensor:
    """weight * norm_weight over columns (and * row_scale over rows), computed in fp32."""
    w = weight.float() * norm_weight.float()
    return (w if row_scale is None else w * row_scale[:, None]).to(weight.dtype)


def _fuse_layer(layer, n_heads: int, n_kv: int, head_dim: int) -> _Layer:
    att, mlp = layer.self_attn, layer.mlp
    qkv_lins = (att.q_proj, att.k_proj, att.v_proj)
    w = torch.cat([lin.weight for lin in qkv_lins])
    scale = head_dim**-0.5
    row_scale = torch.ones(w.shape[0], device=w.device)  # q rows * 1/sqrt(D): SDPA's scale, applied early
    qk_norm = None
    if hasattr(att, "q_norm"):  # Qwen3: RMSNorm over D of each q and k head, before rope
        q_w, k_w = att.q_norm.weight.float() * scale, att.k_norm.weight.float()
        qk_norm = torch.cat([q_w.expand(n_heads, -1), k_w.expand(n_kv, -1)]).to(w.dtype)
    else:
        row_scale[: n_heads * head_dim] = scale
    bias = _cat_bias(*qkv_lins)
    if bias is not None and qk_norm is None:
        bias = (bias.float() * row_scale).to(bias.dtype)
    return _Layer(
        qkv=_fold(w, layer.input_layernorm.weight, row_scale),
        qkv_b=bias,
        qk_norm=qk_norm,
        o_t=att.o_proj.weight.t(),
        o_b=att.o_proj.bias,
        gate_up=_fold(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]), layer.post_attention_layernorm.weight),
        gate_up_b=_cat_bias(mlp.gate_proj, mlp.up_proj),
        down_t=mlp.down_proj.weight.t(),
        down_b=mlp.down_proj.bias,
    )


def _rope_tables(model, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, signed sin (N, L, 1, D) from the model's rotary_emb, laid out for `x * cos + roll(x, D/2) * sin`.

    rotate_half(x) = cat(-x2, x1) = roll(x, D/2) * cat(-1, +1), so the sign is folded into the sin table once.
    """
    probe = torch.empty(0, device=positions.device, dtype=dtype)
    cos, sin = model.model.rotary_emb(probe, positions)  # (N, L, D) each
    half = sin.shape[-1] // 2
    sin = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)
    return cos.unsqueeze(2).contiguous(), sin.unsqueeze(2).contiguous()


def _rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x / rms(x) over the last dim, in fp32 as HF does (the norm weight is folded into the next matmul)."""
    xf = x.float()
    inv = (xf * xf).sum(-1, keepdim=True).mul_(1.0 / x.shape[-1]).add_(eps).rsqrt_()  # (..., 1)
    return (xf * inv).to(x.dtype)


class FastDecoder:
    """Prefill once, then one token per row per `step`. Call under torch.no_grad()."""

    def __init__(self, model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int):
        cfg = model.config
        self.n_heads, self.n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        self.layers = [_fuse_layer(layer, self.n_heads, self.n_kv, self.head_dim) for layer in model.model.layers]
        self.embed = model.get_input_embeddings().weight  # (V, hidden)
        self.lm_head = model.get_output_embeddings().weight  # (V, hidden), the same tensor when tied
        self.final_norm = model.model.norm.weight  # (hidden,) not folded: lm_head may be the (shared) embedding
        self.hidden = self.embed.shape[1]

        N, P = prompt_ids.shape
        L = P + max_new_tokens
        dev, dtype = self.embed.device, self.embed.dtype
        self.prompt_ids, self.P, self.cur = prompt_ids.to(dev), P, 0
        real = prompt_mask.to(dev).bool()  # (N, P)
        self.key_valid = torch.cat([real, real.new_ones(N, max_new_tokens)], dim=1)  # (N, L)
        prompt_pos = (real.long().cumsum(-1) - 1).clamp(min=0)  # (N, P) 0 at the first real token
        gen_pos = real.sum(-1, keepdim=True) + torch.arange(max_new_tokens, device=dev)  # (N, T)
        self.cos, self.sin = _rope_tables(model, torch.cat([prompt_pos, gen_pos], dim=1), dtype)  # (N, L, 1, D)
        if self.cos.shape[-1] != self.head_dim:
            raise ValueError(f"FastDecoder: rope dim {self.cos.shape[-1]} != head_dim {self.head_dim}")
        shape = (len(self.layers), N, self.n_kv, L, self.head_dim)
        self.k_cache = torch.empty(shape, device=dev, dtype=dtype)  # (layers, N, Hkv, L, D)
        self.v_cache = torch.empty(shape, device=dev, dtype=dtype)
        self.bmm_decode = dev.type == "cpu"
        # additive decode mask, one row per (sequence, kv head): 0 = attend, -inf = left padding
        self.decode_bias = torch.zeros(N, self.n_kv, 1, L, device=dev, dtype=dtype)
        self.decode_bias.masked_fill_(~self.key_valid[:, None, None, :], float("-inf"))
        self.decode_bias = self.decode_bias.view(N * self.n_kv, 1, L)  # (N Hkv, 1, L)

    def prefill(self) -> torch.Tensor:
        """Run the prompt; return next-token logits (N, V) at the last prompt position."""
        P, dev = self.P, self.key_valid.device
        causal = torch.ones(P, P, dtype=torch.bool, device=dev).tril()  # (P, P)
        # A left-pad query sees only itself: an all-False mask row would make NaN that leaks into K/V.
        mask = (causal & self.key_valid[:, None, None, :P]) | torch.eye(P, dtype=torch.bool, device=dev)
        return self._forward(self.prompt_ids, mask)  # (N, V)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (N,); return next-token logits (N, V)."""
        return self._forward(tokens[:, None], None)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        N, S = ids.shape
        x = F.embedding(ids, self.embed).view(N * S, self.hidden)  # (N S, hidden)
        for i, w in enumerate(self.layers):
            x = self._layer(x, w, i, N, S, mask)
        x = x.view(N, S, self.hidden)[:, -1]  # (N, hidden) last position only
        self.cur += S
        return F.linear(_rms(x, self.eps) * self.final_norm, self.lm_head)  # (N, V)

    def _layer(self, x: torch.Tensor, w: _Layer, i: int, N: int, S: int, mask: torch.Tensor | None) -> torch.Tensor:
        qkv = F.linear(_rms(x, self.eps), w.qkv, w.qkv_b).view(N, S, -1, self.head_dim)  # (N, S, Hq + 2 Hkv, D)
        q, k = self._rope(qkv[:, :, : self.n_heads + self.n_kv], w.qk_norm)  # (N, S, Hq, D), (N, S, Hkv, D)
        lo, hi = self.cur, self.cur + S
        self.k_cache[i, :, :, lo:hi] = k.transpose(1, 2)
        self.v_cache[i, :, :, lo:hi] = qkv[:, :, self.n_heads + self.n_kv :].transpose(1, 2)
        k, v = self.k_cache[i, :, :, :hi], self.v_cache[i, :, :, :hi]  # (N, Hkv, hi, D)
        if S == 1 and self.bmm_decode:
            a = self._attend_one(q, k, v)
        else:
            a = self._attend(q, k, v, mask if mask is not None else self.key_valid[:, None, None, :hi])
        x = torch.addmm(x, a, w.o_t)  # residual + o_proj in one op; a (N S, Hq D)
        if w.o_b is not None:
            x = x + w.o_b
        gate, up = F.linear(_rms(x, self.eps), w.gate_up, w.gate_up_b).chunk(2, dim=-1)  # (N S, I) each
        x = torch.addmm(x, F.silu(gate) * up, w.down_t)  # residual + down_proj
        return x if w.down_b is None else x + w.down_b

    def _rope(self, qk: torch.Tensor, qk_norm: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if qk_norm is not None:
            qk = _rms(qk, self.eps) * qk_norm
        cos = self.cos[:, self.cur : self.cur + qk.shape[1]]  # (N, S, 1, D)
        sin = self.sin[:, self.cur : self.cur + qk.shape[1]]
        qk = torch.addcmul(qk * cos, qk.roll(self.head_dim // 2, dims=-1), sin)  # (N, S, Hq + Hkv, D)
        return qk[:, :, : self.n_heads], qk[:, :, self.n_heads :]

    def _attend_one(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """One query per row: q (N, 1, Hq, D); k, v (N, Hkv, Lc, D) -> (N, Hq D). q is pre-scaled."""
        N, _, Hq, D = q.shape
        G, Lc = N * self.n_kv, k.shape[2]
        q = q.reshape(G, Hq // self.n_kv, D)  # (N Hkv, rep, D): the rep query heads of each kv group
        scores = torch.baddbmm(self.decode_bias[:, :, :Lc], q, k.reshape(G, Lc, D).transpose(1, 2))  # (G, rep, Lc)
        probs = scores.softmax(-1, dtype=torch.float32).to(v.dtype)
        return torch.bmm(probs, v.reshape(G, Lc, D)).view(N, Hq * D)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """q (N, S, Hq, D) pre-scaled; k, v (N, Hkv, Lc, D); mask (N, 1, S, Lc) bool -> (N S, Hq D)."""
        N, S, Hq, D = q.shape
        rep = Hq // self.n_kv
        # query head h uses kv head h // rep: lay the rep heads of a group along the query axis (index r S + s)
        q = q.view(N, S, self.n_kv, rep, D).permute(0, 2, 3, 1, 4).reshape(N, self.n_kv, rep * S, D)
        if rep > 1 and S > 1:
            mask = mask.repeat(1, 1, rep, 1)  # (N, 1, rep S, Lc)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)  # (N, Hkv, rep S, D)
        return out.view(N, self.n_kv, rep, S, D).permute(0, 3, 1, 2, 4).reshape(N * S, Hq * D)
