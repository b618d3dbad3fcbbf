"""Reward functions for the data-parallel tests (tests/dp_train.py): cheap, deterministic, and informative for a
random micro model."""


def digit_fraction(samples, completions, **kwargs):
    """Dense: the share of digits in the completion."""
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


def starts_with_digit(samples, completions, **kwargs):
    """0/1, so that some groups are all equal (dynamic sampling drops them) and some are not."""
    return [float(c[:1].isdigit()) for c in completions]


def odd_length_or_none(samples, completions, **kwargs):
    """None (not applicable) on completions of even length, else the length over 10."""
    return [len(c) / 10 if len(c) % 2 else None for c in completions]


_calls = {"n": 0}


def digit_fraction_then_die(samples, completions, **kwargs):
    """digit_fraction, but the process kills itself with SIGKILL (no cleanup, as `kill -9`) on reward call number
    RLVR_DIE_AT (tests/fsdp_train.py: a crash between two checkpoints)."""
    import os
    import signal

    _calls["n"] += 1
    if _calls["n"] == int(os.environ.get("RLVR_DIE_AT", "0")):
        os.kill(os.getpid(), signal.SIGKILL)
    return digit_fraction(samples, completions)
