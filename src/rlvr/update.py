"""The policy update: PPO-style epochs over mini-batches of one rollout batch, with exact global normalisers.

1. The rollout batch is split into `mini_batches` groups-aligned mini-batches (one optimizer step each),
   repeated for `ppo_epochs` (a fresh seeded permutation of the groups each epoch).
2. Before any backward of a mini-batch, its valid-token and sequence counts are summed over every
   micro-batch and every data-parallel rank (specs/grpo_family.md §3.6), so the loss of each micro-batch is
   divided by the *global* count and multiplied by the world size; gradients are then averaged over ranks.
   1x8 and 8x1 micro-batching therefore give the same gradient (tests/test_update.py).
3. Per micro-batch: forward with logits / T, per-token log-probs (and entropy when it is used), surrogate
   loss from the LOSSES registry, optional KL to the reference and entropy bonus, aggregated by name.
4. A non-finite loss or gradient skips the optimizer step; the caller counts skipped steps.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from rlvr.distributed import World, all_reduce, average_gradients
from rlvr.lean import lean_completion_logits, lean_reason
from rlvr.ops import entropy_from_logits, token_logprobs


@dataclass
class UpdateBatch:
    """Everything one update needs, on the trainer's device. N sequences, P prompt, T completion tokens."""

    input_ids: torch.Tensor  # (N, P + T) prompt (left-padded) then completion (right-padded)
    attention_mask: torch.Tensor  # (N, P + T)
    loss_mask: torch.Tensor  # (N, T) float: 1 = token trained on
    advantages: torch.Tensor  # (N,) or (N, T)
    group_ids: torch.Tensor  # (N,)
    old_logp: torch.Tensor | None = None  # (N, T) pi_old; None = on-policy shortcut (rho = 1)
    ref_logp: torch.Tensor | None = None  # (N, T) frozen reference, when KL is on
    rollout_logp: torch.Tensor | None = None  # (N, T) the sampler's log-probs (the recorded ones for replayed rows)
    is_replay: torch.Tensor | None = None  # (N,) bool: rows replayed from an experience buffer (ExGRPO)
    loss_kwargs: dict = field(default_factory=dict)  # per-step keywords for a loss that takes them (not per row)

    @property
    def prompt_len(self) -> int:
        return self.input_ids.shape[1] - self.loss_mask.shape[1]

    def rows(self, idx: torch.Tensor) -> UpdateBatch:
        pick = lambda t: t[idx] if isinstance(t, torch.Tensor) else t  # noqa: E731
        return UpdateBatch(*(pick(getattr(self, f)) for f in self.__dataclass_fields__))


@dataclass
class LossFns:
    """The registry functions of one run, with their keywords already bound from the config."""

    loss: Callable
    aggregate: Callable
    kl: Callable | None = None
    mismatch: Callable | None = None  # train/inference mismatch weight (spec §3.12), from the sampler's logp
    kl_coef: float = 0.0
    entropy_coef: float = 0.0
    temperature: float = 1.0
    autocast: torch.dtype | None = None  # mixed-precision compute dtype of the training forward
    lean: bool = True  # rlvr's lean forward (rlvr/lean.py) when the model supports it, else the HF forward
    replay_aware: bool = False  # the loss takes `is_replay` (and per-step keywords such as ExGRPO's `mixed`)


def policy_logp(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, T: int, *,
    temperature: float = 1.0, with_entropy: bool = False, share_prefix: bool = True,
    autocast: torch.dtype | None = None, lean: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (N, T) of the last T tokens of `input_ids` under `model` at temperature T, and entropy.

    Rows that repeat the previous row's prompt (a GRPO group) share one forward pass over that prompt: its
    KV cache is computed once per distinct prompt and indexed out to every row (differentiably), so the
    prompt costs 1/G of its FLOPs in forward and backward. The result equals the unshared forward.
    `lean` (default) runs rlvr's lean forward (rlvr/lean.py: prompts shared the same way, padding never computed,
    fused projections) when `lean_reason(model)` allows it; values at completion positions that are padding are
    then those of zero logits (any value is fine there: every consumer masks them).
    `autocast` (e.g. torch.bfloat16) runs the forward in mixed precision; log-probs are taken in fp32.
    """
    owner, first = _prompt_owners(input_ids, attention_mask, T)
    device_type = input_ids.device.type
    with torch.autocast(device_type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        if lean and lean_reason(model) is None:
            logits = lean_completion_logits(model, input_ids, attention_mask, T, owner, first)
        elif share_prefix and len(first) < len(owner):
            logits = _shared_prefix_logits(model, input_ids, attention_mask, T, owner, first)
        else:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # left padding: first token at 0
            out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                        logits_to_keep=T + 1)
            logits = out.logits[:, -T - 1 : -1]  # (N, T, V): position t predicts token t + 1
    logits = logits.float() / temperature
    logp = token_logprobs(logits, input_ids[:, -T:])  # (N, T)
    entropy = entropy_from_logits(logits) if with_entropy else None
    return logp, entropy


def _prompt_owners(input_ids: torch.Tensor, attention_mask: torch.Tensor, T: int):
    """owner (N,): index of each row's distinct prompt; first (U,): the row that holds each distinct prompt."""
    prompt = torch.where(attention_mask[:, :-T].bool(), input_ids[:, :-T], -1)  # (N, P), padding made uniform
    starts = torch.ones(len(prompt), dtype=torch.bool, device=prompt.device)
    starts[1:] = (prompt[1:] != prompt[:-1]).any(-1)
    return starts.long().cumsum(0) - 1, torch.nonzero(starts).flatten()


@functools.cache
def _cache_keyword_of(cls: type) -> str:
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def _cache_keyword(model) -> str:
    """transformers >= 5.24 names the forward's cache argument `cache`; older releases `past_key_values`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _cache_keyword_of(type(base))


def _shared_prefix_logits(model, input_ids, attention_mask, T: int, owner, first) -> torch.Tensor:
    P = input_ids.shape[1] - T
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (N, P + T)
    head = model(input_ids=input_ids[first, :P], attention_mask=attention_mask[first, :P],
                 position_ids=position_ids[first, :P], use_cache=True, logits_to_keep=1)  # U distinct prompts
    cache = getattr(head, "cache", None) or head.past_key_values  # renamed `cache` in transformers 5.24
    cache.reorder_cache(owner)  # (U, ...) -> (N, ...), an index_select that gradients flow back through
    tail = model(input_ids=input_ids[:, P:-1], attention_mask=attention_mask, position_ids=position_ids[:, P:-1],
                 use_cache=False, **{_cache_keyword(model): cache})
    # completion token 0 is predicted by the prompt's last position, token t by completion position t - 1
    return torch.cat([head.logits[owner, -1:], tail.logits], dim=1)  # (N, T, V)


@torch.no_grad()
def batched_logp(model, batch: UpdateBatch, micro_batch_size: int, temperature: float,
                 autocast: torch.dtype | None = None, lean: bool = True) -> torch.Tensor:
    """No-grad log-probs of the completions of `batch` (pi_old recompute, reference model)."""
    T = batch.loss_mask.shape[1]
    parts = []
    for start in range(0, batch.input_ids.shape[0], micro_batch_size):
        sl = slice(start, start + micro_batch_size)
        logp, _ = policy_logp(model, batch.input_ids[sl], batch.attention_mask[sl], T, temperature=temperature,
                              autocast=autocast, lean=lean)
        parts.append(logp)
    return torch.cat(parts)


def micro_batch_loss(model, mb: UpdateBatch, fns: LossFns, num_tokens: float, num_seqs: float, world: World):
    """Loss of one micro-batch, already scaled for global normalisers; metrics as token-weighted sums."""
    T = mb.loss_mask.shape[1]
    logp, entropy = policy_logp(model, mb.input_ids, mb.attention_mask, T, temperature=fns.temperature,
                                with_entropy=True, autocast=fns.autocast, lean=fns.lean)
    old_logp = logp.detach() if mb.old_logp is None else mb.old_logp
    replay = None if mb.is_replay is None else mb.is_replay.bool()[:, None]  # (B, 1)
    if replay is not None:  # replayed rows: the recorded behaviour policy is pi_old (ExGRPO spec step 8)
        old_logp = torch.where(replay, mb.rollout_logp, old_logp)
    extra = {"is_replay": mb.is_replay, **mb.loss_kwargs} if fns.replay_aware and replay is not None else {}
    per_token, metrics = fns.loss(logp, old_logp, mb.advantages, mb.loss_mask, **extra)
    if fns.mismatch is not None and mb.rollout_logp is not None:
        weights, mm = fns.mismatch(old_logp.detach(), mb.rollout_logp, mb.loss_mask)  # (B, T), detached
        if replay is not None:  # replayed rows are off-policy on purpose; the loss handles them
            weights = torch.where(replay, 1.0, weights)
        per_token = per_token * weights
        metrics = {**metrics, **mm}
    agg = lambda x: fns.aggregate(x, mb.loss_mask, num_tokens=num_tokens, num_seqs=num_seqs)  # noqa: E731
    policy_loss = agg(per_token)
    loss = policy_loss
    stats = {"policy_loss": policy_loss.detach()}
    if fns.kl is not None and mb.ref_logp is not None:
        kl = agg(fns.kl(logp, mb.ref_logp))
        loss = loss + fns.kl_coef * kl
        stats["kl"] = kl.detach()
    if fns.entropy_coef != 0.0:
        loss = loss - fns.entropy_coef * agg(entropy)
    n_tok = mb.loss_mask.sum()
    stats["entropy"] = torch.where(mb.loss_mask.bool(), entropy.detach(), 0.0).sum() / num_tokens
    for k, v in metrics.items():  # means become token-weighted shares of the global mean; extremes stay
        v = torch.as_tensor(v, dtype=torch.float32)
        stats[k] = v if k.endswith(_EXTREMES) else v * n_tok / num_tokens
    return loss * world.size, stats


_EXTREMES = ("_min", "_max")


def _combine(key: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if key.endswith("_min"):
        return torch.minimum(a, b)
    if key.endswith("_max"):
        return torch.maximum(a, b)
    return a + b


def split_micro(n: int, micro_batch_size: int) -> list[slice]:
    return [slice(s, min(s + micro_batch_size, n)) for s in range(0, n, micro_batch_size)]


def optimizer_step(
    model, optimizer, scheduler, mb_batch: UpdateBatch, fns: LossFns, *, micro_batch_size: int, grad_clip: float,
    world: World,
) -> dict[str, float]:
    """One optimizer step over a mini-batch; returns metrics (with `skipped` = 1.0 if non-finite)."""
    counts = torch.stack([mb_batch.loss_mask.sum(), (mb_batch.loss_mask.sum(-1) > 0).sum().float()])
    num_tokens, num_seqs = all_reduce(counts.float(), world).clamp(min=1).tolist()
    totals: dict[str, torch.Tensor] = {}
    for sl in split_micro(mb_batch.input_ids.shape[0], micro_batch_size):
        loss, stats = micro_batch_loss(model, mb_batch.rows(torch.arange(sl.start, sl.stop)), fns,
                                       num_tokens, num_seqs, world)
        loss.backward()
        for k, v in stats.items():
            totals[k] = _combine(k, totals[k], v) if k in totals else v
    params = [p for p in model.parameters() if p.requires_grad]
    average_gradients(params, world)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
    out = {k: float(v) for k, v in totals.items()}  # sums over micro-batches = this rank's share of the mean
    out["grad_norm"] = float(grad_norm)
    out["skipped"] = float(not math.isfinite(out["grad_norm"]) or not math.isfinite(out["policy_loss"]))
    if out["skipped"]:
        optimizer.zero_grad(set_to_none=True)
        return out
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return out


def mini_batch_indices(group_ids: torch.Tensor, mini_batches: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Split rows into `mini_batches` sets of whole groups, in a seeded random group order."""
    groups = torch.unique(group_ids)
    order = groups[torch.randperm(len(groups), generator=generator)] if mini_batches > 1 else groups
    rows = []
    for chunk in order.chunk(mini_batches):
        rows.append(torch.nonzero(torch.isin(group_ids, chunk)).flatten())
    return rows


def update(
    model, optimizer, scheduler, batch: UpdateBatch, fns: LossFns, *, ppo_epochs: int, mini_batches: int,
    micro_batch_size: int, grad_clip: float, world: World, generator: torch.Generator,
) -> dict[str, float]:
    """All optimizer steps for one rollout batch; metrics averaged over the steps taken."""
    model.train()
    history: list[dict[str, float]] = []
    for _ in range(ppo_epochs):
        for idx in mini_batch_indices(batch.group_ids, mini_batches, generator):
            history.append(optimizer_step(model, optimizer, scheduler, batch.rows(idx), fns,
                                          micro_batch_size=micro_batch_size, grad_clip=grad_clip, world=world))
    keys = {k for h in history for k in h}
    out = {k: sum(h.get(k, 0.0) for h in history) / len(history) for k in keys if k != "skipped"}
    out["skipped"] = sum(h["skipped"] for h in history)
    out["optimizer_steps"] = float(len(history))
    return out
