"""Errors that stop a run with a one-line message naming the step or the row (the CLI prints it and exits 1)."""


class TrainingError(RuntimeError):
    """The run cannot go on (repeated non-finite losses, no informative groups); the message names the step."""


class DataError(ValueError):
    """A row of the data cannot be used (an unreadable or missing image, placeholders that do not match the images,
    a missing field found when the row is read); the message names the row (and the file). The CLI prints it and
    exits 1 (2 for one found at setup, before anything ran: rlvr.prompt_limit.PromptTooLong); checkpoints already
    written stay."""
