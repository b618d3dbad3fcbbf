"""rlvr.algos.token_weights: the high-entropy token selection (arXiv 2506.01939) against a hand-worked quantile,
a global threshold passed in, padding never selected; `none` weighs every token 1."""

import pytest
import torch

from rlvr.algos import TOKEN_WEIGHTS
from rlvr.algos.token_weights import entropy_threshold


def _case():
    entropy = torch.tensor([[0.1, 0.5, 0.9, 0.3], [0.7, float("nan"), 5.0, 5.0]])  # padding holds garbage
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])
    return entropy, mask


def test_high_entropy_hand_worked_quantile():
    # valid entropies sorted [0.1, 0.3, 0.5, 0.7, 0.9]; quantile 0.4 -> threshold = 60th percentile,
    # position 0.6 * 4 = 2.4 -> 0.5 + 0.4 * (0.7 - 0.5) = 0.58 -> keep 0.9 and 0.7 (the top 40%)
    entropy, mask = _case()
    assert entropy_threshold(entropy, mask, quantile=0.4).item() == pytest.approx(0.58)
    w = TOKEN_WEIGHTS.lookup("high_entropy")(mask, entropy=entropy, quantile=0.4)
    assert w.tolist() == [[0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]]


def test_quantile_one_keeps_every_valid_token_and_threshold_overrides():
    entropy, mask = _case()
    assert torch.equal(TOKEN_WEIGHTS.lookup("high_entropy")(mask, entropy=entropy, quantile=1.0), mask.float())
    w = TOKEN_WEIGHTS.lookup("high_entropy")(mask, entropy=entropy, threshold=0.4)  # e.g. computed over all ranks
    assert w.tolist() == [[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]]


def test_declared_needs():
    assert TOKEN_WEIGHTS.needs("high_entropy") == ("entropy",) and TOKEN_WEIGHTS.needs("none") == ()


def test_none_and_bad_quantile():
    entropy, mask = _case()
    assert torch.equal(TOKEN_WEIGHTS.lookup("none")(mask), torch.ones(2, 4))
    with pytest.raises(ValueError, match="quantile"):
        TOKEN_WEIGHTS.lookup("high_entropy")(mask, entropy=entropy, quantile=0.0)
