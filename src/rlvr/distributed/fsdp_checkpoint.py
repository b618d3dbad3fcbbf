"""Checkpoints of an FSDP-sharded run (distributed.strategy: fsdp): each rank writes its own weight and AdamW shards
with torch.distributed.checkpoint (DCP), none gathers the model; the final model is one Hugging Face folder.

    step-000020/sharded/   DCP files of {"model": ..., "optim": ...} (a .metadata file and one file per rank)
    step-000020/trainer.pt scheduler, RNG, step, data position, buffer (no optimizer: it is in sharded/)

1. save_sharded: the main rank makes the temporary folder and names it to every rank; every rank writes its shards
   into it; after a barrier the main rank writes trainer.pt and renames the folder into place (rlvr.checkpoint: a
   kill at any point leaves the previous checkpoint whole).
2. load_sharded: DCP reads the shards into this run's sharded model and optimizer. DCP reshards on load, so a run
   saved with 2 ranks resumes with 1, 2 or 4 (same global batch: rollout.prompts_per_step must divide).
3. save_full_model: every rank joins the gather, the main rank writes the HF folder (config.architectures names the
   model's own class, not FSDP's wrapper).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlvr.checkpoint import begin_checkpoint, commit_checkpoint, save_model_atomic
from rlvr.distributed import World, all_gather_object, barrier


def _states(model, optimizer):
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    return {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer)}


def save_sharded(root: Path, step: int, model, optimizer, trainer_state: dict[str, Any] | None, world: World,
                 keep: int = 2) -> Path | None:
    """Checkpoint `step` of a sharded run (every rank calls it; trainer_state matters on the main rank)."""
    import torch.distributed.checkpoint as dcp

    tmp = begin_checkpoint(root, step) if world.is_main else None
    tmp = Path(all_gather_object(str(tmp) if tmp else None, world)[0])
    dcp.save(_states(model, optimizer), checkpoint_id=tmp / "sharded")
    barrier(world)
    path = commit_checkpoint(root, step, tmp, trainer_state, keep) if world.is_main else None
    barrier(world)
    return path


def load_sharded(folder: Path, model, optimizer) -> None:
    """The shards of checkpoint `folder` into this rank's sharded model and optimizer (every rank calls it)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    states = _states(model, optimizer)
    dcp.load(states, checkpoint_id=folder / "sharded")
    set_model_state_dict(model, states["model"])
    set_optimizer_state_dict(model, optimizer, states["optim"])


def save_full_model(policy, folder: Path, world: World) -> None:
    """The final model as one Hugging Face folder, gathered from the shards (every rank calls it)."""
    from rlvr.distributed.fsdp import full_state_dict

    state = full_state_dict(policy.model)
    kept = {n for n, _ in policy.model.named_parameters()} | {n for n, _ in policy.model.named_buffers()}
    state = {k: v for k, v in state.items() if k in kept}  # a tied lm_head is the embedding's (save_pretrained)
    if world.is_main:
        save_model_atomic(policy, folder, state_dict=state)
    barrier(world)


def unwrapped_architectures(folder: Path) -> None:
    """config.json names FSDP's dynamic subclass (FSDPQwen2ForCausalLM); AutoModel needs the model's class."""
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    cfg["architectures"] = [a.removeprefix("FSDP") for a in cfg.get("architectures") or []]
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
