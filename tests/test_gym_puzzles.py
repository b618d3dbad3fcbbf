"""Gym puzzle families (mini_sudoku, shortest_path, calendar, word_problem, binary_ops): items are deterministic
in (seed, index) and JSON-serialisable; the reference scores exactly 1.0 at every difficulty; wrong, garbage,
empty and huge (100k-digit, 1 MB) answers score below 1 and return fast; difficulty changes the problems;
mini_sudoku gives partial credit; bad options raise ValueError naming the option; the holdout sides are
disjoint; and each family's answers agree with an independent recomputation from its prompt."""

import datetime
import json
import re
import time

import pytest

from rlvr.batch import Sample
from rlvr.tasks import TASKS
from rlvr.tasks.gym.puzzles import WEEKDAYS, count_solutions, dijkstra

FAMILIES = ["mini_sudoku", "shortest_path", "calendar", "word_problem", "binary_ops"]
HOSTILE = ["", "garbage ~~ !!", "9" * 100_000, "1" * 100_000, "x" * 1_000_000, "\n" * 5000 + "1", "-" * 1_000_000]


def _levels(name: str) -> range:
    return range(1, TASKS.lookup(name).max_difficulty + 1)


def _wrong(sample: Sample) -> str:
    """A well-formed but wrong answer for `sample`."""
    answer = sample.answer
    if sample.task == "mini_sudoku":
        i = sample.meta["puzzle"].index(".")
        return answer[:i] + str(int(answer[i]) % 4 + 1) + answer[i + 1 :]
    if sample.task == "binary_ops":
        return answer[:-1] + ("1" if answer[-1] == "0" else "0")
    if answer in WEEKDAYS:
        return WEEKDAYS[(WEEKDAYS.index(answer) + 1) % 7]
    return str(int(answer) + 1)


@pytest.mark.parametrize("name", FAMILIES)
def test_items_are_deterministic(name):
    a, b, other = (TASKS.build(name, seed=s, size=100) for s in (3, 3, 4))
    assert [a[i] for i in range(20)] == [b[i] for i in range(20)]
    assert [a[i].prompt for i in range(20)] != [other[i].prompt for i in range(20)]
    assert a[7].task == name and a[7].index == 7 and a[-1] == a[99]
    assert json.loads(json.dumps([a[i].answer for i in range(20)])) == [a[i].answer for i in range(20)]
    assert all(a[i].prompt.isascii() and a[i].prompt.endswith("Answer:") for i in range(20))


@pytest.mark.parametrize("name,difficulty", [(n, d) for n in FAMILIES for d in _levels(n)])
def test_reference_scores_one(name, difficulty):
    task = TASKS.build(name, difficulty=difficulty, size=50)
    for sample in task:
        assert task.score(sample, task.reference(sample)) == 1.0, sample
        assert "\n" not in task.reference(sample)


@pytest.mark.parametrize("name", FAMILIES)
def test_bad_answers_score_below_one_and_fast(name):
    task = TASKS.build(name, difficulty=max(_levels(name)), size=10)
    for sample in (task[i] for i in range(3)):
        for text in [_wrong(sample), *HOSTILE]:
            start = time.perf_counter()
            assert task.score(sample, text) < 1.0, (sample, text[:50])
            assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("name", FAMILIES)
def test_difficulty_changes_the_problems(name):
    easy, hard = TASKS.build(name, difficulty=1, size=60), TASKS.build(name, difficulty=max(_levels(name)), size=60)
    assert [s.prompt for s in easy] != [s.prompt for s in hard]
    size = (lambda s: s.prompt.count(".")) if name == "mini_sudoku" else (lambda s: len(s.prompt))
    assert sum(map(size, hard)) > sum(map(size, easy))


@pytest.mark.parametrize("name", FAMILIES)
def test_holdout_sides_are_disjoint(name):
    train = {s.prompt for s in TASKS.build(name, holdout="train", size=100, difficulty=2)}
    evals = {s.prompt for s in TASKS.build(name, holdout="eval", size=100, difficulty=2)}
    assert train and evals and not train & evals


@pytest.mark.parametrize(
    "name,kwargs,match",
    [
        ("mini_sudoku", {"difficulty": 0}, "difficulty"),
        ("mini_sudoku", {"difficulty": 6}, "difficulty"),
        ("calendar", {"difficulty": True}, "difficulty"),
        ("word_problem", {"difficulty": 4}, "difficulty"),
        ("shortest_path", {"max_weight": 0}, "max_weight"),
        ("shortest_path", {"accept_path": "yes"}, "accept_path"),
        ("calendar", {"modes": ["weekdays"]}, "modes"),
        ("calendar", {"modes": []}, "modes"),
        ("word_problem", {"templates": "poems"}, "templates"),
        ("binary_ops", {"ops": ["nand"]}, "ops"),
        ("binary_ops", {"size": 0}, "size"),
        ("binary_ops", {"holdout": "test"}, "holdout"),
        ("word_problem", {"difficultly": 2}, "did you mean 'difficulty'"),
    ],
)
def test_bad_options_raise(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        TASKS.build(name, **kwargs)


def test_mini_sudoku_puzzles_are_unique_and_give_partial_credit():
    for difficulty in _levels("mini_sudoku"):
        for s in TASKS.build("mini_sudoku", difficulty=difficulty, size=30):
            puzzle, grid = s.meta["puzzle"], s.answer
            assert puzzle.count(".") == 2 + 2 * difficulty and count_solutions(puzzle) == 1
            assert all(p in (".", g) for p, g in zip(puzzle, grid))
            units = [grid[4 * r : 4 * r + 4] for r in range(4)] + [grid[c::4] for c in range(4)]
            units += [grid[b : b + 2] + grid[b + 4 : b + 6] for b in (0, 2, 8, 10)]
            assert all(sorted(u) == list("1234") for u in units)
    task = TASKS.build("mini_sudoku", difficulty=3)
    s = task[0]
    blanks = [i for i, p in enumerate(s.meta["puzzle"]) if p == "."]  # 8 blanks: get the first 4 wrong
    half = list(s.answer)
    for i in blanks[:4]:
        half[i] = str(int(half[i]) % 4 + 1)
    assert task.score(s, "".join(half)) == 0.5
    assert task.score(s, " ".join(s.answer[k : k + 4] for k in range(0, 16, 4))) == 1.0  # row groups allowed
    given = next(i for i, p in enumerate(s.meta["puzzle"]) if p != ".")
    changed = s.answer[:given] + str(int(s.answer[given]) % 4 + 1) + s.answer[given + 1 :]
    assert task.score(s, changed) == 0.0  # contradicts a given
    assert task.score(s, s.answer[:15]) == 0.0 and task.score(s, s.answer.replace("4", "5")) == 0.0


def test_shortest_path_distance_and_path_answers():
    # A-B:1, B-C:2, A-C:5, C-D:1 -> A to D is 4 via A-B-C-D (the direct A-C edge costs 5)
    edges = [["A", "B", 1], ["A", "C", 5], ["B", "C", 2], ["C", "D", 1]]
    assert dijkstra(edges, "A") == {"A": 0, "B": 1, "C": 3, "D": 4}
    s = Sample(prompt="", answer="4", task="shortest_path", meta={"edges": edges, "source": "A", "target": "D"})
    strict, lenient = TASKS.build("shortest_path"), TASKS.build("shortest_path", accept_path=True)
    assert strict.score(s, "4") == lenient.score(s, "4.") == 1.0
    assert strict.score(s, "A-B-C-D") == 0.0 and lenient.score(s, "A-B-C-D") == 1.0
    assert lenient.score(s, "a -> b -> c -> d") == 1.0
    assert lenient.score(s, "A-C-D") == 0.0  # a real path, but weight 6
    assert lenient.score(s, "A-D") == 0.0 and lenient.score(s, "B-C-D") == 0.0  # no such edge / wrong start
    task = TASKS.build("shortest_path", difficulty=5, max_weight=3)
    for s in (task[i] for i in range(30)):
        assert len(re.findall(r"[A-H]-[A-H]:[1-3]\b", s.prompt)) == len(s.meta["edges"]) >= 7
        assert int(s.answer) == _floyd_warshall(s.meta["edges"])[s.meta["source"], s.meta["target"]]


def _floyd_warshall(edges: list) -> dict:
    """All-pairs distances by Floyd-Warshall: an independent check of the Dijkstra answers."""
    nodes = sorted({n for a, b, _ in edges for n in (a, b)})
    dist = {(a, b): 0 if a == b else float("inf") for a in nodes for b in nodes}
    for a, b, w in edges:
        dist[a, b] = dist[b, a] = min(dist[a, b], w)
    for k in nodes:
        for a in nodes:
            for b in nodes:
                dist[a, b] = min(dist[a, b], dist[a, k] + dist[k, b])
    return dist


def test_calendar_answers_match_datetime():
    task = TASKS.build("calendar", difficulty=3, size=200)
    modes = set()
    for s in task:
        modes.add(s.meta["mode"])
        if s.meta["mode"] == "days_between":
            first, last = (datetime.date.fromisoformat(d) for d in re.findall(r"\d{4}-\d\d-\d\d", s.prompt))
            assert int(s.answer) == last.toordinal() - first.toordinal() > 0
        else:
            start, days = re.search(r"Today is (\w+)\. What day \w+ it (\d+) days?", s.prompt).groups()
            sign = -1 if "ago" in s.prompt else 1
            assert s.answer == WEEKDAYS[(WEEKDAYS.index(start) + sign * int(days)) % 7]
            assert task.score(s, s.answer.upper() + ".") == task.score(s, "Answer: " + s.answer.lower()) == 1.0
    assert modes == {"weekday", "days_between"}
    only = TASKS.build("calendar", modes="weekday", size=20)
    assert all(s.meta["mode"] == "weekday" for s in only)


def test_word_problem_templates_and_values():
    task = TASKS.build("word_problem", difficulty=3, size=200)
    assert {s.meta["template"] for s in task} == {"shopping", "ages", "rates", "change", "sharing"}
    assert all(int(s.answer) >= 0 for s in task)
    for s in TASKS.build("word_problem", templates=["shopping"], difficulty=2, size=30):
        pairs = re.findall(r"(\d+) \w+ at (\d+) dollars each", s.prompt)
        assert len(pairs) == 2 and int(s.answer) == sum(int(q) * int(p) for q, p in pairs)
    for s in TASKS.build("word_problem", templates="sharing", difficulty=3, size=30):
        total, kids = map(int, re.search(r"There are (\d+) cookies.* by (\d+) kids", s.prompt).groups())
        eaten = int(re.search(r" (\d+) are eaten", s.prompt).group(1))
        assert (total - eaten) == kids * int(s.answer)


def test_binary_ops_values_and_formats():
    ops = {"+": int.__add__, "AND": int.__and__, "OR": int.__or__, "XOR": int.__xor__}
    task = TASKS.build("binary_ops", difficulty=4, size=100)
    for s in task:
        a, op, b = re.fullmatch(r"Binary: ([01]+) (\S+) ([01]+)\. Answer:", s.prompt).groups()
        assert s.answer == format(ops[op](int(a, 2), int(b, 2)), "b")
    s = Sample(prompt="", answer="101", task="binary_ops")
    assert task.score(s, "0b101") == task.score(s, "00101") == task.score(s, "101.") == 1.0
    assert task.score(s, "0b") == task.score(s, "5") == task.score(s, "1 01") == 0.0
    assert task.score(Sample(prompt="", answer="0"), "0") == 1.0
    assert {s.meta["op"] for s in TASKS.build("binary_ops", ops=["xor", "and"], size=50)} == {"and", "xor"}
