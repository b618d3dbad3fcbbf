"""Answer extraction and checking on single strings: the pure, bounded parts of the reward functions.

Every function here must return quickly on hostile model output (megabytes of text, 100,000-digit numbers,
"\\frac{" * 5000, "10^{10^{10}}"):
1. Only the last `TAIL_CHARS` characters are searched for an answer (answers come at the end).
2. Extraction is done by `str.rfind` and brace counting, not by backtracking regexes.
3. Numbers are compared as floats (never `int()` of an unbounded digit string).
4. math-verify runs with its own signal-based timeouts in the main thread; in other threads (where signals
   are unavailable) an expression that would be costly to evaluate (power towers, huge factorials) is
   rejected before math-verify sees it.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
from typing import Any

TAIL_CHARS = 2000
EXTRACT_MODES = ("auto", "answer_tag", "boxed", "none")

_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?")


def tail(text: str, limit: int = TAIL_CHARS) -> str:
    return text[-limit:] if len(text) > limit else text


def answer_tag(text: str, tag: str = "answer") -> str | None:
    """Content of the last complete <tag>...</tag> in the tail of `text`, or None."""
    text = tail(text)
    start = text.rfind(f"<{tag}>")
    if start < 0:
        return None
    start += len(tag) + 2
    end = text.find(f"</{tag}>", start)
    return text[start:end] if end >= 0 else None


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) with balanced braces in the tail of `text`, or None."""
    text = tail(text)
    at = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if at < 0:
        return None
    open_at = text.find("{", at)
    if open_at < 0 or text[at:open_at].strip() not in ("\\boxed", "\\fbox"):
        return None
    depth = 0
    for pos in range(open_at, len(text)):
        depth += {"{": 1, "}": -1}.get(text[pos], 0)
        if depth == 0:
            return text[open_at + 1 : pos]
    return None  # unbalanced: the answer was cut off


def extract(text: str, mode: str = "auto") -> str | None:
    """The answer part of a completion.

    auto: the <answer> content if present (else the whole tail), then the last \\boxed{} inside it if any.
    answer_tag / boxed: only that (None when absent). none: the whole tail.
    """
    if mode == "none":
        return tail(text)
    if mode == "answer_tag":
        return answer_tag(text)
    if mode == "boxed":
        return last_boxed(text)
    if mode != "auto":
        raise ValueError(f"unknown extract mode {mode!r}; choose from {list(EXTRACT_MODES)}")
    region = answer_tag(text)
    region = tail(text) if region is None else region
    boxed = last_boxed(region)
    return region if boxed is None else boxed


def normalize(text: str, *, case_sensitive: bool = False) -> str:
    """Whitespace-collapsed, $-stripped, trailing-period-stripped (and lower-cased) answer text."""
    text = " ".join(text.split()).strip("$ ").rstrip(".").strip()
    return text if case_sensitive else text.lower()


def exact_match(text: str, answer: Any, *, extract_mode: str = "auto", case_sensitive: bool = False) -> float:
    got = extract(text, extract_mode)
    if got is None:
        return 0.0
    return float(normalize(got, case_sensitive=case_sensitive) == normalize(str(answer), case_sensitive=case_sensitive))


def to_number(text: str) -> float | None:
    """Float value of one number token ("1,234", "-0.5", "3/4", "1e5"); inf for overflow, None if invalid."""
    text = text.replace(",", "").replace(" ", "")
    try:
        if "/" in text:
            num, den = text.split("/")
            return float(num) / float(den) if float(den) != 0 else None
        return float(text)  # float() of a long digit string is linear and saturates to inf: safe
    except (ValueError, OverflowError, ZeroDivisionError):
        return None


def last_number(text: str) -> float | None:
    """The last number in the tail of `text`, as a float, or None."""
    found = None
    for m in _NUMBER.finditer(tail(text)):
        found = m.group(0)
    return None if found is None else to_number(found)


def numeric_match(text: str, answer: Any, *, rel_tol: float = 1e-6, abs_tol: float = 1e-9, extract_mode="auto"):
    """1.0 when the last number of the extracted answer is within tolerance of `answer`."""
    gold = answer if isinstance(answer, (int, float)) and not isinstance(answer, bool) else to_number(str(answer))
    if gold is None:
        raise ValueError(
            f"numeric reward: reference answer {str(answer)[:100]!r} is not a number; use 'exact' or 'math'"
        )
    region = extract(text, extract_mode)
    got = None if region is None else last_number(region)
    if got is None or not math.isfinite(got):
        return 0.0
    return float(math.isclose(got, float(gold), rel_tol=rel_tol, abs_tol=abs_tol))


# ---------------------------------------------------------------- math-verify ----------------------------------


def math_match(text: str, answer: Any, *, timeout_s: int = 2) -> float:
    """1.0 when math-verify finds the completion's answer equivalent to `answer` (LaTeX or plain)."""
    from math_verify import parse, verify

    timeout = _timeout(timeout_s)
    gold = _parse_gold(str(answer), timeout)
    region = answer_tag(text)
    if region is None:
        pred = parse(tail(text), parsing_timeout=timeout)
    else:  # the content of <answer> is the answer itself: read it as one LaTeX expression ("1+x^2", "(1,2)")
        pred = _parse_as_latex(tail(region), timeout)
    if not gold or not pred or any(_is_costly(p) for p in pred):
        return 0.0
    return float(verify(gold, pred, timeout_seconds=timeout))


def _parse_as_latex(text: str, timeout: int | None) -> list:
    """math-verify parse of a bare answer, wrapped in $...$ unless it has math delimiters already."""
    from math_verify import parse

    wrapped = text if ("$" in text or "\\boxed" in text) else f"${text}$"
    return parse(wrapped, parsing_timeout=timeout) or parse(text, parsing_timeout=timeout)


@functools.lru_cache(maxsize=4096)  # each answer is scored G times per step
def _parse_gold_cached(answer: str, timeout: int | None) -> tuple:
    return tuple(_parse_as_latex(answer, timeout))


def _parse_gold(answer: str, timeout: int | None) -> list:
    return list(_parse_gold_cached(tail(answer), timeout))


def _timeout(timeout_s: int) -> int | None:
    """math-verify's timeouts use SIGALRM, which only the main thread may set."""
    if threading.current_thread() is not threading.main_thread():
        _quiet_math_verify()
        return None
    return timeout_s or None


@functools.cache
def _quiet_math_verify() -> None:
    """Drop math-verify's per-call 'Timeout is disabled' warning: off-main-thread we bound cost ourselves."""

    class _NoTimeoutWarning(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "Timeout is disabled" not in record.getMessage()

    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).addFilter(_NoTimeoutWarning())


def _is_costly(expr: Any, depth: int = 0) -> bool:
    """True when evaluating `expr` could take unbounded time: power towers, factorials of big numbers."""
    import sympy

    if not isinstance(expr, sympy.Basic):
        return False
    if depth > 100:
        return True
    if isinstance(expr, sympy.Integer):
        return abs(int(expr)).bit_length() > 60_000  # ~18,000 digits
    if any(_is_costly(arg, depth + 1) for arg in expr.args):
        return True
    if isinstance(expr, sympy.Pow):
        return _magnitude(expr.exp) > 10_000 or _magnitude(expr.exp) * _log10(_magnitude(expr.base)) > 100_000
    if isinstance(expr, (sympy.factorial, sympy.factorial2, sympy.subfactorial, sympy.gamma, sympy.RisingFactorial)):
        return _magnitude(expr.args[0]) > 1000
    return False


def _magnitude(expr: Any) -> float:
    """|value| of a constant sub-expression already known to be cheap; 0 for symbolic ones."""
    if expr.free_symbols:
        return 0.0
    try:
        value = complex(expr.evalf(15))
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return abs(value) if math.isfinite(abs(value)) else math.inf


def _log10(value: float) -> float:
    return math.log10(value) if value > 1 else 0.0
