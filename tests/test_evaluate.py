"""Evaluation helpers: the unbiased pass@k estimator against hand-worked values and brute force."""

from itertools import combinations

import pytest

from rlvr.evaluate import pass_at_k


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
