"""rlvr.metrics.Metrics: each metric reduces as declared (weighted mean, sum, min, max, time); adding a key again
accumulates the same way; a NaN mean carries no weight; one key declared two ways is an error; over two gloo ranks
the key sets are agreed first (a key only one rank has is fine), and the reductions match the one-process values."""

import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rlvr.distributed import World
from rlvr.metrics import Mean, Metrics


def test_declared_reductions_accumulate():
    log = Metrics()
    log.mean("reward", 1.0, weight=3)
    log.mean("reward", 0.0, weight=1)  # a second round of rewards
    log.sum("errors", 2)
    log.sum("errors", 1)
    log.min("min_len", 4)
    log.min("min_len", 2)
    log.max("max_len", 4)
    log.update({"clip": 0.5, "fw": Mean(0.2, 5)}, weight=10)
    log.mean("fw", 0.8, weight=5)
    log.mean("empty", math.nan, weight=7)
    out = log.reduce(World())
    assert out["reward"] == 0.75 and out["errors"] == 3 and out["min_len"] == 2 and out["max_len"] == 4
    assert out["clip"] == 0.5 and out["fw"] == pytest.approx(0.5) and math.isnan(out["empty"])
    with pytest.raises(ValueError, match="'errors' is added as 'mean' and as 'sum'"):
        log.mean("errors", 1.0)
    with pytest.raises(ValueError, match="unknown reduction"):
        log.add("x", 1.0, "median")


def test_timer_sums_within_a_rank():
    log = Metrics()
    for _ in range(2):
        with log.timer("time/rollout"):
            pass
    assert 0 <= log.local()["time/rollout"] < 1


def _rank(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    log = Metrics()
    log.mean("reward", [1.0, 0.0][rank], weight=[3, 1][rank])
    log.sum("errors", rank + 1)
    log.min("min_len", [4, 2][rank])
    log.max("max_len", [4, 9][rank])
    log.add("time/step", [1.0, 3.0][rank], "time")
    if rank == 1:  # a per-task metric only this rank's rows have
        log.mean("tasks/rev/reward", 0.5, weight=2)
        log.sum("tasks/rev/errors", 4)
    torch.save(log.reduce(World(rank, 2)), f"{out}/{rank}.pt")
    dist.destroy_process_group()


def test_two_ranks_agree_on_keys_before_reducing(tmp_path):
    mp.spawn(_rank, args=(29611, str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    assert a == b
    assert a == {"errors": 3.0, "max_len": 9.0, "min_len": 2.0, "reward": 0.75, "tasks/rev/errors": 4.0,
                 "tasks/rev/reward": 0.5, "time/step": 3.0}
