"""String families of the task gym: string_reverse, string_manipulation, letter_count, palindrome, word_sort.

Each is a GymTask (see common.py): integer `difficulty` in [1, max_difficulty], one-line ASCII prompts
ending in "Answer:", one-line answers.

1. string_reverse: reverse a random string whose length grows with difficulty.
2. string_manipulation: uppercase, remove vowels, Caesar shift by k, or sort the letters (picked by the rng).
3. letter_count: how many times a letter occurs in a word or phrase from the built-in word list.
4. palindrome: yes/no; half the items are palindromes, and from difficulty 2 the others include near misses.
5. word_sort: sort words alphabetically; from difficulty 3 the words share prefixes ("car card care").
Partial credit where natural: the fraction of positions right (characters, or words for word_sort).
Scoring reads only the first line of a completion (bounded); surrounding double quotes are ignored.
"""

from __future__ import annotations

import random
import string

from rlvr.batch import Sample
from rlvr.tasks.base import TASKS
from rlvr.tasks.gym.common import GymTask, answer_line, check_choices, score_int

WORDS = tuple(
    """
    apple bread chair dance eagle flame grape house igloo jelly kite lemon mango night ocean piano queen river
    stone table uncle voice water yacht zebra about after again black brown clean cloud dream earth field
    fruit glass green heart horse light money mouse music paper party plant radio smile snake space sugar
    sweet tiger train truck watch whale wheel white world young arm bag bed box bus cat cow cup dog egg fan fig
    fox hat ink jam key leg map net owl pen pig rat sun toy van web yak zoo
    """.split()
)
PREFIX_GROUPS = tuple(
    group.split()
    for group in (
        "car card care cart carton",
        "star start stare stark starch",
        "tea team tear teak teapot",
        "pan pane pant panel panda",
        "band bandit bank banner banjo",
        "sea seal seam seat season",
    )
)
_LENGTHS = ((3, 4), (5, 6), (7, 9), (10, 14), (15, 20))  # string length range per difficulty
VOWELS = "aeiou"
_SAFE_CHARS = set(string.ascii_letters + string.digits)  # no spaces, quotes or dots: the scorer strips those


def positional_credit(got: str | list[str], want: str | list[str]) -> float:
    """1.0 if equal; else the fraction of positions that agree, over the longer of the two (0 when empty)."""
    if got == want:
        return 1.0
    longest = max(len(got), len(want))
    return sum(a == b for a, b in zip(got, want)) / longest if longest else 0.0


def unquoted(text: str) -> str:
    """The answer line with one pair of surrounding double quotes removed."""
    line = answer_line(text, limit=1000)
    return line[1:-1] if len(line) >= 2 and line[0] == line[-1] == '"' else line


def _random_string(rng: random.Random, length_range: tuple[int, int], alphabet: str) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(*length_range)))


def _phrase(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


class _TextTask(GymTask):
    """A text family whose completion is compared position by position with the reference string."""

    def score(self, sample: Sample, text: str) -> float:
        return positional_credit(unquoted(text), sample.answer)


@TASKS.register("string_reverse")
class StringReverse(_TextTask):
    """Reverse a random string; difficulty 1-5 = lengths 3-4, 5-6, 7-9, 10-14, 15-20."""

    name = "string_reverse"
    max_difficulty = 5

    def __init__(
        self,
        *,
        seed: int = 0,
        size: int = 10_000,
        holdout: str | None = None,
        difficulty: int = 1,
        alphabet: str = string.ascii_lowercase,
    ):
        super().__init__(seed=seed, size=size, holdout=holdout, difficulty=difficulty)
        if not isinstance(alphabet, str) or len(set(alphabet)) < 2 or not set(alphabet) <= _SAFE_CHARS:
            raise ValueError(
                f"string_reverse: alphabet must hold >= 2 distinct ASCII letters or digits, got {alphabet!r}"
            )
        self.alphabet = "".join(dict.fromkeys(alphabet))

    def generate(self, rng: random.Random, index: int) -> Sample:
        s = _random_string(rng, _LENGTHS[self.difficulty - 1], self.alphabet)
        return self.make(index, f'Reverse "{s}". Answer:', s[::-1], text=s)


def _caesar(s: str, k: int) -> str:
    return "".join(chr((ord(c) - 97 + k) % 26 + 97) for c in s)


_MANIPULATIONS = {
    "upper": ('Uppercase "{s}". Answer:', lambda s, k: s.upper()),
    "remove_vowels": ('Remove the vowels from "{s}". Answer:', lambda s, k: "".join(c for c in s if c not in VOWELS)),
    "caesar": ('Caesar shift "{s}" by {k}. Answer:', _caesar),
    "sort": ('Sort the letters of "{s}". Answer:', lambda s, k: "".join(sorted(s))),
}


@TASKS.register("string_manipulation")
class StringManipulation(_TextTask):
    """Uppercase / remove vowels / Caesar shift / sort letters; difficulty 1-3 = lengths 3-4, 5-6, 7-9, shifts to 25."""

    name = "string_manipulation"
    max_difficulty = 3

    def __init__(
        self,
        *,
        seed: int = 0,
        size: int = 10_000,
        holdout: str | None = None,
        difficulty: int = 1,
        ops: str | list[str] | tuple[str, ...] = tuple(_MANIPULATIONS),
    ):
        super().__init__(seed=seed, size=size, holdout=holdout, difficulty=difficulty)
        self.ops = check_choices("string_manipulation", "ops", ops, tuple(_MANIPULATIONS))

    def generate(self, rng: random.Random, index: int) -> Sample:
        op = rng.choice(self.ops)
        s = _random_string(rng, _LENGTHS[self.difficulty - 1], string.ascii_lowercase)
        if op == "remove_vowels" and set(s) <= set(VOWELS):
            s += "x"  # keep the answer non-empty
        k = rng.randint(1, (1, 3, 25)[self.difficulty - 1])
        template, fn = _MANIPULATIONS[op]
        return self.make(index, template.format(s=s, k=k), fn(s, k), op=op, text=s, shift=k)


@TASKS.register("letter_count")
class LetterCount(GymTask):
    """How often a letter occurs in a word (difficulty 1) or a phrase of 2-3 (2) or 4-6 (3) words."""

    name = "letter_count"
    max_difficulty = 3

    def __init__(self, *, seed: int = 0, size: int = 10_000, holdout: str | None = None, difficulty: int = 1):
        super().__init__(seed=seed, size=size, holdout=holdout, difficulty=difficulty)

    def generate(self, rng: random.Random, index: int) -> Sample:
        phrase = _phrase(rng, rng.randint(*((1, 1), (2, 3), (4, 6))[self.difficulty - 1]))
        present = sorted(set(phrase) - {" "})
        absent = sorted(set(string.ascii_lowercase) - set(phrase))
        letter = rng.choice(present if rng.random() < 0.8 or not absent else absent)
        prompt = f'How many times does "{letter}" occur in "{phrase}"? Answer:'
        return self.make(index, prompt, str(phrase.count(letter)), letter=letter, text=phrase)

    def score(self, sample: Sample, text: str) -> float:
        return score_int(unquoted(text), sample.answer)


@TASKS.register("palindrome")
class Palindrome(GymTask):
    """Is the string a palindrome (yes/no)? Difficulty 1-3 = lengths 3-4, 5-6, 7-9; near misses from 2."""

    name = "palindrome"
    max_difficulty = 3

    def __init__(self, *, seed: int = 0, size: int = 10_000, holdout: str | None = None, difficulty: int = 1):
        super().__init__(seed=seed, size=size, holdout=holdout, difficulty=difficulty)

    def generate(self, rng: random.Random, index: int) -> Sample:
        n = rng.randint(*_LENGTHS[self.difficulty - 1])
        half = _random_string(rng, ((n + 1) // 2,) * 2, string.ascii_lowercase)
        s = half + half[: n // 2][::-1]
        if rng.random() < 0.5:
            s = _spoil(rng, s, near_miss=self.difficulty > 1 and rng.random() < 0.5)
        answer = "yes" if s == s[::-1] else "no"
        return self.make(index, f'Is "{s}" a palindrome? Answer:', answer, text=s)

    def score(self, sample: Sample, text: str) -> float:
        return float(unquoted(text).rstrip("!").lower() == sample.answer)


def _spoil(rng: random.Random, s: str, *, near_miss: bool) -> str:
    """A non-palindrome: one letter of `s` changed (near miss) or a fresh random string of the same length."""
    while s == s[::-1]:
        if near_miss:
            i = rng.randrange(len(s) // 2)  # a position with a mirror partner, so the change breaks the symmetry
            s = s[:i] + rng.choice(string.ascii_lowercase.replace(s[i], "")) + s[i + 1 :]
        else:
            s = _random_string(rng, (len(s), len(s)), string.ascii_lowercase)
    return s


@TASKS.register("word_sort")
class WordSort(GymTask):
    """Sort words alphabetically; difficulty 1-4 = 3, 4-5, 6-8, 9-12 words (shared prefixes from 3)."""

    name = "word_sort"
    max_difficulty = 4

    def __init__(self, *, seed: int = 0, size: int = 10_000, holdout: str | None = None, difficulty: int = 1):
        super().__init__(seed=seed, size=size, holdout=holdout, difficulty=difficulty)

    def generate(self, rng: random.Random, index: int) -> Sample:
        n = rng.randint(*((3, 3), (4, 5), (6, 8), (9, 12))[self.difficulty - 1])
        words = rng.sample(rng.choice(PREFIX_GROUPS), 3) if self.difficulty >= 3 else []
        words += rng.sample([w for w in WORDS if w not in words], n - len(words))
        rng.shuffle(words)
        return self.make(index, f"Sort: {' '.join(words)}. Answer:", " ".join(sorted(words)), words=words)

    def score(self, sample: Sample, text: str) -> float:
        return positional_credit(unquoted(text).split(), sample.answer.split())
