"""A dense reward for GPU smoke runs: the fraction of digits in the completion (varies even for a random model)."""


def digit_fraction(samples, completions, **kwargs):
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]
