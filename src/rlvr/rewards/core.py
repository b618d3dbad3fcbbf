"""Reward registry and `combine_rewards`: run several reward functions and sum them with weights.

A reward function has the contract (DESIGN.md)

    fn(samples: list[Sample], completions: list[str], **kw) -> list[float | None]     # None = not applicable

and is made by a registered factory that takes keyword config, so `REWARDS.build("format", tags=[...])`
rejects a misspelt option before any compute. Keywords passed at call time (to functions that name them
or take **kwargs):
    lengths: list[int] | None   completion lengths in tokens (overlong, length_penalty need them)
    group_ids: list[int] | None the group (prompt) of each completion (group-level rewards such as diversity)
    step: int | None            the training step (reward schedules)

`combine_rewards`:
1. Calls each fn on the whole batch; if it raises, re-runs it one sample at a time to find the culprit.
2. on_error="raise": RewardError naming the reward, the sample and its completion (chained to the cause);
   on_error="zero": that sample gets 0 and the metric "rewards/<name>/errors" counts it. Never a silent zero.
3. rewards[i] = sum_k w_k * r_k[i] over the fns whose r_k[i] is not None; NaN where all are None.
4. Each source is keyed by its name, numbered when a name repeats (`python`, `python#1`): two sources with one
   name never collapse into one (metrics `rewards/<key>/...`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch

from rlvr.batch import Sample
from rlvr.registry import Registry

REWARDS = Registry("reward")
RewardFn = Callable[..., list]


class RewardError(RuntimeError):
    """A reward function crashed or returned something that is not a list of float | None."""


def combine_rewards(
    fns: list[tuple[str, float, RewardFn]],
    samples: list[Sample],
    completions: list[str],
    lengths: list[int] | torch.Tensor | None = None,
    *,
    on_error: str = "raise",
    step: int | None = None,
    group_ids: list[int] | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, list[float | None]], dict[str, float]]:
    """Weighted, None-aware sum of reward functions -> (rewards (N,) float32, per-fn values, metrics).

    fns: (name, weight, fn) triples; lengths: completion lengths in tokens, passed to fns that accept them;
    step: the training step, named in error messages.
    """
    if on_error not in ("raise", "zero"):
        raise ValueError(f"on_error must be 'raise' or 'zero', got {on_error!r}")
    if len(samples) != len(completions):
        raise ValueError(f"got {len(samples)} samples but {len(completions)} completions")
    if isinstance(lengths, torch.Tensor):
        lengths = lengths.tolist()
    if isinstance(group_ids, torch.Tensor):
        group_ids = group_ids.tolist()
    extra = {"lengths": lengths, "group_ids": group_ids, "step": step}
    total: list[float | None] = [None] * len(samples)  # None until some fn applies to the sample
    per_fn: dict[str, list[float | None]] = {}
    metrics: dict[str, float] = {}
    for key, (name, weight, fn) in zip(source_keys([f[0] for f in fns]), fns):
        values, errors = run_reward(name, fn, samples, completions, extra, on_error, step)
        per_fn[key] = values
        for i, v in enumerate(values):
            if v is not None:
                total[i] = (total[i] or 0.0) + weight * v
        metrics.update(_fn_metrics(key, values, errors))
    rewards = torch.tensor([math.nan if t is None else t for t in total], dtype=torch.float32)  # (N,)
    applied = [t for t in total if t is not None]
    if applied:
        metrics["rewards/total/mean"] = sum(applied) / len(applied)
    return rewards, per_fn, metrics


def source_keys(names: list[str]) -> list[str]:
    """A unique key per reward source: its name, numbered when the name repeats (python, python#1, python#2)."""
    return [n if not names[:i].count(n) else f"{n}#{names[:i].count(n)}" for i, n in enumerate(names)]


def run_reward(name, fn, samples, completions, extra, on_error, step) -> tuple[list[float | None], int]:
    """Values of one reward fn on the batch, and how many samples failed (only with on_error='zero')."""
    if on_error not in ("raise", "zero"):
        raise ValueError(f"on_error must be 'raise' or 'zero', got {on_error!r}")
    try:
        outs = call_reward(name, fn, samples, completions, extra)
    except _ShapeError:
        raise  # a broken contract is a bug in the function, never a per-sample failure
    except Exception as exc:  # noqa: BLE001 - located and reported per sample below
        outs = _call_each(name, fn, samples, completions, extra, exc, step)
    values, errors = [], 0
    for i, v in enumerate(outs):
        try:
            values.append(reward_value(v) if not isinstance(v, Exception) else _reraise(v))
        except Exception as exc:
            if on_error == "raise":
                raise _error(name, i, samples[i], completions[i], exc, step) from exc
            values.append(0.0)
            errors += 1
    return values, errors


def _call_each(name, fn, samples, completions, extra, batch_exc, step) -> list[Any]:
    """Re-run fn one sample at a time to find which samples make it fail; exceptions are kept as values."""
    outs = []
    for i in range(len(samples)):
        one = {k: v[i : i + 1] if isinstance(v, list) else v for k, v in extra.items()}
        try:
            outs += call_reward(name, fn, samples[i : i + 1], completions[i : i + 1], one)
        except Exception as exc:  # noqa: BLE001 - reported by the caller
            outs.append(exc)
    if not any(isinstance(o, Exception) for o in outs):  # fails on the batch, works on each sample
        at = "" if step is None else f" at step {step}"
        raise RewardError(
            f"reward '{name}' raised {type(batch_exc).__name__} on the batch of {len(samples)}{at} "
            f"but on no single sample: {_first_line(batch_exc)}"
        ) from batch_exc
    return outs


def call_reward(name, fn, samples, completions, extra) -> list[Any]:
    """fn(samples, completions, **the call-time keywords it takes); a wrong return type or length is an error."""
    out = fn(samples, completions, **_call_kwargs(fn, extra))
    if not isinstance(out, (list, tuple)) or len(out) != len(completions):
        got = f"{type(out).__name__} of length {len(out)}" if hasattr(out, "__len__") else type(out).__name__
        raise _ShapeError(f"reward '{name}' must return a list of {len(completions)} float | None, got {got}")
    return list(out)


def _reraise(exc: Exception):
    raise exc


def reward_value(v: Any) -> float | None:
    """float(v) for a finite real number (Python, NumPy or 0-d torch), None for None, else ValueError."""
    if v is None:
        return None
    try:
        f = float(v) if not isinstance(v, (bool, str, bytes)) else math.nan
    except (TypeError, ValueError):
        f = math.nan
    if not math.isfinite(f):
        raise ValueError(f"returned {v!r}; expected a finite float or None")
    return f


class _ShapeError(RewardError):
    """The function returned the wrong type or number of values."""


def _call_kwargs(fn: RewardFn, extra: dict[str, Any]) -> dict[str, Any]:
    """The call-time keywords `fn` can take (by name or **kwargs), so plain `(samples, completions)` fns work."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return dict(extra)
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return dict(extra)
    names = {p.name for p in params}
    return {k: v for k, v in extra.items() if k in names}


def _error(name: str, i: int, sample: Sample, text: str, exc: Exception, step: int | None) -> RewardError:
    shown = repr(text[:200]) + ("..." if len(text) > 200 else "")
    cause = _first_line(exc)
    where = f"sample {i} (task={sample.task!r}, index={sample.index})" + ("" if step is None else f" at step {step}")
    return RewardError(f"reward '{name}' raised {type(exc).__name__} on {where}, completion {shown}: {cause}")


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0][:300]


def _fn_metrics(name: str, values: list[float | None], errors: int) -> dict[str, float]:
    got = [v for v in values if v is not None]
    metrics = {f"rewards/{name}/errors": float(errors)}
    if got:
        metrics[f"rewards/{name}/mean"] = sum(got) / len(got)
    if len(got) < len(values):
        metrics[f"rewards/{name}/none_frac"] = 1 - len(got) / len(values)
    return metrics
