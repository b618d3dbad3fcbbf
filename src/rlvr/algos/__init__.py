"""Pure math of the GRPO family, each part a registry of named functions (docs/methods.md §1).

from rlvr.algos import ADVANTAGES, ADVANTAGE_SHAPING, LOSSES, AGGREGATIONS, KL_ESTIMATORS
from rlvr.algos import TOKEN_WEIGHTS, MISMATCH_WEIGHTS
"""

from rlvr.algos.advantages import ADVANTAGES
from rlvr.algos.aggregation import AGGREGATIONS
from rlvr.algos.kl import KL_ESTIMATORS
from rlvr.algos.losses import LOSSES
from rlvr.algos.mismatch import MISMATCH_WEIGHTS
from rlvr.algos.shaping import ADVANTAGE_SHAPING
from rlvr.algos.token_weights import TOKEN_WEIGHTS

__all__ = [
    "ADVANTAGES",
    "ADVANTAGE_SHAPING",
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "LOSSES",
    "MISMATCH_WEIGHTS",
    "TOKEN_WEIGHTS",
]
from rlvr.algos import exgrpo, vppo  # noqa: E402,F401  (register exgrpo_mixed; perception and vppo_tas)
