"""Per-token loss weights (N, T), multiplied into the per-token loss in the update (docs/methods.md §1.8).

    w = TOKEN_WEIGHTS.lookup("high_entropy")(mask, entropy=entropy, quantile=0.2)   # 1 on the top 20% entropy tokens

A weight function takes the trained-token mask (N, T) positionally and the batch values it declared at registration
as keywords (`TOKEN_WEIGHTS.needs(name)`; rlvr.stages.token_weights passes them, gathered over every data-parallel
rank, so a quantile is taken over the whole step). The weights are detached; loss normalisers are unchanged (TRL).
`none` is no weighting at all: the loop skips the stage. `perception` (VPPO's TGF, arXiv 2510.09285) registers from
rlvr.algos.vppo.
"""

from __future__ import annotations

import torch

from rlvr.registry import Registry

TOKEN_WEIGHTS = Registry("token weight")


@TOKEN_WEIGHTS.register("none")
def none(mask) -> torch.Tensor:
    """Every token weighs 1 (no selection); no paper id."""
    return torch.ones_like(mask, dtype=torch.float32)


def entropy_threshold(entropy: torch.Tensor, mask: torch.Tensor, *, quantile: float) -> torch.Tensor:
    """The (1 - quantile) quantile of the valid tokens' entropy (linear interpolation, as torch/TRL)."""
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    valid = entropy.detach()[mask.bool()].float()
    if valid.numel() == 0:
        return torch.tensor(-torch.inf, device=entropy.device)
    return torch.quantile(valid, 1 - quantile)


@TOKEN_WEIGHTS.register("high_entropy", needs=("entropy",))
def high_entropy(mask, *, entropy, quantile: float = 0.2, threshold: float | None = None) -> torch.Tensor:
    """1 on tokens with entropy >= the (1 - quantile) quantile, else 0; arXiv 2506.01939 (TRL top_entropy_quantile).

    The paper takes the quantile over all valid tokens of all processes, as the loop does (it passes the gathered
    batch); `threshold` fixes it instead. Entropy is pi_old's, computed before the update (TRL takes each
    micro-batch's current entropy; with one optimizer step per batch the two are equal).
    """
    tau = entropy_threshold(entropy, mask, quantile=quantile) if threshold is None else threshold
    keep = mask.bool() & (entropy.detach() >= tau)
    return keep.to(torch.float32)
