"""The stages of an RL step between the rewards and the update, each a function of the batch and its own settings.

    batch = advantages(stage, batch, world, log)              # + advantages, from the gathered step's rewards
    batch = logprobs(needs, policy, ref, batch)               # + old_logp / old_entropy / ref_logp on request
    batch = token_weights(stage, batch, world, log)           # + token_weights (high_entropy, perception ...)

1. Registered functions declare the batch values they need (`ADVANTAGES.needs("reinforce_pp_baseline")` ->
   ("lengths",)); `batch_value` resolves a name: a Batch field, an entry of `extras`, or one of the derived values
   `lengths` (trained tokens per row) and `entropy` (per-token entropy under pi_old).
2. Batch statistics are global: advantages and token weights are computed on the rows of every data-parallel rank
   gathered in rank order (group-relative advantages need whole groups, which never straddle ranks; batch whitening,
   leave-one-out normalisation and entropy quantiles need the whole batch), then each rank keeps its own rows.
3. pi_old, its entropy and the reference's log-probs cost a no-grad forward each; they are computed only when a later
   stage needs them (several optimizer steps per batch, a buffer that stores pi_old, KL, entropy-based weights).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from rlvr.batch import Batch
from rlvr.distributed import World, gather_rows
from rlvr.metrics import Metrics

DERIVED: dict[str, Callable[[Batch], torch.Tensor]] = {
    "lengths": lambda b: b.loss_mask.sum(-1),  # (N,) trained tokens (observations of a multi-turn row excluded)
    "entropy": lambda b: b.old_entropy,  # (N, T) under pi_old
}


def batch_value(batch: Batch, name: str):
    """The value a registered function declared it needs, by name."""
    if name in DERIVED:
        return DERIVED[name](batch)
    if name in batch.extras:
        return batch.extras[name]
    if hasattr(batch, name):
        return getattr(batch, name)
    raise ValueError(f"no batch value '{name}': not a Batch field, an extra, or one of {sorted(DERIVED)}")


def _gathered(x: torch.Tensor, world: World) -> torch.Tensor:
    return gather_rows(x, world)[0]


# ------------------------------------------------------------------ advantages


@dataclass
class AdvantageStage:
    fn: Callable  # ADVANTAGES entry with its keywords bound: (rewards (N,), group_ids (N,), **needs) -> (N,)
    needs: tuple[str, ...] = ()


def advantages(stage: AdvantageStage, batch: Batch, world: World, log: Metrics) -> Batch:
    """Advantages of this rank's rows, computed over the whole step's rows (every rank)."""
    rewards, rows = gather_rows(batch.rewards, world)
    group_ids = _gathered(batch.group_ids, world)
    needs = {k: _gathered(torch.as_tensor(batch_value(batch, k), device=batch.device), world) for k in stage.needs}
    adv = stage.fn(rewards, group_ids, **needs)[rows]  # (N,) or (N, T)
    if len(adv):
        log.mean("adv_abs_mean", float(adv.abs().mean()), weight=len(adv))
    return batch.replace(advantages=adv)


# ------------------------------------------------------------------ no-grad log-probs


@dataclass
class LogprobNeeds:
    """Which no-grad passes the step needs (decided once at set-up from the config and the registered needs)."""

    old_logp: bool = False
    entropy: bool = False
    temperature: float = 1.0
    micro_batch_size: int = 64


@torch.no_grad()
def chunked_logp(policy, batch: Batch, micro_batch_size: int, temperature: float,
                 with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """No-grad log-probs (and entropy) of the batch's completions, `micro_batch_size` rows per forward."""
    parts = [policy.logp(batch.select(torch.arange(s, min(s + micro_batch_size, len(batch)))),
                         temperature=temperature, with_entropy=with_entropy) for s in range(0, len(batch),
                                                                                         micro_batch_size)]
    if not parts:
        empty = batch.loss_mask.new_zeros(batch.loss_mask.shape)
        return empty, (empty if with_entropy else None)
    logp = torch.cat([p[0] for p in parts])
    return logp, (torch.cat([p[1] for p in parts]) if with_entropy else None)


def logprobs(needs: LogprobNeeds, policy, ref_policy, batch: Batch) -> Batch:
    """pi_old (and its entropy) and the reference's log-probs, where a later stage needs them."""
    fields = {}
    if needs.old_logp or needs.entropy:
        policy.eval()
        old, entropy = chunked_logp(policy, batch, needs.micro_batch_size, needs.temperature, needs.entropy)
        fields.update(old_logp=old if needs.old_logp else None, old_entropy=entropy)
    if ref_policy is not None:
        fields["ref_logp"], _ = chunked_logp(ref_policy, batch, needs.micro_batch_size, needs.temperature)
    return batch.replace(**fields) if fields else batch


# ------------------------------------------------------------------ token weights


@dataclass
class TokenWeightStage:
    fn: Callable | None = None  # TOKEN_WEIGHTS entry, keywords bound: (mask (N, T), **needs) -> (N, T); None = off
    needs: tuple[str, ...] = ()


def token_weights(stage: TokenWeightStage, batch: Batch, world: World, log: Metrics) -> Batch:
    """Per-token loss weights of this rank's rows, computed over the whole step's trained tokens (every rank)."""
    if stage.fn is None:
        return batch
    mask, rows = gather_rows(batch.loss_mask, world)
    needs = {k: _gathered(batch_value(batch, k), world) for k in stage.needs}
    weights = stage.fn(mask, **needs)[rows][:, : batch.loss_mask.shape[1]].detach()  # (N, T)
    valid = batch.loss_mask.bool()
    log.mean("token_weights/mean", float(weights[valid].float().mean()) if valid.any() else 0.0,
             weight=int(valid.sum()))
    return batch.replace(token_weights=weights)
