"""Tasks: indexable, deterministic sources of Samples that score their own answers.

from rlvr.tasks import TASKS
task = TASKS.build("countdown", seed=0, size=1000)
sample = task[0]; task.score(sample, task.reference(sample))   # 1.0
"""

from rlvr.tasks import arithmetic, countdown, dataset, gym, visual  # noqa: F401  (register the tasks)
from rlvr.tasks.base import TASKS, ProceduralTask, Task

__all__ = ["TASKS", "ProceduralTask", "Task"]

from rlvr import envs  # noqa: F401,E402  (registers the multi-turn environments' tasks: tool_arithmetic, guess_number)
