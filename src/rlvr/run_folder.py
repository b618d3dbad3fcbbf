"""Run folders: a run's files are never rewritten by accident, and a resume says what it changes.

    resume_from = claim_run_folder(cfg, resume=False, overwrite=False)   # before any model is loaded

1. A new run (no `--resume`) refuses a folder that already holds a run (metrics or a checkpoint) unless
   `--overwrite` is given, which deletes it first; otherwise choose another `name`.
2. `--resume` continues from the newest complete checkpoint. Without one, it refuses a folder that has metrics
   (starting over would wipe them) and starts a new run in an empty one.
3. On resume every changed setting is named; settings that cannot change under a checkpoint (the model, its
   tokenizer and dtype, the tasks, the environment, the buffer) are refused, as HF Trainer users expect.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from rlvr.checkpoint import latest_checkpoint, load_trainer_state
from rlvr.config import Config, ConfigError, to_dict

FIXED = ("model.path", "model.config", "model.config_overrides", "model.tokenizer", "model.dtype", "model.lora",
         "model.gguf_file", "task.name", "task.kwargs", "tasks", "env.name", "env.kwargs", "buffer.name",
         "student.lora")
IGNORED = ("name", "output_dir")


def claim_run_folder(cfg: Config, *, resume: bool, overwrite: bool, main: bool = True) -> Path | None:
    """The checkpoint to resume from, or None for a new run (see the module docstring). `main`: this process may
    delete files (one rank under data parallelism)."""
    run_dir = cfg.run_dir
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other: continue the run, or start it over")
    checkpoint = latest_checkpoint(run_dir / "checkpoints")
    has_metrics = (run_dir / "metrics.jsonl").is_file() and (run_dir / "metrics.jsonl").stat().st_size > 0
    if overwrite:
        if main and run_dir.exists():
            shutil.rmtree(run_dir)
        return None
    if not resume:
        if checkpoint is not None or has_metrics:
            held = f"checkpoint {checkpoint.name}" if checkpoint else "metrics.jsonl"
            raise ConfigError(f"{run_dir} already holds a run ({held}): continue it with --resume, start over with "
                              "--overwrite, or choose another name")
        return None
    if checkpoint is None:
        if has_metrics:
            raise ConfigError(f"{run_dir} has metrics but no complete checkpoint to resume from; start over with "
                              "--overwrite (or choose another name)")
        print(f"rlvr: no checkpoint under {run_dir / 'checkpoints'}; starting from scratch")
        return None
    check_resumable(cfg, load_trainer_state(checkpoint)["config"], checkpoint)
    return checkpoint


def check_resumable(cfg: Config, saved: dict[str, Any], checkpoint: Path) -> list[str]:
    """Name every setting that differs from the checkpoint's; refuse those in FIXED. Returns the changes."""
    old, new = _flat(saved), _flat(to_dict(cfg))
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and not k.startswith(IGNORED))
    fixed = [k for k in changed if k.startswith(FIXED)]
    if fixed:
        raise ConfigError(f"cannot resume {checkpoint} with a different {fixed[0]} ({old.get(fixed[0])!r} -> "
                          f"{new.get(fixed[0])!r}): the checkpoint belongs to the old one; start a new run "
                          "(another name, or --overwrite)")
    if changed:
        shown = "; ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        print(f"rlvr: resuming from {checkpoint.name} with changed settings: {shown}")
    return changed


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and `*kwargs` mappings stay whole values."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and not k.endswith(("kwargs", "overrides", "lora")):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out
