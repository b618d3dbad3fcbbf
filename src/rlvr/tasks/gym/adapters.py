"""Adapters: InternBootcamp-style classes and reasoning-gym datasets as rlvr Tasks.

    TASKS.build("bootcamp", cls="my_bootcamps:Game24bootcamp", size=1000, seed=0, kwargs={"num_numbers": 4})
    TASKS.build("reasoning_gym", dataset="leg_counting", size=1000, seed=0)  # needs pip install 'rlvr[gym]'

bootcamp (the InternBootcamp interface, arXiv 2508.08636; docs/methods.md §4.7):
1. Before anything runs, the class must have case_generator, prompt_func and verify_score (or extract_output
   plus _verify_correction), and kwargs / verify_kwargs must match its constructor / verify_score.
2. Item i seeds Python's `random` and numpy's global RNG with seed + i (bootcamps draw from the global RNGs),
   calls case_generator(), and restores both RNG states afterwards, so items are deterministic per index and
   the caller's RNG streams are untouched. Holdout redraws continue from the same seeded state.
3. prompt = prompt_func(identity); answer = the identity after a JSON round trip (what a data file holds).
4. score = verify_score(text, identity, **verify_kwargs) clamped to [0, 1]. An exception escaping the
   verifier is raised as CheckerError with the class and the sample index; swallow_checker_errors=True
   scores it 0 and counts it in `swallowed_errors` (parity with InternBootcamp, which swallows them).
reasoning_gym: entry i of create_dataset(dataset, size=size, seed=seed, **kwargs); prompt = entry["question"],
answer = entry["answer"], meta = entry["metadata"]; score = dataset.score_answer(answer=text, entry=entry).
The dataset name is `dataset`, not `name`: TASKS.build(name, **kwargs) takes the task's own name positionally.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import random
import re
from typing import Any

from rlvr.batch import Sample
from rlvr.registry import check_kwargs
from rlvr.tasks.base import TASKS, ProceduralTask, Task, check_index, is_eval_item

_GYM_EXTRA = "pip install 'rlvr[gym]'"


class CheckerError(RuntimeError):
    """A bootcamp or reasoning-gym verifier raised while scoring a sample (a bug in the checker, not a 0)."""


@TASKS.register("bootcamp")
class Bootcamp(ProceduralTask):
    """An InternBootcamp-style class (case_generator / prompt_func / verify_score) as an indexable Task."""

    name = "bootcamp"

    def __init__(
        self,
        *,
        cls: type | str,
        size: int = 10_000,
        seed: int = 0,
        holdout: str | None = None,
        kwargs: dict[str, Any] | None = None,
        verify_kwargs: dict[str, Any] | None = None,
        swallow_checker_errors: bool = False,
        task_name: str | None = None,
    ):
        klass = load_class(cls)
        self.class_name = klass.__name__
        self.name = task_name or f"bootcamp/{re.sub(r'(?i)bootcamp$', '', klass.__name__) or klass.__name__}"
        super().__init__(seed=seed, size=size, holdout=holdout)
        check_interface(klass)
        self.verify_kwargs = dict(verify_kwargs or {})
        verifier = getattr(klass, "verify_score", None) or _extract_and_verify
        check_kwargs(verifier, self.verify_kwargs, f"bootcamp {self.class_name} verify_score")
        check_kwargs(klass, dict(kwargs or {}), f"bootcamp {self.class_name} constructor")
        self.bootcamp = klass(**(kwargs or {}))
        self.swallow_checker_errors = bool(swallow_checker_errors)
        self.swallowed_errors = 0

    def __getitem__(self, i: int) -> Sample:
        i = check_index(i, self.size, self.name)
        with seeded_global_rngs(self.seed + i):
            for _ in range(1000):
                sample = self._draw(i)
                if self.holdout is None or (self.holdout == "eval") == is_eval_item(sample):
                    return sample
        raise ValueError(
            f"task '{self.name}': item {i} found no problem on the '{self.holdout}' side of the "
            "holdout split in 1000 draws; the problem space is too small, set holdout: null"
        )

    def _draw(self, i: int) -> Sample:
        identity = self.bootcamp.case_generator()
        answer = self._round_trip(identity)
        prompt = self.bootcamp.prompt_func(identity)
        if not isinstance(prompt, str):
            raise ValueError(f"bootcamp {self.class_name}: prompt_func returned {type(prompt).__name__}, not str")
        return Sample(prompt=prompt, answer=answer, task=self.name, index=i, meta={"bootcamp": self.class_name})

    def _round_trip(self, identity: Any) -> Any:
        try:
            return json.loads(json.dumps(identity, allow_nan=False))
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"bootcamp {self.class_name}: case_generator() returned an identity that is not "
                f"JSON-serialisable ({err}); identities are stored as ground truth"
            ) from err

    def score(self, sample: Sample, text: str) -> float:
        try:
            value = float(self._verify(text, sample.answer))
            if math.isnan(value):
                raise ValueError("the verifier returned NaN")
        except Exception as err:  # a checker bug: report it with the sample (docs/methods.md §4.7)
            if not self.swallow_checker_errors:
                raise CheckerError(
                    f"task '{self.name}': {self.class_name} verifier raised on sample {sample.index}: {err!r}"
                ) from err
            self.swallowed_errors += 1
            return 0.0
        return min(1.0, max(0.0, value))

    def _verify(self, text: str, identity: Any) -> Any:
        if callable(getattr(self.bootcamp, "verify_score", None)):
            return self.bootcamp.verify_score(text, identity, **self.verify_kwargs)
        return _extract_and_verify(self.bootcamp, text, identity, **self.verify_kwargs)

    def reference(self, sample: Sample) -> str:
        for method in ("reference", "solution"):
            fn = getattr(self.bootcamp, method, None)
            if callable(fn):
                return str(fn(sample.answer))
        raise NotImplementedError(
            f"task '{self.name}': {self.class_name} has no reference(identity) or solution(identity) method, and "
            "InternBootcamp classes ship no reference answers; add one to use reference() (SFT warm start, checks)"
        )

    def generate(self, rng: random.Random, index: int) -> Sample:  # pragma: no cover - __getitem__ is overridden
        raise NotImplementedError("bootcamp items come from the seeded global RNGs; use task[i]")


def load_class(cls: type | str) -> type:
    """`cls` itself, or the class named by "module.path:ClassName"."""
    if isinstance(cls, type):
        return cls
    if not isinstance(cls, str) or cls.count(":") != 1:
        raise ValueError(f"bootcamp: cls must be a class or 'module.path:ClassName', got {cls!r}")
    module_name, attr = cls.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"bootcamp: cannot import {module_name!r} for cls={cls!r}: {err}") from err
    klass = getattr(module, attr, None)
    if not isinstance(klass, type):
        raise ValueError(f"bootcamp: module {module_name!r} has no class {attr!r} (cls={cls!r})")
    return klass


def check_interface(klass: type) -> None:
    """ValueError naming the class and every missing method of the bootcamp interface."""
    has = lambda method: callable(getattr(klass, method, None))  # noqa: E731
    missing = [m for m in ("case_generator", "prompt_func") if not has(m)]
    if not has("verify_score") and not (has("extract_output") and has("_verify_correction")):
        missing.append("verify_score")
    if missing:
        raise ValueError(
            f"bootcamp class {klass.__name__} is missing {', '.join(missing)}; a bootcamp needs case_generator(), "
            "prompt_func(identity) and verify_score(model_output, identity) (or extract_output + _verify_correction)"
        )


def _extract_and_verify(bootcamp: Any, text: str, identity: Any, *, format_score: float = 0.0) -> float:
    """InternBootcamp's verify_score (revision 18a55259) with the short and format penalties off, no swallowing."""
    solution = bootcamp.extract_output(text)
    if solution is None:
        return 0.0
    verdict = bootcamp._verify_correction(solution, identity)
    if verdict is True:
        return 1.0
    if isinstance(verdict, (int, float)) and not isinstance(verdict, bool):
        return float(verdict)
    return format_score


@contextlib.contextmanager
def seeded_global_rngs(seed: int):
    """Seed `random` and numpy's global RNG (when numpy is importable) with `seed`; restore both on exit."""
    np = _numpy()
    py_state, np_state = random.getstate(), np.random.get_state() if np else None
    random.seed(seed)
    if np:
        np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        random.setstate(py_state)
        if np:
            np.random.set_state(np_state)


def _numpy():
    try:
        import numpy
    except ImportError:
        return None
    return numpy


# ------------------------------------------------------------------ reasoning-gym


@TASKS.register("reasoning_gym")
class ReasoningGym(Task):
    """A reasoning-gym dataset (open-thought/reasoning-gym, optional extra `rlvr[gym]`) as a Task."""

    needs = ("seed",)

    def __init__(
        self,
        *,
        dataset: str,
        size: int = 10_000,
        seed: int = 0,
        kwargs: dict[str, Any] | None = None,
        task_name: str | None = None,
    ):
        rg = import_reasoning_gym()
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"task 'reasoning_gym': size must be a positive integer, got {size!r}")
        if not isinstance(dataset, str) or not dataset:
            raise ValueError(f"task 'reasoning_gym': dataset must be a reasoning-gym dataset name, got {dataset!r}")
        self.dataset_name, self.name = dataset, task_name or f"reasoning_gym/{dataset}"
        self.size, self.seed = size, int(seed)
        self.dataset = rg.create_dataset(dataset, size=size, seed=self.seed, **(kwargs or {}))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> Sample:
        i = check_index(i, self.size, self.name)
        entry = self.dataset[i]
        meta = dict(entry.get("metadata") or {})
        return Sample(prompt=entry["question"], answer=entry["answer"], task=self.name, index=i, meta=meta)

    def score(self, sample: Sample, text: str) -> float:
        entry = {"question": sample.prompt, "answer": sample.answer, "metadata": sample.meta}
        try:
            value = float(self.dataset.score_answer(answer=text, entry=entry))
        except Exception as err:  # a checker bug: report it with the sample
            raise CheckerError(f"task '{self.name}': score_answer raised on sample {sample.index}: {err!r}") from err
        return 0.0 if math.isnan(value) else min(1.0, max(0.0, value))

    def reference(self, sample: Sample) -> str:
        if sample.answer is None:
            raise NotImplementedError(f"task '{self.name}': this reasoning-gym dataset gives no reference answer")
        return str(sample.answer)


def import_reasoning_gym():
    """The reasoning_gym module, or ImportError naming the extra that installs it."""
    try:
        return importlib.import_module("reasoning_gym")
    except ImportError as err:
        raise ImportError(
            f"task 'reasoning_gym' needs the optional reasoning-gym package: {_GYM_EXTRA} "
            "(or: pip install reasoning-gym)"
        ) from err
