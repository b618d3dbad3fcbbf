"""Group filters between rewards and advantages, by name, and the global decision of which groups a step keeps.

    keep = FILTERS.build("informative")(batch)                     # (G,) bool over batch.groups()
    keep = FILTERS.build("pass_rate", bands={"gsm": (0.25, 1.0)}, task=task)(batch)

1. `informative` (DAPO dynamic sampling, arXiv 2503.14476 §3.2): a group whose scorable rewards are all equal
   carries no signal under a group-relative advantage; it is dropped.
2. `pass_rate` (Intern-S1, arXiv 2508.15763): keep a group only if lo < its pass rate (task score >= 1) < hi for
   its task's band; tasks without a band keep every group.
3. `GroupFilters.keep` decides globally: every rank reports which of its groups pass, the decisions are gathered in
   rank order (which is data order, rlvr.rollout.collect), and the first groups that pass, up to the number still
   needed, are kept; so all ranks agree on how many groups the step holds and whether another round is needed.
   A filtered step keeps exactly as many groups as an unfiltered one (or, with on_exhaust: partial, as many as
   `max_rounds` rounds found).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from rlvr.batch import Batch
from rlvr.distributed import World, all_gather_object
from rlvr.errors import TrainingError
from rlvr.metrics import Metrics
from rlvr.registry import Registry

FILTERS = Registry("group filter")
GroupFilter = Callable[[Batch], torch.Tensor]  # batch -> (G,) bool over batch.groups()


@FILTERS.register("informative")
def informative() -> GroupFilter:
    """Keep groups whose scorable rewards are not all equal (DAPO dynamic sampling, arXiv 2503.14476 §3.2)."""

    def keep(batch: Batch) -> torch.Tensor:
        out = []
        for g in batch.groups().tolist():
            r = batch.rewards[batch.group_ids == g]
            r = r[~torch.isnan(r)]
            out.append(len(r) > 1 and bool((r != r[0]).any()))
        return torch.tensor(out, dtype=torch.bool)

    return keep


@FILTERS.register("pass_rate")
def pass_rate(*, bands: dict[str, tuple[float, float]], task) -> GroupFilter:
    """Keep a group if lo < its pass rate < hi (Intern-S1 offline filtering, arXiv 2508.15763); a row passes when
    its task scores it >= 1. `bands` maps task keys (Sample.task) to (lo, hi)."""

    def keep(batch: Batch) -> torch.Tensor:
        out = []
        for g in batch.groups().tolist():
            rows = batch.rows_of([g]).tolist()
            band = bands.get(batch.samples[rows[0]].task)
            if band is None:
                out.append(True)
                continue
            passed = [task.score(batch.samples[i], batch.texts[i]) >= 1.0 for i in rows]
            out.append(band[0] < sum(passed) / len(passed) < band[1])
        return torch.tensor(out, dtype=torch.bool)

    return keep


@dataclass
class GroupFilters:
    """The run's group filters (all must pass), how many rounds may be sampled, and what to do when they run out."""

    filters: list[GroupFilter] = field(default_factory=list)
    max_rounds: int = 1
    on_exhaust: str = "raise"  # raise | partial

    def keep(self, batch: Batch, need: int, world: World, log: Metrics) -> tuple[Batch, int]:
        """This rank's rows of the first `need` passing groups over all ranks; and how many are still needed."""
        if not self.filters:
            return batch, 0
        groups = batch.groups().tolist()
        passing = torch.ones(len(groups), dtype=torch.bool)
        for f in self.filters:
            passing &= f(batch)
        decisions = all_gather_object([g for g, ok in zip(groups, passing.tolist()) if ok], world)
        chosen = set([g for part in decisions for g in part][:need])  # the first passing ones; rank order = data order
        mine = [g for g in groups if g in chosen]
        n = max(len(groups), 1)
        log.mean("dynamic_sampling/passing_fraction", float(passing.sum()) / n, weight=len(groups))
        log.mean("dynamic_sampling/kept_fraction", len(mine) / n, weight=len(groups))
        return batch.select(batch.rows_of(mine)), need - len(chosen)

    def finish(self, parts: list[Batch], need: int, wanted: int, rounds: int, step: int, pad_id: int,
               log: Metrics) -> Batch:
        """The rows kept over all rounds; with groups still missing (`need` of `wanted`, the same on every rank),
        stop (raise) or train on what was found."""
        if self.filters:
            log.max("dynamic_sampling/rounds", rounds)
        if need and (self.on_exhaust == "raise" or need == wanted):
            raise TrainingError(f"step {step}: the group filters found {wanted - need} of {wanted} groups in "
                                f"{rounds} rounds; raise algo.dynamic_sampling.max_rounds or set on_exhaust=partial")
        return Batch.concat(parts, pad_id)
