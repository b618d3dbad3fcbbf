"""Step metrics with declared reductions over data-parallel ranks, and run logging (metrics.jsonl, samples.jsonl,
optional TensorBoard / W&B).

    log = Metrics()
    log.mean("reward", 0.5, weight=64)          # a weighted mean: over ranks, sum(v w) / sum(w)
    log.sum("rewards/python/errors", 2)
    log.min("completions/min_length", 3); log.max("completions/max_length", 16)
    with log.timer("time/rollout"): ...          # summed within the rank, the slowest rank over ranks
    values = log.reduce(world)                   # the same dict on every rank

1. Each metric declares how it reduces, when it is added; adding the same key again accumulates the same way
   (a weighted mean over micro-batches and rounds, a sum, an extreme).
2. `reduce` first agrees on the key set across ranks (a key that only some ranks have, such as a per-task metric
   when a rank drew no item of that task, is fine: the others contribute nothing), then runs one all-reduce per
   kind. A key declared with two different reductions is an error naming it.
3. A NaN value contributes nothing to a mean (weight 0); a mean with no weight anywhere is NaN.
Metric names follow TRL where one exists (reward, reward_std, frac_reward_zero_std, completions/mean_length,
completions/clipped_ratio, clip_ratio/..., entropy, kl).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import torch

from rlvr.distributed import World, all_gather_object, all_reduce

OPS = ("mean", "sum", "min", "max", "time")


class Mean(NamedTuple):
    """A metric value that is a mean over `weight` items, e.g. a loss statistic over a subset of tokens; the
    update accumulates it as such instead of as a mean over all of the call's tokens."""

    value: Any
    weight: Any


class Metrics:
    """One step's metrics, each with its reduction (see the module docstring)."""

    def __init__(self):
        self._items: dict[str, list] = {}  # key -> [op, value (weighted sum for means), weight]

    def add(self, key: str, value: Any, op: str = "mean", weight: Any = 1.0) -> None:
        if op not in OPS:
            raise ValueError(f"metric '{key}': unknown reduction '{op}'; choose from {list(OPS)}")
        value, weight = float(value), float(weight)
        if op == "mean" and math.isnan(value):
            value, weight = 0.0, 0.0
        item = self._items.get(key)
        if item is None:
            self._items[key] = [op, value * weight if op == "mean" else value, weight]
            return
        if item[0] != op:
            raise ValueError(f"metric '{key}' is added as '{op}' and as '{item[0]}'")
        if op == "mean":
            item[1], item[2] = item[1] + value * weight, item[2] + weight
        elif op in ("sum", "time"):
            item[1] += value
        else:
            item[1] = (min if op == "min" else max)(item[1], value)

    def merge(self, other: Metrics) -> None:
        """Add every metric of `other` with its own reduction (e.g. a rollout made in another thread)."""
        for key, (op, value, weight) in other._items.items():
            if op == "mean":
                self.add(key, value / weight if weight else 0.0, op, weight)
            else:
                self.add(key, value, op)

    def mean(self, key: str, value: Any, weight: Any = 1.0) -> None:
        self.add(key, value, "mean", weight)

    def sum(self, key: str, value: Any) -> None:
        self.add(key, value, "sum")

    def min(self, key: str, value: Any) -> None:
        self.add(key, value, "min")

    def max(self, key: str, value: Any) -> None:
        self.add(key, value, "max")

    def update(self, values: dict[str, Any], op: str = "mean", weight: Any = 1.0, prefix: str = "") -> None:
        """Add several metrics with one reduction; a `Mean` value brings its own weight."""
        for k, v in values.items():
            if isinstance(v, Mean):
                self.add(prefix + k, v.value, "mean", v.weight)
            else:
                self.add(prefix + k, v, op, weight)

    @contextlib.contextmanager
    def timer(self, key: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(key, time.perf_counter() - t0, "time")

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def local(self) -> dict[str, float]:
        """This rank's values, unreduced."""
        return {k: _final(op, v, w) for k, (op, v, w) in sorted(self._items.items())}

    def reduce(self, world: World) -> dict[str, float]:
        """Every metric reduced over ranks as declared; the same dict on every rank."""
        if world.size == 1:
            return self.local()
        keys = _agreed_keys(self._items, world)
        empty = {"mean": (0.0, 0.0), "sum": (0.0, 0.0), "min": (math.inf, 0.0), "max": (-math.inf, 0.0),
                 "time": (-math.inf, 0.0)}
        table = torch.tensor([self._items[k][1:] if k in self._items else empty[op] for k, op in keys],
                             dtype=torch.float64).reshape(len(keys), 2)
        out = {}
        for kind, red in (("sum", ("mean", "sum")), ("min", ("min",)), ("max", ("max", "time"))):
            rows = [i for i, (_, op) in enumerate(keys) if op in red]
            if rows:
                reduced = all_reduce(table[rows], world, kind)
                out.update({keys[i][0]: _final(keys[i][1], *reduced[j].tolist()) for j, i in enumerate(rows)})
        return dict(sorted(out.items()))


def _final(op: str, value: float, weight: float) -> float:
    if op == "mean":
        return value / weight if weight > 0 else math.nan
    return value


def _agreed_keys(items: dict[str, list], world: World) -> list[tuple[str, str]]:
    """The union of every rank's (key, reduction), sorted; the same list on every rank."""
    declared: dict[str, str] = {}
    for part in all_gather_object(sorted((k, v[0]) for k, v in items.items()), world):
        for key, op in part:
            if declared.setdefault(key, op) != op:
                raise ValueError(f"metric '{key}' reduces by '{op}' on one rank and '{declared[key]}' on another")
    return sorted(declared.items())


def reward_metrics(log: Metrics, rewards: torch.Tensor, group_ids: torch.Tensor) -> None:
    """TRL-named statistics of sampled rewards (NaN = unscorable, left out): the mean over rows, and over groups
    the mean within-group std and the share of groups whose rewards are all equal."""
    finite = ~torch.isnan(rewards)
    log.mean("reward", float(rewards[finite].mean()) if finite.any() else math.nan, weight=int(finite.sum()))
    for g in torch.unique(group_ids):
        r = rewards[(group_ids == g) & finite]
        s = float(r.std()) if len(r) > 1 else 0.0
        log.mean("reward_std", s)
        log.mean("frac_reward_zero_std", float(s == 0.0))


def length_metrics(log: Metrics, completion_mask: torch.Tensor, truncated: torch.Tensor) -> None:
    lengths = completion_mask.sum(-1).float()
    if not len(lengths):
        return
    log.mean("completions/mean_length", float(lengths.mean()), weight=len(lengths))
    log.min("completions/min_length", float(lengths.min()))
    log.max("completions/max_length", float(lengths.max()))
    log.mean("completions/clipped_ratio", float(truncated.float().mean()), weight=len(lengths))


class RunLogger:
    """Appends metrics and samples as JSON lines; mirrors scalars to TensorBoard / W&B when enabled."""

    def __init__(self, run_dir: Path, *, tensorboard: bool = False, wandb: bool = False, project: str = "rlvr",
                 config: dict[str, Any] | None = None, resume: bool = False):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        mode = "a" if resume else "w"
        self._metrics = open(self.run_dir / "metrics.jsonl", mode)
        self._samples = open(self.run_dir / "samples.jsonl", mode)
        self._tb = self._wandb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise ImportError("TensorBoard logging needs the extra: pip install 'rlvr[tensorboard]'") from err
            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        if wandb:
            try:
                import wandb as wb
            except ImportError as err:
                raise ImportError("W&B logging needs the extra: pip install 'rlvr[wandb]'") from err
            self._wandb = wb.init(project=project, name=self.run_dir.name, config=config, resume="allow")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)

    def samples(self, step: int, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self._samples.write(json.dumps({"step": step, **row}) + "\n")
        self._samples.flush()

    def close(self) -> None:
        self._metrics.close()
        self._samples.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _clean(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def read_metrics(path: Path) -> list[dict[str, Any]]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]
