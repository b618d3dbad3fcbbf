"""VPPO math, visually-perceptive policy optimisation (arXiv 2510.09285): token visual dependency, TGF and TAS.

    s = visual_dependency(logp, aug_logp, mask)                            # (N, T), image vs corrupted image
    w = TOKEN_WEIGHTS.lookup("perception")(mask, dependency=s, has_image=has_image, k=0.4)
    advantages, metrics = ADVANTAGE_SHAPING.lookup("vppo_tas")(advantages, mask, dependency=s, has_image=has_image)

1. Visual dependency of token t: how much pi_old's next-token distribution moves when the image I is replaced by a
   corrupted copy I'. The paper defines it as the full-vocabulary KL(pi(. | s_t, I) || pi(. | s_t, I'))
   (`full_kl_dependency`); its reference code uses a one-sample k3 estimate at the sampled token, clamped
   (`visual_dependency`, the default: it produced the published numbers).
2. Token-level Gradient Filtering (TGF): per response keep the ceil(k L_i) tokens of highest dependency (`top_k_mask`,
   the token weight `perception`); the loss denominator stays all valid tokens.
3. Trajectory-level Advantage Shaping (TAS): scale each response's advantage by alpha_i, an affine function of its
   min-max normalised mean dependency over the rows it is given (`vppo_tas`, applied after the estimator).
The corrupted forward pass, the gathering of rows over ranks and the loss (ppo_clip with dual clip) live elsewhere;
everything here is a pure function without gradient.
"""

from __future__ import annotations

import math

import torch

from rlvr.algos.shaping import ADVANTAGE_SHAPING
from rlvr.algos.token_weights import TOKEN_WEIGHTS

LOG_RATIO_CLAMP = 20.0  # VPPO reference code clamps log pi_aug - log pi_orig before exp
DEPENDENCY_CLAMP = 10.0  # VPPO reference code clamps the per-token k3 score to [0, 10]
TAS_SPREAD_EPS = 1e-6  # VPPO reference code: max - min of the mean dependency at or below this -> no shaping
TAS_MU_EPS = 1e-8  # VPPO reference code: mu + 1e-8 in the mean-preserving upper end
_TEXT_ROWS = ("all", "none")


@torch.no_grad()
def visual_dependency(logp: torch.Tensor, aug_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token visual dependency (N, T): the reference code's one-sample k3 estimate of KL(pi_orig || pi_aug).

    delta = clamp(aug_logp - logp, -20, 20), S = clamp(exp(delta) - delta - 1, 0, 10), 0 where mask is 0; `logp`
    and `aug_logp` are pi_old's log-probs of the sampled tokens given the image and the corrupted image. Under
    o_t ~ pi_orig, exp(delta) - delta - 1 is unbiased for the paper's KL (arXiv 2510.09285) before the clamps.
    """
    valid = mask.bool()
    delta = torch.where(valid, aug_logp.float() - logp.float(), 0.0)  # (N, T); masked garbage (NaN, inf) -> 0
    delta = delta.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    score = (delta.exp() - delta - 1).clamp(0.0, DEPENDENCY_CLAMP)
    return torch.where(valid, score, 0.0)


@torch.no_grad()
def full_kl_dependency(logp_all: torch.Tensor, aug_logp_all: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token visual dependency (N, T) as the paper defines it: KL(pi_orig || pi_aug) over the whole vocabulary.

    `logp_all`, `aug_logp_all`: (N, T, V) log-softmax given the image and the corrupted image (arXiv 2510.09285,
    the visual-dependency definition); 0 where mask is 0. Unclamped, unlike the reference code's sampled estimate.
    """
    valid = mask.bool()
    logp_all, aug_logp_all = logp_all.float(), aug_logp_all.float()
    p = logp_all.exp()  # (N, T, V)
    terms = torch.where(p > 0, p * (logp_all - aug_logp_all), 0.0)  # 0 log 0 = 0, even against log q = -inf
    kl = terms.sum(-1).clamp_min(0.0)  # (N, T); clamp only removes float rounding below 0
    return torch.where(valid, kl, 0.0)


def _check_k(k: float) -> None:
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1] (the fraction of each response's tokens kept; VPPO uses 0.4), got {k}")


def keep_counts(lengths: torch.Tensor, k: float) -> torch.Tensor:
    """ceil(k L) per row, (N,) long; the 1e-9 keeps an exact k L at its value (0.4 * 5 = 2.0000000000000004 -> 2)."""
    _check_k(k)
    return torch.ceil(k * lengths.double() - 1e-9).clamp_min(0).long()


@torch.no_grad()
def top_k_mask(scores: torch.Tensor, mask: torch.Tensor, *, k: float = 0.4) -> torch.Tensor:
    """(N, T) float, 1 on the ceil(k L_i) valid tokens of row i with the largest scores (TGF, arXiv 2510.09285).

    Ties go to the earlier token (a stable sort); padding is never selected, whatever its score; L_i = 0 keeps none.
    """
    valid = mask.bool()
    counts = keep_counts(valid.sum(-1), k)  # (N,)
    filled = torch.where(valid, scores.float(), 0.0)  # (N, T); padding's garbage never reaches the sort
    order = filled.argsort(dim=-1, descending=True, stable=True)  # (N, T) by score, ties by position
    valid_first = valid.gather(-1, order).to(torch.int8).argsort(dim=-1, descending=True, stable=True)
    order = order.gather(-1, valid_first)  # (N, T): valid tokens by score, then padding
    rank = torch.arange(scores.shape[-1], device=scores.device)  # (T,)
    keep = (rank < counts[:, None]).float()  # (N, T) in sorted order
    return torch.zeros_like(keep).scatter(-1, order, keep)


def _image_rows(has_image, mask: torch.Tensor) -> torch.Tensor:
    """has_image as an (N,) bool tensor on mask's device, with its shape checked."""
    has_image = torch.as_tensor(has_image, device=mask.device).bool()
    if has_image.shape != mask.shape[:1]:
        raise ValueError(f"has_image must be (N,) = ({mask.shape[0]},), one flag per row, got {tuple(has_image.shape)}")
    return has_image


@TOKEN_WEIGHTS.register("perception", needs=("dependency", "has_image"))
def perception(mask, *, dependency, has_image, k: float = 0.4, text_rows: str = "all") -> torch.Tensor:
    """VPPO Token-level Gradient Filtering: 1 on each row's top ceil(k L_i) tokens by dependency; arXiv 2510.09285.

    Deviation (rlvr): a text-only row in a mixed batch (has_image False) has no dependency to rank by; it weighs
    every valid token 1 (`text_rows="all"`) or none (`"none"`). As in the reference code and the paper's 1/|o_i|,
    the loss denominator stays all valid tokens, not the selected ones.
    """
    if text_rows not in _TEXT_ROWS:
        raise ValueError(f"text_rows must be one of {list(_TEXT_ROWS)}, got {text_rows!r}")
    image = _image_rows(has_image, mask)
    selected = top_k_mask(dependency.detach(), mask, k=k)  # (N, T)
    text = mask.bool().float() if text_rows == "all" else torch.zeros_like(selected)
    return torch.where(image[:, None], selected, text)


def _check_tas(beta_min: float, form: str, beta_max: float | None) -> None:
    if not 0 < beta_min <= 1:
        raise ValueError(f"beta_min must be in (0, 1] (VPPO uses 0.9), got {beta_min}")
    if form not in _ALPHA_FORMS:
        raise ValueError(f"form must be one of {list(_ALPHA_FORMS)}, got {form!r}")
    if form == "paper" and (beta_max is None or beta_max < beta_min):
        raise ValueError(f"form='paper' needs beta_max >= beta_min = {beta_min} (no published value), got {beta_max}")
    if form == "code" and beta_max is not None:
        raise ValueError(f"beta_max is only used by form='paper' (form='code' derives it per batch), got {beta_max}")


def _normalised(mean_dep: torch.Tensor, rows: torch.Tensor) -> torch.Tensor | None:
    """n_i = clamp((S_i - lo) / (hi - lo), 0, 1) with lo, hi over `rows`; None when there is no spread to use."""
    if int(rows.sum()) < 2:
        return None
    lo, hi = mean_dep[rows].min(), mean_dep[rows].max()
    if float(hi - lo) <= TAS_SPREAD_EPS:
        return None
    return ((mean_dep - lo) / (hi - lo)).clamp(0.0, 1.0)


def _alpha_code(n, rows, *, beta_min: float, beta_max: float | None) -> torch.Tensor:
    """Reference code: beta_min + (1 - beta_min) n / (mu + 1e-8), so the mean alpha over `rows` is ~1."""
    mu = n[rows].mean()
    return beta_min + (1 - beta_min) * n / (mu + TAS_MU_EPS)


def _alpha_paper(n, rows, *, beta_min: float, beta_max: float | None) -> torch.Tensor:
    """Paper (arXiv 2510.09285, TAS): beta_min + (beta_max - beta_min) n, in [beta_min, beta_max]."""
    return beta_min + (beta_max - beta_min) * n


_ALPHA_FORMS = {"code": _alpha_code, "paper": _alpha_paper}


def _alpha_metrics(alpha: torch.Tensor, rows: torch.Tensor) -> dict[str, float]:
    shaped = alpha[rows] if bool(rows.any()) else torch.ones(1)
    return {
        "vppo/alpha_mean": shaped.mean().item(),
        "vppo/alpha_min": shaped.min().item(),
        "vppo/alpha_max": shaped.max().item(),
    }


@ADVANTAGE_SHAPING.register("vppo_tas", needs=("dependency", "has_image"))
def tas(advantages, mask, *, dependency, has_image, beta_min: float = 0.9, form: str = "code", beta_max=None):
    """VPPO Trajectory-level Advantage Shaping: A'_i = alpha_i A_i from the mean visual dependency; arXiv 2510.09285.

    S_i = sum_t S_t m_t / max(L_i, 1); n_i = its min-max normalisation over the valid rows (image rows with tokens).
    `form="code"` (reference code, default): alpha_i = beta_min + (1 - beta_min) n_i / (mean n + 1e-8), mean-preserving
    with a data-dependent upper end; `form="paper"`: alpha_i = beta_min + (beta_max - beta_min) n_i, beta_max required.
    Deviations: min, max and mean n are over the rows passed in (the caller passes the global mini-batch; the
    reference code uses one device's mini-batch and micro-batch); text-only or empty rows, and every row when fewer
    than 2 are valid or max - min <= 1e-6, get alpha = 1. Returns (advantages', metrics over the valid rows).
    """
    _check_tas(beta_min, form, beta_max)
    if advantages.ndim not in (1, 2) or advantages.shape[0] != mask.shape[0]:
        raise ValueError(f"advantages must be (N,) or (N, T) with N = {mask.shape[0]}, got {tuple(advantages.shape)}")
    valid = mask.bool()
    lengths = valid.sum(-1)  # (N,)
    mean_dep = torch.where(valid, dependency.detach().float(), 0.0).sum(-1) / lengths.clamp_min(1)  # (N,)
    rows = _image_rows(has_image, mask) & (lengths > 0)  # (N,)
    n = _normalised(mean_dep, rows)
    alpha = torch.ones_like(mean_dep)  # (N,)
    if n is not None:
        alpha = torch.where(rows, _ALPHA_FORMS[form](n, rows, beta_min=beta_min, beta_max=beta_max), 1.0)
    scale = alpha.to(advantages.dtype).view(-1, *([1] * (advantages.ndim - 1)))  # (N,) or (N, 1)
    return advantages * scale, _alpha_metrics(alpha, rows)


def _pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson correlation of two 1-D tensors; 0.0 for fewer than 2 points or a constant input."""
    if x.numel() < 2 or bool(x.max() == x.min()) or bool(y.max() == y.min()):
        return 0.0
    xc, yc = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((xc * xc).sum()) * float((yc * yc).sum()))
    return float((xc * yc).sum()) / denom if denom > 0 else 0.0


@torch.no_grad()
def dependency_metrics(dependency: torch.Tensor, mask: torch.Tensor, entropy: torch.Tensor | None = None) -> dict:
    """Mean visual dependency over valid tokens and, given the entropy, its Pearson correlation with it."""
    valid = mask.bool()
    dep = dependency.detach()[valid].double()  # (n_valid,)
    metrics = {"vppo/dependency_mean": dep.mean().item() if dep.numel() else 0.0}
    if entropy is not None:
        metrics["vppo/dependency_entropy_corr"] = _pearson(dep, entropy.detach()[valid].double())
    return metrics
