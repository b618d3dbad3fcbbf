"""Advantage estimators: rewards (N,) and group ids (N,) -> one advantage per completion (N,).

Every estimator (docs/methods.md §1.1):
1. treats a NaN reward as "unscorable": its advantage is 0 and it is left out of the group statistics;
2. gives a group whose scorable rewards are all equal advantage 0 exactly (not (r - mu) / eps noise);
3. gives a singleton group (one scorable reward) advantage 0 with a warning; `singleton="verl"` gives
   verl's r / (1 + eps) instead (verl sets mu := 0, sigma := 1);
4. uses the Bessel-corrected std (`std_ddof=1`, as TRL, verl and OpenRLHF) where a std is taken.
All run without gradient. `eps` is accepted by every estimator so a config can bind it uniformly.
"""

from __future__ import annotations

import warnings

import torch

from rlvr import ops
from rlvr.registry import Registry

ADVANTAGES = Registry("advantage estimator")

_SINGLETON = ("zero", "verl")


def _check(rewards: torch.Tensor, group_ids: torch.Tensor, singleton: str = "zero") -> None:
    if rewards.ndim != 1 or group_ids.shape != rewards.shape:
        raise ValueError(
            f"rewards and group_ids must both be (N,), got {tuple(rewards.shape)} / {tuple(group_ids.shape)}"
        )
    if not rewards.is_floating_point():
        raise ValueError(f"rewards must be a float tensor (NaN marks unscorable), got {rewards.dtype}")
    if singleton not in _SINGLETON:
        raise ValueError(f"singleton must be one of {list(_SINGLETON)}, got {singleton!r}")


def _singleton_fix(adv, rewards, count, *, singleton: str, eps: float, scale: bool = True) -> torch.Tensor:
    """Advantage for groups with exactly one scorable reward: 0 (warn) or verl's r / (1 + eps)."""
    lone = count == 1  # (N,)
    if not bool(lone.any()):
        return adv
    if singleton == "zero":
        warnings.warn("advantage: some groups have a single scorable reward; their advantage is 0", stacklevel=3)
        return torch.where(lone, 0, adv)
    return torch.where(lone, rewards / (1 + eps) if scale else rewards, adv)


def _finish(adv: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """Zero the advantage of unscorable (NaN) rewards."""
    return torch.where(torch.isnan(rewards), 0, adv)


@ADVANTAGES.register("grpo")
@torch.no_grad()
def grpo(rewards, group_ids, *, eps: float = 1e-6, std_ddof: int = 1, singleton: str = "zero") -> torch.Tensor:
    """GRPO group-normalised advantage (r - mu_g) / (sigma_g + eps), arXiv 2402.03300; constant group -> 0."""
    _check(rewards, group_ids, singleton)
    mean, std, count = ops.group_mean_std(rewards, group_ids, ddof=std_ddof)  # (N,) each
    adv = torch.where(std > 0, (rewards - mean) / (std + eps), 0)
    return _finish(_singleton_fix(adv, rewards, count, singleton=singleton, eps=eps), rewards)


@ADVANTAGES.register("dr_grpo")
@torch.no_grad()
def dr_grpo(rewards, group_ids, *, eps: float = 1e-6, singleton: str = "zero") -> torch.Tensor:
    """Dr.GRPO advantage r - mu_g without std division, arXiv 2503.20783; `eps` only used by singleton="verl"."""
    _check(rewards, group_ids, singleton)
    mean, std, count = ops.group_mean_std(rewards, group_ids, ddof=1)
    adv = torch.where(std > 0, rewards - mean, 0)  # std == 0 <=> constant group or singleton
    return _finish(_singleton_fix(adv, rewards, count, singleton=singleton, eps=eps, scale=False), rewards)


@ADVANTAGES.register("batch_std")
@torch.no_grad()
def batch_std(rewards, group_ids, *, eps: float = 1e-6, std_ddof: int = 1) -> torch.Tensor:
    """Lite-PPO advantage (r - mu_g) / (std of all batch rewards + eps), arXiv 2508.08221; raw-reward std as TRL."""
    _check(rewards, group_ids)
    mean, std, _ = ops.group_mean_std(rewards, group_ids, ddof=std_ddof)
    valid = ~torch.isnan(rewards)
    sigma = ops.masked_var(torch.where(valid, rewards, 0), valid, unbiased=std_ddof == 1).sqrt()
    adv = torch.where(std > 0, (rewards - mean) / (sigma + eps), 0)
    return _finish(adv, rewards)


@ADVANTAGES.register("rloo")
@torch.no_grad()
def rloo(rewards, group_ids, *, eps: float = 1e-6, normalize: bool = False) -> torch.Tensor:
    """RLOO leave-one-out baseline G/(G-1) (r - mu_g), arXiv 2402.14740; `normalize` = TRL's batch whitening (1e-4)."""
    _check(rewards, group_ids)
    mean, std, count = ops.group_mean_std(rewards, group_ids, ddof=1)
    g = count.to(rewards.dtype)
    adv = torch.where(std > 0, g / (g - 1).clamp_min(1) * (rewards - mean), 0)  # baseline over scorable siblings
    adv = _finish(adv, rewards)
    if normalize:
        valid = ~torch.isnan(rewards)
        centred = adv - ops.masked_mean(adv, valid)
        adv = _finish(centred / (ops.masked_var(adv, valid).sqrt() + 1e-4), rewards)
    return adv


@ADVANTAGES.register("reinforce_pp_baseline", needs=("lengths",))
@torch.no_grad()
def reinforce_pp_baseline(
    rewards, group_ids, *, lengths=None, eps: float = 1e-8, whiten: str = "verl", singleton: str = "zero"
) -> torch.Tensor:
    """REINFORCE++-baseline: r - mu_g, whitened with token-weighted batch stats, arXiv 2501.03262; `eps` = 1e-8.

    `lengths` (N,) = completion token counts, the whitening weights. whiten="verl": Bessel variance over tokens,
    (a - M) / sqrt(V + eps); whiten="openrlhf": population variance, (a - M) / sqrt(max(V, eps)).
    """
    _check(rewards, group_ids, singleton)
    if lengths is None:
        raise ValueError("reinforce_pp_baseline needs lengths=(N,) completion token counts (mask.sum(-1))")
    if whiten not in ("verl", "openrlhf"):
        raise ValueError(f"whiten must be 'verl' or 'openrlhf', got {whiten!r}")
    lengths = torch.as_tensor(lengths, device=rewards.device).to(torch.float64)
    if lengths.shape != rewards.shape:
        raise ValueError(f"lengths must be (N,) like rewards, got {tuple(lengths.shape)}")
    mean, std, count = ops.group_mean_std(rewards, group_ids, ddof=1)
    a = torch.where(std > 0, rewards - mean, 0)
    a = _finish(_singleton_fix(a, rewards, count, singleton=singleton, eps=eps, scale=False), rewards).double()
    w = torch.where(torch.isnan(rewards), 0, lengths)  # (N,) token weight of each sequence
    n_tok = w.sum()
    m = (w * a).sum() / n_tok.clamp_min(1)
    ss = (w * (a - m) ** 2).sum()
    if whiten == "verl":
        scale = torch.rsqrt(ss / (n_tok - 1).clamp_min(1) + eps)
    else:
        scale = torch.rsqrt((ss / n_tok.clamp_min(1)).clamp_min(eps))
    return _finish(((a - m) * scale).to(rewards.dtype), rewards)


@ADVANTAGES.register("passk_best_of_group")
@torch.no_grad()
def passk_best_of_group(rewards, group_ids, *, eps: float = 1e-6, divide_by_std: bool = True) -> torch.Tensor:
    """Best-of-group pass@k: only the first argmax gets (r_(1) - r_(2)) / (sigma_g + eps), arXiv 2503.19595.

    As verl/EasyR1 `grpo_passk`; `divide_by_std=False` is verl's norm_adv_by_std_in_grpo=False. A group with
    fewer than two scorable rewards gets 0 (verl asserts G >= 2); ties for the max give 0.
    """
    _check(rewards, group_ids)
    _, inv = torch.unique(group_ids, return_inverse=True)
    ng, n = int(inv.max()) + 1 if inv.numel() else 0, rewards.numel()
    r = torch.where(torch.isnan(rewards), -torch.inf, rewards)  # (N,)
    top = torch.full((ng,), -torch.inf, dtype=r.dtype, device=r.device).scatter_reduce(0, inv, r, reduce="amax")
    idx = torch.arange(n, device=r.device)
    first = torch.full((ng,), n, device=r.device).scatter_reduce(
        0, inv, torch.where(r == top[inv], idx, n), reduce="amin"
    )  # (ng,) first index that reaches the max
    is_best = idx == first[inv]  # (N,)
    second = torch.full_like(top, -torch.inf).scatter_reduce(0, inv, torch.where(is_best, -torch.inf, r), reduce="amax")
    _, std, count = ops.group_mean_std(rewards, group_ids, ddof=1)
    gap = torch.where(count >= 2, top[inv] - second[inv], 0)
    adv = gap / (std + eps) if divide_by_std else gap
    return _finish(torch.where(is_best & (count >= 2), adv, 0), rewards)


@ADVANTAGES.register("passk_analytic")
@torch.no_grad()
def passk_analytic(rewards, group_ids, *, k: int | None = None, eps: float = 1e-6) -> torch.Tensor:
    """Pass@k Training analytic advantage for binary rewards, arXiv 2508.10751 (our derivation); `eps` unused.

    Each completion's advantage = mean over all k-subsets containing it of (pass@k(S) - R) / s, where R and s are
    the mean and population std of pass@k over all k-subsets of its group; s = 0 -> 0.
    """
    _check(rewards, group_ids)
    if k is None or k < 1:
        raise ValueError(f"passk_analytic needs k >= 1 (the k of pass@k), got {k}")
    valid = ~torch.isnan(rewards)
    if bool(((rewards[valid] != 0) & (rewards[valid] != 1)).any()):
        raise ValueError("passk_analytic needs binary rewards in {0, 1}; threshold them first")
    _, _, count = ops.group_mean_std(rewards, group_ids)
    n_all = count.double()  # (N,) scorable completions in the group
    if bool((n_all[valid] < k).any()):
        raise ValueError(f"passk_analytic needs k={k} <= number of scorable completions in every group")
    wrong = torch.where(valid, 1.0 - rewards, 0).double()
    _, inv = torch.unique(group_ids, return_inverse=True)
    n_neg = torch.zeros(int(inv.max()) + 1, dtype=torch.float64, device=rewards.device).index_add_(0, inv, wrong)[inv]
    r_bar = 1 - _comb_ratio(n_neg, n_all, k)  # (N,) expected pass@k of a random k-subset
    s = (r_bar * (1 - r_bar)).clamp_min(0).sqrt()
    all_wrong = _comb_ratio(n_neg - 1, n_all - 1, k - 1)  # P(other k-1 all wrong | this one wrong)
    adv = torch.where(rewards == 1, 1 - r_bar, 1 - r_bar - all_wrong)
    adv = torch.where(s > 0, adv / torch.where(s > 0, s, 1), 0)
    return _finish(adv.to(rewards.dtype), rewards)


def _comb_ratio(a: torch.Tensor, n: torch.Tensor, k: int) -> torch.Tensor:
    """C(a, k) / C(n, k) for a <= n (0 where a < k), in float64 via lgamma."""
    ok = a >= k
    a_ = torch.where(ok, a, k)
    log = torch.lgamma(a_ + 1) - torch.lgamma(a_ - k + 1) - torch.lgamma(n + 1) + torch.lgamma(n - k + 1)
    return torch.where(ok, log.exp(), 0)
