"""The run scaffolding every training loop shares: the language trainer (rlvr.trainer), `loop: dmd` and `loop: va_pi`.

    def train(cfg, *, resume=False, overwrite=False):
        validate(cfg)                                            # range checks: nothing is written yet
        return run_in_world(cfg, _train, resume=resume, overwrite=overwrite, batch=cfg.train.batch)

    def _train(cfg, checkpoint, world):                          # checkpoint: the one to resume from, or None
        state = restore_state(checkpoint) if checkpoint else {"step": 0}   # the RNG streams are put back
        logger = open_logger(cfg, world, resumed=checkpoint is not None)
        with StopRequest() as stop:
            for step in range(state["step"] + 1, cfg.train.steps + 1):
                ...
                if due(step, cfg.train.save_every, cfg.train.steps) or stop.requested:
                    save_state(cfg, step, model, world, optimizer=opt.state_dict())

1. `run_in_world` refuses a batch that does not split over the torchrun ranks, claims the run folder on the main
   process before any model is built (rlvr.run_folder: a new run never overwrites one, a resume names what changed),
   starts the data-parallel world under torchrun, makes the folder once every rank has judged it and writes
   config.yaml there, calls the loop's body and ends the process group it started.
2. `save_state` / `restore_state`: a checkpoint (rlvr.checkpoint, written atomically, the newest `train.keep` kept)
   holds the model, the step, the config and every RNG stream beside the loop's own entries (optimizers, ...); restore
   puts the RNG streams back, so a resumed loop draws what the uninterrupted one does.
3. `due(step, every, last)`: the cadence of evaluations and checkpoints; `StopRequest`: the first Ctrl-C finishes the
   step in flight and checkpoints, a second stops at once.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlvr.checkpoint import load_trainer_state, rng_state, save_checkpoint, set_rng_state
from rlvr.config import ConfigError, save_config
from rlvr.distributed import World, barrier, init_world, requested_world_size, shutdown
from rlvr.metrics import RunLogger
from rlvr.run_folder import claim_run_folder


def main_process() -> bool:
    """This process is rank 0 (or alone): known from torchrun's environment before any process group exists."""
    return int(os.environ.get("RANK", "0")) == 0


def check_batch_split(batch: int, key: str = "train.batch") -> None:
    """Refuse a batch that the torchrun ranks cannot share equally (each rank trains a contiguous share)."""
    ranks = requested_world_size()
    if batch % ranks:
        raise ConfigError(f"{key} ({batch}) must be divisible by the number of data-parallel ranks ({ranks}): each "
                          "rank trains an equal share of every batch")


def run_in_world(cfg, body: Callable[[Any, Path | None, World], dict[str, Any]], *, resume: bool, overwrite: bool,
                 batch: int | None = None) -> dict[str, Any]:
    """body(cfg, checkpoint, world) inside a claimed run folder and, under torchrun, a started world (module
    docstring, 1.); returns the body's summary."""
    if batch is not None:
        check_batch_split(batch)
    checkpoint = claim_run_folder(cfg, resume=resume, overwrite=overwrite, main=main_process())
    world = init_world() if requested_world_size() > 1 else World()
    try:
        barrier(world)  # every rank has judged the run folder before the main rank writes into it
        if world.is_main:
            cfg.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, cfg.run_dir / "config.yaml")  # `rlvr train <run>/config.yaml` reruns it
        return body(cfg, checkpoint, world)
    finally:
        shutdown(world)


def due(step: int, every: int, last: int) -> bool:
    """An evaluation or checkpoint falls on this step: every `every` steps (0: never) and at the last step."""
    return step == last or bool(every and step % every == 0)


def open_logger(cfg, world: World, *, resumed: bool) -> RunLogger | None:
    """The main rank's metrics.jsonl (appended to on resume); None on the other ranks."""
    return RunLogger(cfg.run_dir, resume=resumed) if world.is_main else None


def save_state(cfg, step: int, model, world: World, **entries: Any) -> Path | None:
    """A checkpoint of `model` (anything with save(folder)) at `step` with the config, the RNG streams and the loop's
    entries, written by the main rank (the weights are the same on every rank); returns its folder there."""
    if not world.is_main:
        return None
    state = {"step": step, "config": dataclasses.asdict(cfg), "rng": rng_state(), **entries}
    return save_checkpoint(cfg.run_dir / "checkpoints", step, model, state, keep=cfg.train.keep)


def restore_state(checkpoint: Path) -> dict[str, Any]:
    """The checkpoint's trainer state (step, config, the loop's entries) with its RNG streams put back."""
    state = load_trainer_state(checkpoint)
    set_rng_state(state["rng"])
    return state


class StopRequest:
    """First Ctrl-C: finish the step in flight, checkpoint, exit. Second Ctrl-C: stop at once."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nrlvr: interrupt received, finishing this step and writing a checkpoint (Ctrl-C again to abort)")

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._old)
        return False
