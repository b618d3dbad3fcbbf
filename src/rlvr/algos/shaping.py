"""Advantage shaping: a transform of the estimator's advantages, applied after ADVANTAGES and before the loss.

    advantages, metrics = ADVANTAGE_SHAPING.lookup("vppo_tas")(advantages, mask, dependency=s, has_image=img)

A shaping function takes the advantages ((N,) or (N, T)) and the trained-token mask (N, T) positionally, the batch
values it declared at registration as keywords (`ADVANTAGE_SHAPING.needs(name)`), and returns
`(advantages', metrics)`. `none` leaves the advantages as they are; `vppo_tas` (arXiv 2510.09285) registers in
rlvr.algos.vppo.
"""

from __future__ import annotations

import torch

from rlvr.registry import Registry

ADVANTAGE_SHAPING = Registry("advantage shaping")


@ADVANTAGE_SHAPING.register("none")
def none(advantages: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """The estimator's advantages unchanged (identity); no paper id."""
    return advantages, {}
