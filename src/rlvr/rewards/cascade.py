"""`cascade`: try reward sources in order and keep the first confident verdict (docs/methods.md §4.1-4.2).

The OREAL / Intern-S1 judging pattern: a cheap rule verifier first; only the completions it does not confirm go to
the next source (e.g. a generative judge or a `reward_model`), so the costly source sees as few rows as possible.

    rewards:
      - name: cascade
        kwargs:
          accept: 1.0                       # a value >= accept is a confident verdict and ends the cascade
          sources:
            - {name: math}                  # rule first
            - {name: reward_model, kwargs: {path: /models/judge}}

1. Stage k scores only the rows that no earlier stage accepted, each value times that stage's `weight`.
2. A row takes the first weighted value >= `accept`; a row that no stage accepts takes the last stage's value
   (None when the last stage abstains: the sample is then unscored, never a silent 0).
3. A stage that raises is reported by the usual machinery (rlvr.rewards.core): the whole cascade is re-run one
   sample at a time and the error names the cascade, the sample and its completion.
The stages are built like top-level rewards (rlvr.run builds them, so `task` and `diversity` get their tasks).
"""

from __future__ import annotations

from typing import Any

from rlvr.rewards.core import REWARDS, RewardFn, call_reward, reward_value


@REWARDS.register("cascade")
def cascade(*, stages: list[tuple[str, float, RewardFn]], accept: float = 1.0) -> RewardFn:
    """Reward from `stages` [(name, weight, fn)] tried in order; see the module docstring."""
    if not stages:
        raise ValueError("cascade: needs at least one source in `sources`")

    def fn(samples: list, completions: list[str], **extra: Any) -> list[float | None]:
        out: list[float | None] = [None] * len(samples)
        pending = list(range(len(samples)))
        for k, (name, weight, stage) in enumerate(stages):
            last = k == len(stages) - 1
            picked = {key: [v[i] for i in pending] if isinstance(v, list) else v for key, v in extra.items()}
            values = call_reward(name, stage, [samples[i] for i in pending], [completions[i] for i in pending], picked)
            still = []
            for row, v in zip(pending, values):
                v = reward_value(v)
                v = None if v is None else weight * v
                if last or (v is not None and v >= accept):
                    out[row] = v
                else:
                    still.append(row)
            pending = still
            if not pending:
                break
        return out

    return fn
