"""Loss aggregation: per-token loss (B, T) and mask (B, T) -> scalar (docs/methods.md §1.6).

    loss_b = AGGREGATIONS.lookup("token_mean")(per_token, mask, num_tokens=n_tok)   # one micro-batch

1. The definitions are over the whole optimizer mini-batch (all micro-batches, all data-parallel ranks).
   Pass its global counts: num_tokens = sum of the mask, num_seqs = number of sequences with a valid
   token. Then the per-micro-batch losses SUM to the mini-batch loss, and the accumulated gradient is
   the same for 1x8, 8x1 or 2x4 micro-batching.
2. Gradient accumulation: backward each micro-batch loss as is, no division by the number of steps.
   With D data-parallel ranks whose gradients are AVERAGED, multiply the loss by D (the average divides it
   back out); with SUM-reduced gradients, do not.
3. Without global counts the local ones are used; averaging those over micro-batches is the "mean of
   micro-batch means" quirk (verl legacy actor, TRL grpo/bnpo): 0.5 instead of 0.1 in the docs/methods.md §1.6 example.
4. Padding is selected out with torch.where, so NaN/inf there changes neither value nor gradient.
"""

from __future__ import annotations

import torch

from rlvr import ops
from rlvr.registry import Registry

AGGREGATIONS = Registry("loss aggregation")


def _check(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if per_token.ndim != 2 or mask.shape != per_token.shape:
        raise ValueError(f"per_token and mask must both be (B, T), got {tuple(per_token.shape)} / {tuple(mask.shape)}")
    return mask.bool()


def _seq_mean(per_seq: torch.Tensor, m: torch.Tensor, num_seqs) -> torch.Tensor:
    """Sum of per-sequence values over non-empty sequences / (num_seqs or the local non-empty count)."""
    return ops.masked_mean(per_seq, m.any(-1), denom=num_seqs)


@AGGREGATIONS.register("token_mean")
def token_mean(per_token, mask, *, num_tokens=None, num_seqs=None) -> torch.Tensor:
    """Token-level mean sum(m L) / N_tok (DAPO token-level loss, arXiv 2503.14476); `num_seqs` unused."""
    m = _check(per_token, mask)
    return ops.masked_mean(per_token, m, denom=num_tokens)


@AGGREGATIONS.register("seq_mean_token_mean")
def seq_mean_token_mean(per_token, mask, *, num_tokens=None, num_seqs=None) -> torch.Tensor:
    """Mean over sequences of each sequence's token mean (original GRPO, arXiv 2402.03300); `num_tokens` unused."""
    m = _check(per_token, mask)
    per_seq = ops.masked_mean(per_token, m, dim=-1)  # (B,)
    return _seq_mean(per_seq, m, num_seqs)


@AGGREGATIONS.register("seq_mean_token_sum")
def seq_mean_token_sum(per_token, mask, *, num_tokens=None, num_seqs=None) -> torch.Tensor:
    """Mean over sequences of each sequence's token sum (long sequences dominate); `num_tokens` unused."""
    m = _check(per_token, mask)
    return _seq_mean(ops.masked_sum(per_token, m, dim=-1), m, num_seqs)


@AGGREGATIONS.register("seq_mean_token_sum_norm")
def seq_mean_token_sum_norm(
    per_token, mask, *, num_tokens=None, num_seqs=None, C: float | None = None, verl_sum_norm: bool = False
) -> torch.Tensor:
    """Dr.GRPO constant normaliser (1/N_seq) sum_i sum_t m L / C, arXiv 2503.20783; C = max response length.

    verl_sum_norm=True reproduces verl: no 1/N_seq, and C defaults to the padded length T of the micro-batch.
    """
    m = _check(per_token, mask)
    if verl_sum_norm:
        return ops.masked_sum(per_token, m) / (per_token.shape[-1] if C is None else C)
    if C is None or C <= 0:
        raise ValueError(f"seq_mean_token_sum_norm needs a constant C > 0 (the max response length), got {C}")
    return _seq_mean(ops.masked_sum(per_token, m, dim=-1) / C, m, num_seqs)


def global_counts(masks) -> tuple[int, int]:
    """(num_tokens, num_seqs) over an iterable of (B, T) micro-batch masks (all-reduce them across ranks)."""
    n_tok = n_seq = 0
    for mask in masks:
        m = mask.bool()
        n_tok += int(m.sum())
        n_seq += int(m.any(-1).sum())
    return n_tok, n_seq
