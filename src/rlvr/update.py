"""The policy update: PPO-style epochs over mini-batches of one step's Batch, with exact global normalisers.

1. The groups of the step (over every data-parallel rank) are split into `mini_batches` sets in a seeded random
   order (one optimizer step each), repeated for `ppo_epochs`; every rank agrees on the split, so every rank takes
   the same number of optimizer steps, even one that holds no row of some mini-batch.
2. Before any backward of a mini-batch, its trained-token and sequence counts are summed over every micro-batch and
   every rank (docs/methods.md §1.6), so the loss of each micro-batch is divided by the *global* count and
   multiplied by the world size; gradients are then averaged over ranks. 1x8 and 8x1 micro-batching therefore give
   the same gradient (tests/test_update.py).
3. Per micro-batch: the policy's log-probs (logits / T) and entropy, the surrogate from the LOSSES registry (with the
   batch values it declared it needs), the train/inference mismatch weight, the batch's token weights, optional KL
   to the reference and entropy bonus, aggregated by name. pi_old is `Batch.old_logp` when an earlier stage computed
   it, else the detached current log-prob (rho = 1 on the first pass, as TRL and verl do).
4. A non-finite loss or gradient (on any rank) skips the optimizer step; the caller counts skipped steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from rlvr.batch import Batch
from rlvr.distributed import World, all_gather_object, all_reduce, average_gradients, is_sharded
from rlvr.distributed.fsdp import sharded
from rlvr.metrics import Mean, Metrics


@dataclass
class LossFns:
    """The registry functions of one run, with their keywords already bound from the config."""

    loss: Callable
    aggregate: Callable
    kl: Callable | None = None
    mismatch: Callable | None = None  # train/inference mismatch weight (docs/methods.md §1.12), from the sampler's logp
    kl_coef: float = 0.0
    entropy_coef: float = 0.0
    temperature: float = 1.0
    loss_needs: tuple[str, ...] = ()  # Batch extras the loss declared it needs (LOSSES.needs), passed by name


def micro_batch_loss(policy, mb: Batch, fns: LossFns, num_tokens: float, num_seqs: float, world: World,
                     log: Metrics, *, share: float = 1.0) -> torch.Tensor:
    """Loss of one micro-batch, already scaled for global normalisers and the world size; its metrics go to `log`
    (policy_loss and kl as `share` of this step's total: 1 / the number of optimizer steps of the update)."""
    logp, entropy = policy.logp(mb, temperature=fns.temperature, with_entropy=True)  # (B, T) each
    old_logp = logp.detach() if mb.old_logp is None else mb.old_logp
    needs = {k: mb.extras.get(k) for k in fns.loss_needs}
    per_token, metrics = fns.loss(logp, old_logp, mb.advantages, mb.loss_mask, **needs)
    if fns.mismatch is not None:
        weights, mm = fns.mismatch(old_logp.detach(), mb.rollout_logp, mb.loss_mask)  # (B, T), detached
        per_token = per_token * weights
        metrics = {**metrics, **mm}
    if mb.token_weights is not None:
        per_token = per_token * mb.token_weights
    agg = lambda x: fns.aggregate(x, mb.loss_mask, num_tokens=num_tokens, num_seqs=num_seqs)  # noqa: E731
    policy_loss = agg(per_token)
    loss = policy_loss
    log.sum("policy_loss", float(policy_loss.detach()) * share)
    if fns.kl is not None and mb.ref_logp is not None:
        kl = agg(fns.kl(logp, mb.ref_logp))
        loss = loss + fns.kl_coef * kl
        log.sum("kl", float(kl.detach()) * share)
    if fns.entropy_coef != 0.0:
        loss = loss - fns.entropy_coef * agg(entropy)
    n_tok = mb.loss_mask.sum()
    valid = mb.loss_mask.bool()
    log.mean("entropy", float(torch.where(valid, entropy.detach(), 0.0).sum() / n_tok.clamp(min=1)), weight=n_tok)
    _loss_metrics(log, metrics, n_tok)
    return loss * world.size


def _loss_metrics(log: Metrics, metrics: dict, n_tok: torch.Tensor) -> None:
    """A loss metric is a mean over the call's trained tokens, a `Mean` with its own count, or an extreme (*_min,
    *_max: the min / max over micro-batches and ranks)."""
    for k, v in metrics.items():
        if isinstance(v, Mean):
            log.mean(k, v.value, float(v.weight))
        elif k.endswith("_min"):
            log.min(k, float(v))
        elif k.endswith("_max"):
            log.max(k, float(v))
        else:
            log.mean(k, float(v), float(n_tok))


def split_micro(n: int, micro_batch_size: int) -> list[slice]:
    return [slice(s, min(s + micro_batch_size, n)) for s in range(0, n, micro_batch_size)]


def micro_batches(batch: Batch, micro_batch_size: int, micro_batch_tokens: int = 0) -> list[slice]:
    """Consecutive row ranges of at most `micro_batch_size` rows and, when micro_batch_tokens > 0, at most that many
    computed tokens (verl's dynamic batch size): a row costs its real completion tokens, plus its real prompt tokens
    when its prompt is not the previous row's (the forward runs a shared prompt once per micro-batch). Rows stay in
    order, so groups stay together; a row over the budget goes alone."""
    if micro_batch_tokens <= 0:
        return split_micro(len(batch), micro_batch_size)
    prompt_len, tail_len = batch.prompt_mask.sum(-1).tolist(), batch.completion_mask.sum(-1).tolist()
    same = [False] + ((batch.prompt_ids[1:] == batch.prompt_ids[:-1]) & (batch.prompt_mask[1:] == batch.prompt_mask[
        :-1])).all(-1).tolist()  # (N,) the row repeats the previous row's prompt
    out, start, used = [], 0, 0
    for i in range(len(batch)):
        cost = tail_len[i] + (0 if same[i] and i > start else prompt_len[i])
        if i > start and (used + cost > micro_batch_tokens or i - start == micro_batch_size):
            out.append(slice(start, i))
            start, used, cost = i, 0, tail_len[i] + prompt_len[i]
        used += cost
    return out + [slice(start, len(batch))] if len(batch) else out


def optimizer_step(policy, optimizer, scheduler, batch: Batch, fns: LossFns, *, micro_batch_size: int,
                   grad_clip: float, world: World, log: Metrics, share: float = 1.0,
                   micro_batch_tokens: int = 0, filler: Batch | None = None) -> bool:
    """One optimizer step over this rank's rows of a mini-batch; returns True when it was skipped (non-finite).
    filler: a row of this rank (any) for the zero-loss passes of a sharded model (_lockstep)."""
    counts = torch.tensor([float(batch.loss_mask.sum()), float((batch.loss_mask.sum(-1) > 0).sum())])
    num_tokens, num_seqs = all_reduce(counts, world).clamp(min=1).tolist()
    finite = True
    for sl in _lockstep(policy, micro_batches(batch, micro_batch_size, micro_batch_tokens), world):
        if sl is None:  # FSDP: a rank with fewer micro-batches joins the others' collectives with a zero loss
            loss = 0.0 * micro_batch_loss(policy, filler, fns, num_tokens, num_seqs, world, Metrics())
        else:
            mb = batch if sl.stop - sl.start == len(batch) else batch.select(torch.arange(sl.start, sl.stop))
            loss = micro_batch_loss(policy, mb, fns, num_tokens, num_seqs, world, log, share=share)
        finite &= bool(torch.isfinite(loss.detach()))
        loss.backward()
    params = [p for p in policy.parameters() if p.requires_grad]
    average_gradients(params, world)
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
    grad_norm = float(norm.full_tensor() if is_sharded(norm) else norm)
    log.mean("grad_norm", grad_norm)
    finite = bool(all_reduce(torch.tensor([float(finite)]), world, "min")) and math.isfinite(grad_norm)
    if finite:
        optimizer.step()
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return not finite


def _lockstep(policy, slices: list[slice], world: World) -> list[slice | None]:
    """Under FSDP every forward and backward is a collective (all-gather, reduce-scatter), so every rank runs as many
    micro-batches as the rank with most; None marks a zero-loss pass. Replicas: the slices as they are."""
    if world.size == 1 or not sharded(getattr(policy, "model", None)):
        return slices
    most = int(all_reduce(torch.tensor([len(slices)]), world, "max"))
    return slices + [None] * (most - len(slices))


def mini_batch_groups(batch: Batch, mini_batches: int, generator: torch.Generator, world: World) -> list[list[int]]:
    """The step's groups over all ranks, split into `mini_batches` sets in a seeded random order (the same sets on
    every rank; fewer sets when there are fewer groups)."""
    groups = sorted({g for part in all_gather_object(batch.groups().tolist(), world) for g in part})
    order = torch.tensor(groups, dtype=torch.long)
    if mini_batches > 1:
        order = order[torch.randperm(len(order), generator=generator)]
    return [chunk.tolist() for chunk in order.chunk(mini_batches)]


def update(policy, optimizer, scheduler, batch: Batch, fns: LossFns, *, ppo_epochs: int, mini_batches: int,
           micro_batch_size: int, grad_clip: float, world: World, generator: torch.Generator,
           log: Metrics, micro_batch_tokens: int = 0) -> int:
    """All optimizer steps for one step's batch; returns how many were skipped. Metrics go to `log`."""
    policy.train()
    plan = [mini_batch_groups(batch, mini_batches, generator, world) for _ in range(ppo_epochs)]
    steps = sum(len(p) for p in plan)
    skipped = 0
    for epoch in plan:
        for groups in epoch:
            rows = batch.rows_of(groups)
            part = batch if len(rows) == len(batch) else batch.select(rows)  # one mini-batch: every row, in order
            skipped += optimizer_step(policy, optimizer, scheduler, part, fns, micro_batch_size=micro_batch_size,
                                      grad_clip=grad_clip, world=world, log=log, share=1.0 / steps,
                                      micro_batch_tokens=micro_batch_tokens,
                                      filler=batch.select([0]) if len(batch) else None)
    log.max("optimizer_steps", steps)
    return skipped
