"""The buffer protocol: what a replay buffer may do in the loop, and the plan it hands the rollout.

    plan = buffer.plan(step, n, policy, log)     # before the rollout: fresh prompts to draw, stored rows to replay
    batch = buffer.observe(batch, step, log)     # after the advantages: record the step, adjust what it owns

1. `plan` may ask for fewer fresh prompts than `n` and supply stored rows instead (`Plan.replay`, a Batch whose
   groups the rollout completes to G rows with fresh samples), and may exclude task items from the fresh draw.
2. `observe` sees the whole scored batch with its advantages (and `old_logp` when the buffer lists it in `reads`)
   and returns it, possibly with fields it is responsible for changed (ExGRPO: pi_old of replayed rows).
3. `state_dict()` is checkpointed with the trainer state and must load with torch.load(weights_only=True).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from rlvr.batch import Batch
from rlvr.metrics import Metrics


@dataclass
class Plan:
    """What one step's rollout draws: `fresh` new prompts (over all ranks), plus `replay` rows joining their groups,
    never drawing items in `skip` (task indices) as fresh prompts."""

    fresh: int
    replay: Batch | None = None
    skip: frozenset = frozenset()

    def later_round(self) -> Plan:
        """The plan of an extra round (dynamic sampling): the same number of fresh prompts, nothing replayed."""
        return Plan(self.fresh, None, self.skip)


class Buffer(Protocol):
    reads: tuple[str, ...]  # Batch fields `observe` reads that an earlier stage computes only on request (old_logp)
    data_parallel: bool  # False: refused under torchrun with several ranks

    def plan(self, step: int, n: int, policy, log: Metrics) -> Plan: ...

    def observe(self, batch: Batch, step: int, log: Metrics) -> Batch: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class NoBuffer:
    """No replay: every step draws `n` fresh prompts."""

    reads: tuple[str, ...] = ()
    data_parallel = True

    def plan(self, step: int, n: int, policy, log: Metrics) -> Plan:
        return Plan(n)

    def observe(self, batch: Batch, step: int, log: Metrics) -> Batch:
        return batch

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
