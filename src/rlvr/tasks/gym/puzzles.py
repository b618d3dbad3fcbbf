"""Puzzle families of the task gym: mini_sudoku, shortest_path, calendar, word_problem, binary_ops.

Every family is a GymTask (common.py): a ProceduralTask with an integer `difficulty` in [1, max_difficulty]
that scales the problem. Prompts are one short ASCII line ending in "Answer:"; answers are one line.

1. mini_sudoku: one of the 288 4x4 solutions; cells are blanked in random order, and a blank is kept only
   while exactly one of the 288 grids agrees with the givens (uniqueness checked with bitmasks).
2. shortest_path: a random spanning tree plus extra edges, weights in [1, max_weight]; Dijkstra's distance.
3. calendar: the weekday N days after (or before) a weekday, or the days between two dates of one year.
4. word_problem: templated stories (shopping, ages, rates, change, sharing) with integer answers.
5. binary_ops: add / and / or / xor of two binary strings.
Scoring reads only the first line of a completion (bounded), with anchored, linear regexes and no eval().
"""

from __future__ import annotations

import datetime
import heapq
import itertools
import random
import re

from rlvr.batch import Sample
from rlvr.tasks.base import TASKS
from rlvr.tasks.gym.common import GymTask, answer_line, check_choices, score_int

# ------------------------------------------------------------------ mini_sudoku

_UNIT = [(i // 4, 4 + i % 4, 8 + 2 * (i // 8) + i % 4 // 2) for i in range(16)]  # row, column, box ids per cell
_PEERS = [{j for j in range(16) if j != i and set(_UNIT[i]) & set(_UNIT[j])} for i in range(16)]
_SUDOKU_LINE = re.compile(r"[1-4]{16}")
_ALL_GRIDS: list[str] = []  # the 288 valid 4x4 solutions, enumerated on first use
_HAS: dict[tuple[int, str], int] = {}  # (cell, digit) -> bitmask over _ALL_GRIDS


@TASKS.register("mini_sudoku")
class MiniSudoku(GymTask):
    """4x4 sudoku as a 16-character row-major string with '.' blanks; difficulty 1-5 = 4, 6, 8, 10, 12 blanks."""

    name = "mini_sudoku"
    max_difficulty = 5

    def __init__(self, *, seed: int = 0, size: int = 10_000, holdout: str | None = None, difficulty: int = 1):
        super().__init__(seed=seed, size=size, holdout=holdout, difficulty=difficulty)
        self.blanks = 2 + 2 * difficulty

    def generate(self, rng: random.Random, index: int) -> Sample:
        for _ in range(1000):
            solution = rng.choice(_all_grids())
            puzzle = _blank_cells(rng, solution, self.blanks)
            if puzzle.count(".") == self.blanks:
                return self.make(index, f"Sudoku 4x4, fill the dots: {puzzle} Answer:", solution, puzzle=puzzle)
        raise ValueError(f"mini_sudoku: found no unique puzzle with {self.blanks} blanks")  # pragma: no cover

    def score(self, sample: Sample, text: str) -> float:
        line = answer_line(text).replace(" ", "")
        puzzle, solution = sample.meta["puzzle"], sample.answer
        if not _SUDOKU_LINE.fullmatch(line) or any(p not in (".", c) for p, c in zip(puzzle, line)):
            return 0.0
        blanks = [i for i, p in enumerate(puzzle) if p == "."]
        return sum(line[i] == solution[i] for i in blanks) / len(blanks)


def _all_grids() -> list[str]:
    if not _ALL_GRIDS:
        _ALL_GRIDS.extend(_completions(["."] * 16))
        for cell, digit in itertools.product(range(16), "1234"):  # bit k set: grid k has `digit` at `cell`
            _HAS[cell, digit] = sum(1 << k for k, grid in enumerate(_ALL_GRIDS) if grid[cell] == digit)
    return _ALL_GRIDS


def count_solutions(puzzle: str | list[str]) -> int:
    """Number of valid completions of a 4x4 puzzle ('.' = blank): the grids that agree with every given."""
    _all_grids()
    mask = (1 << len(_ALL_GRIDS)) - 1
    for cell, digit in enumerate(puzzle):
        if digit != ".":
            mask &= _HAS[cell, digit]
    return mask.bit_count()


def _blank_cells(rng: random.Random, solution: str, blanks: int) -> str:
    """Blank cells in random order, skipping any whose removal would allow a second solution."""
    puzzle = list(solution)
    for cell in rng.sample(range(16), 16):
        if puzzle.count(".") == blanks:
            break
        puzzle[cell] = "."
        if count_solutions(puzzle) != 1:
            puzzle[cell] = solution[cell]
    return "".join(puzzle)


def _completions(grid: list[str]):
    """Every valid completion of `grid`, depth first (used once, to enumerate the 288 solutions)."""
    if "." not in grid:
        yield "".join(grid)
        return
    i = grid.index(".")
    for d in "1234":
        if all(grid[p] != d for p in _PEERS[i]):
            grid[i] = d
            yield from _completions(grid)
            grid[i] = "."


# ------------------------------------------------------------------ shortest_path

_PATH_LINE = re.compile(r"[A-Z](?:-[A-Z]){1,30}")


@TASKS.register("shortest_path")
class ShortestPath(GymTask):
    """Shortest distance in a small weighted graph; difficulty 1-5 = 4-8 nodes with 1-5 extra edges."""

    name = "shortest_path"
    max_difficulty = 5

    def __init__(
        self,
        *,
        seed: int = 0,
        size: int = 10_000,
        holdout: str | None = None,
        difficulty: int = 1,
        max_weight: int = 9,
        accept_path: bool = False,
    ):
        super().__init__(seed=seed, size=size, holdout=holdout, difficulty=difficulty)
        if not isinstance(max_weight, int) or not 1 <= max_weight <= 99:
            raise ValueError(f"shortest_path: max_weight must be an integer in [1, 99], got {max_weight!r}")
        if not isinstance(accept_path, bool):
            raise ValueError(f"shortest_path: accept_path must be true or false, got {accept_path!r}")
        self.max_weight, self.accept_path = max_weight, accept_path
        self.nodes = "ABCDEFGH"[: 3 + difficulty]

    def generate(self, rng: random.Random, index: int) -> Sample:
        edges = _random_graph(rng, len(self.nodes), self.difficulty, self.max_weight)
        named = [[self.nodes[a], self.nodes[b], w] for (a, b), w in sorted(edges.items())]
        src, dst = rng.sample(self.nodes, 2)
        dist = dijkstra(named, src)[dst]
        listing = ", ".join(f"{a}-{b}:{w}" for a, b, w in named)
        prompt = f"Edges {listing}. Shortest distance from {src} to {dst}? Answer:"
        return self.make(index, prompt, str(dist), edges=named, source=src, target=dst)

    def score(self, sample: Sample, text: str) -> float:
        if score_int(text, sample.answer):
            return 1.0
        if not self.accept_path:
            return 0.0
        line = answer_line(text).upper().replace(" ", "").replace(">", "")
        return float(_path_length(sample.meta, line) == int(sample.answer))


def _random_graph(rng: random.Random, n: int, extra: int, max_weight: int) -> dict[tuple[int, int], int]:
    order = rng.sample(range(n), n)
    pairs = {tuple(sorted((order[k], order[rng.randrange(k)]))) for k in range(1, n)}  # spanning tree
    others = [(a, b) for a in range(n) for b in range(a + 1, n) if (a, b) not in pairs]
    pairs |= set(rng.sample(others, min(extra, len(others))))
    return {pair: rng.randint(1, max_weight) for pair in sorted(pairs)}


def dijkstra(edges: list[list], source: str) -> dict[str, int]:
    """Distances from `source` over undirected edges [a, b, weight]."""
    adjacent: dict[str, list[tuple[str, int]]] = {}
    for a, b, w in edges:
        adjacent.setdefault(a, []).append((b, w))
        adjacent.setdefault(b, []).append((a, w))
    dist, heap = {}, [(0, source)]
    while heap:
        d, node = heapq.heappop(heap)
        if node not in dist:
            dist[node] = d
            for nxt, w in adjacent.get(node, []):
                if nxt not in dist:
                    heapq.heappush(heap, (d + w, nxt))
    return dist


def _path_length(meta: dict, line: str) -> int | None:
    """Total weight of a path "A-C-D" from source to target along existing edges; None when it is not one."""
    if not _PATH_LINE.fullmatch(line):
        return None
    hops, weight = line.split("-"), {}
    for a, b, w in meta["edges"]:
        weight[a, b] = weight[b, a] = w
    if hops[0] != meta["source"] or hops[-1] != meta["target"] or any(h not in weight for h in zip(hops, hops[1:])):
        return None
    return sum(weight[h] for h in zip(hops, hops[1:]))


# ------------------------------------------------------------------ calendar

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_CALENDAR_MODES = ("weekday", "days_between")


@TASKS.register("calendar")
class Calendar(GymTask):
    """Weekday arithmetic and day counts between dates; difficulty 1-3 widens the span (3: leap years, "ago")."""

    name = "calendar"
    max_difficulty = 3

    def __init__(
        self,
        *,
        seed: int = 0,
        size: int = 10_000,
        holdout: str | None = None,
        difficulty: int = 1,
        modes: str | list[str] | tuple[str, ...] = _CALENDAR_MODES,
    ):
        super().__init__(seed=seed, size=size, holdout=holdout, difficulty=difficulty)
        self.modes = check_choices("calendar", "modes", modes, _CALENDAR_MODES)

    def generate(self, rng: random.Random, index: int) -> Sample:
        mode = rng.choice(self.modes)
        prompt, answer = (_weekday_problem if mode == "weekday" else _days_between_problem)(rng, self.difficulty)
        return self.make(index, prompt, answer, mode=mode)

    def score(self, sample: Sample, text: str) -> float:
        if sample.meta["mode"] == "days_between":
            return score_int(text, sample.answer)
        return float(answer_line(text).lower() == sample.answer.lower())


def _weekday_problem(rng: random.Random, difficulty: int) -> tuple[str, str]:
    start, days = rng.randrange(7), rng.randint(1, (7, 100, 1000)[difficulty - 1])
    ago = difficulty == 3 and rng.random() < 0.5
    answer = WEEKDAYS[(start - days if ago else start + days) % 7]
    span = f"{days} day" + ("s" if days > 1 else "")
    when = f"was it {span} ago" if ago else f"is it {span} from now"
    return f"Today is {WEEKDAYS[start]}. What day {when}? Answer:", answer


def _days_between_problem(rng: random.Random, difficulty: int) -> tuple[str, str]:
    while True:  # years 1901-2099; below difficulty 3 only common (non-leap) years
        year = rng.randint(1901, 2099)
        if difficulty == 3 or year % 4:
            break
    if difficulty == 1:
        month = rng.randint(1, 12)
        a, b = sorted(rng.sample(range(1, 29), 2))
        first, last = datetime.date(year, month, a), datetime.date(year, month, b)
    else:
        days = 366 if year % 4 == 0 else 365
        a, b = sorted(rng.sample(range(days), 2))
        jan1 = datetime.date(year, 1, 1)
        first, last = jan1 + datetime.timedelta(a), jan1 + datetime.timedelta(b)
    return f"How many days from {first.isoformat()} to {last.isoformat()}? Answer:", str((last - first).days)


# ------------------------------------------------------------------ word_problem

_NAMES = ("Ann", "Ben", "Cara", "Dan", "Eva", "Finn", "Gus", "Hana", "Ivy", "Jon", "Kim", "Leo", "Mia", "Nora")
_ITEMS = ("pens", "books", "apples", "cups", "hats", "toys", "cards", "plates", "lamps", "socks")


def _shopping(rng: random.Random, d: int) -> tuple[str, int]:
    name, items = rng.choice(_NAMES), rng.sample(_ITEMS, d)
    buys = [(rng.randint(2, 3 + 2 * d), rng.randint(1, 4 * d * d), item) for item in items]
    parts = " and ".join(f"{q} {item} at {p} dollars each" for q, p, item in buys)
    return f"{name} buys {parts}. How many dollars in total?", sum(q * p for q, p, _ in buys)


def _ages(rng: random.Random, d: int) -> tuple[str, int]:
    name, age, later = rng.choice(_NAMES), rng.randint(3, 12 * d), rng.randint(2, 10 * d)
    if d == 1:
        return f"{name} is {age} years old. How old will {name} be in {later} years?", age + later
    if d == 2:
        gap = rng.randint(18, 40)
        story = f"{name} is {age}. Their aunt is {gap} years older. How old is the aunt in {later} years?"
        return story, age + gap + later
    k = rng.randint(2, 4)
    story = f"{name} is {age}. Their uncle is {k} times as old. What is the sum of their ages in {later} years?"
    return story, age + k * age + 2 * later


def _rates(rng: random.Random, d: int) -> tuple[str, int]:
    speed, hours = rng.randint(2, 10 * d) * 5, rng.randint(2, 2 + 2 * d)
    if d == 1:
        return f"A car drives {speed} km per hour for {hours} hours. How many km does it travel?", speed * hours
    if d == 2:
        rate = rng.randint(3, 30)
        return f"A machine makes {rate} toys per hour. How many hours to make {rate * hours} toys?", hours
    other, more = rng.randint(2, 30) * 5, rng.randint(1, 6)
    story = f"A train goes {speed} km/h for {hours} hours, then {other} km/h for {more} hours. How many km in total?"
    return story, speed * hours + other * more


def _change(rng: random.Random, d: int) -> tuple[str, int]:
    name, item, qty, price = rng.choice(_NAMES), rng.choice(_ITEMS), rng.randint(2, 2 + 2 * d), rng.randint(1, 5 * d)
    bill = next(b for b in (10, 20, 50, 100, 200, 500) if b > qty * price)
    story = f"{name} pays {bill} dollars for {qty} {item} at {price} dollars each. How many dollars of change?"
    return story, bill - qty * price


def _sharing(rng: random.Random, d: int) -> tuple[str, int]:
    kids, each, eaten = rng.randint(2, 3 + 3 * d), rng.randint(2, 4 * d + 2), rng.randint(1, 9) if d > 1 else 0
    total = kids * each + eaten
    ate = f" {eaten} are eaten first, then the rest" if eaten else " They"
    return f"There are {total} cookies.{ate} are shared equally by {kids} kids. How many does each kid get?", each


_TEMPLATES = {"shopping": _shopping, "ages": _ages, "rates": _rates, "change": _change, "sharing": _sharing}


@TASKS.register("word_problem")
class WordProblem(GymTask):
    """Templated story problems with an integer answer; difficulty 1-3 adds steps and larger numbers."""

    name = "word_problem"
    max_difficulty = 3

    def __init__(
        self,
        *,
        seed: int = 0,
        size: int = 10_000,
        holdout: str | None = None,
        difficulty: int = 1,
        templates: str | list[str] | tuple[str, ...] = tuple(_TEMPLATES),
    ):
        super().__init__(seed=seed, size=size, holdout=holdout, difficulty=difficulty)
        self.templates = check_choices("word_problem", "templates", templates, tuple(_TEMPLATES))

    def generate(self, rng: random.Random, index: int) -> Sample:
        template = rng.choice(self.templates)
        story, answer = _TEMPLATES[template](rng, self.difficulty)
        return self.make(index, f"{story} Answer:", str(answer), template=template)

    def score(self, sample: Sample, text: str) -> float:
        return score_int(text, sample.answer)


# ------------------------------------------------------------------ binary_ops

_BINARY_OPS = {
    "add": ("+", int.__add__),
    "and": ("AND", int.__and__),
    "or": ("OR", int.__or__),
    "xor": ("XOR", int.__xor__),
}
_BITS = (3, 4, 6, 8, 12)  # longest operand per difficulty
_BINARY_LINE = re.compile(r"(?:0b)?([01]{1,80})")


@TASKS.register("binary_ops")
class BinaryOps(GymTask):
    """Binary add / AND / OR / XOR; difficulty 1-5 = operands of up to 3, 4, 6, 8, 12 bits."""

    name = "binary_ops"
    max_difficulty = 5

    def __init__(
        self,
        *,
        seed: int = 0,
        size: int = 10_000,
        holdout: str | None = None,
        difficulty: int = 1,
        ops: str | list[str] | tuple[str, ...] = tuple(_BINARY_OPS),
    ):
        super().__init__(seed=seed, size=size, holdout=holdout, difficulty=difficulty)
        self.ops = check_choices("binary_ops", "ops", ops, tuple(_BINARY_OPS))

    def generate(self, rng: random.Random, index: int) -> Sample:
        op, hi = rng.choice(self.ops), _BITS[self.difficulty - 1]
        lo = max(1, hi - 2)
        a, b = (rng.randint(2 ** (bits - 1), 2**bits - 1) for bits in (rng.randint(lo, hi), rng.randint(lo, hi)))
        symbol, fn = _BINARY_OPS[op]
        prompt = f"Binary: {a:b} {symbol} {b:b}. Answer:"
        return self.make(index, prompt, f"{fn(a, b):b}", op=op)

    def score(self, sample: Sample, text: str) -> float:
        """Digits must match the answer; a "0b" prefix and leading zeros are accepted."""
        m = _BINARY_LINE.fullmatch(answer_line(text).lower())
        return float(bool(m) and (m.group(1).lstrip("0") or "0") == sample.answer)
