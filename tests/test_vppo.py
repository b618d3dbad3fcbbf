"""rlvr.algos.vppo (VPPO, arXiv 2510.09285): the visual-dependency score (sampled k3 and full-vocabulary KL) against
hand-worked values, masked garbage giving 0; top-k token selection (ties, rounding, short rows, padding) against a
loop; the `perception` token weight with a text-only row; trajectory-level advantage shaping (code and paper forms)
against hand-worked alphas; the registry entries and their option checks.
"""

import math

import pytest
import torch

from rlvr.algos import ADVANTAGE_SHAPING, TOKEN_WEIGHTS
from rlvr.algos.vppo import (
    dependency_metrics,
    full_kl_dependency,
    keep_counts,
    top_k_mask,
    visual_dependency,
)

LN2 = math.log(2)


# --- visual dependency ---------------------------------------------------------------------------------------------


def test_visual_dependency_hand_worked():
    # delta = aug_logp - logp; S = exp(delta) - delta - 1, clamped to [0, 10]
    #   delta =  ln 2: 2 - ln 2 - 1     = 0.30685
    #   delta = -ln 2: 0.5 + ln 2 - 1   = 0.19315
    #   delta =  0:    1 - 0 - 1        = 0
    #   delta = +30 -> clamped to 20: exp(20) - 21 -> clamped to 10
    #   delta = -50 -> clamped to -20: exp(-20) + 19 = 19.000000002 -> clamped to 10
    logp = torch.tensor([[math.log(0.25), math.log(0.5), -1.0, -30.0, 0.0]])
    aug_logp = torch.tensor([[math.log(0.5), math.log(0.25), -1.0, 0.0, -50.0]])
    s = visual_dependency(logp, aug_logp, torch.ones(1, 5))
    expected = [2 - LN2 - 1, 0.5 + LN2 - 1, 0.0, 10.0, 10.0]
    assert s[0].tolist() == pytest.approx(expected, abs=1e-6)


def test_visual_dependency_masked_garbage_is_zero():
    logp = torch.tensor([[math.log(0.25), float("nan"), float("inf"), -float("inf")]])
    aug_logp = torch.tensor([[math.log(0.5), 0.0, float("nan"), 5.0]])
    mask = torch.tensor([[1, 0, 0, 0]])
    s = visual_dependency(logp, aug_logp, mask)
    assert s[0].tolist() == pytest.approx([2 - LN2 - 1, 0.0, 0.0, 0.0], abs=1e-6)
    assert torch.isfinite(s).all()


def test_visual_dependency_is_detached():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    s = visual_dependency(logp, torch.tensor([[-2.0, -1.0]]), torch.ones(1, 2))
    assert not s.requires_grad


def test_full_kl_two_token_vocabulary():
    # p = [0.5, 0.5], q = [0.25, 0.75]: KL(p || q) = 0.5 ln(0.5 / 0.25) + 0.5 ln(0.5 / 0.75) = 0.5 ln(4 / 3) = 0.143841
    logp_all = torch.tensor([[[0.5, 0.5], [0.9, 0.1]]]).log()  # (1, 2, 2); second position is padding
    aug_logp_all = torch.tensor([[[0.25, 0.75], [float("nan"), 0.0]]]).log()
    kl = full_kl_dependency(logp_all, aug_logp_all, torch.tensor([[1, 0]]))
    assert kl[0].tolist() == pytest.approx([0.5 * math.log(4 / 3), 0.0], abs=1e-6)


def test_full_kl_nonnegative_zero_when_equal_and_zero_probability_tokens():
    gen = torch.Generator().manual_seed(0)
    logp_all = torch.randn(3, 4, 7, generator=gen).log_softmax(-1)
    aug_logp_all = torch.randn(3, 4, 7, generator=gen).log_softmax(-1)
    mask = torch.ones(3, 4)
    assert (full_kl_dependency(logp_all, aug_logp_all, mask) > 0).all()
    assert full_kl_dependency(logp_all, logp_all, mask).abs().max() < 1e-6
    # a token with p = 0 contributes 0 log 0 = 0, even where q = 0 too (no NaN from -inf - -inf)
    p = torch.tensor([[[0.0, 1.0]]]).log()
    assert full_kl_dependency(p, p, torch.ones(1, 1)).item() == 0.0


def test_sampled_k3_is_unbiased_for_full_kl():
    # E_{o ~ p}[q(o)/p(o) - ln(q(o)/p(o)) - 1] = sum q - sum p + KL(p || q) = KL(p || q): enumerate o exactly
    gen = torch.Generator().manual_seed(1)
    logp_all = (0.5 * torch.randn(1, 1, 6, generator=gen, dtype=torch.float64)).log_softmax(-1)
    aug_logp_all = (0.5 * torch.randn(1, 1, 6, generator=gen, dtype=torch.float64)).log_softmax(-1)
    per_token = visual_dependency(logp_all[0], aug_logp_all[0], torch.ones(1, 6))  # each vocabulary entry as o
    expected = (logp_all[0].exp() * per_token).sum()
    assert full_kl_dependency(logp_all, aug_logp_all, torch.ones(1, 1)).item() == pytest.approx(expected.item(), 1e-5)


# --- top-k token selection -----------------------------------------------------------------------------------------


def _top_k_loop(scores, mask, k):
    out = torch.zeros(scores.shape)
    for i in range(scores.shape[0]):
        valid = [t for t in range(scores.shape[1]) if mask[i, t]]
        n_keep = math.ceil(k * len(valid) - 1e-9)
        ranked = sorted(valid, key=lambda t: (-scores[i, t].item(), t))  # largest first, earlier token on ties
        for t in ranked[:n_keep]:
            out[i, t] = 1.0
    return out


def test_keep_counts_rounding():
    # k = 0.4: L = 5 -> 0.4 * 5 = 2.0000000000000004 in float, still 2; L = 3 -> ceil(1.2) = 2; L = 1 -> 1;
    # L = 10 -> 4; L = 0 -> 0. k = 1 keeps every token.
    lengths = torch.tensor([5, 3, 1, 10, 0])
    assert keep_counts(lengths, 0.4).tolist() == [2, 2, 1, 4, 0]
    assert keep_counts(lengths, 1.0).tolist() == [5, 3, 1, 10, 0]
    assert keep_counts(torch.tensor([7]), 0.2).tolist() == [2]  # ceil(1.4)


def test_top_k_ties_go_to_the_earlier_token():
    scores = torch.tensor([[0.0, 3.0, 1.0, 3.0, 3.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    w = top_k_mask(scores, torch.ones(2, 5), k=0.4)  # 2 of 5 per row
    assert w.tolist() == [[0, 1, 0, 1, 0], [1, 1, 0, 0, 0]]


def test_top_k_short_rows_and_k_one():
    scores = torch.tensor([[0.5, 9.0, 9.0], [0.1, 0.2, 0.3], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1, 0, 0], [0, 0, 0], [1, 1, 1]])
    assert top_k_mask(scores, mask, k=0.4).tolist() == [[1, 0, 0], [0, 0, 0], [0, 1, 1]]  # L = 1, 0, 3 -> 1, 0, 2
    assert torch.equal(top_k_mask(scores, mask, k=1.0), mask.float())


def test_top_k_never_selects_padding():
    scores = torch.tensor([[0.1, 0.2, 1e9, float("inf")], [float("nan"), 5.0, -float("inf"), -float("inf")]])
    mask = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1]])  # row 1: padding first, valid tokens scored -inf after it
    assert top_k_mask(scores, mask, k=1.0).tolist() == [[1, 1, 0, 0], [0, 1, 1, 1]]
    assert top_k_mask(scores, mask, k=0.5).tolist() == [[0, 1, 0, 0], [0, 1, 1, 0]]


def test_top_k_matches_loop_on_random_inputs():
    gen = torch.Generator().manual_seed(0)
    for k in (0.1, 0.2, 0.4, 0.5, 0.75, 1.0):
        scores = torch.randint(0, 4, (16, 13), generator=gen).float()  # few values: many ties
        scores[torch.rand(16, 13, generator=gen) < 0.2] = torch.randn(1, generator=gen).item()
        mask = (torch.rand(16, 13, generator=gen) < 0.7).long()  # holes anywhere, some empty-ish rows
        mask[0] = 0
        assert torch.equal(top_k_mask(scores, mask, k=k), _top_k_loop(scores, mask, k)), k


def test_top_k_bad_k():
    for k in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="k must be"):
            top_k_mask(torch.zeros(1, 2), torch.ones(1, 2), k=k)


# --- perception token weight ---------------------------------------------------------------------------------------


def _perception_case():
    dependency = torch.tensor([[0.1, 0.9, 0.3, 0.7, 0.2], [0.0, 0.0, 0.0, 0.0, 0.0], [5.0, 1.0, 2.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 0, 0]])
    has_image = torch.tensor([True, False, True])
    return dependency, mask, has_image


def test_perception_weights_with_a_text_only_row():
    # row 0: L = 5 -> keep 2: 0.9 and 0.7; row 1 is text-only: every valid token 1; row 2: L = 3 -> keep 2: 5.0, 2.0
    dependency, mask, has_image = _perception_case()
    w = TOKEN_WEIGHTS.lookup("perception")(mask, dependency=dependency, has_image=has_image, k=0.4)
    assert w.tolist() == [[0, 1, 0, 1, 0], [1, 1, 1, 0, 0], [1, 0, 1, 0, 0]]
    w = TOKEN_WEIGHTS.lookup("perception")(mask, dependency=dependency, has_image=has_image, text_rows="none")
    assert w[1].tolist() == [0, 0, 0, 0, 0] and w[0].tolist() == [0, 1, 0, 1, 0]


def test_perception_bad_options():
    dependency, mask, has_image = _perception_case()
    fn = TOKEN_WEIGHTS.lookup("perception")
    with pytest.raises(ValueError, match="text_rows"):
        fn(mask, dependency=dependency, has_image=has_image, text_rows="some")
    with pytest.raises(ValueError, match="has_image"):
        fn(mask, dependency=dependency, has_image=torch.tensor([True, False]))
    with pytest.raises(ValueError, match="k must be"):
        fn(mask, dependency=dependency, has_image=has_image, k=0.0)


# --- trajectory-level advantage shaping ----------------------------------------------------------------------------


def _tas_case():
    # mean dependency per row: [0, 1, 2] (row 2: (3 + 1) / 2; its third position is padding with garbage)
    dependency = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [3.0, 1.0, float("nan")]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 0]])
    return dependency, mask, torch.tensor([True, True, True])


def test_tas_code_form_hand_worked():
    # lo = 0, hi = 2 -> n = [0, 0.5, 1], mu = 0.5, alpha = 0.9 + 0.1 n / 0.5 = [0.9, 1.0, 1.1]; mean alpha = 1
    dependency, mask, has_image = _tas_case()
    advantages = torch.tensor([1.0, -2.0, 3.0])
    shaped, metrics = ADVANTAGE_SHAPING.lookup("vppo_tas")(
        advantages, mask, dependency=dependency, has_image=has_image, beta_min=0.9
    )
    assert shaped.tolist() == pytest.approx([0.9, -2.0, 3.3], abs=1e-6)
    assert metrics["vppo/alpha_mean"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["vppo/alpha_min"] == pytest.approx(0.9) and metrics["vppo/alpha_max"] == pytest.approx(1.1)
    assert all(isinstance(v, float) for v in metrics.values())


def test_tas_scales_token_level_advantages_per_row():
    dependency, mask, has_image = _tas_case()
    advantages = torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0], [-1.0, -1.0, 0.0]])
    shaped, _ = ADVANTAGE_SHAPING.lookup("vppo_tas")(advantages, mask, dependency=dependency, has_image=has_image)
    expected = advantages * torch.tensor([[0.9], [1.0], [1.1]])
    assert torch.allclose(shaped, expected)


def test_tas_code_form_is_mean_preserving_and_row_order_free():
    gen = torch.Generator().manual_seed(0)
    dependency = torch.rand(12, 9, generator=gen) * 3
    mask = (torch.rand(12, 9, generator=gen) < 0.8).long()
    mask[:, 0] = 1
    has_image = torch.ones(12, dtype=torch.bool)
    fn = ADVANTAGE_SHAPING.bind("vppo_tas", beta_min=0.8)
    shaped, metrics = fn(torch.ones(12), mask, dependency=dependency, has_image=has_image)
    assert shaped.mean().item() == pytest.approx(1.0, abs=1e-5) and metrics["vppo/alpha_min"] >= 0.8 - 1e-6
    perm = torch.randperm(12, generator=gen)
    shaped_perm, _ = fn(torch.ones(12), mask[perm], dependency=dependency[perm], has_image=has_image)
    assert torch.allclose(shaped_perm, shaped[perm])


def test_tas_no_spread_or_single_valid_row_gives_alpha_one():
    fn = ADVANTAGE_SHAPING.lookup("vppo_tas")
    advantages = torch.tensor([1.0, -2.0, 3.0])
    equal = torch.full((3, 3), 0.7)
    shaped, metrics = fn(advantages, torch.ones(3, 3), dependency=equal, has_image=torch.ones(3, dtype=torch.bool))
    assert torch.equal(shaped, advantages) and metrics["vppo/alpha_mean"] == 1.0
    dependency, mask, _ = _tas_case()
    single = torch.tensor([False, False, True])
    shaped, _ = fn(advantages, mask, dependency=dependency, has_image=single)
    assert torch.equal(shaped, advantages)


def test_tas_text_and_empty_rows_get_alpha_one_and_are_left_out_of_min_max():
    # rows 3 (text-only, mean 100) and 4 (no tokens) would stretch [lo, hi]; they are ignored, keep alpha 1,
    # and the image rows get the hand-worked [0.9, 1.0, 1.1] of the three-row case
    dependency, mask, _ = _tas_case()
    dependency = torch.cat([dependency, torch.full((1, 3), 100.0), torch.full((1, 3), 50.0)])
    mask = torch.cat([mask, torch.ones(1, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long)])
    has_image = torch.tensor([True, True, True, False, True])
    shaped, metrics = ADVANTAGE_SHAPING.lookup("vppo_tas")(
        torch.ones(5), mask, dependency=dependency, has_image=has_image
    )
    assert shaped.tolist() == pytest.approx([0.9, 1.0, 1.1, 1.0, 1.0], abs=1e-6)
    assert metrics["vppo/alpha_min"] == pytest.approx(0.9) and metrics["vppo/alpha_max"] == pytest.approx(1.1)


def test_tas_paper_form_range():
    # alpha = beta_min + (beta_max - beta_min) n = 0.5 + 1.0 [0, 0.5, 1] = [0.5, 1.0, 1.5]
    dependency, mask, has_image = _tas_case()
    shaped, metrics = ADVANTAGE_SHAPING.lookup("vppo_tas")(
        torch.ones(3), mask, dependency=dependency, has_image=has_image, form="paper", beta_min=0.5, beta_max=1.5
    )
    assert shaped.tolist() == pytest.approx([0.5, 1.0, 1.5])
    assert (metrics["vppo/alpha_min"], metrics["vppo/alpha_max"]) == pytest.approx((0.5, 1.5))


@pytest.mark.parametrize(
    "options, match",
    [
        ({"beta_min": 0.0}, "beta_min"),
        ({"beta_min": 1.5}, "beta_min"),
        ({"form": "papr"}, "form"),
        ({"form": "paper"}, "beta_max"),
        ({"form": "paper", "beta_min": 0.9, "beta_max": 0.8}, "beta_max"),
        ({"form": "code", "beta_max": 1.2}, "beta_max"),
    ],
)
def test_tas_bad_options(options, match):
    dependency, mask, has_image = _tas_case()
    with pytest.raises(ValueError, match=match):
        ADVANTAGE_SHAPING.lookup("vppo_tas")(torch.ones(3), mask, dependency=dependency, has_image=has_image, **options)


def test_tas_bad_shapes():
    dependency, mask, has_image = _tas_case()
    fn = ADVANTAGE_SHAPING.lookup("vppo_tas")
    with pytest.raises(ValueError, match="advantages"):
        fn(torch.ones(4), mask, dependency=dependency, has_image=has_image)
    with pytest.raises(ValueError, match="has_image"):
        fn(torch.ones(3), mask, dependency=dependency, has_image=torch.ones(2, dtype=torch.bool))


# --- metrics and registries ----------------------------------------------------------------------------------------


def test_dependency_metrics():
    # valid dependency [1, 2, 3] (padding holds garbage): mean 2; entropy [2, 4, 6] -> corr 1, reversed -> -1
    dependency = torch.tensor([[1.0, 2.0, float("nan")], [3.0, 99.0, 99.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    entropy = torch.tensor([[2.0, 4.0, 0.0], [6.0, -5.0, 7.0]])
    metrics = dependency_metrics(dependency, mask, entropy)
    assert metrics["vppo/dependency_mean"] == pytest.approx(2.0)
    assert metrics["vppo/dependency_entropy_corr"] == pytest.approx(1.0)
    assert dependency_metrics(dependency, mask, -entropy)["vppo/dependency_entropy_corr"] == pytest.approx(-1.0)
    assert dependency_metrics(dependency, mask, torch.ones(2, 3))["vppo/dependency_entropy_corr"] == 0.0
    one = torch.tensor([[1, 0, 0], [0, 0, 0]])
    assert dependency_metrics(dependency, one, entropy)["vppo/dependency_entropy_corr"] == 0.0
    assert "vppo/dependency_entropy_corr" not in dependency_metrics(dependency, mask)
    assert dependency_metrics(dependency, torch.zeros(2, 3))["vppo/dependency_mean"] == 0.0


def test_registry_entries():
    assert TOKEN_WEIGHTS.needs("perception") == ("dependency", "has_image")
    assert ADVANTAGE_SHAPING.needs("vppo_tas") == ("dependency", "has_image")
    assert ADVANTAGE_SHAPING.needs("none") == ()
    ADVANTAGE_SHAPING.bind("vppo_tas", beta_min=0.9)
    TOKEN_WEIGHTS.bind("perception", k=0.4, text_rows="none")
    with pytest.raises(ValueError, match="beta_mn"):
        ADVANTAGE_SHAPING.bind("vppo_tas", beta_mn=0.9)
    advantages = torch.tensor([1.0, -1.0])
    shaped, metrics = ADVANTAGE_SHAPING.lookup("none")(advantages, torch.ones(2, 3))
    assert shaped is advantages and metrics == {}
