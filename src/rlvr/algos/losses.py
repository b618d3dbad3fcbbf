"""Policy surrogates: per-token loss (B, T) to be minimised, before aggregation (docs/methods.md §1.2-1.5).

    per_token, metrics = LOSSES.lookup("ppo_clip")(logp, old_logp, advantages, mask, clip_low=0.2, clip_high=0.28)

1. logp, old_logp, mask: (B, T); advantages: (B,) per sequence (broadcast) or (B, T) per token.
2. log rho = logp - old_logp is taken only where mask is true (torch.where, so garbage in padding never reaches
   an exp or a gradient) and clamped to [-20, 20] as verl/OpenRLHF/EasyR1 do.
3. The returned loss is 0 at masked positions; aggregate it with an AGGREGATIONS entry.
4. Metrics are detached 0-d tensors averaged over this call's valid tokens (TRL names where TRL has one); a
   metric over another set (sequences, a subset of tokens) is a `Mean(value, count)`, so the update weighs it by
   its own count when it accumulates micro-batches and ranks.
"""

from __future__ import annotations

import torch

from rlvr import ops
from rlvr.metrics import Mean
from rlvr.registry import Registry

LOSSES = Registry("loss")

LOG_RATIO_CLAMP = 20.0  # verl / OpenRLHF / EasyR1 clamp log rho before exp (TRL does not)
GSPO_LOG_RATIO_MAX = 10.0  # verl caps the GSPO log sequence ratio at 10


def prepare(logp, old_logp, advantages, mask) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate shapes; return (bool mask, (B, T) advantages, (B, T) clamped log-ratio, 0 where masked)."""
    if logp.ndim != 2 or old_logp.shape != logp.shape or mask.shape != logp.shape:
        raise ValueError(
            f"logp, old_logp and mask must all be (B, T); got {tuple(logp.shape)}, {tuple(old_logp.shape)}, "
            f"{tuple(mask.shape)}"
        )
    m = mask.bool()
    if advantages.shape == logp.shape[:1]:
        adv = advantages.unsqueeze(-1).expand_as(logp)  # (B,) -> (B, T)
    elif advantages.shape == logp.shape:
        adv = advantages
    else:
        raise ValueError(f"advantages must be (B,) or (B, T) = {tuple(logp.shape)}, got {tuple(advantages.shape)}")
    adv = torch.where(m, adv.to(logp.dtype), 0).detach()
    log_ratio = torch.where(m, logp - old_logp.detach(), 0).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # (B, T)
    return m, adv, log_ratio


def _clip_widths(clip_low: float, clip_high: float | None) -> tuple[float, float]:
    clip_high = clip_low if clip_high is None else clip_high
    if not (0 <= clip_low < 1) or clip_high < 0:
        raise ValueError(f"need 0 <= clip_low < 1 and clip_high >= 0, got clip_low={clip_low}, clip_high={clip_high}")
    return clip_low, clip_high


def _mean(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return ops.masked_mean(x.to(torch.float32), m).detach()


def masked_metric(x: torch.Tensor, m: torch.Tensor) -> Mean:
    """The mean of x over the positions m, with their count (a metric over something else than all valid tokens)."""
    return Mean(_mean(x, m), m.sum())


def _clip_metrics(ratio, adv, m, lo: float, hi: float, log_ratio) -> dict[str, torch.Tensor]:
    """TRL clip fractions (low: rho < 1 - eps_low and A < 0; high: rho > 1 + eps_high and A > 0) and ppo_kl."""
    low = (ratio < 1 - lo) & (adv < 0)
    high = (ratio > 1 + hi) & (adv > 0)
    return {
        "clip_ratio/low_mean": _mean(low, m),
        "clip_ratio/high_mean": _mean(high, m),
        "clip_ratio/region_mean": _mean(low | high, m),
        "ppo_kl": _mean(-log_ratio, m),  # masked mean of log pi_old - log pi_theta
    }


def _clipped_surrogate(ratio, adv, lo: float, hi: float) -> torch.Tensor:
    """max(-A rho, -A clip(rho, 1 - lo, 1 + hi)): the gradient is 0 where the clipped branch wins."""
    return torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - lo, 1 + hi))


@LOSSES.register("ppo_clip")
def ppo_clip(
    logp,
    old_logp,
    advantages,
    mask,
    *,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    dual_clip: float | None = None,
    delta: float | None = None,
) -> tuple[torch.Tensor, dict]:
    """PPO clipped surrogate, arXiv 1707.06347; clip-higher (DAPO 2503.14476), dual-clip (1912.09729), TRL `delta`.

    clip_high=None means clip_high = clip_low (TRL). dual_clip=c caps the loss of A < 0 tokens at -c A;
    delta caps the unclipped ratio at delta (INTELLECT-2, arXiv 2505.07291).
    """
    lo, hi = _clip_widths(clip_low, clip_high)
    if dual_clip is not None and dual_clip <= 1:
        raise ValueError(f"dual_clip must be > 1 (verl/DAPO use 3.0/10.0), got {dual_clip}")
    if delta is not None and delta <= 1:
        raise ValueError(f"delta must be > 1 (TRL suggests > 1 + clip_high), got {delta}")
    m, adv, log_ratio = prepare(logp, old_logp, advantages, mask)
    ratio = log_ratio.exp()  # (B, T)
    capped = ratio if delta is None else ratio.clamp(max=delta)
    loss = torch.maximum(-adv * capped, -adv * ratio.clamp(1 - lo, 1 + hi))
    metrics = _clip_metrics(ratio, adv, m, lo, hi, log_ratio)
    if dual_clip is not None:
        cap = -adv * dual_clip
        metrics["clip_ratio/dual_mean"] = _mean((adv < 0) & (loss > cap), m)
        loss = torch.where(adv < 0, torch.minimum(loss, cap), loss)
    return torch.where(m, loss, 0), metrics


def _seq_log_ratio(log_ratio, m) -> torch.Tensor:
    """(B,) length-normalised log sequence ratio (1/|o|) sum_t log rho, capped at 10 as verl."""
    return ops.masked_mean(log_ratio, m, dim=-1).clamp(max=GSPO_LOG_RATIO_MAX)


def _seq_metrics(s, adv_seq, m, lo, hi, log_ratio) -> dict[str, torch.Tensor]:
    """Clip fractions over non-empty sequences (not tokens) for the sequence-level ratio."""
    nonempty = m.any(-1)  # (B,)
    metrics = {k: Mean(v, nonempty.sum()) for k, v in _clip_metrics(s, adv_seq, nonempty, lo, hi, s.log()).items()}
    metrics["ppo_kl"] = _mean(-log_ratio, m)
    return metrics


@LOSSES.register("gspo")
def gspo(
    logp, old_logp, advantages, mask, *, clip_low: float = 3e-4, clip_high: float | None = 4e-4
) -> tuple[torch.Tensor, dict]:
    """GSPO sequence-ratio surrogate, arXiv 2507.18071; the sequence loss L_i is written on each of its tokens.

    Aggregate with seq_mean_token_mean to get the paper's (1/N_seq) sum_i L_i. Defaults are the paper's
    widths 3e-4 / 4e-4. Needs per-sequence (B,) advantages; use gspo_token for (B, T).
    """
    if advantages.ndim != 1:
        raise ValueError("gspo needs per-sequence advantages (B,); use 'gspo_token' for per-token (B, T) advantages")
    lo, hi = _clip_widths(clip_low, clip_high)
    m, adv, log_ratio = prepare(logp, old_logp, advantages, mask)
    s = _seq_log_ratio(log_ratio, m).exp()  # (B,)
    adv_seq = torch.where(m.any(-1), advantages.detach().to(logp.dtype), 0)  # (B,)
    loss_seq = _clipped_surrogate(s, adv_seq, lo, hi)  # (B,)
    loss = torch.where(m, loss_seq.unsqueeze(-1).expand_as(logp), 0)  # (B, T)
    return loss, _seq_metrics(s.detach(), adv_seq, m, lo, hi, log_ratio)


@LOSSES.register("gspo_token")
def gspo_token(
    logp, old_logp, advantages, mask, *, clip_low: float = 3e-4, clip_high: float | None = 4e-4
) -> tuple[torch.Tensor, dict]:
    """GSPO-token, arXiv 2507.18071: log s_it = sg[log s_i] + logp - sg[logp]; value s_i, per-token gradient.

    With (B,) advantages and seq_mean_token_mean its gradient equals gspo's; also accepts (B, T) advantages.
    """
    lo, hi = _clip_widths(clip_low, clip_high)
    m, adv, log_ratio = prepare(logp, old_logp, advantages, mask)
    safe_logp = torch.where(m, logp, 0)
    log_s = _seq_log_ratio(log_ratio, m).detach().unsqueeze(-1)  # (B, 1)
    s_tok = (log_s + safe_logp - safe_logp.detach()).clamp(max=GSPO_LOG_RATIO_MAX).exp()  # (B, T), value s_i
    loss = _clipped_surrogate(s_tok, adv, lo, hi)
    s = log_s.squeeze(-1).exp()
    adv_seq = advantages.detach().to(logp.dtype) if advantages.ndim == 1 else ops.masked_mean(adv, m, dim=-1)
    return torch.where(m, loss, 0), _seq_metrics(s, adv_seq, m, lo, hi, log_ratio)


@LOSSES.register("cispo")
def cispo(
    logp,
    old_logp,
    advantages,
    mask,
    *,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    variant: str = "two_sided",
) -> tuple[torch.Tensor, dict]:
    """CISPO, arXiv 2506.13585: -sg[clip(rho)] A logp; every token keeps its gradient.

    variant="two_sided" clips rho to [1 - clip_low, 1 + clip_high] (verl/EasyR1); "upper_only" to at most
    1 + clip_high (MiniMax-M1, TRL). TRL's epsilon_high is the cap itself: TRL 5.0 == clip_high=4.0 here.
    """
    if variant not in ("two_sided", "upper_only"):
        raise ValueError(f"cispo variant must be 'two_sided' or 'upper_only', got {variant!r}")
    lo, hi = _clip_widths(clip_low, clip_high)
    m, adv, log_ratio = prepare(logp, old_logp, advantages, mask)
    ratio = log_ratio.exp().detach()
    weight = ratio.clamp(min=1 - lo if variant == "two_sided" else None, max=1 + hi)  # (B, T), detached
    loss = -weight * adv * torch.where(m, logp, 0)
    metrics = _clip_metrics(ratio, adv, m, lo, hi, log_ratio)
    if variant == "upper_only":
        metrics["clip_ratio/low_mean"] = torch.zeros((), device=logp.device)
        metrics["clip_ratio/region_mean"] = metrics["clip_ratio/high_mean"]
    metrics["cispo_clip_ratio"] = metrics["clip_ratio/high_mean"]  # TRL: rho > cap and A > 0
    metrics["clip_ratio/weight_mean"] = _mean(weight != ratio, m)  # verl pg_clipfrac: weight was changed
    return torch.where(m, loss, 0), metrics


@LOSSES.register("sapo")
def sapo(logp, old_logp, advantages, mask, *, tau_pos: float = 1.0, tau_neg: float = 1.05) -> tuple[torch.Tensor, dict]:
    """SAPO soft gate, arXiv 2511.20347: -(4/tau) sigmoid(tau (rho - 1)) A, tau = tau_pos if A > 0 else tau_neg.

    f(1) = 2/tau and f'(1) = 1, so on-policy the gradient is the plain policy gradient.
    """
    if tau_pos <= 0 or tau_neg <= 0:
        raise ValueError(f"tau_pos and tau_neg must be > 0, got {tau_pos}, {tau_neg}")
    m, adv, log_ratio = prepare(logp, old_logp, advantages, mask)
    ratio = log_ratio.exp()
    tau = torch.full_like(ratio, tau_neg).masked_fill(adv > 0, tau_pos)  # (B, T); A = 0 gives 0 loss either way
    gate = torch.sigmoid(tau * (ratio - 1))
    loss = -(4 / tau) * gate * adv
    return torch.where(m, loss, 0), {
        "ppo_kl": _mean(-log_ratio, m),
        "sapo/gate_grad_mean": _mean(4 * gate * (1 - gate), m),  # d f / d rho; 1 on-policy
    }


@LOSSES.register("reinforce")
def reinforce(logp, old_logp, advantages, mask) -> tuple[torch.Tensor, dict]:
    """Unclipped importance-weighted policy gradient -A rho (REINFORCE; on-policy gradient = -A grad logp).

    Uses rho rather than logp so that stale old_logp (several updates per rollout) stays unbiased; no paper id.
    """
    m, adv, log_ratio = prepare(logp, old_logp, advantages, mask)
    loss = -adv * log_ratio.exp()
    return torch.where(m, loss, 0), {"ppo_kl": _mean(-log_ratio, m)}
