"""Evaluation helpers: the unbiased pass@k estimator against hand-worked values and brute force; the sampled
evaluation (pass@k for several k from n samples, distinct correct answers per prompt) on a scripted sampler."""

from itertools import combinations

import pytest

from rlvr.batch import Sample
from rlvr.evaluate import distinct_correct, pass_at_k


@pytest.mark.parametrize("n,c,k", [(4, 1, 2), (5, 2, 3), (8, 0, 4), (8, 8, 1), (6, 3, 1)])
def test_pass_at_k_matches_brute_force(n, c, k):
    outcomes = [1] * c + [0] * (n - c)
    subsets = list(combinations(range(n), k))
    brute = sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(brute)


def test_hand_worked():
    # n = 4, c = 1, k = 2: 1 - C(3,2)/C(4,2) = 1 - 3/6 = 0.5
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    assert pass_at_k(4, 0, 4) == 0.0 and pass_at_k(4, 1, 4) == 1.0


def test_distinct_correct_counts_different_correct_first_lines():
    texts = ["$3 * 4 - 2 = 10$", "$3*4-2=10$\nsame answer, other spacing", "$4 * 3 - 2 = 10$", "$9 = 10$", ""]
    # 1st and 2nd are one answer once whitespace is removed; the 3rd is another; 4th and 5th are wrong
    assert distinct_correct(texts, [True, True, True, False, False]) == 2
    assert distinct_correct(texts, [False] * 5) == 0


def test_evaluate_sampled_counts_pass_at_k_and_distinct_answers():
    """A fake task and sampler with known outcomes: prompt 0 gets answers a, a, b, x (3 correct, 2 distinct),
    prompt 1 gets x, x, x, x (none correct); pass@k is the unbiased estimate from those n = 4 samples."""
    from types import SimpleNamespace

    import torch

    from rlvr import evaluate as ev

    outcomes = {"p0": ["a", "a ", "b", "x"], "p1": ["x"] * 4}

    class Task:
        def __getitem__(self, i):
            return Sample(prompt=f"p{i}", answer="", task="fake")

        def __len__(self):
            return 2

        def score(self, sample, text):
            return float(text.strip() in ("a", "b"))

    class Sampler:  # rlvr.rollout.collect.Sampler: generate(samples, group_ids, seeds) -> a Batch-like object
        def generate(self, samples, group_ids, seeds):
            texts = [outcomes[s.prompt][i % 4] for i, s in enumerate(samples)]
            return SimpleNamespace(texts=texts, completion_mask=torch.ones(len(texts), 3))

    out = ev.evaluate_sampled(Sampler(), Task(), size=2, n=4, ks=(1, 2, 4), batch_size=8)
    assert out["pass@1"] == pytest.approx((3 / 4 + 0) / 2)
    assert out["pass@2"] == pytest.approx((pass_at_k(4, 3, 2) + 0) / 2) and out["pass@4"] == pytest.approx(0.5)
    assert out["distinct_correct"] == 1.0 and out["distinct_correct_solved"] == 2.0  # (2 + 0) / 2 and 2 / 1
    assert out["mean_length"] == 3.0
    with pytest.raises(ValueError, match="k must be"):
        ev.evaluate_sampled(Sampler(), Task(), size=2, n=4, ks=(8,))
