"""A lean, differentiable training forward for the Llama / Qwen2 / Qwen3 family: completion logits of an update batch.

The training counterpart of the inference decoder policies/fast_decode.py: the same weights and math as the Hugging
Face forward (and as its shared-prefix form, policies/hf_forward.py), with fewer FLOPs and ops:

1. pack: only tokens whose output or K/V matters are computed: the real tokens of each distinct prompt once (GRPO
   repeats a prompt G times), and each completion input that precedes a real completion token. Left padding, right
   padding and the last real token of every completion (which predicts padding) are never run. All M packed tokens
   go through every linear layer as one (M, hidden) matrix, prompts and completions together;
2. per call (the weights change every optimizer step) the q and k weights are concatenated into one matmul and one
   rope for both (torch.cat is differentiable: gradients reach the original parameters); v, gate and up stay
   separate matmuls, since a fused gate/up + chunk measured 3-12% slower on CPU (strided elementwise ops, and a cat
   in backward); residual + o_proj / down_proj is one addmm when autocast is off;
3. rope is `x * cos + roll(x, D/2) * signed_sin` with tables from the model's own `rotary_emb`;
4. attention runs in padded layouts: prompt slots (U, P) over their prompt (causal), completion slots (N, T - 1)
   over their owner's prompt then their own completion (causal). One index_select per layer gathers q and k straight
   into (batch, kv head, slot) order from the packed rows (one more for v, one back): no repeat_kv, no transposes.
   Scores are baddbmm(mask, q, k^T) + softmax + bmm: on CPU as fast as SDPA in this layout, while HF's SDPA call
   spent a third of its bf16 forward + backward in the flash-attention backward. A part whose scores would pass
   LONG_SCORES elements (long completions: 14 heads x 4k x 4k are 1 GB of fp32 per layer, kept for backward) runs
   SDPA with a boolean mask instead, whose CPU and CUDA flash kernels keep O(L) per head and recompute in backward;
5. logits of completion token 0 come from the last prompt position, token t from completion position t - 1; the
   lm_head runs only on those that predict a real token. Logits that predict padding are 0 (finite, unused).

With gradient checkpointing on (`model.gradient_checkpointing_enable()`, config model.activation_checkpointing) each
decoder layer runs under torch.utils.checkpoint: only its (M, hidden) input is kept, the layer is recomputed in
backward. `lean_completion_hidden` stops before the lm_head, for rlvr.ops.head_logprobs to run it in chunks.

RMSNorm runs in fp32 and, under autocast, the residual stream stays in the parameter dtype, as in HF. Equality with
the HF forward at every real completion position, and of the gradients: tests/test_lean_forward.py.
`lean_reason(model)` says why a model must use the HF forward instead:

    owner, first = prompt_owners(...)  # rlvr.policies.base: rows that share a prompt forward
    if lean_reason(model) is None:
        logits = lean_completion_logits(model, input_ids, attention_mask, T, owner, first)  # (N, T, V)

It reads the weights directly: forward hooks on the model's submodules do not run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from rlvr.distributed.fsdp import through
from rlvr.ops import TiedGrad, tied_embedding
from rlvr.policies.family import family_reason, rms, rope_tables

LONG_SCORES = 2**25  # scores of one attention part (batch x query heads x queries x keys) above this: SDPA


def lean_reason(model) -> str | None:
    """None if `lean_completion_logits(model, ...)` computes what `model(...)` does, else why not."""
    if not hasattr(model, "config"):
        return "not a Hugging Face model (no .config)"
    if hasattr(model, "peft_config") or hasattr(model, "get_base_model"):
        return "PEFT-wrapped model (adapter layers are not plain weights)"
    reason = family_reason(model)
    if reason:
        return reason
    modules = list(model.modules())
    if model.training and getattr(model.config, "attention_dropout", 0.0) > 0:
        return f"attention_dropout={model.config.attention_dropout} in training mode"
    if any(isinstance(m, torch.nn.Dropout) and m.training and m.p > 0 for m in modules):
        return "an active nn.Dropout"
    return None


@dataclass
class _Tables:
    """Where every token goes; built once per call, without grad.

    Rows: the M packed tokens that are computed. Slots: the padded layouts attention runs in, (U, P) prompt slots
    then (N, S) completion slots, S = T - 1. A padded slot reads some real row and is masked (key) or dropped (query).
    """

    ids: torch.Tensor  # (M,)
    cos: torch.Tensor  # (M, 1, D)
    sin: torch.Tensor  # (M, 1, D)
    qk_idx: torch.Tensor  # rows of qk viewed (M (Hq + Hkv), D): q in (batch, kv head, rep, slot) order, then k
    v_idx: torch.Tensor  # rows of v viewed (M Hkv, D) in (batch, kv head, key) order, prompt then completion
    out_idx: torch.Tensor  # (M Hq,) row of the attention outputs (prompt then completion) for each (row, head)
    prompt_bias: torch.Tensor  # (U Hkv, rep P, P) additive: 0 = attend, -inf = masked; or (U, 1, P, P) bool (long)
    tail_bias: torch.Tensor  # (N Hkv, rep S, P + S); or (N, 1, S, P + S) bool
    pred_rows: torch.Tensor  # (K,) row whose output predicts each real completion token
    pred_at: torch.Tensor  # (K,) where that token sits in the flattened (N T) logits
    sizes: tuple[int, int, int, int]  # U, P, N, S


def lean_completion_logits(model, input_ids, attention_mask, T: int, owner, first) -> torch.Tensor:
    """Logits (N, T, V) that predict the last T tokens of `input_ids`, in the compute dtype; differentiable.

    input_ids, attention_mask (N, P + T): left-padded prompt then right-padded completion. owner (N,): index of
    each row's distinct prompt; first (U,): the row holding each distinct prompt (rlvr.policies.base.prompt_owners).
    Logits that predict a padding token are 0. Check `lean_reason(model)` first.
    """
    h, pred_at = lean_completion_hidden(model, input_ids, attention_mask, T, owner, first)
    head = model.get_output_embeddings()
    pred = F.linear(h, head.weight, head.bias)  # (K, V)
    N = input_ids.shape[0]
    if len(pred_at) < N * T:
        pred = pred.new_zeros(N * T, pred.shape[-1]).index_copy_(0, pred_at, pred)
    return pred.view(N, T, -1)  # (N, T, V)


def lean_completion_hidden(model, input_ids, attention_mask, T: int, owner, first, tied: TiedGrad | None = None):
    """The final-norm hidden states (K, hidden) that predict the K real completion tokens, and where each token sits
    in the flattened (N T) completion positions, pred_at (K,); arguments as `lean_completion_logits`. `tied`: the
    embedding's gradient joins the chunked head's (rlvr.ops.tied_embedding; the input and output embeddings must be
    one tensor)."""
    emb, device_type = model.get_input_embeddings(), input_ids.device.type
    autocast = torch.is_autocast_enabled(device_type)
    t = _tables(model, input_ids, attention_mask, T, owner, first,
                torch.get_autocast_dtype(device_type) if autocast else emb.weight.dtype)
    x = F.embedding(t.ids, emb.weight, emb.padding_idx) if tied is None else \
        tied_embedding(t.ids, emb.weight, emb.padding_idx, tied)  # (M, hidden)
    recompute = torch.is_grad_enabled() and getattr(model.model, "gradient_checkpointing", False)
    for layer in model.model.layers:
        x = through(layer, functools.partial(_checkpointed if recompute else _layer, layer=layer, t=t, cfg=model.config,
                                             autocast=autocast), x)  # (M, hidden); FSDP: the layer's gathered weights
    norm = model.model.norm
    return _norm(x.index_select(0, t.pred_rows), norm.weight, norm.variance_epsilon), t.pred_at  # (K, hidden), (K,)


def _layer(x: torch.Tensor, layer, t: _Tables, cfg, autocast: bool) -> torch.Tensor:
    att, mlp = layer.self_attn, layer.mlp
    Hq, Hkv, D, M = cfg.num_attention_heads, cfg.num_key_value_heads, att.head_dim, x.shape[0]
    U, P, N, S = t.sizes
    h = _norm(x, layer.input_layernorm.weight, cfg.rms_norm_eps)
    qk, v = _linear(h, att.q_proj, att.k_proj).view(M, Hq + Hkv, D), _linear(h, att.v_proj)
    if hasattr(att, "q_norm"):  # Qwen3: RMSNorm over D of each q and k head, before rope
        g = torch.cat([att.q_norm.weight.expand(Hq, D), att.k_norm.weight.expand(Hkv, D)])  # (Hq + Hkv, D)
        qk = g * rms(qk, cfg.rms_norm_eps)
    qk = torch.addcmul(qk * t.cos, qk.roll(D // 2, dims=-1), t.sin)  # (M, Hq + Hkv, D)
    nq, nk = U * Hq * P, U * Hkv * P  # prompt part of the gathered q, k
    q1, q2, k1, k2 = qk.view(-1, D).index_select(0, t.qk_idx).split([nq, N * Hq * S, nk, N * Hkv * (P + S)])
    v1, v2 = v.view(M * Hkv, D).index_select(0, t.v_idx).split([nk, N * Hkv * (P + S)])
    G1, G2 = U * Hkv, N * Hkv
    a1 = _attend(q1.view(G1, Hq // Hkv * P, D), k1.view(G1, P, D), v1.view(G1, P, D), t.prompt_bias, att.scaling)
    a2 = _attend(q2.view(G2, Hq // Hkv * S, D), k2.view(G2, P + S, D), v2.view(G2, P + S, D), t.tail_bias,
                 att.scaling)
    a = torch.cat([a1.view(-1, D), a2.view(-1, D)]).index_select(0, t.out_idx).view(M, Hq * D)
    x = _residual(x, a, att.o_proj, autocast)
    h = _norm(x, layer.post_attention_layernorm.weight, cfg.rms_norm_eps)
    return _residual(x, F.silu(_linear(h, mlp.gate_proj)) * _linear(h, mlp.up_proj), mlp.down_proj, autocast)


def _checkpointed(x: torch.Tensor, layer, t: _Tables, cfg, autocast: bool) -> torch.Tensor:
    return checkpoint(_layer, x, layer, t, cfg, autocast, use_reentrant=False)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, scale: float) -> torch.Tensor:
    """Grouped-query attention without repeat_kv: q (G, rep S, D) holds the rep query heads that share kv head g
    along its query axis; k, v (G, L, D); bias (G, rep S, L) additive -> (G, rep S, D).

    A bool bias (B, 1, S, L), True = attend, is a long part: q is already (B, Hq, S, D) in memory (head h = g rep + r,
    HF's repeat_kv order), so SDPA takes it with enable_gqa and no copy."""
    if bias.dtype == torch.bool:
        (G, RS, D), (B, _, S, L) = q.shape, bias.shape
        out = F.scaled_dot_product_attention(q.to(v.dtype).view(B, RS // S * G // B, S, D),
                                             k.to(v.dtype).view(B, G // B, L, D), v.view(B, G // B, L, D),
                                             attn_mask=bias, scale=scale, enable_gqa=True)  # (B, Hq, S, D)
        return out.view(G, RS, D)
    probs = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=scale).softmax(-1, dtype=torch.float32)  # (G, rep S, L)
    return torch.bmm(probs.to(v.dtype), v)


def _norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """HF's RMSNorm: normalise in fp32, back to x's dtype, times the weight."""
    return weight * rms(x, eps)


def _linear(x: torch.Tensor, *linears) -> torch.Tensor:
    """x through one or several nn.Linear at once (one matmul with their weights and biases concatenated)."""
    if len(linears) == 1:
        return F.linear(x, linears[0].weight, linears[0].bias)
    bias = None
    if any(lin.bias is not None for lin in linears):
        bias = torch.cat([lin.weight.new_zeros(lin.out_features) if lin.bias is None else lin.bias for lin in linears])
    return F.linear(x, torch.cat([lin.weight for lin in linears]), bias)


def _residual(x: torch.Tensor, a: torch.Tensor, lin, autocast: bool) -> torch.Tensor:
    """x + lin(a): one addmm without autocast; under autocast the sum stays in x's dtype, as in HF."""
    if autocast:
        return x + F.linear(a, lin.weight, lin.bias)
    return torch.addmm(x if lin.bias is None else x + lin.bias, a, lin.weight.t())


@torch.no_grad()
def _tables(model, input_ids, attention_mask, T: int, owner, first, bias_dtype: torch.dtype) -> _Tables:
    cfg = model.config
    Hq, Hkv = cfg.num_attention_heads, cfg.num_key_value_heads
    N, P, S, U, dev = input_ids.shape[0], input_ids.shape[1] - T, T - 1, len(first), input_ids.device
    real = attention_mask.bool()
    pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (N, P + T) left padding: first real token at 0
    prompt_real, tail_real = real[first, :P], _live_inputs(real[:, P:])  # (U, P), (N, S)
    slot_real = torch.cat([prompt_real.flatten(), tail_real.flatten()])  # (U P + N S,)
    keep = slot_real.nonzero().flatten()  # (M,) slot of each row
    slot_row = (slot_real.long().cumsum(0) - 1).clamp(min=0)  # row of each slot; a padded slot reads some real row
    ids = torch.cat([input_ids[first, :P].flatten(), input_ids[:, P:-1].flatten()])[keep]  # (M,)
    positions = torch.cat([pos[first, :P].flatten(), pos[:, P:-1].flatten()])[keep]  # (M,)
    cos, sin = rope_tables(model, positions[None], model.get_input_embeddings().weight.dtype)  # (1, M, 1, D)
    p_rows, t_rows = slot_row[: U * P].view(U, P), slot_row[U * P :].view(N, S)
    qk_idx, v_idx, out_idx = _attention_index(p_rows, t_rows, owner, keep, Hq, Hkv)
    pred_slot = torch.cat([owner[:, None] * P + P - 1, U * P + torch.arange(N * S, device=dev).view(N, S)], 1)  # (N, T)
    pred_ok = real[:, P:] & slot_real[pred_slot]  # (N, T) real tokens whose predicting slot is computed
    rep = Hq // Hkv
    return _Tables(
        ids=ids, cos=cos[0], sin=sin[0], qk_idx=qk_idx, v_idx=v_idx, out_idx=out_idx,
        prompt_bias=_bias(_key_mask(prompt_real, 0), Hkv, rep, bias_dtype),
        tail_bias=_bias(_key_mask(torch.cat([prompt_real[owner], tail_real], 1), P), Hkv, rep, bias_dtype),
        pred_rows=slot_row[pred_slot[pred_ok]], pred_at=pred_ok.flatten().nonzero().flatten(), sizes=(U, P, N, S),
    )


def _attention_index(p_rows, t_rows, owner, keep, Hq: int, Hkv: int):
    """Gather indices into the grouped attention layouts and back (see _Tables), from the packed row of each slot:
    p_rows (U, P) prompt slots, t_rows (N, S) completion slots; keep (M,) the slot of each packed row."""
    (U, P), (N, S), dev = p_rows.shape, t_rows.shape, p_rows.device
    key_rows = torch.cat([p_rows[owner], t_rows], dim=1)  # (N, P + S): the owner's prompt, then its own completion
    q_heads, k_heads = torch.arange(Hq, device=dev), Hq + torch.arange(Hkv, device=dev)
    qk = [_head_rows(r, h, Hq + Hkv) for r, h in ((p_rows, q_heads), (t_rows, q_heads), (p_rows, k_heads),
                                                  (key_rows, k_heads))]
    v = [_head_rows(r, k_heads - Hq, Hkv) for r in (p_rows, key_rows)]
    # attention outputs come in (batch, head, slot) order: prompt batches, then completion batches
    out_of_slot = torch.cat([_slot_major(U, Hq, P, 0, dev), _slot_major(N, Hq, S, U * Hq * P, dev)])  # (U P + N S, Hq)
    return torch.cat(qk), torch.cat(v), out_of_slot[keep].flatten()


def _live_inputs(real: torch.Tensor) -> torch.Tensor:
    """(N, T) completion mask -> (N, T - 1) inputs worth running: real, with a real token after them."""
    later = real[:, 1:].flip(-1).cumsum(-1).flip(-1) > 0  # (N, T - 1) a real token after each input
    return real[:, :-1] & later


def _head_rows(rows: torch.Tensor, heads: torch.Tensor, width: int) -> torch.Tensor:
    """Token rows (B, L) -> flat (B H L,) rows of the (tokens x width, D) view of a per-head tensor, for `heads`."""
    return (rows[:, None, :] * width + heads[None, :, None]).flatten()


def _slot_major(B: int, H: int, L: int, offset: int, dev) -> torch.Tensor:
    """(B L, H): where slot (b, l) of head h sits in a (B, H, L) flattened output, plus `offset`."""
    return (offset + torch.arange(B * H * L, device=dev)).view(B, H, L).transpose(1, 2).reshape(B * L, H)


def _key_mask(real_key: torch.Tensor, causal_from: int) -> torch.Tensor:
    """(B, S, L) bool: query s sees key l if real and l <= causal_from + s, and always itself.

    real_key (B, L). A padded query slot must not see nothing: an all-masked row gives NaN, which reaches the real
    rows' gradients through the matmuls even though the slot's output is dropped.
    """
    B, L = real_key.shape
    q_at = causal_from + torch.arange(L - causal_from, device=real_key.device)[:, None]  # (S, 1) key slot of a query
    slots = torch.arange(L, device=real_key.device)[None]  # (1, L)
    return (real_key[:, None, :] & (slots <= q_at)) | (slots == q_at)  # (B, S, L)


def _bias(allowed: torch.Tensor, n_kv: int, rep: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, S, L) bool -> (B Hkv, rep S, L) additive mask laid out like the grouped scores; or, past LONG_SCORES
    scores, (B, 1, S, L) bool for SDPA (see _attend)."""
    B, S, L = allowed.shape
    if B * n_kv * rep * S * L > LONG_SCORES:
        return allowed[:, None]
    bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, float("-inf"))
    return bias[:, None, None].expand(B, n_kv, rep, S, L).reshape(B * n_kv, rep * S, L)
