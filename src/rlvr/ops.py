"""Pure tensor helpers shared by the algorithms: masked reductions, group statistics, log-probs, entropy.

1. Masked reductions select with `torch.where`, never multiply by the mask, so NaN/inf in padded
   positions changes neither the value nor the gradient (0 * inf = NaN would).
2. `group_mean_std` gives each element the statistics of its group (GRPO's mu_g, sigma_g), ignoring NaN.
3. `token_logprobs` / `entropy_from_logits` work in (at least) float32 on logits divided by the sampling temperature.
4. `head_logprobs` runs the lm_head and both in chunks of tokens, recomputed in backward: no (tokens, V) logits,
   and one (V, hidden) gradient buffer for all chunks; with a tied embedding (`tied_embedding`) that buffer is made
   only when the lookup's backward runs, last.
"""

from __future__ import annotations

import torch


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of `x` where `mask` is true (over `dim`, or everything)."""
    picked = torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))
    return picked.sum() if dim is None else picked.sum(dim)


def masked_mean(
    x: torch.Tensor, mask: torch.Tensor, dim: int | None = None, *, denom: float | torch.Tensor | None = None
) -> torch.Tensor:
    """Mean of `x` where `mask` is true; `denom` replaces the local count (a global normaliser).

    Denominators are floored at 1, so an empty selection gives 0, not NaN.
    """
    total = masked_sum(x, mask, dim)
    if denom is None:
        denom = mask.bool().sum() if dim is None else mask.bool().sum(dim)
    denom = torch.as_tensor(denom, device=total.device).to(total.dtype).clamp_min(1)
    return total / denom


def masked_var(x: torch.Tensor, mask: torch.Tensor, *, unbiased: bool = True) -> torch.Tensor:
    """Variance of the masked entries of `x` (Bessel-corrected by default); fewer than two entries -> 0."""
    x = torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))  # before (x - mean)**2
    mean = masked_mean(x, mask)
    count = mask.bool().sum()
    denom = (count - 1 if unbiased else count).clamp_min(1).to(x.dtype)
    return masked_sum((x - mean) ** 2, mask) / denom


def group_mean_std(
    values: torch.Tensor, group_ids: torch.Tensor, *, ddof: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-element (N,) mean, std and count of the element's group, NaN entries excluded.

    The std is exactly 0 for a group whose valid values are all equal or that has at most `ddof` valid
    values; a group with no valid value has mean 0. Computed in float64, two-pass, returned in `values.dtype`.
    """
    if values.ndim != 1 or group_ids.shape != values.shape:
        shapes = f"{tuple(values.shape)} / {tuple(group_ids.shape)}"
        raise ValueError(f"values and group_ids must both be (N,), got {shapes}")
    _, inv = torch.unique(group_ids, return_inverse=True)  # (N,) dense group index
    num_groups = int(inv.max()) + 1 if inv.numel() else 0
    valid = ~torch.isnan(values)
    v = torch.where(valid, values, 0).double()
    count = torch.zeros(num_groups, dtype=torch.float64, device=v.device).index_add_(0, inv, valid.double())
    total = torch.zeros_like(count).index_add_(0, inv, v)
    mean = total / count.clamp_min(1)  # (G_num,)
    dev2 = torch.where(valid, (v - mean[inv]) ** 2, 0)
    ssd = torch.zeros_like(count).index_add_(0, inv, dev2)
    std = (ssd / (count - ddof).clamp_min(1)).sqrt()
    std = torch.where((count <= ddof) | _group_is_constant(values, inv, num_groups), 0, std)
    return mean[inv].to(values.dtype), std[inv].to(values.dtype), count[inv].to(torch.long)


def _group_is_constant(values: torch.Tensor, inv: torch.Tensor, num_groups: int) -> torch.Tensor:
    """(num_groups,) bool: all valid values of the group are equal (empty groups count as constant)."""
    valid = ~torch.isnan(values)
    big = torch.finfo(values.dtype).max
    lo = torch.full((num_groups,), big, dtype=values.dtype, device=values.device)
    hi = torch.full((num_groups,), -big, dtype=values.dtype, device=values.device)
    lo = lo.scatter_reduce(0, inv, torch.where(valid, values, big), reduce="amin")
    hi = hi.scatter_reduce(0, inv, torch.where(valid, values, -big), reduce="amax")
    return hi <= lo


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """(B, T, V) logits, (B, T) ids -> (B, T) log-softmax(logits / temperature) at `ids`, at least float32.

    Gathers the chosen logit and subtracts logsumexp, so no second (B, T, V) log-prob tensor is kept.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16/fp16 -> fp32, fp64 stays
    if temperature != 1.0:
        z = z / temperature
    picked = torch.gather(z, -1, ids.long().unsqueeze(-1)).squeeze(-1)  # (B, T)
    return picked - torch.logsumexp(z, dim=-1)  # (B, T)


def entropy_from_logits(logits: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """(B, T, V) logits -> (B, T) entropy of softmax(logits / temperature) in nats, at least float32.

    Tokens with probability 0 (logit -inf) contribute 0 to value and gradient.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16/fp16 -> fp32, fp64 stays
    if temperature != 1.0:
        z = z / temperature
    logp = torch.log_softmax(z, dim=-1)  # (B, T, V)
    p = logp.exp()
    safe_logp = torch.where(p > 0, logp, 0)  # -inf * 0 would give NaN in value and gradient
    return -(p * safe_logp).sum(-1)  # (B, T)


def head_logprobs(
    h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, ids: torch.Tensor, *, temperature: float = 1.0,
    chunk: int = 0, with_entropy: bool = False, tied: TiedGrad | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(K, hidden) final hidden states through the lm_head -> (K,) log-prob of `ids` (K,) and (K,) entropy, at
    `temperature`, the logits in float32 as `token_logprobs` / `entropy_from_logits` take them.

    With chunk > 0 the head runs over `chunk` rows at a time under activation checkpointing: each chunk's (chunk, V)
    logits exist only while that chunk is computed, in forward and again in backward, so no (K, V) tensor is ever
    held (a 152k vocabulary at 4k tokens x 8 rows is 20 GB of fp32 logits). Same values and gradients as chunk=0.
    `tied`: the TiedGrad of the embedding lookup that produced h with the same weight (`tied_embedding`).
    """
    if chunk <= 0 or len(h) <= chunk:
        return _head_piece(h, ids, weight, bias, temperature, with_entropy)
    out = _ChunkedHead.apply(h, weight, bias, ids, temperature, chunk, with_entropy, tied)
    return (out[0], out[1]) if with_entropy else (out, None)


def _head_piece(h, ids, weight, bias, temperature: float, with_entropy: bool):
    z = torch.nn.functional.linear(h, weight, bias)  # (k, V) in the compute dtype
    z = z.to(torch.promote_types(z.dtype, torch.float32)) / temperature
    logp = token_logprobs(z[None], ids[None])[0]
    return logp, entropy_from_logits(z[None])[0] if with_entropy else None


class _ChunkedHead(torch.autograd.Function):
    """head_logprobs with chunk > 0: forward and backward both walk the chunks, and backward adds each chunk's lm_head
    gradient into one (V, hidden) buffer, so a vocabulary-sized gradient exists once (autograd would hold the
    leaf's sum and each chunk's own gradient: twice). For a chunk of logits z = (h W^T + b) / temperature (float32),
    p = softmax(z), mu = sum p z: d logp_i / dz = onehot(id_i) - p; d entropy / dz = -p (z - mu).
    With `tied` the weight's gradient is made later, by the tied embedding lookup's backward (`TiedGrad`)."""

    @staticmethod
    def forward(ctx, h, weight, bias, ids, temperature: float, chunk: int, with_entropy: bool, tied):
        logp, entropy = [], []
        for hc, ic in zip(h.split(chunk), ids.split(chunk), strict=True):
            z = _chunk_logits(hc, weight, bias, temperature)  # (k, V) float32
            lse = z.logsumexp(-1)
            logp.append(z.gather(-1, ic.long()[:, None])[:, 0] - lse)
            if with_entropy:
                entropy.append(lse - (z - lse[:, None]).exp_().mul_(z).sum(-1))
            del z
        ctx.save_for_backward(h, weight, bias, ids)
        ctx.temperature, ctx.chunk, ctx.with_entropy, ctx.tied = temperature, chunk, with_entropy, tied
        ctx.compute_dtype = torch.get_autocast_dtype(h.device.type) if torch.is_autocast_enabled(h.device.type) \
            else torch.promote_types(h.dtype, weight.dtype)
        logp = torch.cat(logp)
        if with_entropy:
            return logp, torch.cat(entropy)
        return logp

    @staticmethod
    def backward(ctx, g_logp, g_entropy=None):
        h, weight, bias, ids = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        late = ctx.tied is not None and ctx.tied.late and need_w  # the weight's gradient: in the lookup's backward
        g_entropy = g_entropy if ctx.with_entropy else None
        args = (h, weight, bias, ids, g_logp, g_entropy, ctx.temperature, ctx.chunk, ctx.compute_dtype)
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros_like(weight) if need_w and not late else None
        grad_b = torch.zeros_like(bias) if need_b and bias is not None else None
        _head_grads(*args, grad_h=grad_h, grad_w=grad_w, grad_b=grad_b)
        if late:
            ctx.tied.weight_grad_into = lambda buffer: _head_grads(*args, grad_h=None, grad_w=buffer, grad_b=None)
        elif ctx.tied is not None and grad_w is not None:
            ctx.tied.grad, grad_w = grad_w, None  # the lookup's backward adds its rows in place
        return grad_h, grad_w, grad_b, None, None, None, None, None


def _head_grads(h, weight, bias, ids, g_logp, g_entropy, temperature: float, chunk: int, c: torch.dtype, *,
                grad_h, grad_w, grad_b) -> None:
    """The chunked head's backward: fills grad_h (K, hidden) and adds into grad_w (V, hidden) and grad_b (V,), each
    where not None, recomputing one chunk of logits at a time."""
    w = weight.to(c)
    with torch.autocast(h.device.type, enabled=False):
        for start in range(0, len(h), chunk):
            rows = slice(start, start + chunk)
            z = _chunk_logits(h[rows].to(c), w, None if bias is None else bias.to(c), temperature)
            lse = z.logsumexp(-1, keepdim=True)
            gl = g_logp[rows, None].to(z.dtype)  # (k, 1)
            if g_entropy is not None:
                p = (z - lse).exp_()
                mu = torch.bmm(p[:, None], z[:, :, None])[:, 0]  # (k, 1) sum p z, without a (k, V) product
                dz = z.sub_(mu).mul_(g_entropy[rows, None].to(z.dtype)).add_(gl).mul_(p).neg_()
                del p
            else:
                dz = z.sub_(lse).exp_().mul_(gl).neg_()
            dz.scatter_add_(-1, ids[rows].long()[:, None], gl)
            dz = dz.div_(temperature).to(c)  # d loss / d (h W^T + b), (k, V)
            if grad_h is not None:
                grad_h[rows] = (dz @ w).to(h.dtype)
            if grad_w is not None and grad_w.dtype == c:  # in place: `grad_w + dz^T h` would hold a second one
                grad_w.addmm_(dz.t(), h[rows].to(c))
            elif grad_w is not None:  # fp32 master weights under autocast: the product in c, added into fp32
                grad_w.add_(dz.t() @ h[rows].to(c))
            if grad_b is not None:
                grad_b.add_(dz.sum(0))
            del z, dz  # before the next chunk's logits: one (chunk, V) tensor at a time


class TiedGrad:
    """The chunked head's weight gradient, handed to the embedding lookup of the same (tied) weight (Qwen2-0.5B and
    -1.5B, SmolLM2, ...), whose backward adds its rows into it in place: one (V, hidden) gradient instead of the two
    autograd would sum (the head's and the lookup's dense one).

    late (the default): the head's backward leaves only a recipe; the lookup is the first op of the forward, so its
    backward runs last, once every decoder layer's backward has freed its activations, and makes the buffer then
    (recomputing the chunks' logits: one more lm_head matmul per chunk), so no vocabulary-sized gradient is held
    while the layers' backward runs. late=False: the head's backward makes it and leaves it in `grad`."""

    def __init__(self, late: bool = True):
        self.late = late
        self.grad: torch.Tensor | None = None  # late=False: the head's (V, hidden) weight gradient
        self.weight_grad_into = None  # late: adds the head's weight gradient into a (V, hidden) buffer


def tied_embedding(ids: torch.Tensor, weight: torch.Tensor, padding_idx: int | None, tied: TiedGrad) -> torch.Tensor:
    """F.embedding(ids, weight, padding_idx) whose weight gradient also carries the chunked head's, when
    head_logprobs(..., tied=tied) ran on what it produced; the same values and gradients as F.embedding and the head."""
    return _TiedEmbedding.apply(ids, weight, padding_idx, tied)


class _TiedEmbedding(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ids, weight, padding_idx, tied):
        ctx.save_for_backward(ids)
        ctx.padding_idx, ctx.tied, ctx.weight_meta = padding_idx, tied, (weight.shape, weight.dtype)
        return torch.nn.functional.embedding(ids, weight, padding_idx)

    @staticmethod
    def backward(ctx, g):
        (ids,) = ctx.saved_tensors
        head, grad = ctx.tied.weight_grad_into, ctx.tied.grad
        ctx.tied.weight_grad_into, ctx.tied.grad = None, None
        if not ctx.needs_input_grad[1]:
            return None, None, None, None
        shape, dtype = ctx.weight_meta
        if grad is None:
            grad = g.new_zeros(shape, dtype=dtype)
        if head is not None:
            head(grad)
        ids, g = ids.reshape(-1), g.reshape(-1, shape[1]).to(dtype)
        if ctx.padding_idx is not None:  # F.embedding: the padding row gets no gradient
            g = g.masked_fill((ids == ctx.padding_idx)[:, None], 0)
        return None, grad.index_add_(0, ids, g), None, None


def _chunk_logits(h, weight, bias, temperature: float) -> torch.Tensor:
    """(k, V) float32 logits at `temperature`; outside autograd (the Function's forward and backward), so in place."""
    z = torch.nn.functional.linear(h, weight, bias)  # (k, V) in the compute dtype
    return z.to(torch.promote_types(z.dtype, torch.float32)).div_(temperature)
