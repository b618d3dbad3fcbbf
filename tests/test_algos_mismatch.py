"""rlvr.algos.mismatch: hand-worked train/inference mismatch weights (docs/methods.md §1.12) for every mode, with and
without a lower bound; weights are detached, 0 on padding, unaffected by garbage there; the logged statistics."""

import math

import pytest
import torch

from rlvr.algos import MISMATCH_WEIGHTS

F64 = torch.float64


def _case(junk=0.0):
    # row 0: exp(old - rollout) = [3, 0.5, 1.2]; sequence ratio 3 * 0.5 * 1.2 = 1.8. row 1: one token, ratio 1
    rollout = torch.tensor([[-1.0, -1.0, -1.0], [-2.0, junk, junk]], dtype=F64)
    old = rollout + torch.tensor([[math.log(3), math.log(0.5), math.log(1.2)], [0.0, 0.0, 0.0]], dtype=F64)
    old = old.masked_fill(torch.tensor([[False, False, False], [False, True, True]]), -junk)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    return old.requires_grad_(), rollout, mask


@pytest.mark.parametrize(
    "name,c_min,c_max,row0",
    [
        ("token_truncate", None, 2.0, [2.0, 0.5, 1.2]),
        ("token_truncate", 0.6, 2.0, [2.0, 0.6, 1.2]),
        ("token_mask", None, 2.0, [0.0, 0.5, 1.2]),
        ("token_mask", 0.6, 2.0, [0.0, 0.0, 1.2]),
        ("sequence_truncate", None, 2.0, [1.8, 1.8, 1.8]),
        ("sequence_truncate", None, 1.5, [1.5, 1.5, 1.5]),
        ("sequence_mask", None, 2.0, [1.8, 1.8, 1.8]),
        ("sequence_mask", None, 1.5, [0.0, 0.0, 0.0]),
        ("none", None, 2.0, [1.0, 1.0, 1.0]),
    ],
)
@pytest.mark.parametrize("junk", [0.0, float("nan"), float("inf")])
def test_hand_worked_weights(name, c_min, c_max, row0, junk):
    old, rollout, mask = _case(junk)
    w, metrics = MISMATCH_WEIGHTS.lookup(name)(old, rollout, mask, c_min=c_min, c_max=c_max)
    assert not w.requires_grad
    assert w[0].tolist() == pytest.approx(row0, rel=1e-6)
    assert w[1].tolist() == [1.0, 0.0, 0.0]  # ratio 1 is inside every bound; padding weighs 0
    # statistics over the 4 valid tokens, ratios [3, 0.5, 1.2, 1]
    assert metrics["mismatch/ratio_mean"].item() == pytest.approx(5.7 / 4, rel=1e-6)
    assert metrics["mismatch/ratio_min"].item() == pytest.approx(0.5, rel=1e-6)
    assert metrics["mismatch/ratio_max"].item() == pytest.approx(3.0, rel=1e-6)
    abs_log = (math.log(3) + math.log(2) + math.log(1.2)) / 4
    assert metrics["mismatch/abs_log_ratio_mean"].item() == pytest.approx(abs_log, rel=1e-6)


def test_clipped_fraction():
    old, rollout, mask = _case()
    _, metrics = MISMATCH_WEIGHTS.lookup("token_truncate")(old, rollout, mask, c_max=2.0)
    assert metrics["mismatch/clipped_frac"].item() == pytest.approx(1 / 4)  # only the ratio-3 token
    _, metrics = MISMATCH_WEIGHTS.lookup("sequence_mask")(old, rollout, mask, c_max=1.5)
    assert metrics["mismatch/clipped_frac"].item() == pytest.approx(3 / 4)  # row 0's three tokens


def test_bad_bounds_raise():
    old, rollout, mask = _case()
    with pytest.raises(ValueError, match="c_min"):
        MISMATCH_WEIGHTS.lookup("token_truncate")(old, rollout, mask, c_min=3.0, c_max=2.0)
