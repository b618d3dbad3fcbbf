"""VideoSSR's smooth rewards (arXiv 2511.06281): interval IoU, per-class counting accuracy, normalised footrule.

    REWARDS.build("interval_iou")(samples, ["1.0-2.0"])     # sample.answer "1.5-2.5" -> 0.5 / 1.5 = 0.333
    REWARDS.build("count_accuracy")(samples, ["3,1,4"])     # answer "3,2,4" -> (1 + 0.5 + 1) / 3 = 0.833
    REWARDS.build("footrule")(samples, ["213456"])          # answer "123456" -> 1 - 2 / 18 = 0.889
    REWARDS.build("videossr")(samples, completions)         # each row by sample.meta["data_source"]

1. Anomaly grounding: the whole stripped response must be `<start>-<end>` in seconds; r = |P ∩ G| / |P ∪ G| of the
   two intervals; no match, a non-number or start > end give 0; a zero-length union gives 1 if they overlap else 0.
2. Object counting: the response's integers must be exactly three (circles, squares, triangles);
   r = (1/3) Σ_k max(0, 1 − |p_k − g_k| / (|g_k| + 1e-9)).
3. Temporal jigsaw: the stripped response must be a permutation of the answer's symbols; with D the Spearman
   footrule Σ_c |pos_pred(c) − pos_gt(c)|, r = 1 − D / ⌊n²/2⌋ (the largest footrule of n items).
`extract="whole"` (default) parses the whole response as the reference code does; `"last_match"` takes the last
interval, the last three integers, or the last run of n symbols, for responses that reason first. `exact=True` turns
each reward into exact match, 1 when the interval, all three counts or the order are right and 0 otherwise: the
binary baseline the smooth rewards are compared with (each smooth reward is 1.0 exactly when the answer is right).
An unparseable answer is a legitimate 0; a reference answer the reward cannot read is an error naming it.
The reference code's jigsaw generator labels its rows "shuffled" while its router expects "jigsaw" (so its jigsaw
rows were never scored); `videossr` accepts both.
"""

from __future__ import annotations

import re

from rlvr.batch import Sample
from rlvr.rewards.core import REWARDS, RewardFn

READ_LIMIT = 2000  # bounded: the verifiers read at most this many characters of a completion
INTERVAL = r"(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)"
INTEGER = re.compile(r"\d{1,12}")  # bounded: never int() a 100,000-digit string
EXTRACT = ("whole", "last_match")


def _check_extract(extract: str) -> None:
    if extract not in EXTRACT:
        raise ValueError(f"extract must be one of {list(EXTRACT)}, got {extract!r}")


def _interval(text: str, extract: str) -> tuple[float, float] | None:
    text = text[:READ_LIMIT].strip()
    if extract == "whole":
        found = re.fullmatch(INTERVAL, text)
    else:
        found = ([None] + list(re.finditer(INTERVAL, text)))[-1]
    return None if found is None else (float(found.group(1)), float(found.group(2)))


def interval_iou(text: str, answer: str, *, extract: str = "whole") -> float:
    """IoU of the predicted and the reference time intervals ("s-e", seconds)."""
    gold = _interval(str(answer), "whole")
    if gold is None or gold[0] > gold[1]:
        raise ValueError(f"interval_iou: reference answer {answer!r} is not '<start>-<end>' with start <= end")
    pred = _interval(text, extract)
    if pred is None or pred[0] > pred[1]:
        return 0.0
    inter = max(0.0, min(pred[1], gold[1]) - max(pred[0], gold[0]))
    union = (pred[1] - pred[0]) + (gold[1] - gold[0]) - inter
    if union < 1e-9:  # both intervals empty
        return 1.0 if inter > 0 else 0.0
    return inter / union


def count_accuracy(text: str, answer: str, *, extract: str = "whole") -> float:
    """Mean over the three shape classes of max(0, 1 - relative count error)."""
    gold = [int(x) for x in INTEGER.findall(str(answer))]
    if len(gold) != 3:
        raise ValueError(f"count_accuracy: reference answer {answer!r} is not three comma-separated counts")
    found = INTEGER.findall(text[:READ_LIMIT])
    pred = found[-3:] if extract == "last_match" else found
    if len(pred) != 3:
        return 0.0
    return sum(max(0.0, 1 - abs(int(p) - g) / (abs(g) + 1e-9)) for p, g in zip(pred, gold)) / 3


def footrule(text: str, answer: str, *, extract: str = "whole") -> float:
    """1 - Spearman footrule / its maximum, when the response is a permutation of the answer's symbols."""
    gold = str(answer).strip()
    if not gold or len(set(gold)) != len(gold):
        raise ValueError(f"footrule: reference answer {answer!r} is not an ordering of distinct symbols")
    pred = text[:READ_LIMIT].strip()
    if extract == "last_match":
        runs = re.findall(f"[{re.escape(gold)}]{{{len(gold)}}}", pred)
        pred = runs[-1] if runs else ""
    if sorted(pred) != sorted(gold):
        return 0.0
    distance = sum(abs(pred.index(c) - gold.index(c)) for c in gold)
    return 1 - distance / (len(gold) ** 2 // 2) if len(gold) > 1 else 1.0


SCORERS = {"grounding": interval_iou, "counting": count_accuracy, "jigsaw": footrule,
           "shuffled": footrule}  # the reference generator's label for jigsaw rows


def _scored(score, text: str, answer: str, *, extract: str, exact: bool) -> float:
    value = score(text, answer, extract=extract)
    return float(value == 1.0) if exact else value  # 1.0 only for the right interval / counts / order


def _per_row(score, extract: str, exact: bool) -> RewardFn:
    _check_extract(extract)

    def fn(samples: list[Sample], completions: list[str], **kw) -> list[float | None]:
        return [None if s.answer is None else _scored(score, c, s.answer, extract=extract, exact=exact)
                for s, c in zip(samples, completions)]

    return fn


@REWARDS.register("interval_iou")
def interval_iou_reward(*, extract: str = "whole", exact: bool = False) -> RewardFn:
    """VideoSSR anomaly grounding (arXiv 2511.06281): IoU of time intervals; the reference code's parsing."""
    return _per_row(interval_iou, extract, exact)


@REWARDS.register("count_accuracy")
def count_accuracy_reward(*, extract: str = "whole", exact: bool = False) -> RewardFn:
    """VideoSSR object counting (arXiv 2511.06281): per-class relative counting accuracy."""
    return _per_row(count_accuracy, extract, exact)


@REWARDS.register("footrule")
def footrule_reward(*, extract: str = "whole", exact: bool = False) -> RewardFn:
    """VideoSSR temporal jigsaw (arXiv 2511.06281): 1 - normalised Spearman footrule."""
    return _per_row(footrule, extract, exact)


@REWARDS.register("videossr")
def videossr_reward(*, extract: str = "whole", exact: bool = False) -> RewardFn:
    """VideoSSR's three rewards routed by sample.meta["data_source"] (grounding, counting, jigsaw or the reference
    generator's "shuffled"); None for a row of another source. `exact`: exact match instead (module docstring)."""
    _check_extract(extract)

    def fn(samples: list[Sample], completions: list[str], **kw) -> list[float | None]:
        out = []
        for s, c in zip(samples, completions):
            score = SCORERS.get(str(s.meta.get("data_source", "")))
            out.append(None if score is None or s.answer is None
                       else _scored(score, c, s.answer, extract=extract, exact=exact))
        return out

    return fn
