"""A lean KV-cached decoder for the Llama / Qwen2 / Qwen3 family: same weights, far fewer ops than the HF forward.

On a small CPU model most of a Hugging Face decode step is per-op dispatch, not matmuls (see
docs/BENCHMARKS.md). This decoder runs the same math with fewer, fused ops:

1. per `generate` call (weights change between RL steps) fuse the weights (then cast them to the compute dtype when
   one is given, e.g. bf16 for CPUs with AMX / GPUs), stored input-major (K, N) so each matmul
   is a plain x @ w (~10% faster than F.linear's transposed operand at these sizes): q/k/v into one
   (hidden, (Hq + 2 Hkv) D) matrix, gate/up into one (hidden, 2 I); fold each RMSNorm weight into the matrix that
   follows it ((x * g) @ W == x @ (g[:, None] * W)) and the attention scale 1/sqrt(D) into the q columns;
2. preallocate the KV cache (layers, N, Hkv, P + T, D); rope cos/sin for every cache slot from the model's own
   `rotary_emb` (rope_theta and rope scaling match), positions counted from 0 at the first real prompt token;
3. prefill the left-padded prompts with a causal & padding boolean mask (SDPA), each distinct prompt once (GRPO
   repeats every prompt G times) with its K/V copied to the G rows; logits of the last position only;
4. decode step: embed -> per layer [rms, fused qkv, rope, cache write, attention over the filled cache,
   o_proj + residual in one addmm, rms, fused gate_up, silu * up, down_proj + residual in one addmm] -> lm_head.
   On CPU the one-query attention is baddbmm + softmax + bmm (SDPA's kernel costs ~4x more at this size);
5. `keep(rows)`: the sampler drops rows that have ended (EOS or a stop string) once half of the batch has, so a step
   computes only the rows still running (after a warm start most completions are far shorter than the longest).

Grouped-query attention needs no repeat_kv: the rep = Hq / Hkv query heads of a group share one kv head, so they are
laid along the query axis of that group. `rlvr.policies.family.family_reason(model)` says why a model must use the HF
loop instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rlvr.policies.family import rms, rope_tables


@dataclass
class _Layer:
    """One decoder layer's weights, fused and stored input-major (K, N) so every matmul is x (M, K) @ w (K, N)."""

    qkv: torch.Tensor  # (hidden, (Hq + 2 Hkv) D), input_layernorm and the q scale folded in
    qkv_b: torch.Tensor | None  # ((Hq + 2 Hkv) D,), q scale folded in
    qk_norm: torch.Tensor | None  # (Hq + Hkv, D) per-head q/k RMSNorm weight (Qwen3), q scale folded in
    o: torch.Tensor  # (Hq D, hidden)
    o_b: torch.Tensor | None
    gate_up: torch.Tensor  # (hidden, 2 I), post_attention_layernorm folded in
    gate_up_b: torch.Tensor | None
    down: torch.Tensor  # (I, hidden)
    down_b: torch.Tensor | None


def _cat_bias(*linears) -> torch.Tensor | None:
    if all(lin.bias is None for lin in linears):
        return None
    return torch.cat([lin.bias if lin.bias is not None else lin.weight.new_zeros(lin.out_features) for lin in linears])


def _input_major(*linears, norm: torch.Tensor) -> torch.Tensor:
    """cat of the linears' weights as one (K, N) contiguous matrix, rows scaled by the preceding RMSNorm weight.

    (x / rms(x) * g) @ W.T == (x / rms(x)) @ (g[:, None] * W.T); a contiguous (K, N) operand is also ~10% faster
    than F.linear's transposed one for these small matmuls on CPU.
    """
    w = torch.cat([lin.weight.t() for lin in linears], dim=1)  # (K, N), one copy
    return w.mul_(norm[:, None])


def _fuse_layer(layer, n_heads: int, n_kv: int, head_dim: int) -> _Layer:
    att, mlp = layer.self_attn, layer.mlp
    qkv_lins = (att.q_proj, att.k_proj, att.v_proj)
    qkv, bias, qk_norm = _input_major(*qkv_lins, norm=layer.input_layernorm.weight), _cat_bias(*qkv_lins), None
    scale, n_q = head_dim**-0.5, n_heads * head_dim  # SDPA's 1/sqrt(D), applied to q before the dot product
    if hasattr(att, "q_norm"):  # Qwen3: RMSNorm over D of each q and k head before rope; scale after the norm
        q_w, k_w = att.q_norm.weight * scale, att.k_norm.weight
        qk_norm = torch.cat([q_w.expand(n_heads, -1), k_w.expand(n_kv, -1)])  # (Hq + Hkv, D)
    else:
        qkv[:, :n_q] *= scale  # rope is linear, so scaling q before it is the same
        if bias is not None:
            bias[:n_q] *= scale
    return _Layer(
        qkv=qkv,
        qkv_b=bias,
        qk_norm=qk_norm,
        o=att.o_proj.weight.t().contiguous(),
        o_b=att.o_proj.bias,
        gate_up=_input_major(mlp.gate_proj, mlp.up_proj, norm=layer.post_attention_layernorm.weight),
        gate_up_b=_cat_bias(mlp.gate_proj, mlp.up_proj),
        down=mlp.down_proj.weight.t().contiguous(),
        down_b=mlp.down_proj.bias,
    )


def _matmul(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """x (M, K) @ w (K, N) (+ b)."""
    return torch.mm(x, w) if b is None else torch.addmm(b, x, w)


@dataclass
class _Pass:
    """What one forward pass over S new positions per row needs besides the weights."""

    n: int  # rows in this pass
    s: int  # new positions per row
    lo: int  # cache slot of the first new position
    cos: torch.Tensor  # (n, s, 1, D)
    sin: torch.Tensor  # (n, s, 1, D)
    k: torch.Tensor  # (layers, n, Hkv, >= lo + s, D) cache written at [lo, lo + s) and read at [0, lo + s)
    v: torch.Tensor
    mask: torch.Tensor | None  # (n, 1, s, lo + s) bool for SDPA; None: one-query bmm path with decode_bias


def _unique_rows(ids: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(rows, inverse) such that ids[rows][inverse] == ids, or None when every prompt is distinct.

    GRPO repeats each prompt G times; the prompt is prefilled once and its K/V copied to the G rows.
    """
    uniq, inverse = torch.unique(ids.masked_fill(~real, -1), dim=0, return_inverse=True)
    if len(uniq) == len(ids):
        return None
    rows = torch.empty(len(uniq), dtype=torch.long, device=ids.device)
    return rows.scatter_(0, inverse, torch.arange(len(ids), device=ids.device)), inverse


class FastDecoder:
    """Prefill once, then one token per row per `step`. Call under torch.no_grad()."""

    def __init__(self, model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int,
                 dtype: torch.dtype | None = None):
        cfg = model.config
        self.n_heads, self.n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        self.layers = [_fuse_layer(layer, self.n_heads, self.n_kv, self.head_dim) for layer in model.model.layers]
        self.embed = model.get_input_embeddings().weight  # (V, hidden)
        self.lm_head = model.get_output_embeddings().weight  # (V, hidden), the same tensor when tied
        self.final_norm = model.model.norm.weight  # (hidden,) not folded: lm_head may be the (shared) embedding
        self.hidden = self.embed.shape[1]
        if dtype is not None and dtype != self.embed.dtype:  # compute copy, fused (and folded) in the weights' dtype
            self.layers = [_Layer(*(None if t is None else t.to(dtype) for t in vars(w).values())) for w in self.layers]
            to = lambda t: t.to(dtype)  # noqa: E731
            self.embed, self.lm_head, self.final_norm = to(self.embed), to(self.lm_head), to(self.final_norm)

        N, P = prompt_ids.shape
        L = P + max_new_tokens
        dev, dtype = self.embed.device, self.embed.dtype
        self.prompt_ids, self.P, self.cur = prompt_ids.to(dev), P, 0
        self.real = prompt_mask.to(dev).bool()  # (N, P)
        prompt_pos = (self.real.long().cumsum(-1) - 1).clamp(min=0)  # (N, P) 0 at the first real token
        gen_pos = self.real.sum(-1, keepdim=True) + torch.arange(max_new_tokens, device=dev)  # (N, T)
        self.cos, self.sin = rope_tables(model, torch.cat([prompt_pos, gen_pos], dim=1), dtype)  # (N, L, 1, D)
        if self.cos.shape[-1] != self.head_dim:
            raise ValueError(f"FastDecoder: rope dim {self.cos.shape[-1]} != head_dim {self.head_dim}")
        shape = (len(self.layers), N, self.n_kv, L, self.head_dim)
        self.k_cache = torch.empty(shape, device=dev, dtype=dtype)  # (layers, N, Hkv, L, D)
        self.v_cache = torch.empty(shape, device=dev, dtype=dtype)
        # additive decode mask, one row per (sequence, kv head): 0 = attend, -inf = left padding
        bias = torch.zeros(N, self.n_kv, 1, L, device=dev, dtype=dtype)
        bias[..., :P].masked_fill_(~self.real[:, None, None, :], float("-inf"))
        self.decode_bias = bias.view(N * self.n_kv, 1, L)  # (N Hkv, 1, L)
        self.bmm_decode = dev.type == "cpu"  # on GPU, SDPA's fused kernels win
        self.key_valid = torch.cat([self.real, self.real.new_ones(N, max_new_tokens)], dim=1)  # (N, L)

    def prefill(self) -> torch.Tensor:
        """Run the prompts (each distinct prompt once); return next-token logits (N, V) at the last position."""
        P, dev = self.P, self.real.device
        dedup = _unique_rows(self.prompt_ids, self.real)
        rows = dedup[0] if dedup else slice(None)
        ids, real = self.prompt_ids[rows], self.real[rows]  # (U, P)
        causal = torch.ones(P, P, dtype=torch.bool, device=dev).tril()  # (P, P)
        # A left-pad query sees only itself: an all-False mask row would make NaN that leaks into K/V.
        mask = (causal & real[:, None, None, :]) | torch.eye(P, dtype=torch.bool, device=dev)  # (U, 1, P, P)
        k, v = self.k_cache[:, :, :, :P], self.v_cache[:, :, :, :P]
        if dedup:
            k, v = k.new_empty((k.shape[0], len(ids), *k.shape[2:])), v.new_empty((v.shape[0], len(ids), *v.shape[2:]))
        cos, sin = self.cos[rows, :P], self.sin[rows, :P]
        logits = self._forward(ids, _Pass(len(ids), P, 0, cos, sin, k, v, mask))  # (U, V)
        if dedup:
            self.k_cache[:, :, :, :P] = k[:, dedup[1]]
            self.v_cache[:, :, :, :P] = v[:, dedup[1]]
            logits = logits[dedup[1]]
        self.cur = P
        return logits  # (N, V)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (N,); return next-token logits (N, V)."""
        lo, N = self.cur, len(tokens)
        cos, sin = self.cos[:, lo : lo + 1], self.sin[:, lo : lo + 1]
        mask = None if self.bmm_decode else self.key_valid[:, None, None, : lo + 1]
        self.cur += 1
        return self._forward(tokens[:, None], _Pass(N, 1, lo, cos, sin, self.k_cache, self.v_cache, mask))

    def keep(self, rows: torch.Tensor) -> None:
        """Go on with the batch rows `rows` only (indices into the current batch): rows that have ended leave, with
        their cache, so later steps compute only the rows still running."""
        n = len(self.key_valid)
        self.k_cache, self.v_cache = self.k_cache[:, rows], self.v_cache[:, rows]  # (layers, n', Hkv, L, D)
        self.cos, self.sin = self.cos[rows], self.sin[rows]
        self.decode_bias = self.decode_bias.view(n, self.n_kv, 1, -1)[rows].reshape(len(rows) * self.n_kv, 1, -1)
        self.key_valid = self.key_valid[rows]

    def _forward(self, ids: torch.Tensor, p: _Pass) -> torch.Tensor:
        x = F.embedding(ids, self.embed).view(p.n * p.s, self.hidden)  # (n s, hidden)
        for i, w in enumerate(self.layers):
            x = self._layer(x, w, p, p.k[i], p.v[i])
        x = x.view(p.n, p.s, self.hidden)[:, -1]  # (n, hidden) last position only
        return F.linear(rms(x, self.eps) * self.final_norm, self.lm_head)  # (n, V)

    def _layer(self, x: torch.Tensor, w: _Layer, p: _Pass, kc: torch.Tensor, vc: torch.Tensor) -> torch.Tensor:
        Hq, Hkv, hi = self.n_heads, self.n_kv, p.lo + p.s
        qkv = _matmul(rms(x, self.eps), w.qkv, w.qkv_b).view(p.n, p.s, -1, self.head_dim)  # (n, s, Hq + 2 Hkv, D)
        q, k = self._rope(qkv[:, :, : Hq + Hkv], w.qk_norm, p)  # (n, s, Hq, D), (n, s, Hkv, D)
        kc[:, :, p.lo : hi] = k.transpose(1, 2)  # kc (n, Hkv, L, D)
        vc[:, :, p.lo : hi] = qkv[:, :, Hq + Hkv :].transpose(1, 2)
        k, v = kc[:, :, :hi], vc[:, :, :hi]  # (n, Hkv, hi, D)
        a = self._attend_one(q, k, v) if p.mask is None else self._attend(q, k, v, p.mask)  # (n s, Hq D)
        x = torch.addmm(x, a, w.o)  # residual + o_proj in one op
        if w.o_b is not None:
            x = x + w.o_b
        gate, up = _matmul(rms(x, self.eps), w.gate_up, w.gate_up_b).chunk(2, dim=-1)  # (n s, I) each
        x = torch.addmm(x, F.silu(gate) * up, w.down)  # residual + down_proj
        return x if w.down_b is None else x + w.down_b

    def _rope(self, qk: torch.Tensor, qk_norm: torch.Tensor | None, p: _Pass) -> tuple[torch.Tensor, torch.Tensor]:
        if qk_norm is not None:
            qk = rms(qk, self.eps) * qk_norm
        qk = torch.addcmul(qk * p.cos, qk.roll(self.head_dim // 2, dims=-1), p.sin)  # (n, s, Hq + Hkv, D)
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
