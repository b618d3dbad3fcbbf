"""Per-token loss weights from token entropy, (B, T), multiplied into the per-token loss (spec §3.8).

    w = TOKEN_WEIGHTS.lookup("high_entropy")(entropy, mask, quantile=0.2)   # 1 on the top 20% entropy tokens

The weights are detached. The entropy bonus, if on, should use the same effective mask (TRL).
TODO: `perception` (VPPO, specs/vppo.md) registers here once the VLM policy exists.
"""

from __future__ import annotations

import torch

from rlvr.registry import Registry

TOKEN_WEIGHTS = Registry("token weight")


@TOKEN_WEIGHTS.register("none")
def none(entropy, mask) -> torch.Tensor:
    """All tokens weigh 1 (no selection); no paper id."""
    return torch.ones_like(entropy, dtype=torch.float32)


def entropy_threshold(entropy: torch.Tensor, mask: torch.Tensor, *, quantile: float) -> torch.Tensor:
    """The (1 - quantile) quantile of the valid tokens' entropy (linear interpolation, as torch/TRL)."""
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    valid = entropy.detach()[mask.bool()].float()
    if valid.numel() == 0:
        return torch.tensor(-torch.inf, device=entropy.device)
    return torch.quantile(valid, 1 - quantile)


@TOKEN_WEIGHTS.register("high_entropy")
def high_entropy(entropy, mask, *, quantile: float = 0.2, threshold: float | None = None) -> torch.Tensor:
    """1 on tokens with entropy >= the (1 - quantile) quantile, else 0; arXiv 2506.01939 (TRL top_entropy_quantile).

    The paper takes the quantile over all valid tokens of all processes: compute it globally with
    `entropy_threshold` on the gathered entropies and pass it as `threshold`; otherwise it is local.
    """
    tau = entropy_threshold(entropy, mask, quantile=quantile) if threshold is None else threshold
    keep = mask.bool() & (entropy.detach() >= tau)
    return keep.to(torch.float32)
