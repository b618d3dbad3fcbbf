"""Rewards: verifiers (math, exact, numeric, format), shaping (overlong, length_penalty), user functions.

from rlvr.rewards import REWARDS, combine_rewards
fns = [("math", 1.0, REWARDS.build("math")), ("format", 0.1, REWARDS.build("format"))]
rewards, per_fn, metrics = combine_rewards(fns, samples, completions, lengths)   # rewards: (N,)
"""

from rlvr.rewards import cascade as _cascade  # noqa: F401  (registers "cascade": rule first, then a judge)
from rlvr.rewards import diversity as _diversity  # noqa: F401  (registers "diversity", DIVER)
from rlvr.rewards import framethinker as _framethinker  # noqa: F401  (registers "framethinker")
from rlvr.rewards import library as _library  # noqa: F401  (registers the built-in rewards)
from rlvr.rewards import reward_model as _reward_model  # noqa: F401  (registers "reward_model")
from rlvr.rewards import video as _video  # noqa: F401  (registers VideoSSR's interval_iou, count_accuracy, footrule)
from rlvr.rewards.core import REWARDS, RewardError, RewardFn, combine_rewards
from rlvr.rewards.library import load_function

__all__ = ["REWARDS", "RewardError", "RewardFn", "combine_rewards", "load_function"]
