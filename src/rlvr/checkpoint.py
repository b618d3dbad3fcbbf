"""Atomic checkpoints: a crash mid-write never damages the last good one.

Layout of `runs/<name>/checkpoints/`:
    step-000020/        model/ (save_pretrained: AutoModelForCausalLM loads it), tokenizer files,
                        trainer.pt (optimizer, scheduler, RNG states, step, data position, counters);
                        under distributed.strategy fsdp: sharded/ (torch.distributed.checkpoint: every rank's
                        weight and optimizer shards) instead of model/ and of trainer.pt's optimizer
    latest              text file naming the newest complete checkpoint folder

1. Everything is written into a temporary sibling folder, flushed, then renamed into place (os.replace is
   atomic on one filesystem); only then is `latest` replaced, itself through a temporary file. Saving a step that
   already has a folder moves the old one aside first and deletes it only after the new one is in place.
2. Older checkpoints beyond `keep` are deleted after the new one is complete.
3. `latest_checkpoint` returns the folder `latest` names when it is complete, else the newest complete one (a kill
   between two renames of a re-saved step leaves the previous copy aside: it is moved back).
4. trainer.pt holds only tensors and plain Python values, and is read with `torch.load(weights_only=True)`: a
   checkpoint from elsewhere cannot run code when it is resumed.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as tensors and plain values (a weights_only loader reads them)."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = {"kind": str(kind), "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "gauss": float(gauss)}
    return {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])


def _write_atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_model_atomic(policy, folder: Path, **save_options: Any) -> None:
    """`policy.save` into a temporary sibling, then renamed into place: a Hugging Face folder that
    `AutoModelForCausalLM.from_pretrained(folder)` loads (LoRA merged first). save_options: e.g. the state_dict
    gathered from FSDP shards."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    policy.save(tmp, **save_options)
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, folder)


def save_checkpoint(root: Path, step: int, policy, trainer_state: dict[str, Any], keep: int = 2) -> Path:
    """Write checkpoint `step` atomically under `root` (the policy's folder, LoRA as its adapter; trainer.pt);
    return its folder."""
    tmp = begin_checkpoint(root, step)
    policy.save(tmp / "model", merge_adapters=False)
    return commit_checkpoint(root, step, tmp, trainer_state, keep)


def begin_checkpoint(root: Path, step: int) -> Path:
    """A fresh temporary folder for checkpoint `step`, renamed into place by commit_checkpoint."""
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=root, prefix=f".step-{step:06d}.tmp-"))


def commit_checkpoint(root: Path, step: int, tmp: Path, trainer_state: dict[str, Any], keep: int = 2) -> Path:
    """trainer.pt into `tmp` (the weights are there already), then `tmp` renamed to step-N and `latest` pointed at
    it; older checkpoints beyond `keep` pruned. Returns the step's folder."""
    final = root / f"step-{step:06d}"
    torch.save(trainer_state, tmp / "trainer.pt")
    old = None
    if final.exists():  # the same step saved again: keep the finished copy until the new one is in place
        old = root / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
    os.replace(tmp, final)
    _write_atomic_text(root / "latest", final.name)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    _prune(root, keep)
    return final


def _prune(root: Path, keep: int) -> None:
    steps = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in steps[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".step-*.tmp-*"):  # left by a crash mid-write
        shutil.rmtree(stale, ignore_errors=True)


def _complete(folder: Path) -> bool:
    """trainer.pt and the weights: a model folder, or FSDP shards (rlvr.distributed.fsdp_checkpoint)."""
    return (folder / "trainer.pt").is_file() and ((folder / "model").is_dir() or (folder / "sharded").is_dir())


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under `root`: the one `latest` names, else the newest complete folder (a copy
    moved aside by an interrupted re-save is moved back first); None when there is none."""
    pointer = root / "latest"
    if pointer.is_file() and _complete(root / pointer.read_text().strip()):
        return root / pointer.read_text().strip()
    for old in root.glob(".step-*.old-*"):  # a re-save killed between its two renames
        final = root / old.name[1:].split(".old-")[0]
        if _complete(old) and not final.exists():
            os.replace(old, final)
    done = sorted(p for p in root.glob("step-*") if _complete(p))
    return done[-1] if done else None


class CheckpointError(ValueError):
    """A checkpoint that cannot be read safely."""


def load_trainer_state(folder: Path) -> dict[str, Any]:
    """trainer.pt, read with torch.load(weights_only=True): tensors and plain values only, no code."""
    try:
        return torch.load(folder / "trainer.pt", map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling refusal becomes one clear line
        first = (str(err).splitlines() or [""])[0][:200]
        raise CheckpointError(f"{folder / 'trainer.pt'} holds objects a safe loader does not read (written by an "
                              f"older rlvr, or not by rlvr): {first}") from err
