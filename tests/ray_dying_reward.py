"""For tests/test_ray.py: digit_fraction (tests/gpu/digit_reward.py), but the first Ray reward worker to score step 1
kills its own process (os._exit) before answering; `marker` (created atomically) makes that happen once per run."""

import os


def digit_fraction_dying_once(samples, completions, *, marker: str, step=None, **kwargs):
    if step == 1:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            pass
        else:
            os._exit(1)
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]
