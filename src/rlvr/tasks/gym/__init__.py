"""The task gym (issue 3): procedural, verifiable task families, each registered in TASKS by name.

Every family is a ProceduralTask: item i comes from Random(seed + i), it has a `difficulty` knob, scores its
own answers (partial credit where natural), gives a reference answer that scores 1.0, and supports the
train/eval holdout split of rlvr.tasks.base. Adapters wrap InternBootcamp-style classes and reasoning-gym.
"""

from rlvr.tasks.gym import adapters, logic_tasks, math_tasks, puzzles, text_tasks  # noqa: F401
