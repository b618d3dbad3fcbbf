"""Data parallelism over torch.distributed (gloo on CPU, nccl on GPU), started by `torchrun`.

Each rank samples its own share of the step's prompts and runs the same update on its share. Every decision that
changes how much work a rank does (filters, dynamic-sampling rounds, data positions, mini-batch membership) is
made from gathered values, so all ranks agree; batch statistics (advantage whitening, per-source reward
normalisation, entropy quantiles) are computed on the gathered batch; loss normalisers are all-reduced before any
backward, and gradients are averaged with one all-reduce per optimizer step. D ranks x B/D sequences therefore
give the update of one process with B sequences (tests/test_distributed.py runs whole trainings both ways).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    owned: bool = field(default=False, compare=False)  # init_world created the process group (shutdown ends it)
    group: Any = field(default=None, compare=False)  # a process group of these ranks; None: the default group

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def requested_world_size() -> int:
    """The world size torchrun asks for (1 without torchrun); known before any process group exists."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_world() -> World:
    """Join the process group torchrun describes in the environment (or the one the caller already made); a single
    process needs nothing."""
    size = requested_world_size()
    if size == 1:
        return World()
    owned = not dist.is_initialized()
    if owned:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return World(rank=dist.get_rank(), size=dist.get_world_size(), owned=owned)


def side_world(world: World) -> World:
    """The same ranks over a process group of their own, for collectives that run in another thread at the same time
    as the default group's (asynchronous rollouts: rlvr.rollout.pipeline). Every rank must call it, in the same
    order."""
    if world.size == 1:
        return world
    return World(rank=world.rank, size=world.size, group=dist.new_group(list(range(world.size))))


_OPS = {"sum": dist.ReduceOp.SUM, "mean": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}


def all_reduce(values: torch.Tensor, world: World, op: str = "sum") -> torch.Tensor:
    """Reduce a tensor over ranks with op sum | mean (the sum; the caller divides) | min | max."""
    if world.size == 1:
        return values
    out = values.clone()
    dist.all_reduce(out, op=_OPS[op], group=world.group)
    return out


def mean_over_ranks(metrics: dict[str, float], world: World, sums: tuple[str, ...] = ()) -> dict[str, float]:
    """Scalar metrics of equal shares averaged over ranks (the whole batch's means), the `sums` keys summed; one
    all-reduce. Every rank must pass the same keys."""
    if world.size == 1:
        return metrics
    keys = sorted(metrics)
    total = all_reduce(torch.tensor([metrics[k] for k in keys], dtype=torch.float64), world).tolist()
    return {k: v if k in sums else v / world.size for k, v in zip(keys, total)}


def all_gather_object(obj: Any, world: World) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank (small Python objects: keys, counts, decisions)."""
    if world.size == 1:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj, group=world.group)
    return out


def gather_rows(x: torch.Tensor, world: World) -> tuple[torch.Tensor, slice]:
    """Rows of every rank stacked in rank order (other dims zero-padded to the largest), and this rank's slice.

    Ranks may hold different numbers of rows (after filters) and widths; the sizes are agreed first.
    """
    if world.size == 1:
        return x, slice(0, x.shape[0])
    shapes = all_gather_object(tuple(x.shape), world)
    full = [max(s[d] for s in shapes) for d in range(x.dim())]
    padded = x.new_zeros([full[0], *full[1:]])
    padded[tuple(slice(0, n) for n in x.shape)] = x
    parts = [torch.empty_like(padded) for _ in range(world.size)]
    dist.all_gather(parts, padded, group=world.group)
    rows = torch.cat([p[: s[0]] for p, s in zip(parts, shapes)])
    start = sum(s[0] for s in shapes[: world.rank])
    return rows, slice(start, start + x.shape[0])


def is_sharded(t: torch.Tensor) -> bool:
    """A DTensor: an FSDP parameter shard."""
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def average_gradients(params: list[torch.nn.Parameter], world: World) -> None:
    """Average .grad over ranks with a single flattened all-reduce. A rank without a gradient for a parameter that
    another rank has (no rows in this mini-batch) contributes zeros; a parameter no rank touched keeps None, as in
    one process (AdamW skips it)."""
    params = [p for p in params if not is_sharded(p)]  # FSDP reduce-scatters its own (rlvr.distributed.fsdp)
    if world.size == 1 or not params:
        return
    has = all_reduce(torch.tensor([p.grad is not None for p in params], dtype=torch.int32), world, "max")
    params = [p for p, h in zip(params, has.tolist()) if h]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if not params:
        return
    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=world.group)
    flat /= world.size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier(group=world.group)


def shutdown(world: World) -> None:
    """End the process group if init_world made it (a caller's group, e.g. several runs in one job, stays)."""
    if world.owned and dist.is_initialized():
        dist.destroy_process_group()
