"""A CPU-bound verifier for benchmarks/ray_rewards.py: the digit fraction of each completion, after a few ms of
pure-Python work per row (the cost of parsing and checking a proof or running a small test, without a sandbox)."""


def checked_digit_fraction(samples, completions, **kwargs):
    out = []
    for c in completions:
        acc = 0
        for i in range(60_000):  # 3.6 ms per row on one core here (docs/bench/ray_rewards.json)
            acc = (acc * 31 + i) % 1_000_003
        out.append(sum(ch.isdigit() for ch in c) / max(len(c), 1) + 0.0 * acc)
    return out
