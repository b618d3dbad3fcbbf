"""ExGRPO mixed-policy math (arXiv 2510.02245; docs/methods.md §2.4-2.5): shaped weight, mixed loss, advantages.

    per_token, metrics = LOSSES.lookup("exgrpo_mixed")(logp, old_logp, advantages, mask, is_replay=is_replay,
                                                       mixed_mode=True, beta=0.1)

1. Replayed rows (is_replay) carry a trajectory from the experience pool; their `old_logp` must be the log-probs
   recorded when it was collected (pi_past, docs/methods.md §2.1 step 8; see `replay_old_logp`). Their loss is
   -A f(w) with w = exp(logp - old_logp) and the policy-shaping function f(w) = w / (w + beta); no clip, gradient
   through w.
2. Fresh rows: before the switch to mixed mode (`mixed_mode=False`) the PPO clipped surrogate (`ppo_clip`); after
   it (`mixed_mode=True`) the unclipped -A rho of the reference code (`loss_remove_clip`), unless
   `on_policy_clip=True` (docs/methods.md §2.6 #2), which keeps the clip in both phases. The loop passes both
   flags per row (Batch extras `is_replay`, `mixed_mode`, set by rlvr.buffers.exgrpo); the mode is the same for
   every row of a call.
3. Advantages are Dr.GRPO's r - mean over the whole group, the replayed row included (`mixed_group_advantages`).
4. The entropy bonus (0.001) and the L_max normaliser are the trainer's entropy_coef and aggregation, not part
   of this loss.
"""

from __future__ import annotations

import math

import torch

from rlvr import ops
from rlvr.algos.advantages import ADVANTAGES
from rlvr.algos.losses import LOSSES, masked_metric, ppo_clip, prepare, reinforce
from rlvr.metrics import Mean

_CLIP_KEYS = ("clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean")


def shaped_weight(log_w: torch.Tensor, *, beta: float = 0.1) -> torch.Tensor:
    """f(w) = w / (w + beta) from log w, written as sigmoid(log w - log beta) so w = exp(log w) never overflows.

    d f / d w = beta / (w + beta)^2, hence d f / d log w = f (1 - f) = w beta / (w + beta)^2 (docs/methods.md §2.5).
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0 (the reference uses 0.1), got {beta}")
    return torch.sigmoid(log_w - math.log(beta))


def _replay_rows(is_replay, logp: torch.Tensor) -> torch.Tensor:
    """(B,) or (B, T) bool -> (B, T) bool; None means no replayed row."""
    if is_replay is None:
        return torch.zeros_like(logp, dtype=torch.bool)
    is_replay = torch.as_tensor(is_replay, device=logp.device).bool()
    if is_replay.shape == logp.shape[:1]:
        return is_replay.unsqueeze(-1).expand_as(logp)  # (B,) -> (B, T)
    if is_replay.shape == logp.shape:
        return is_replay
    raise ValueError(f"is_replay must be (B,) or (B, T) = {tuple(logp.shape)}, got {tuple(is_replay.shape)}")


def _mode(mixed_mode) -> bool:
    """The call's loss mode from a bool or a per-row (B,) bool tensor (all rows alike)."""
    if not isinstance(mixed_mode, torch.Tensor):
        return bool(mixed_mode)
    if mixed_mode.numel() and bool((mixed_mode != mixed_mode.flatten()[0]).any()):
        raise ValueError("exgrpo_mixed: rows of one call must share the loss mode (mixed_mode)")
    return bool(mixed_mode.any())


@LOSSES.register("exgrpo_mixed", needs=("is_replay", "mixed_mode"))
def exgrpo_mixed(
    logp,
    old_logp,
    advantages,
    mask,
    *,
    is_replay=None,
    mixed_mode: bool | torch.Tensor = False,
    beta: float = 0.1,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    on_policy_clip: bool = False,
) -> tuple[torch.Tensor, dict]:
    """ExGRPO mixed-policy loss, arXiv 2510.02245: PPO on fresh rows, -A w/(w+beta) on replayed rows (no clip).

    is_replay: (B,) bool (or (B, T) for prefix-style replay), per row; None = no replay.
    mixed_mode: True once the run has switched to mixed mode (a bool, or (B,) the same for every row); fresh rows
    are then unclipped as in the reference code unless on_policy_clip=True. clip_low / clip_high as ppo_clip
    (reference: 0.2 / 0.2). Clip metrics and ppo_kl are means over fresh tokens, exgrpo/* over replayed tokens
    (w = pi_theta / pi_past), each with its own count (`Mean`), so micro-batching does not bias them.
    """
    replay = _replay_rows(is_replay, logp)  # (B, T) bool
    m, adv, log_ratio = prepare(logp, old_logp, advantages, mask)  # validates shapes, log w clamped to +-20
    fresh_mask, replay_mask = m & ~replay, m & replay
    clip = on_policy_clip or not _mode(mixed_mode)
    if clip:
        fresh_loss, metrics = ppo_clip(logp, old_logp, advantages, fresh_mask, clip_low=clip_low, clip_high=clip_high)
    else:
        fresh_loss, metrics = reinforce(logp, old_logp, advantages, fresh_mask)
        metrics.update({k: torch.zeros((), device=logp.device) for k in _CLIP_KEYS})  # nothing is clipped
    f_w = shaped_weight(log_ratio, beta=beta)  # (B, T)
    loss = torch.where(replay_mask, -adv * f_w, fresh_loss)
    rows = m.any(-1)  # (B,) non-empty rows
    metrics = {k: Mean(v, fresh_mask.sum()) for k, v in metrics.items()}  # over fresh tokens
    metrics.update({
        "exgrpo/replay_frac": masked_metric(replay.any(-1), rows),
        "exgrpo/replay_token_frac": masked_metric(replay_mask, m),
        "exgrpo/fw_mean": masked_metric(f_w, replay_mask),
        "exgrpo/w_mean": masked_metric(log_ratio.exp(), replay_mask),
        "exgrpo/replay_kl": masked_metric(-log_ratio, replay_mask),
    })
    return torch.where(m, loss, 0), metrics


@torch.no_grad()
def replay_old_logp(old_logp: torch.Tensor, behaviour_logp: torch.Tensor, is_replay: torch.Tensor) -> torch.Tensor:
    """IS correction (docs/methods.md §2.1 step 8): (B, T) old_logp, replayed rows' tokens -> recorded pi_past."""
    if behaviour_logp.shape != old_logp.shape:
        raise ValueError(f"behaviour_logp must be (B, T) = {tuple(old_logp.shape)}, got {tuple(behaviour_logp.shape)}")
    return torch.where(_replay_rows(is_replay, old_logp), behaviour_logp.to(old_logp.dtype), old_logp)


@torch.no_grad()
def mixed_group_advantages(rewards, group_ids, is_replay=None) -> tuple[torch.Tensor, dict]:
    """docs/methods.md §2.4: A_i = r_i - mean of its group's K rewards, the replayed row included (Dr.GRPO, no std).

    A replayed question's group is its stored trajectory plus K - 1 fresh samples under one group id; at most one
    replayed row per group. Metrics: the fraction of zero-variance groups among fresh and among replayed groups.
    """
    adv = ADVANTAGES.lookup("dr_grpo")(rewards, group_ids)
    is_replay = torch.zeros_like(rewards, dtype=torch.bool) if is_replay is None else is_replay.bool()
    if is_replay.shape != rewards.shape:
        raise ValueError(f"is_replay must be (N,) like rewards, got {tuple(is_replay.shape)}")
    _, inv = torch.unique(group_ids, return_inverse=True)
    n_groups = int(inv.max()) + 1 if inv.numel() else 0
    per_group = torch.zeros(n_groups, dtype=torch.long, device=rewards.device).index_add_(0, inv, is_replay.long())
    if bool((per_group > 1).any()):
        raise ValueError("a group holds more than one replayed row; each replayed question gets 1 stored + K-1 fresh")
    _, std, _ = ops.group_mean_std(rewards, group_ids)
    flat = torch.zeros(n_groups, dtype=torch.bool, device=rewards.device).index_put_((inv,), std == 0)  # (G,)
    replay_group = per_group > 0
    return adv, {
        "exgrpo/zero_var_frac_fresh": masked_metric(flat, ~replay_group),
        "exgrpo/zero_var_frac_replay": masked_metric(flat, replay_group),
        "exgrpo/replay_adv_mean": masked_metric(adv, is_replay),
    }
