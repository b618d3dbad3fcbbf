"""rlvr.rewards.video: VideoSSR's smooth rewards (arXiv 2511.06281) against hand-worked values, degenerate
intervals, wrong-length orderings and non-numeric answers; the router by data source, including the reference
generator's "shuffled" label for jigsaw rows."""

import random

import pytest

from rlvr.batch import Sample
from rlvr.rewards import REWARDS
from rlvr.rewards.video import count_accuracy, footrule, interval_iou


def test_interval_iou_hand_worked():
    # [1.0, 2.0] vs [1.5, 2.5]: intersection 0.5, union 1.0 + 1.0 - 0.5 = 1.5 -> 1/3
    assert interval_iou("1.0-2.0", "1.5-2.5") == pytest.approx(1 / 3)
    assert interval_iou(" 1.5 - 2.5 \n", "1.5-2.5") == pytest.approx(1.0)  # spaces around the dash are allowed
    assert interval_iou("0.0-10.0", "2.0-4.0") == pytest.approx(0.2)  # contains it: 2 / 10
    assert interval_iou("5.0-6.0", "1.0-2.0") == 0.0  # disjoint
    assert interval_iou("3-4", "1.0-3.0") == 0.0  # touching: zero-length intersection


def test_interval_iou_degenerate_and_malformed():
    assert interval_iou("2.0-1.0", "1.0-2.0") == 0.0  # reversed prediction
    assert interval_iou("1.5-1.5", "1.0-2.0") == 0.0  # a zero-length prediction inside the truth: intersection 0
    assert interval_iou("1.0-1.0", "1.0-1.0") == 0.0  # both empty: union 0, intersection 0
    for bad in ("", "about 1.0-2.0", "1.0-2.0 seconds", "1.0 to 2.0", "a-b", "1.2.3-4", "-1.0-2.0"):
        assert interval_iou(bad, "1.0-2.0") == 0.0, bad  # the whole response must be the interval
    assert interval_iou("I think 9-9. So 1.0-2.0", "1.0-2.0", extract="last_match") == pytest.approx(1.0)
    with pytest.raises(ValueError, match="reference answer '3-1'"):
        interval_iou("1-2", "3-1")


def test_count_accuracy_hand_worked():
    # answer 3,2,4; prediction 3,1,4: 1 + (1 - 1/2) + 1 = 2.5 -> 0.8333
    assert count_accuracy("3,1,4", "3,2,4") == pytest.approx(2.5 / 3)
    assert count_accuracy("3, 2, 4", "3,2,4") == pytest.approx(1.0)
    assert count_accuracy("9,2,4", "3,2,4") == pytest.approx((0 + 1 + 1) / 3)  # an error of 2x the count clips at 0
    assert count_accuracy("3,2", "3,2,4") == 0.0 and count_accuracy("3,2,4,1", "3,2,4") == 0.0  # not three numbers
    assert count_accuracy("three,two,four", "3,2,4") == 0.0  # non-numeric
    assert count_accuracy("9" * 5000 + ",2,4", "3,2,4") == 0.0  # bounded: a huge number is many numbers, never int()ed
    assert count_accuracy("circles 1, squares 2: 3,2,4", "3,2,4", extract="last_match") == pytest.approx(1.0)
    assert count_accuracy("0,2,4", "0,2,4") == pytest.approx(1.0)  # a 0 truth: exact is 1 (reference quirk §5 #4)
    assert count_accuracy("1,2,4", "0,2,4") == pytest.approx(2 / 3)  # ... and any other count scores 0 for it


def test_footrule_hand_worked():
    assert footrule("123456", "123456") == 1.0
    assert footrule("213456", "123456") == pytest.approx(1 - 2 / 18)  # two symbols one place off
    assert footrule("654321", "123456") == pytest.approx(0.0)  # the reversal is the largest footrule, 18 for n = 6
    assert footrule("21", "12") == pytest.approx(0.0)  # n = 2: max footrule 2
    assert footrule("12345", "123456") == 0.0 and footrule("1234567", "123456") == 0.0  # wrong length
    assert footrule("123455", "123456") == 0.0 and footrule("abcdef", "123456") == 0.0  # not a permutation
    assert footrule("order: 213456", "123456", extract="last_match") == pytest.approx(1 - 2 / 18)


def test_footrule_random_permutations_average_the_derived_value():
    # E[D] = (n^2 - 1) / 3 for a uniform permutation, so E[r] = 1 - (35/3) / 18 = 0.352 for n = 6
    rng = random.Random(0)
    gold = "341562"
    values = [footrule("".join(rng.sample(gold, 6)), gold) for _ in range(20000)]
    assert sum(values) / len(values) == pytest.approx(1 - (35 / 3) / 18, abs=0.005)


def test_registered_rewards_and_the_router():
    rows = [Sample("q", answer="1.0-2.0", meta={"data_source": "grounding"}),
            Sample("q", answer="1,1,1", meta={"data_source": "counting"}),
            Sample("q", answer="123456", meta={"data_source": "shuffled"}),  # the reference generator's jigsaw label
            Sample("q", answer="123456", meta={"data_source": "jigsaw"}),
            Sample("q", answer="x", meta={"data_source": "other"})]
    out = REWARDS.build("videossr")(rows, ["1.0-2.0", "1,1,2", "213456", "123456", "x"])
    assert out[0] == pytest.approx(1.0) and out[1] == pytest.approx(2 / 3) and out[4] is None
    assert out[2] == pytest.approx(1 - 2 / 18) and out[3] == 1.0
    assert REWARDS.build("interval_iou")(rows[:1], ["1.5-2.5"])[0] == pytest.approx(1 / 3)
    assert REWARDS.build("footrule", extract="last_match")(rows[3:4], ["so 123456"]) == [1.0]
    with pytest.raises(ValueError, match="extract must be one of"):
        REWARDS.build("count_accuracy", extract="first")


def test_exact_match_option_is_binary():
    # the smooth values of these completions are 1, 1/3, 1, 2/3, 1 - 2/18, 1: exact match keeps only the 1s
    rows = [Sample("q", answer="1.0-2.0", meta={"data_source": "grounding"}),
            Sample("q", answer="1.0-2.0", meta={"data_source": "grounding"}),
            Sample("q", answer="1,1,1", meta={"data_source": "counting"}),
            Sample("q", answer="1,1,1", meta={"data_source": "counting"}),
            Sample("q", answer="123456", meta={"data_source": "jigsaw"}),
            Sample("q", answer="123456", meta={"data_source": "jigsaw"}),
            Sample("q", answer="x", meta={"data_source": "other"})]
    completions = ["1.0-2.0", "1.5-2.5", "1, 1, 1", "1,1,2", "213456", "123456", "x"]
    assert REWARDS.build("videossr", exact=True)(rows, completions) == [1.0, 0.0, 1.0, 0.0, 0.0, 1.0, None]
    assert REWARDS.build("videossr")(rows, completions)[1] == pytest.approx(1 / 3)  # smooth stays the default
    assert REWARDS.build("interval_iou", exact=True)(rows[:2], ["1.0-2.0", "0.9-2.0"]) == [1.0, 0.0]
    assert REWARDS.build("count_accuracy", exact=True)(rows[2:4], ["1,1,1", "1,1,0"]) == [1.0, 0.0]
    assert REWARDS.build("footrule", exact=True)(rows[4:6], ["123465", "123456"]) == [0.0, 1.0]
