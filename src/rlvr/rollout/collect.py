"""collect(): one round of a step's rows. The buffer's plan names how many fresh prompts to draw (and which stored
rows join their groups); the prompt stream draws them; the sampler writes G completions each.

1. Prompts are read from the task in order from the run's data position (`PromptStream`): data position p is item
   p % len(task), its group id is p. Every rank draws the same positions (skipping items the plan excludes, e.g.
   ExGRPO's retired questions) and takes its contiguous share, so data positions never diverge across ranks.
2. Row j of group p samples from the stream `row_seeds(seed, "rollout", p, j)` (rlvr.seeding): an interrupted and
   resumed run, and any data-parallel layout, sample exactly the same completions.
3. Stored rows of the plan (experience replay) join their groups: each such group gets G minus its stored rows fresh
   completions, from the stream `row_seeds(seed, "replay", group, step, j)`; a group's rows are kept together.
The sampler is single-turn (`TextSampler`) or a multi-turn environment loop (rlvr.envs.loop.EnvSampler).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol

import torch

from rlvr.batch import Batch, Sample
from rlvr.buffers.base import Plan
from rlvr.distributed import World
from rlvr.metrics import Metrics
from rlvr.policies.base import Policy, SamplingParams
from rlvr.seeding import row_seeds


class Sampler(Protocol):
    policy: Policy
    group_size: int

    def generate(self, samples: list[Sample], group_ids: torch.Tensor, seeds: torch.Tensor) -> Batch: ...

    def with_params(self, params: SamplingParams) -> Sampler: ...


@dataclass
class TextSampler:
    """One completion per row, straight from the policy; `mask_truncated` drops the trained tokens of rows that hit
    max_new_tokens."""

    policy: Policy
    params: SamplingParams
    group_size: int
    mask_truncated: bool = False

    def with_params(self, params: SamplingParams) -> TextSampler:
        return dataclasses.replace(self, params=params)

    def generate(self, samples: list[Sample], group_ids: torch.Tensor, seeds: torch.Tensor) -> Batch:
        batch = self.policy.generate(samples, group_ids=group_ids, seeds=seeds, params=self.params)
        return batch.mask_truncated() if self.mask_truncated else batch


class PromptStream:
    """The task read in order: data position p holds item p % len(task); each step's prompts split over ranks."""

    def __init__(self, task, world: World, seed: int):
        self.task, self.world, self.seed = task, world, seed

    def draw(self, data_pos: int, n: int, skip: frozenset = frozenset()) -> tuple[list[int], int]:
        """n data positions from `data_pos` on, passing over items in `skip`; and the next data position."""
        if n and len(skip) >= len(self.task):
            raise ValueError(f"every one of the task's {len(self.task)} items is excluded; nothing left to draw")
        positions = []
        while len(positions) < n:
            if data_pos % len(self.task) not in skip:
                positions.append(data_pos)
            data_pos += 1
        return positions, data_pos

    def shard(self, positions: list[int]) -> list[int]:
        """This rank's contiguous share of a round's positions (rank order is data order)."""
        if len(positions) % self.world.size:
            raise ValueError(f"{len(positions)} prompts cannot be split evenly over {self.world.size} ranks")
        per = len(positions) // self.world.size
        return positions[self.world.rank * per : (self.world.rank + 1) * per]

    def item(self, position: int) -> Sample:
        return self.task[position % len(self.task)]


def collect(sampler: Sampler, stream: PromptStream, plan: Plan, data_pos: int, step: int,
            log: Metrics) -> tuple[Batch, int]:
    """This rank's rows of one round (fresh groups, then the plan's stored rows with their groups' fresh rows) and
    the next data position."""
    positions, data_pos = stream.draw(data_pos, plan.fresh, plan.skip)
    mine = stream.shard(positions)
    G = sampler.group_size
    group_ids = torch.tensor(mine, dtype=torch.long).repeat_interleave(G)  # (n G,)
    members = torch.arange(G).repeat(len(mine))
    samples = [stream.item(p) for p in mine]  # each item built once (procedural tasks draw it), then repeated
    batch = sampler.generate([s for s in samples for _ in range(G)], group_ids,
                             row_seeds(stream.seed, "rollout", group_ids, members))
    log.sum("rollouts/generated", len(batch))
    if plan.replay is not None and len(plan.replay):
        batch = Batch.concat([batch, join_groups(sampler, plan.replay, stream.seed, step, log)], sampler.policy.pad_id)
    return batch, data_pos


def join_groups(sampler: Sampler, stored: Batch, seed: int, step: int, log: Metrics) -> Batch:
    """Each group of `stored` completed to G rows with fresh completions of its sample; rows grouped together."""
    groups = stored.groups().tolist()
    ids, samples, members = [], [], []
    for g in groups:
        rows = stored.rows_of([g])
        for j in range(sampler.group_size - len(rows)):
            ids.append(g)
            samples.append(stored.samples[int(rows[0])])
            members.append(j)
    stored = stored.to(sampler.policy.device)
    if not ids:
        return stored
    group_ids = torch.tensor(ids, dtype=torch.long)
    fresh = sampler.generate(samples, group_ids, row_seeds(seed, "replay", group_ids, torch.full_like(group_ids, step),
                                                           torch.tensor(members, dtype=torch.long)))
    log.sum("rollouts/generated", len(fresh))
    both = Batch.concat([fresh, stored], sampler.policy.pad_id)
    order = torch.argsort(both.group_ids.cpu(), stable=True)  # each group's rows together (prompt sharing)
    return both.select(order)
