"""Gym adapters: the "bootcamp" task runs a hand-written InternBootcamp-style class deterministically per index
(seeding Python's and numpy's global RNGs, then restoring them), stores the identity as JSON, scores with
verify_score clamped to [0, 1], checks the interface and options before anything runs, reports checker
exceptions with the class and sample index (or counts them when asked to swallow), and has a reference only
when the class offers one. The "reasoning_gym" task names the extra to install when the package is missing,
maps entries and scores through a stand-in module, and (when installed) through reasoning-gym itself."""

import random
import re
import sys
import types

import numpy as np
import pytest

from rlvr.tasks import TASKS
from rlvr.tasks.gym.adapters import CheckerError, seeded_global_rngs

_ANSWER = re.compile(r"\[answer\](-?\d{1,12})\[/answer\]")


class AddBootcamp:
    """Add two numbers; the answer goes in [answer]...[/answer]. Draws from both global RNGs, like bootcamps do."""

    def __init__(self, max_value: int = 100):
        self.max_value = max_value

    def case_generator(self) -> dict:
        return {"a": random.randint(0, self.max_value), "b": int(np.random.randint(0, self.max_value)), "t": (1, 2)}

    def prompt_func(self, identity: dict) -> str:
        return f"What is {identity['a']} + {identity['b']}? Put it in [answer][/answer]."

    @staticmethod
    def extract_output(output: str):
        found = _ANSWER.findall(output[-1000:])
        return int(found[-1]) if found else None

    @classmethod
    def _verify_correction(cls, solution, identity) -> bool:
        return solution == identity["a"] + identity["b"]

    @classmethod
    def verify_score(cls, model_output: str, identity: dict, format_score: float = 0.0) -> float:
        solution = cls.extract_output(model_output)
        if solution is None:
            return 0.0
        return 1.0 if cls._verify_correction(solution, identity) else format_score


class SolvedAddBootcamp(AddBootcamp):
    """AddBootcamp with a solution(identity) method, so the task has a reference."""

    def solution(self, identity: dict) -> str:
        return f"[answer]{identity['a'] + identity['b']}[/answer]"


class ExtractOnlyBootcamp(AddBootcamp):
    """No verify_score of its own: the adapter combines extract_output and _verify_correction."""

    verify_score = None


class RaisingBootcamp(AddBootcamp):
    """A checker with a bug: it crashes on any answer containing 'boom'."""

    @classmethod
    def verify_score(cls, model_output: str, identity: dict) -> float:
        if "boom" in model_output:
            raise KeyError("boom")
        return 7.0 if "big" in model_output else -2.0 if "neg" in model_output else 0.0


class NoPromptBootcamp:
    """Missing prompt_func; its constructor must never run."""

    def __init__(self):
        raise AssertionError("constructed a class that fails the interface check")

    def case_generator(self):
        return {}

    def verify_score(self, model_output, identity):
        return 0.0


class SetBootcamp(AddBootcamp):
    """Returns an identity that JSON cannot hold."""

    def case_generator(self) -> dict:
        return {"numbers": {1, 2}}

    def prompt_func(self, identity: dict) -> str:
        return "Sum of the numbers? Answer:"


def test_items_are_deterministic_per_index_and_leave_global_rngs_alone():
    a = TASKS.build("bootcamp", cls=AddBootcamp, size=50, seed=3)
    random.seed(123)
    np.random.seed(7)
    expected_py, expected_np = random.random(), np.random.random()
    random.seed(123)
    np.random.seed(7)
    first = [a[i] for i in range(20)]
    assert (random.random(), np.random.random()) == (expected_py, expected_np)  # caller's streams untouched
    b = TASKS.build("bootcamp", cls=AddBootcamp, size=50, seed=3)
    assert [b[i] for i in reversed(range(20))][::-1] == first  # order of access does not matter
    other = TASKS.build("bootcamp", cls=AddBootcamp, size=50, seed=4)
    assert [s.prompt for s in first] != [other[i].prompt for i in range(20)]
    assert first[1].prompt == other[0].prompt  # item i of seed s is item i-1 of seed s+1
    with seeded_global_rngs(3 + 5):
        expected = {"a": random.randint(0, 100), "b": int(np.random.randint(0, 100)), "t": [1, 2]}
    assert first[5].answer == expected  # numpy was seeded too; the tuple came back as a JSON list
    assert first[5].task == "bootcamp/Add" and first[5].index == 5 and first[5].meta == {"bootcamp": "AddBootcamp"}
    with pytest.raises(IndexError):
        a[50]


def test_scoring_kwargs_and_clamping():
    task = TASKS.build(
        "bootcamp", cls=AddBootcamp, size=10, kwargs={"max_value": 5}, verify_kwargs={"format_score": 0.1}
    )
    s = task[0]
    right = s.answer["a"] + s.answer["b"]
    assert s.answer["a"] <= 5 and s.answer["b"] <= 5
    assert task.score(s, f"so [answer]{right}[/answer]") == 1.0
    assert task.score(s, f"[answer]{right + 1}[/answer]") == 0.1  # formatted but wrong: format_score
    assert task.score(s, "no idea") == 0.0 and task.score(s, "9" * 1_000_000) == 0.0
    raising = TASKS.build("bootcamp", cls=RaisingBootcamp, size=10)
    assert raising.score(raising[0], "big") == 1.0 and raising.score(raising[0], "neg") == 0.0


def test_extract_output_and_verify_correction_stand_in_for_verify_score():
    task = TASKS.build("bootcamp", cls=ExtractOnlyBootcamp, size=10)
    s = task[2]
    assert task.score(s, f"[answer]{s.answer['a'] + s.answer['b']}[/answer]") == 1.0
    assert task.score(s, "[answer]-1[/answer]") == 0.0 and task.score(s, "") == 0.0


def test_checker_exceptions_are_reported_or_counted():
    task = TASKS.build("bootcamp", cls=RaisingBootcamp, size=10)
    with pytest.raises(CheckerError, match=r"bootcamp/Raising.*RaisingBootcamp.*sample 4.*boom"):
        task.score(task[4], "boom")
    lenient = TASKS.build("bootcamp", cls=RaisingBootcamp, size=10, swallow_checker_errors=True)
    assert lenient.score(lenient[4], "boom") == 0.0 and lenient.score(lenient[4], "boom!") == 0.0
    assert lenient.swallowed_errors == 2


def test_interface_and_options_are_checked_before_anything_runs():
    with pytest.raises(ValueError, match="NoPromptBootcamp.*prompt_func"):
        TASKS.build("bootcamp", cls=NoPromptBootcamp)
    with pytest.raises(ValueError, match="Fraction.*case_generator, prompt_func, verify_score"):
        TASKS.build("bootcamp", cls="fractions:Fraction")
    with pytest.raises(ValueError, match="module.path:ClassName"):
        TASKS.build("bootcamp", cls="fractions.Fraction")
    with pytest.raises(ValueError, match="cannot import"):
        TASKS.build("bootcamp", cls="no_such_module_xyz:Thing")
    with pytest.raises(ValueError, match="has no class 'Nope'"):
        TASKS.build("bootcamp", cls="fractions:Nope")
    with pytest.raises(ValueError, match="constructor has no option 'max_val'"):
        TASKS.build("bootcamp", cls=AddBootcamp, kwargs={"max_val": 3})
    with pytest.raises(ValueError, match="verify_score has no option 'format'"):
        TASKS.build("bootcamp", cls=AddBootcamp, verify_kwargs={"format": 0.5})
    with pytest.raises(ValueError, match="size"):
        TASKS.build("bootcamp", cls=AddBootcamp, size=0)
    with pytest.raises(ValueError, match="holdout"):
        TASKS.build("bootcamp", cls=AddBootcamp, holdout="test")
    task = TASKS.build("bootcamp", cls=SetBootcamp)
    with pytest.raises(ValueError, match="SetBootcamp.*JSON"):
        task[0]


def test_class_by_module_path_and_task_name(tmp_path, monkeypatch):
    (tmp_path / "my_camps.py").write_text(
        "import random\n\n"
        "class Coinbootcamp:\n"
        "    def case_generator(self):\n        return {'side': random.choice(['heads', 'tails'])}\n"
        "    def prompt_func(self, identity):\n        return 'Coin? Answer:'\n"
        "    def verify_score(self, model_output, identity):\n        return model_output == identity['side']\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    task = TASKS.build("bootcamp", cls="my_camps:Coinbootcamp", size=20)
    assert task.name == "bootcamp/Coin" and task[0].task == "bootcamp/Coin"
    assert task.score(task[0], task[0].answer["side"]) == 1.0  # a bool verdict counts as 1.0
    assert TASKS.build("bootcamp", cls="my_camps:Coinbootcamp", task_name="coin")[0].task == "coin"


def test_reference_only_when_the_class_has_one():
    task = TASKS.build("bootcamp", cls=AddBootcamp, size=10)
    with pytest.raises(NotImplementedError, match="AddBootcamp has no reference"):
        task.reference(task[0])
    solved = TASKS.build("bootcamp", cls=SolvedAddBootcamp, size=30)
    assert all(solved.score(s, solved.reference(s)) == 1.0 for s in solved)


def test_bootcamp_holdout_sides_are_disjoint():
    train = {s.prompt for s in TASKS.build("bootcamp", cls=AddBootcamp, holdout="train", size=100)}
    evals = {s.prompt for s in TASKS.build("bootcamp", cls=AddBootcamp, holdout="eval", size=100)}
    assert train and evals and not train & evals


class _FakeDataset:
    """Stands in for a reasoning-gym ProceduralDataset: entries from Random(seed + i), exact-match scoring."""

    def __init__(self, name: str, size: int, seed: int, top: int = 9):
        self.name, self.size, self.seed, self.top = name, size, seed, top

    def __getitem__(self, i: int) -> dict:
        a = random.Random(self.seed + i).randint(0, self.top)
        return {"question": f"{a}+1=?", "answer": str(a + 1), "metadata": {"a": a, "source_dataset": self.name}}

    def score_answer(self, answer, entry) -> float:
        if answer == "crash":
            raise RuntimeError("checker bug")
        return 1.0 if answer == entry["answer"] else 0.01


def test_reasoning_gym_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)  # makes `import reasoning_gym` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'rlvr\[gym\]'"):
        TASKS.build("reasoning_gym", dataset="leg_counting")


def test_reasoning_gym_entries_and_scores_through_a_stand_in(monkeypatch):
    fake = types.ModuleType("reasoning_gym")
    fake.create_dataset = lambda name, **kw: _FakeDataset(name, **kw)
    monkeypatch.setitem(sys.modules, "reasoning_gym", fake)
    task = TASKS.build("reasoning_gym", dataset="plus_one", size=20, seed=5, kwargs={"top": 50})
    s = task[3]
    assert len(task) == 20 and s.task == "reasoning_gym/plus_one" and s.index == 3
    assert s.prompt.endswith("+1=?") and s.answer == str(s.meta["a"] + 1) and s.meta["source_dataset"] == "plus_one"
    assert task.score(s, task.reference(s)) == 1.0 and task.score(s, "nope") == 0.01
    with pytest.raises(CheckerError, match="reasoning_gym/plus_one.*sample 3"):
        task.score(s, "crash")
    with pytest.raises(ValueError, match="size"):
        TASKS.build("reasoning_gym", dataset="plus_one", size=0)


def test_reasoning_gym_live():
    pytest.importorskip("reasoning_gym")
    task = TASKS.build("reasoning_gym", dataset="leg_counting", size=5, seed=42)
    for s in task:
        assert isinstance(s.prompt, str) and task.score(s, task.reference(s)) == 1.0
        assert task.score(s, "definitely not it") < 1.0
    assert [s.prompt for s in task] == [
        s.prompt for s in TASKS.build("reasoning_gym", dataset="leg_counting", size=5, seed=42)
    ]
