"""Named random streams: every random draw of a run comes from (run seed, stream name, keys), nothing else.

    gen = generator(seed, "minibatch", step)                # a torch.Generator for one named draw
    seeds = row_seeds(seed, "rollout", positions, members)  # (N,) int64: one sampling stream per completion
    u = uniform(seeds, counters)                            # (N,) float64 in [0, 1): draw number `counter` of each

1. A stream is named, never built from ad-hoc seed arithmetic: `stream_seed(seed, name, *keys)` hashes the tuple
   (blake2b), so streams are independent and the same on every machine and Python version.
2. Sampling is counter-based: completion row r draws its t-th token from `uniform(seeds[r], t)`, a pure function
   (splitmix64, Steele et al. 2014) of the row's seed and the token position. A row therefore samples the same
   tokens whichever other rows share its batch, whichever data-parallel rank holds it, and after any resume: no
   generator state is saved or split across ranks. The row seed names the prompt's data position and the row's
   index in its group.
"""

from __future__ import annotations

import hashlib

import torch

_MASK64 = (1 << 64) - 1


def _signed(x: int) -> int:
    """An unsigned 64-bit constant as the int64 torch stores (two's complement)."""
    return x - (1 << 64) if x >= 1 << 63 else x


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX1 = _signed(0xBF58476D1CE4E5B9)
_MIX2 = _signed(0x94D049BB133111EB)


def stream_seed(seed: int, name: str, *keys: int) -> int:
    """A 63-bit seed for the stream `name` of run `seed`, keyed by integers (step, data position ...)."""
    text = ":".join([str(int(seed)), name, *(str(int(k)) for k in keys)])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def generator(seed: int, name: str, *keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator seeded for one named draw (mini-batch order, replay sampling ...)."""
    return torch.Generator(device=device).manual_seed(stream_seed(seed, name, *keys))


def _shift(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic: it copies the sign bit)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def mix(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 tensors (wrapping arithmetic): a bijective 64-bit hash."""
    z = (z ^ _shift(z, 30)) * _MIX1
    z = (z ^ _shift(z, 27)) * _MIX2
    return z ^ _shift(z, 31)


def row_seeds(seed: int, name: str, *keys: torch.Tensor | list[int]) -> torch.Tensor:
    """(N,) int64 seeds, one per row, from the stream `name` and per-row integer keys (each (N,))."""
    z = torch.full_like(torch.as_tensor(keys[0], dtype=torch.long), stream_seed(seed, name))
    for k in keys:
        z = mix(z + torch.as_tensor(k, dtype=torch.long, device=z.device) * _GOLDEN)
    return z


def uniform(seeds: torch.Tensor, counters: torch.Tensor | int) -> torch.Tensor:
    """(N,) float64 uniforms in [0, 1): draw `counters` of each row's stream; the top 53 bits of the hash."""
    z = mix(seeds + (torch.as_tensor(counters, dtype=torch.long, device=seeds.device) + 1) * _GOLDEN)
    return _shift(z, 11).double() * 2.0**-53


def uniform_reference(seed: int, counter: int) -> float:
    """The same draw as `uniform` in plain Python integers (tests check the tensor version against it)."""
    z = (seed + (counter + 1) * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    z ^= z >> 31
    return (z >> 11) * 2.0**-53
