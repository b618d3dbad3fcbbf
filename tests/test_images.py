"""rlvr.images: toy image sets (labels read back from the pixels) and the generator metrics (Fréchet distance against
hand-worked Gaussians, precision/recall on point sets with known coverage, a classifier that really separates the
classes, grids)."""

import math

import pytest
import torch

from rlvr.images import (
    SHAPE_CLASSES,
    class_accuracy,
    digits,
    feature_fid,
    frechet_distance,
    manifold_precision_recall,
    precision_recall,
    save_grid,
    toy_shapes,
    train_classifier,
)


def test_toy_shapes_are_seeded_and_their_labels_match_the_pixels():
    x, y = toy_shapes(200, size=32, seed=3)
    x2, y2 = toy_shapes(200, size=32, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2) and x.shape == (200, 3, 32, 32) and 0 <= x.min() <= x.max() <= 1
    assert set(y.tolist()) == set(range(len(SHAPE_CLASSES)))
    assert not torch.equal(toy_shapes(20, size=32, seed=4)[0], x[:20])
    ink = (x - 240 / 255).abs().sum(1) > 0.1  # (N, H, W) pixels the shape covers
    for image, label in zip(ink, y.tolist()):  # read the class back from the shape's bounding box
        rows, cols = image.any(1).nonzero(), image.any(0).nonzero()
        r0, r1, c0, c1 = rows.min(), rows.max(), cols.min(), cols.max()
        fill = float(image.sum() / ((r1 - r0 + 1) * (c1 - c0 + 1)))  # square 1, circle ~pi/4, triangle ~1/2
        corners = tuple(bool(image[r, c]) for r in (r0, r1) for c in (c0, c1))  # top-left, top-right, bottom ...
        if corners == (True, True, True, True):
            seen = "square"
        elif corners == (False, False, True, True):
            seen = "triangle"
        else:  # round or a cross: no corner inked; the cross covers less of its box
            seen = "circle" if fill > 0.72 else "cross"
        assert seen == SHAPE_CLASSES[label], (SHAPE_CLASSES[label], fill, corners)
    with pytest.raises(ValueError, match="size >= 8"):
        toy_shapes(4, size=4)


def test_digits_are_the_bundled_set_upsampled():
    pytest.importorskip("sklearn")
    x, y = digits(size=16)
    assert x.shape == (1797, 3, 16, 16) and torch.equal(x[:, 0], x[:, 1]) and set(y.tolist()) == set(range(10))


def test_frechet_distance_hand_worked():
    one = lambda v: torch.tensor([[v]], dtype=torch.float64)  # noqa: E731
    # N(0, 1) vs N(1, 4): (0 - 1)^2 + 1 + 4 - 2 sqrt(1 * 4) = 2
    assert frechet_distance(torch.zeros(1), one(1.0), torch.ones(1), one(4.0)) == pytest.approx(2.0)
    # diagonal covariances: the sum over dimensions of the 1-d values
    mu1, mu2 = torch.tensor([0.0, 2.0]), torch.tensor([1.0, -1.0])
    d = frechet_distance(mu1, torch.diag(torch.tensor([1.0, 9.0])), mu2, torch.diag(torch.tensor([4.0, 1.0])))
    assert d == pytest.approx((1 + 1 + 4 - 4) + (9 + 9 + 1 - 2 * 3))
    # a rotation of the same Gaussian is at distance 0; a non-diagonal pair against its closed form
    c = torch.tensor([[2.0, 0.5], [0.5, 1.0]])
    assert frechet_distance(mu1, c, mu1, c) == pytest.approx(0.0, abs=1e-9)
    c2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # cov2 = I: tr(sqrt(c)) = sum of sqrt eigenvalues of c
    ev = torch.linalg.eigvalsh(c.double())
    assert frechet_distance(mu1, c, mu1, c2) == pytest.approx(float(c.trace() + 2 - 2 * ev.sqrt().sum()))


def test_precision_and_recall_see_mode_dropping_and_off_manifold_samples():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, 2, generator=g) * 0.1
    b = torch.randn(200, 2, generator=g) * 0.1 + torch.tensor([5.0, 0.0])
    real = torch.cat([a, b])
    p, r = manifold_precision_recall(real, real.clone())
    assert (p, r) == (1.0, 1.0)
    p, r = manifold_precision_recall(real, torch.randn(200, 2, generator=g) * 0.1)  # one mode only
    assert p > 0.95 and 0.4 < r < 0.6
    p, r = manifold_precision_recall(real, torch.randn(200, 2, generator=g) * 0.1 + 20)  # nowhere near the data
    assert p == 0.0 and r == 0.0
    with pytest.raises(ValueError, match="more than k = 3"):
        manifold_precision_recall(real, real[:3])


def test_a_classifier_separates_the_shapes_and_its_features_rank_sets(tmp_path):
    x, y = toy_shapes(800, size=16, seed=0)
    net, acc = train_classifier(x, y, steps=300, seed=0)
    assert acc > 0.85  # what the metrics stand on, reported with them
    held, held_y = toy_shapes(300, size=16, seed=1)
    assert class_accuracy(net, held, held_y) > 0.8
    same, other = toy_shapes(300, size=16, seed=2)[0], toy_shapes(300, size=16, seed=2)[0]
    noisy = (other + 0.35 * torch.randn(other.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    squares = held[held_y == SHAPE_CLASSES.index("square")]
    fid_same, fid_noisy, fid_one = (feature_fid(net, held, z) for z in (same, noisy, squares))
    assert fid_same < fid_noisy and fid_same < fid_one and math.isfinite(fid_same)
    p, r = precision_recall(net, held, squares)
    assert r < 0.6 < p  # one class of four: precise, poor recall
    path = save_grid(held[:10], tmp_path / "grid.png", nrow=4)
    from PIL import Image

    assert Image.open(path).size == (4 * 17 + 1, 3 * 17 + 1)
