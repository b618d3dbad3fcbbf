"""Train/inference mismatch weights w (B, T), detached, multiplied into the per-token loss (docs/methods.md §1.12).

    w, metrics = MISMATCH_WEIGHTS.lookup("token_truncate")(old_logp, rollout_logp, mask, c_max=2.0)

delta_t = log pi_old - log pi_rollout on valid tokens (0 elsewhere); the weight is 0 on padding.
Token modes use exp(delta_t); sequence modes use exp(sum_t delta_t) (log-sum clamped to [-20, 20] as verl),
broadcast to the sequence's tokens. Truncate modes clamp the ratio to [c_min, c_max]; mask modes keep it
where it lies in [c_min, c_max] and give 0 elsewhere (IcePop). c_min=None means no lower bound.
TODO: seq_gate_token_weight (OpenRLHF seq-mask-tis) and opsm (needs advantages and logp) come later.
"""

from __future__ import annotations

import torch

from rlvr import ops
from rlvr.registry import Registry

MISMATCH_WEIGHTS = Registry("mismatch weight")


def _log_delta(old_logp, rollout_logp, mask) -> tuple[torch.Tensor, torch.Tensor]:
    if old_logp.shape != mask.shape or rollout_logp.shape != mask.shape:
        raise ValueError(
            f"old_logp, rollout_logp and mask must all be (B, T); got {tuple(old_logp.shape)}, "
            f"{tuple(rollout_logp.shape)}, {tuple(mask.shape)}"
        )
    m = mask.bool()
    return m, torch.where(m, old_logp.detach() - rollout_logp.detach(), 0).float()  # (B, T)


def _check_bounds(c_min, c_max) -> None:
    if c_max is None or c_max <= 0 or (c_min is not None and not 0 <= c_min < c_max):
        raise ValueError(f"need c_max > 0 and 0 <= c_min < c_max (or c_min=None), got c_min={c_min}, c_max={c_max}")


def _metrics(delta, m, changed) -> dict[str, torch.Tensor]:
    """Token-level statistics of exp(delta) and the fraction of valid tokens whose weight was changed."""
    ratio = delta.exp()
    big = torch.finfo(ratio.dtype).max
    out = {
        "mismatch/ratio_mean": ops.masked_mean(ratio, m),
        "mismatch/ratio_min": torch.where(m, ratio, big).min() if m.any() else torch.ones(()),
        "mismatch/ratio_max": torch.where(m, ratio, -big).max() if m.any() else torch.ones(()),
        "mismatch/abs_log_ratio_mean": ops.masked_mean(delta.abs(), m),
        "mismatch/clipped_frac": ops.masked_mean(changed.float(), m),
    }
    return out


def _seq_ratio(delta, m) -> torch.Tensor:
    """(B, T) exp of the sequence's summed log-ratio, broadcast to its tokens."""
    return delta.sum(-1, keepdim=True).clamp(-20, 20).exp().expand_as(delta)


def _truncate(ratio, m, c_min, c_max) -> tuple[torch.Tensor, torch.Tensor]:
    w = ratio.clamp(min=c_min, max=c_max)
    return torch.where(m, w, 0), w != ratio


def _mask(ratio, m, c_min, c_max) -> tuple[torch.Tensor, torch.Tensor]:
    inside = ratio <= c_max if c_min is None else (ratio >= c_min) & (ratio <= c_max)
    return torch.where(m & inside, ratio, 0), ~inside


@MISMATCH_WEIGHTS.register("none")
def none(old_logp, rollout_logp, mask, *, c_min=None, c_max=2.0) -> tuple[torch.Tensor, dict]:
    """No correction: weight 1 on valid tokens (metrics still report the mismatch); no paper id."""
    m = mask.bool()
    if rollout_logp is None:
        return m.float(), {}
    m, delta = _log_delta(old_logp, rollout_logp, m)
    return m.float(), _metrics(delta, m, torch.zeros_like(m))


@MISMATCH_WEIGHTS.register("token_truncate")
def token_truncate(old_logp, rollout_logp, mask, *, c_min=None, c_max=2.0) -> tuple[torch.Tensor, dict]:
    """Truncated IS per token, clamp(exp(delta_t), c_min, c_max) (TIS, Yao et al. 2025 blog; no arXiv id)."""
    _check_bounds(c_min, c_max)
    m, delta = _log_delta(old_logp, rollout_logp, mask)
    w, changed = _truncate(delta.exp(), m, c_min, c_max)
    return w, _metrics(delta, m, changed)


@MISMATCH_WEIGHTS.register("token_mask")
def token_mask(old_logp, rollout_logp, mask, *, c_min=None, c_max=2.0) -> tuple[torch.Tensor, dict]:
    """IcePop token masking exp(delta_t) 1[c_min <= exp(delta_t) <= c_max] (TRL token_mask; no arXiv id)."""
    _check_bounds(c_min, c_max)
    m, delta = _log_delta(old_logp, rollout_logp, mask)
    w, changed = _mask(delta.exp(), m, c_min, c_max)
    return w, _metrics(delta, m, changed)


@MISMATCH_WEIGHTS.register("sequence_truncate")
def sequence_truncate(old_logp, rollout_logp, mask, *, c_min=None, c_max=2.0) -> tuple[torch.Tensor, dict]:
    """Sequence-level truncated IS clamp(exp(sum_t delta_t), c_min, c_max), broadcast (TRL/verl; no arXiv id)."""
    _check_bounds(c_min, c_max)
    m, delta = _log_delta(old_logp, rollout_logp, mask)
    w, changed = _truncate(_seq_ratio(delta, m), m, c_min, c_max)
    return w, _metrics(delta, m, changed)


@MISMATCH_WEIGHTS.register("sequence_mask")
def sequence_mask(old_logp, rollout_logp, mask, *, c_min=None, c_max=2.0) -> tuple[torch.Tensor, dict]:
    """Sequence masking exp(sum_t delta_t) 1[c_min <= . <= c_max], broadcast (TRL default with c_max=3; no arXiv id)."""
    _check_bounds(c_min, c_max)
    m, delta = _log_delta(old_logp, rollout_logp, mask)
    w, changed = _mask(_seq_ratio(delta, m), m, c_min, c_max)
    return w, _metrics(delta, m, changed)
