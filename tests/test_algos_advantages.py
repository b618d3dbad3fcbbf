"""rlvr.algos.advantages: every estimator against hand-worked values and a plain-Python loop reference; the edge
cases of docs/methods.md §1.1 (NaN = unscorable -> 0 and excluded, constant group -> exactly 0, singleton -> 0
or verl's r/(1+eps), Bessel std); pass@k analytic against brute-force enumeration of k-subsets; Registry errors."""

import itertools
import math
import warnings

import pytest
import torch

from rlvr.algos import ADVANTAGES

NAN = float("nan")


def _groups(rewards, group_ids):
    """group id -> list of scorable rewards (plain Python)."""
    out = {}
    for r, g in zip(rewards.tolist(), group_ids.tolist()):
        out.setdefault(g, [])
        if not math.isnan(r):
            out[g].append(r)
    return out


def _mean_std(xs, ddof=1):
    n = len(xs)
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - ddof)) if n > ddof else 0.0
    return mean, std


def loop_reference(name, rewards, group_ids, eps=1e-6):
    """Plain-Python GRPO / Dr.GRPO / RLOO / batch-std with rlvr's edge-case rules."""
    groups = _groups(rewards, group_ids)
    scorable = [r for r in rewards.tolist() if not math.isnan(r)]
    _, batch_sigma = _mean_std(scorable)
    out = []
    for r, g in zip(rewards.tolist(), group_ids.tolist()):
        xs = groups[g]
        if math.isnan(r) or len(xs) < 2 or max(xs) == min(xs):
            out.append(0.0)
            continue
        mean, std = _mean_std(xs)
        if name == "grpo":
            out.append((r - mean) / (std + eps))
        elif name == "dr_grpo":
            out.append(r - mean)
        elif name == "rloo":
            out.append(r - (sum(xs) - r) / (len(xs) - 1))  # leave-one-out baseline, by definition
        elif name == "batch_std":
            out.append((r - mean) / (batch_sigma + eps))
    return torch.tensor(out, dtype=torch.float64)


def _batch():
    """Groups of unequal size with a singleton, a constant group and NaN rewards, in shuffled order."""
    torch.manual_seed(0)
    group_ids = torch.tensor([0] * 4 + [1] * 3 + [2] + [3] * 4 + [4] * 5 + [5] * 3)
    rewards = torch.rand(len(group_ids), dtype=torch.float64)
    rewards[8:12] = 0.25  # group 3 constant
    rewards[4] = NAN  # group 1 keeps two scorable rewards
    rewards[17:19] = NAN  # group 5 keeps one -> behaves as a singleton
    perm = torch.randperm(len(group_ids))
    return rewards[perm], group_ids[perm]


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "batch_std"])
def test_matches_loop_reference(name):
    rewards, group_ids = _batch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = ADVANTAGES.lookup(name)(rewards, group_ids, eps=1e-6)
    assert got.shape == rewards.shape and not torch.isnan(got).any()
    assert torch.allclose(got, loop_reference(name, rewards, group_ids), atol=1e-12)


def test_grpo_hand_worked():
    # group [1, 0, 0, 1]: mean 0.5, Bessel std sqrt(1/3) = 0.57735 -> A = +-0.5 / 0.57735 = +-0.866025
    # group [2, 4]: mean 3, std sqrt(2) -> A = -+1 / 1.414214 = -+0.707107
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 4.0])
    group_ids = torch.tensor([0, 0, 0, 0, 1, 1])
    got = ADVANTAGES.lookup("grpo")(rewards, group_ids, eps=0.0)
    want = torch.tensor([0.866025, -0.866025, -0.866025, 0.866025, -0.707107, 0.707107])
    assert torch.allclose(got, want, atol=1e-6)
    # std_ddof=0: population std 0.5 -> A = +-1
    got0 = ADVANTAGES.lookup("grpo")(rewards[:4], group_ids[:4], eps=0.0, std_ddof=0)
    assert got0.tolist() == [1.0, -1.0, -1.0, 1.0]


def test_eps_is_added_to_std():
    # [0, 1]: std sqrt(0.5) = 0.707107; with eps 0.1: 0.5 / 0.807107 = 0.619497
    got = ADVANTAGES.lookup("grpo")(torch.tensor([0.0, 1.0]), torch.tensor([0, 0]), eps=0.1)
    assert got[1].item() == pytest.approx(0.5 / (math.sqrt(0.5) + 0.1), rel=1e-6)


@pytest.mark.parametrize("name", ADVANTAGES.names())
def test_constant_group_gets_exactly_zero(name):
    rewards = torch.tensor([0.1, 0.1, 0.1, 1.0, 1.0, 1.0])  # 0.1 * 3 / 3 != 0.1 in float
    group_ids = torch.tensor([0, 0, 0, 1, 1, 1])
    kwargs = {"lengths": torch.tensor([3, 5, 7, 2, 2, 2])} if name == "reinforce_pp_baseline" else {}
    if name == "passk_analytic":
        rewards, kwargs = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0]), {"k": 2}
    assert ADVANTAGES.lookup(name)(rewards, group_ids, **kwargs).tolist() == [0.0] * 6


def test_nan_is_unscorable_zero_and_excluded_from_group_stats():
    grpo = ADVANTAGES.lookup("grpo")
    with_nan = grpo(torch.tensor([1.0, NAN, 0.0]), torch.tensor([0, 0, 0]))
    without = grpo(torch.tensor([1.0, 0.0]), torch.tensor([0, 0]))
    assert with_nan[1].item() == 0.0
    assert with_nan[[0, 2]].tolist() == without.tolist()


def test_singleton_is_zero_with_warning_or_verl():
    rewards, group_ids = torch.tensor([0.7, 1.0, 0.0]), torch.tensor([5, 6, 6])
    with pytest.warns(UserWarning, match="single scorable"):
        got = ADVANTAGES.lookup("grpo")(rewards, group_ids)
    assert got[0].item() == 0.0
    # verl: mu := 0, sigma := 1 -> 0.7 / (1 + 1e-6)
    verl = ADVANTAGES.lookup("grpo")(rewards, group_ids, singleton="verl", eps=1e-6)
    assert verl[0].item() == pytest.approx(0.7 / (1 + 1e-6), rel=1e-7)
    assert verl[1:].tolist() == got[1:].tolist()
    with pytest.raises(ValueError, match="singleton"):
        ADVANTAGES.lookup("grpo")(rewards, group_ids, singleton="trl")


def test_dr_grpo_and_rloo_hand_worked():
    # [1, 0, 0]: mean 1/3 -> Dr.GRPO [2/3, -1/3, -1/3]; RLOO = 3/2 * that = [1, -1/2, -1/2]
    rewards, group_ids = torch.tensor([1.0, 0.0, 0.0]), torch.zeros(3, dtype=torch.long)
    assert torch.allclose(ADVANTAGES.lookup("dr_grpo")(rewards, group_ids), torch.tensor([2 / 3, -1 / 3, -1 / 3]))
    assert torch.allclose(ADVANTAGES.lookup("rloo")(rewards, group_ids), torch.tensor([1.0, -0.5, -0.5]))


def test_rloo_normalize_whitens_the_batch():
    rewards, group_ids = _batch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = ADVANTAGES.lookup("rloo")(rewards, group_ids)
        got = ADVANTAGES.lookup("rloo")(rewards, group_ids, normalize=True)
    valid = ~torch.isnan(rewards)
    want = (raw[valid] - raw[valid].mean()) / (raw[valid].std() + 1e-4)
    assert torch.allclose(got[valid], want, atol=1e-12)


def test_batch_std_uses_raw_reward_std():
    # groups [0, 1] and [0, 3]: raw rewards [0, 1, 0, 3] have Bessel std sqrt(2) = 1.414214
    # A = (r - mu_g) / 1.414214 -> [-0.353553, 0.353553, -1.060660, 1.060660]
    got = ADVANTAGES.lookup("batch_std")(torch.tensor([0.0, 1.0, 0.0, 3.0]), torch.tensor([0, 0, 1, 1]), eps=0.0)
    assert torch.allclose(got, torch.tensor([-0.353553, 0.353553, -1.060660, 1.060660]), atol=1e-6)


def _rpp_reference(rewards, group_ids, lengths, whiten):
    """Broadcast a_i to tokens, whiten over all tokens (verl: Bessel, +1e-8; OpenRLHF: population, max 1e-8)."""
    groups = _groups(rewards, group_ids)
    tokens, per_seq = [], []
    for r, g, n in zip(rewards.tolist(), group_ids.tolist(), lengths.tolist()):
        xs = groups[g]
        a = 0.0 if math.isnan(r) or len(xs) < 2 else r - sum(xs) / len(xs)
        per_seq.append(a)
        tokens += [] if math.isnan(r) else [a] * n
    m = sum(tokens) / len(tokens)
    ss = sum((t - m) ** 2 for t in tokens)
    if whiten == "verl":
        scale = 1 / math.sqrt(ss / (len(tokens) - 1) + 1e-8)
    else:
        scale = 1 / math.sqrt(max(ss / len(tokens), 1e-8))
    return torch.tensor([0.0 if math.isnan(r) else (a - m) * scale for a, r in zip(per_seq, rewards.tolist())])


@pytest.mark.parametrize("whiten", ["verl", "openrlhf"])
def test_reinforce_pp_baseline_token_weighted_whitening(whiten):
    rewards, group_ids = _batch()
    lengths = torch.randint(1, 20, rewards.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = ADVANTAGES.lookup("reinforce_pp_baseline")(rewards, group_ids, lengths=lengths, whiten=whiten)
    assert torch.allclose(got, _rpp_reference(rewards, group_ids, lengths, whiten).double(), atol=1e-9)


def test_reinforce_pp_baseline_needs_lengths():
    with pytest.raises(ValueError, match="lengths"):
        ADVANTAGES.lookup("reinforce_pp_baseline")(torch.tensor([0.0, 1.0]), torch.tensor([0, 0]))


def test_passk_best_of_group_hand_worked():
    # group [0.2, 0.9, 0.5, 0.1]: best is index 1, gap 0.9 - 0.5 = 0.4; mean 0.425, squared deviations sum 0.3875,
    # Bessel std sqrt(0.3875 / 3) = 0.359398 -> A = 0.4 / 0.359398 = 1.112973
    # group [0.9, 0.3, 0.9]: tie for the max -> gap 0 -> all 0 (docs/methods.md §1.14 #13)
    rewards = torch.tensor([0.2, 0.9, 0.5, 0.1, 0.9, 0.3, 0.9], dtype=torch.float64)
    group_ids = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    got = ADVANTAGES.lookup("passk_best_of_group")(rewards, group_ids, eps=0.0)
    std = torch.tensor([0.2, 0.9, 0.5, 0.1], dtype=torch.float64).std().item()
    assert std == pytest.approx(0.359398, abs=1e-6)
    assert got.tolist() == pytest.approx([0.0, 1.112973, 0.0, 0.0, 0.0, 0.0, 0.0], abs=1e-6)
    no_std = ADVANTAGES.lookup("passk_best_of_group")(rewards, group_ids, divide_by_std=False)
    assert no_std[1].item() == pytest.approx(0.4, abs=1e-12)


def test_passk_best_of_group_matches_loop_with_first_index_ties():
    torch.manual_seed(4)
    group_ids = torch.arange(6).repeat_interleave(4)
    rewards = torch.randint(0, 4, (24,)).double() / 3  # many ties
    rewards[5] = NAN
    got = ADVANTAGES.lookup("passk_best_of_group")(rewards, group_ids, eps=1e-6)
    want = []
    for g in range(6):
        rs = rewards[g * 4 : g * 4 + 4].tolist()
        scored = [(r, i) for i, r in enumerate(rs) if not math.isnan(r)]
        best = max(scored, key=lambda p: (p[0], -p[1]))  # first index on ties
        second = max(r for r, i in scored if i != best[1])
        std = _mean_std([r for r, _ in scored])[1]
        want += [(best[0] - second) / (std + 1e-6) if i == best[1] else 0.0 for i in range(4)]
    assert got.tolist() == pytest.approx(want, abs=1e-12)


def _passk_bruteforce(correct, k):
    """Average, over all k-subsets containing each completion, of the group-normalised pass@k reward."""
    n = len(correct)
    subsets = list(itertools.combinations(range(n), k))
    score = {s: float(any(correct[i] for i in s)) for s in subsets}
    mean = sum(score.values()) / len(subsets)
    std = math.sqrt(sum((v - mean) ** 2 for v in score.values()) / len(subsets))
    if std == 0:
        return [0.0] * n
    out = []
    for i in range(n):
        mine = [(score[s] - mean) / std for s in subsets if i in s]
        out.append(sum(mine) / len(mine))
    return out


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_passk_analytic_matches_bruteforce(k):
    patterns = [[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 0, 1, 1, 0, 1], [0] * 6, [1] * 6]
    rewards = torch.tensor(sum(patterns, []), dtype=torch.float64)
    group_ids = torch.arange(len(patterns)).repeat_interleave(6)
    got = ADVANTAGES.lookup("passk_analytic")(rewards, group_ids, k=k)
    want = sum((_passk_bruteforce(p, k) for p in patterns), [])
    assert got.tolist() == pytest.approx(want, abs=1e-9)


def test_passk_analytic_k1_is_grpo_with_population_std():
    rewards, group_ids = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0]), torch.zeros(5, dtype=torch.long)
    got = ADVANTAGES.lookup("passk_analytic")(rewards, group_ids, k=1)
    want = ADVANTAGES.lookup("grpo")(rewards, group_ids, eps=0.0, std_ddof=0)
    assert torch.allclose(got, want, atol=1e-6)


def test_passk_analytic_rejects_bad_input():
    fn = ADVANTAGES.lookup("passk_analytic")
    with pytest.raises(ValueError, match="binary"):
        fn(torch.tensor([0.5, 1.0]), torch.tensor([0, 0]), k=1)
    with pytest.raises(ValueError, match="k=3"):
        fn(torch.tensor([0.0, 1.0]), torch.tensor([0, 0]), k=3)
    with pytest.raises(ValueError, match="needs k"):
        fn(torch.tensor([0.0, 1.0]), torch.tensor([0, 0]))


def test_shape_and_dtype_errors():
    with pytest.raises(ValueError, match=r"\(N,\)"):
        ADVANTAGES.lookup("grpo")(torch.zeros(3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="float"):
        ADVANTAGES.lookup("grpo")(torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long))


def test_registry_lookup_unknown_name_lists_names():
    with pytest.raises(ValueError) as err:
        ADVANTAGES.lookup("grop")
    msg = str(err.value)
    assert "did you mean 'grpo'" in msg
    for name in ["grpo", "dr_grpo", "rloo", "reinforce_pp_baseline", "passk_analytic"]:
        assert name in msg


def test_registry_bind_typo_keyword_fails_before_compute():
    with pytest.raises(ValueError, match="'esp'.*did you mean 'eps'"):
        ADVANTAGES.bind("grpo", esp=1e-4)
    fn = ADVANTAGES.bind("grpo", eps=0.0)
    assert fn(torch.tensor([0.0, 2.0]), torch.tensor([0, 0])).tolist() == pytest.approx([-0.707107, 0.707107], abs=1e-6)
