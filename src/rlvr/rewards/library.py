"""The built-in rewards. Each is a factory: keyword config in, `fn(samples, completions, **kw)` out.

    REWARDS.build("math")                                      # math-verify equivalence with sample.answer
    REWARDS.build("format", tags=["think", "answer"])          # <think>..</think><answer>..</answer> -> 1 else 0
    REWARDS.build("overlong", max_len=512, cache=128)          # DAPO soft overlong punishment; needs lengths=
    REWARDS.build("python", function="my_rewards.py:brevity")  # a user function with the same contract

Answer-checking rewards return None for samples without a reference answer (not applicable).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

from rlvr.batch import Sample
from rlvr.rewards import verifiers as V
from rlvr.rewards.core import REWARDS, RewardFn


@REWARDS.register("task")
def task_reward(*, tasks: dict[str, Any]) -> RewardFn:
    """Each sample scored by its own task: tasks[sample.task].score(sample, completion)."""

    def fn(samples: list[Sample], completions: list[str], **kw) -> list[float | None]:
        return [_task_of(tasks, s).score(s, c) for s, c in zip(samples, completions)]

    return fn


def _task_of(tasks: dict[str, Any], sample: Sample):
    if sample.task not in tasks:
        raise ValueError(f"task reward: sample is from task {sample.task!r}, which is not in {sorted(tasks)}")
    return tasks[sample.task]


@REWARDS.register("env")
def env_reward() -> RewardFn:
    """The multi-turn environment's own reward: the sum of its per-turn rewards for the row (rlvr.envs)."""

    def fn(samples: list[Sample], completions: list[str], *, env_rewards: list[float] | None = None, **kw):
        if env_rewards is None:
            raise ValueError("the env reward needs a multi-turn environment (set env.name, e.g. calculator)")
        return [float(r) for r in env_rewards]

    return fn


@REWARDS.register("exact")
def exact(*, extract: str = "auto", case_sensitive: bool = False) -> RewardFn:
    """Normalised string equality of the extracted answer with sample.answer.

    extract: "auto" (<answer> content, then its last \\boxed{}), "answer_tag", "boxed" or "none" (whole text).
    """
    _check_extract(extract)

    def fn(samples: list[Sample], completions: list[str], **kw) -> list[float | None]:
        return [
            None
            if s.answer is None
            else V.exact_match(c, s.answer, extract_mode=extract, case_sensitive=case_sensitive)
            for s, c in zip(samples, completions)
        ]

    return fn


@REWARDS.register("numeric")
def numeric(*, rel_tol: float = 1e-6, abs_tol: float = 1e-9, extract: str = "auto") -> RewardFn:
    """The last number of the extracted answer equals sample.answer within math.isclose tolerances."""
    _check_extract(extract)
    if rel_tol < 0 or abs_tol < 0:
        raise ValueError(f"numeric reward: rel_tol and abs_tol must be >= 0, got {rel_tol}, {abs_tol}")

    def fn(samples: list[Sample], completions: list[str], **kw) -> list[float | None]:
        return [
            None
            if s.answer is None
            else V.numeric_match(c, s.answer, rel_tol=rel_tol, abs_tol=abs_tol, extract_mode=extract)
            for s, c in zip(samples, completions)
        ]

    return fn


@REWARDS.register("math")
def math_equiv(*, timeout_s: int = 2) -> RewardFn:
    """Mathematical equivalence with sample.answer via math-verify (LaTeX, \\boxed{}, fractions, sets ...).

    timeout_s bounds each parse and each comparison (math-verify's SIGALRM timeouts, main thread only; other
    threads rely on input-length caps and a pre-check that rejects power towers and huge factorials).
    """
    if not isinstance(timeout_s, int) or isinstance(timeout_s, bool) or timeout_s < 1:
        raise ValueError(
            f"math reward: timeout_s must be an integer >= 1 (SIGALRM has 1 s resolution), got {timeout_s!r}"
        )

    def fn(samples: list[Sample], completions: list[str], **kw) -> list[float | None]:
        return [
            None if s.answer is None else V.math_match(c, s.answer, timeout_s=timeout_s)
            for s, c in zip(samples, completions)
        ]

    return fn


@REWARDS.register("format")
def format_reward(*, tags: list[str] | tuple[str, ...] = ("think", "answer")) -> RewardFn:
    """1.0 when the completion is exactly <t1>...</t1> <t2>...</t2> ... (whitespace between), else 0.0.

    Each block ends at the first closing tag after it; a block may not contain its own opening tag again.
    Implemented with str.find rather than a regex so megabyte outputs cost linear time.
    """
    tags = list(tags)
    if not tags or not all(isinstance(t, str) and t and t.isidentifier() for t in tags):
        raise ValueError(
            f"format reward: tags must be a non-empty list of names like ['think', 'answer'], got {tags!r}"
        )

    def fn(samples: list[Sample], completions: list[str], **kw) -> list[float | None]:
        return [float(_matches_tags(c, tags)) for c in completions]

    return fn


def _matches_tags(text: str, tags: list[str]) -> bool:
    pos, text = 0, text.strip()
    for tag in tags:
        open_tag, close_tag = f"<{tag}>", f"</{tag}>"
        if not text.startswith(open_tag, pos):
            return False
        end = text.find(close_tag, pos + len(open_tag))
        if end < 0 or text.find(open_tag, pos + len(open_tag), end) >= 0:
            return False
        pos = end + len(close_tag)
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return pos == len(text)


@REWARDS.register("overlong")
def overlong(*, max_len: int, cache: int, penalty: float = 1.0) -> RewardFn:
    """DAPO soft overlong punishment (arXiv:2503.14476, Eq. 13), scaled by `penalty` (kappa).

    With L = max_len (the generation cap) and C = cache (L_cache, the soft buffer): 0 for |o| <= L - C,
    ((L - C) - |o|) / C up to L, -1 beyond. Needs the call-time keyword lengths= (completion lengths in tokens).
    Add it with weight 1 next to the correctness reward, as TRL's get_soft_overlong_punishment and verl's DAPO
    reward manager do (the trainer's algo.overlong puts its coefficient in the weight).
    """
    _check_positive_int("overlong", max_len=max_len, cache=cache)
    if cache > max_len:
        raise ValueError(f"overlong reward: cache ({cache}) must be <= max_len ({max_len})")
    start = max_len - cache

    def fn(samples: list[Sample], completions: list[str], *, lengths: list[int] | None = None, **kw):
        lengths = _need_lengths("overlong", lengths, completions)
        return [penalty * (0.0 if n <= start else -1.0 if n > max_len else (start - n) / cache) for n in lengths]

    return fn


@REWARDS.register("length_penalty")
def length_penalty(*, target: int, per_token: float = 0.001, max_penalty: float | None = None) -> RewardFn:
    """-per_token for each token beyond `target` (linear), floored at -max_penalty when given.

    Needs the call-time keyword lengths= (completion lengths in tokens).
    """
    _check_positive_int("length_penalty", target=target)
    if per_token < 0 or (max_penalty is not None and max_penalty < 0):
        raise ValueError(f"length_penalty: per_token and max_penalty must be >= 0, got {per_token}, {max_penalty}")

    def fn(samples: list[Sample], completions: list[str], *, lengths: list[int] | None = None, **kw):
        lengths = _need_lengths("length_penalty", lengths, completions)
        values = [-per_token * max(0, n - target) for n in lengths]
        return values if max_penalty is None else [max(v, -max_penalty) for v in values]

    return fn


@REWARDS.register("python")
def python_reward(*, function, options: dict[str, Any] | None = None) -> RewardFn:
    """A user reward function loaded from "path/to/file.py:function_name", or the callable itself from Python
    (rlvr.api); same contract as built-ins.

    `options` are passed to it as keywords on every call, next to lengths= when it accepts that.
    """
    user_fn = function if callable(function) else load_function(function)
    options = dict(options or {})

    def fn(samples: list[Sample], completions: list[str], **kw) -> list[float | None]:
        return user_fn(samples, completions, **kw, **options)

    fn.__signature__ = _signature_of(user_fn)  # combine_rewards passes lengths= only if the user fn takes it
    return fn


def load_function(spec: str):
    """Import `function_name` from the file in "path/to/file.py:function_name"."""
    file, sep, name = str(spec).rpartition(":")
    if not sep or not file or not name:
        raise ValueError(f"python reward: function must look like 'path/to/file.py:function_name', got {spec!r}")
    if not os.path.isfile(file):
        raise ValueError(f"python reward: file {file!r} not found (from {spec!r}; relative to {os.getcwd()})")
    module_name = f"rlvr_user_reward_{abs(hash(os.path.abspath(file)))}"
    module_spec = importlib.util.spec_from_file_location(module_name, file)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module  # so dataclasses / pickling inside the user file work
    module_spec.loader.exec_module(module)
    fn = getattr(module, name, None)
    if not callable(fn):
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise ValueError(f"python reward: {file!r} has no function {name!r}; callables there: {found}")
    return fn


def _signature_of(fn):
    import inspect

    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def _need_lengths(name: str, lengths, completions: list[str]) -> list[int]:
    if lengths is None:
        raise ValueError(f"{name} reward needs completion lengths in tokens: call it with lengths=[...]")
    if len(lengths) != len(completions):
        raise ValueError(f"{name} reward: got {len(lengths)} lengths for {len(completions)} completions")
    return [int(n) for n in lengths]


def _check_positive_int(what: str, **values: Any) -> None:
    for key, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{what} reward: {key} must be a positive integer, got {v!r}")


def _check_extract(extract: str) -> None:
    if extract not in V.EXTRACT_MODES:
        raise ValueError(f"unknown extract mode {extract!r}; choose from {list(V.EXTRACT_MODES)}")
