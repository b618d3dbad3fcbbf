"""Errors that stop a run with a one-line message naming the step (the CLI prints it and exits 1)."""


class TrainingError(RuntimeError):
    """The run cannot go on (repeated non-finite losses, no informative groups); the message names the step."""
