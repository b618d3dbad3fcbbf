"""Gym string families (string_reverse, string_manipulation, letter_count, palindrome, word_sort): items are
deterministic in (seed, index) and JSON-serialisable; the reference scores exactly 1.0 at every difficulty;
wrong, garbage, empty and huge (100k-digit, 1 MB) answers score below 1 and return fast; difficulty changes the
problems; half-right answers get partial credit strictly between 0 and 1 where it is defined; bad options raise
ValueError naming the option; the holdout sides are disjoint; answers agree with a recomputation from the prompt."""

import json
import re
import time

import pytest

from rlvr.batch import Sample
from rlvr.tasks import TASKS
from rlvr.tasks.gym.text_tasks import PREFIX_GROUPS, positional_credit

FAMILIES = ["string_reverse", "string_manipulation", "letter_count", "palindrome", "word_sort"]
PARTIAL = ["string_reverse", "string_manipulation", "word_sort"]
HOSTILE = ["", "garbage ~~ !!", "9" * 100_000, "a" * 100_000, "x" * 1_000_000, "\n" * 5000 + "yes", '"' * 1_000_000]


def _levels(name: str) -> range:
    return range(1, TASKS.lookup(name).max_difficulty + 1)


def _quoted(prompt: str) -> str:
    return re.search(r'"([^"]*)"', prompt).group(1)


def _wrong(sample: Sample) -> str:
    """A well-formed but wrong answer for `sample`."""
    if sample.task == "palindrome":
        return "no" if sample.answer == "yes" else "yes"
    if sample.task == "letter_count":
        return str(int(sample.answer) + 1)
    return sample.answer + "q"


def _half_right(sample: Sample) -> str:
    """The reference with its first half (characters, or words for word_sort) replaced by wrong ones."""
    if sample.task == "word_sort":
        words = sample.answer.split()
        return " ".join(["zzz"] * (len(words) // 2) + words[len(words) // 2 :])
    n = max(1, len(sample.answer) // 2)
    return "".join("Q" if c != "Q" else "R" for c in sample.answer[:n]) + sample.answer[n:]


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
        assert task.score(sample, f'"{task.reference(sample)}"\nmore') == 1.0  # quotes and later lines ignored


@pytest.mark.parametrize("name", FAMILIES)
def test_bad_answers_score_below_one_and_fast(name):
    task = TASKS.build(name, difficulty=max(_levels(name)), size=10)
    for sample in (task[i] for i in range(3)):
        for text in [_wrong(sample), *HOSTILE]:
            start = time.perf_counter()
            assert task.score(sample, text) < 1.0, (sample, text[:50])
            assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("name", PARTIAL)
def test_half_right_answers_get_partial_credit(name):
    task = TASKS.build(name, difficulty=2, size=20)
    for sample in task:
        assert 0.0 < task.score(sample, _half_right(sample)) < 1.0, sample


@pytest.mark.parametrize("name", FAMILIES)
def test_difficulty_changes_the_problems(name):
    easy, hard = TASKS.build(name, difficulty=1, size=60), TASKS.build(name, difficulty=max(_levels(name)), size=60)
    assert [s.prompt for s in easy] != [s.prompt for s in hard]
    assert sum(len(s.prompt) for s in hard) > sum(len(s.prompt) for s in easy)


@pytest.mark.parametrize("name", FAMILIES)
def test_holdout_sides_are_disjoint(name):
    train = {s.prompt for s in TASKS.build(name, holdout="train", size=100)}
    evals = {s.prompt for s in TASKS.build(name, holdout="eval", size=100)}
    assert train and evals and not train & evals


@pytest.mark.parametrize(
    "name,kwargs,match",
    [
        ("string_reverse", {"difficulty": 0}, "difficulty"),
        ("string_reverse", {"difficulty": 6}, "difficulty"),
        ("string_reverse", {"alphabet": "a"}, "alphabet"),
        ("string_reverse", {"alphabet": 'ab"'}, "alphabet"),
        ("string_manipulation", {"ops": ["lower"]}, "ops"),
        ("string_manipulation", {"ops": []}, "ops"),
        ("letter_count", {"difficulty": 4}, "difficulty"),
        ("palindrome", {"difficulty": "2"}, "difficulty"),
        ("word_sort", {"difficulty": 5}, "difficulty"),
        ("word_sort", {"size": -1}, "size"),
        ("palindrome", {"holdout": "dev"}, "holdout"),
        ("letter_count", {"letter": "a"}, "has no option 'letter'"),
    ],
)
def test_bad_options_raise(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        TASKS.build(name, **kwargs)


def test_positional_credit():
    assert positional_credit("abcd", "abcd") == 1.0
    assert positional_credit("abxx", "abcd") == 0.5
    assert positional_credit("ab", "abcd") == 0.5  # over the longer of the two
    assert positional_credit("", "abcd") == 0.0 and positional_credit("", "") == 1.0
    assert positional_credit(["a", "b", "z"], ["a", "b", "c"]) == pytest.approx(2 / 3)


def test_answers_match_the_prompt():
    for s in TASKS.build("string_reverse", difficulty=5, alphabet="ab01", size=30):
        assert s.answer == _quoted(s.prompt)[::-1] and set(s.answer) <= set("ab01") and 15 <= len(s.answer) <= 20
    task = TASKS.build("string_manipulation", difficulty=3, size=200)
    for s in task:
        text, op = _quoted(s.prompt), s.meta["op"]
        if op == "caesar":
            k = int(re.search(r"by (\d+)\.", s.prompt).group(1))
            assert all((ord(b) - ord(a)) % 26 == k for a, b in zip(text, s.answer))
        else:
            expected = {"upper": text.upper(), "sort": "".join(sorted(text))}
            expected["remove_vowels"] = re.sub("[aeiou]", "", text)
            assert s.answer == expected[op] and s.answer
    assert {s.meta["op"] for s in task} == {"upper", "remove_vowels", "caesar", "sort"}
    for s in TASKS.build("letter_count", difficulty=3, size=50):
        letter, phrase = re.findall(r'"([^"]*)"', s.prompt)
        assert s.answer == str(phrase.count(letter)) and 4 <= len(phrase.split()) <= 6


def test_palindromes_are_balanced_with_near_misses():
    task = TASKS.build("palindrome", difficulty=3, size=200)
    texts = [(_quoted(s.prompt), s.answer) for s in task]
    assert all((t == t[::-1]) == (a == "yes") for t, a in texts)
    assert 60 <= sum(a == "yes" for _, a in texts) <= 140
    near = [t for t, a in texts if a == "no" and sum(x != y for x, y in zip(t, t[::-1])) == 2]
    assert len(near) >= 10  # one changed letter breaks exactly one mirrored pair
    s = task[0]
    assert task.score(s, s.answer.upper() + "!") == 1.0


def test_word_sort_prefix_groups_and_scoring():
    task = TASKS.build("word_sort", difficulty=3, size=30)
    for s in task:
        words = s.prompt[len("Sort: ") : -len(". Answer:")].split()
        assert s.answer.split() == sorted(words) and len(set(words)) == len(words)
        assert any(sum(w in group for w in words) >= 3 for group in PREFIX_GROUPS)
    s = Sample(prompt="", answer="car card care", task="word_sort")
    assert task.score(s, "car card care.") == 1.0
    assert task.score(s, "card car care") == pytest.approx(1 / 3)
    assert task.score(s, "car card") == pytest.approx(2 / 3) and task.score(s, "car card care x") == 0.75
