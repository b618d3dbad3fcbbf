"""Data parallelism over torch.distributed (gloo on CPU, nccl on GPU), started by `torchrun`.

Each rank samples its own share of the step's prompts and runs the same update on its share. Loss
normalisers are all-reduced before any backward (global token and sequence counts), and gradients are
averaged with one all-reduce per optimizer step, so D ranks x B/D sequences give the update of one process
with B sequences (tests/test_distributed.py checks it with two CPU ranks).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_world() -> World:
    """Join the process group torchrun describes in the environment; a single process needs nothing."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return World(rank=dist.get_rank(), size=dist.get_world_size())


_OPS = {"sum": dist.ReduceOp.SUM, "mean": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}


def all_reduce(values: torch.Tensor, world: World, op: str = "sum") -> torch.Tensor:
    """Reduce a tensor over ranks with op sum | mean (the sum; the caller divides) | min | max."""
    if world.size == 1:
        return values
    out = values.clone()
    dist.all_reduce(out, op=_OPS[op])
    return out


def average_gradients(params: list[torch.nn.Parameter], world: World) -> None:
    """Average .grad over ranks with a single flattened all-reduce."""
    if world.size == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world.size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def shutdown(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()
