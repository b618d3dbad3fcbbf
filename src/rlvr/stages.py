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
from rlvr.seeding import row_seeds
from rlvr.update import micro_batches

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
    if x.dtype == torch.bool:  # gloo gathers no bool tensors
        return gather_rows(x.long(), world)[0].bool()
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
    micro_batch_tokens: int = 0


@torch.no_grad()
def chunked_logp(policy, batch: Batch, micro_batch_size: int, temperature: float,
                 with_entropy: bool = False, micro_batch_tokens: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """No-grad log-probs (and entropy) of the batch's completions, micro-batched as the update is
    (rlvr.update.micro_batches)."""
    slices = micro_batches(batch, micro_batch_size, micro_batch_tokens)
    parts = [policy.logp(batch.select(torch.arange(sl.start, sl.stop)), temperature=temperature,
                         with_entropy=with_entropy) for sl in slices]
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
        old, entropy = chunked_logp(policy, batch, needs.micro_batch_size, needs.temperature, needs.entropy,
                                    needs.micro_batch_tokens)
        fields.update(old_logp=old if needs.old_logp else None, old_entropy=entropy)
    if ref_policy is not None:
        fields["ref_logp"], _ = chunked_logp(ref_policy, batch, needs.micro_batch_size, needs.temperature,
                                             micro_batch_tokens=needs.micro_batch_tokens)
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


# ------------------------------------------------------------------ VPPO: visual dependency and advantage shaping


@dataclass
class PerceptionStage:
    """VPPO's corrupted-image pass (arXiv 2510.09285, docs/methods.md §7.2), on when a registered function needs
    `dependency`."""

    enabled: bool = False
    score: str = "k3_sampled"  # k3_sampled (the reference code) | full_kl (the paper's full-vocabulary KL)
    mask_per: str = "row"  # row: a fresh patch mask per response (the code) | prompt: one mask per group
    patch_prob: float = 0.5  # each 14-px patch blackened with this probability
    num_masks: int = 1  # M: S is the mean over M corrupted passes, each with its own mask (the code: 1)
    seed: int = 0
    temperature: float = 1.0
    micro_batch_size: int = 64


def _members(group_ids: torch.Tensor) -> torch.Tensor:
    """(N,) index of each row within its group, in row order."""
    seen: dict[int, int] = {}
    out = []
    for g in group_ids.tolist():
        out.append(seen.get(g, 0))
        seen[g] = out[-1] + 1
    return torch.tensor(out, dtype=torch.long)


def mask_seeds(stage: PerceptionStage, groups: torch.Tensor, step: int, members: torch.Tensor) -> list[torch.Tensor]:
    """The (N,) patch-mask seeds of each of the M corrupted passes. Mask 0 comes from the row's stream
    row_seeds(seed, "vppo", group, step, member), mask j >= 1 from that stream keyed by j too: M = 1 draws the one
    mask it always drew, and every mask depends on the row's keys alone (any layout, any resume)."""
    keys = (groups, torch.full_like(groups, step), members)
    extra = [[]] + [[torch.full_like(groups, j)] for j in range(1, stage.num_masks)]
    return [row_seeds(stage.seed, "vppo", *keys, *more) for more in extra]


def _log_softmax(policy, batch: Batch, temperature: float) -> torch.Tensor:
    return (policy.forward_logits(batch).float() / temperature).log_softmax(-1)  # (n, T, V)


@torch.no_grad()
def _dependency(stage: PerceptionStage, policy, batch: Batch, augs: list[Batch]) -> tuple[torch.Tensor, torch.Tensor]:
    """Visual dependency S (N, T) of each completion token, the mean over the corrupted copies `augs`, and its entropy
    under pi_old (N, T)."""
    from rlvr.algos.vppo import full_kl_dependency, visual_dependency

    parts = []
    for s in range(0, len(batch), stage.micro_batch_size):
        rows = torch.arange(s, min(s + stage.micro_batch_size, len(batch)))
        part = batch.select(rows)
        if stage.score == "full_kl":  # (n, T, V) twice at a time: the memory the paper's form costs
            la = _log_softmax(policy, part, stage.temperature)
            deps = [full_kl_dependency(la, _log_softmax(policy, aug.select(rows), stage.temperature), part.loss_mask)
                    for aug in augs]
            entropy = -(la.exp() * la).sum(-1)
        else:
            if batch.old_logp is not None and batch.old_entropy is not None:  # pi_old's pass already ran
                logp, entropy = batch.old_logp[rows], batch.old_entropy[rows]
            else:
                logp, entropy = policy.logp(part, temperature=stage.temperature, with_entropy=True)
            deps = [visual_dependency(logp, policy.logp(aug.select(rows), temperature=stage.temperature)[0],
                                      part.loss_mask) for aug in augs]
        parts.append((torch.stack(deps).mean(0), entropy))  # (n, T); one mask: S itself, bit for bit
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def perception(stage: PerceptionStage, policy, batch: Batch, step: int, world: World, log: Metrics) -> Batch:
    """+ extras `dependency` (N, T) and `has_image` (N,): how much each generated token's probability moves when the
    row's images are replaced by a corrupted copy (patches blackened after the processor's resize), averaged over
    `num_masks` copies. The reference code draws one mask per row, so S is a one-sample estimate over masks; M masks
    cut its variance for M no-grad forwards. Row r's masks come from its own streams (`mask_seeds`), the same on any
    layout and on resume."""
    from rlvr.algos.vppo import dependency_metrics

    if not stage.enabled:
        return batch
    policy.eval()
    groups = batch.group_ids.cpu()
    members = _members(groups) if stage.mask_per == "row" else torch.zeros_like(groups)
    augs = [policy.corrupt(batch, seeds, p=stage.patch_prob) for seeds in mask_seeds(stage, groups, step, members)]
    dependency, entropy = _dependency(stage, policy, batch, augs)
    has_image = policy.has_images(batch)
    shown = batch.loss_mask * has_image[:, None].to(batch.loss_mask.dtype)  # tokens of rows that show an image
    everyone = [_gathered(x, world) for x in (dependency, shown, entropy)]  # a correlation does not average over ranks
    if float(everyone[1].sum()):
        for key, value in dependency_metrics(everyone[0], everyone[1], everyone[2]).items():
            log.max(key, float(value))  # the same value on every rank
    return batch.replace(extras={**batch.extras, "dependency": dependency, "has_image": has_image})


@dataclass
class ShapingStage:
    fn: Callable | None = None  # ADVANTAGE_SHAPING entry, keywords bound: (advantages, mask, **needs) -> (adv, metrics)
    needs: tuple[str, ...] = ()


def shape_advantages(stage: ShapingStage, batch: Batch, world: World, log: Metrics) -> Batch:
    """Advantages transformed after the estimator (VPPO's trajectory-level shaping), over the whole step's rows."""
    if stage.fn is None:
        return batch
    adv, rows = gather_rows(batch.advantages, world)
    mask = _gathered(batch.loss_mask, world)
    needs = {k: _gathered(torch.as_tensor(batch_value(batch, k), device=batch.device), world) for k in stage.needs}
    shaped, metrics = stage.fn(adv, mask, **needs)
    for key, value in metrics.items():  # computed over every rank's rows already: the same on each rank
        log.max(key, float(value))
    return batch.replace(advantages=shaped[rows][..., : batch.loss_mask.shape[1]] if shaped.dim() > 1
                         else shaped[rows])
