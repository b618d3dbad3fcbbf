"""Atomic checkpoints: a crash mid-write never damages the last good one.

Layout of `runs/<name>/checkpoints/`:
    step-000020/        model/ (save_pretrained: AutoModelForCausalLM loads it), tokenizer files,
                        trainer.pt (optimizer, scheduler, RNG states, step, data position, counters)
    latest              text file naming the newest complete checkpoint folder

1. Everything is written into a temporary sibling folder, flushed, then renamed into place (os.replace is
   atomic on one filesystem); only then is `latest` replaced, itself through a temporary file.
2. Older checkpoints beyond `keep` are deleted after the new one is complete.
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
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def _write_atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_model_atomic(policy, folder: Path) -> None:
    """`policy.save` into a temporary sibling, then renamed into place: a Hugging Face folder that
    `AutoModelForCausalLM.from_pretrained(folder)` loads (LoRA merged first)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    policy.save(tmp)
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
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".step-{step:06d}.tmp-"))
    policy.save(tmp / "model", merge_adapters=False)
    torch.save(trainer_state, tmp / "trainer.pt")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_atomic_text(root / "latest", final.name)
    _prune(root, keep)
    return final


def _prune(root: Path, keep: int) -> None:
    steps = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in steps[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".step-*.tmp-*"):  # left by a crash mid-write
        shutil.rmtree(stale, ignore_errors=True)


def latest_checkpoint(root: Path) -> Path | None:
    pointer = root / "latest"
    if not pointer.is_file():
        return None
    folder = root / pointer.read_text().strip()
    return folder if (folder / "trainer.pt").is_file() else None


def load_trainer_state(folder: Path) -> dict[str, Any]:
    return torch.load(folder / "trainer.pt", map_location="cpu", weights_only=False)
