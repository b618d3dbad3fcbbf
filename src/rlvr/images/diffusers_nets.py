"""diffusers models as rlvr's denoisers (issue 22): a `UNet2DModel` (or any diffusers model with a `mid_block`)
behind the (x_t, t) -> output interface that rlvr.images.diffusion's samplers and rlvr.algos.dmd's losses call.

    net = Denoiser(UNet2DModel(**tiny_unet2d_config()), schedule="linear")
    out = net(x_t, t)                      # x_t (N, C, H, W), rlvr's integer t (N,) -> eps (VP) or v (flow)
    feats = net.features(x_t, t)           # (N, net.width): the mid block averaged over positions
    net = load_denoiser("/models/ddpm-16")  # a diffusers folder: unet/ and scheduler/ (a pipeline) or a bare model

1. Timesteps: rlvr's t runs 0 .. 999 (rlvr.images.diffusion). DDPMScheduler / DDIMScheduler take the same t;
   FlowMatchEulerDiscreteScheduler's timestep is sigma * 1000 with sigma = (t + 1) / 1000 (its 1000 training
   sigmas run 1.0 .. 0.001 with shift 1), so the model is called at t + 1 (module docstring 7 of diffusion.py).
2. `schedule_of(config)` reads a scheduler's config: betas linear 1e-4 .. 0.02 -> linear, scaled_linear 0.00085 ..
   0.012 -> scaled_linear (both with prediction_type epsilon), FlowMatchEulerDiscreteScheduler with shift 1 ->
   flow. Anything else (other betas, v-prediction, a shifted flow, 1000 != num_train_timesteps) is refused with one
   line naming the field, so a model is never run on a schedule it was not trained on.
3. `features` = the mid block's output averaged over its positions (DMD2 §4.2: the GAN classifier reads the fake
   score's bottleneck). A forward hook keeps that output on the mid block itself (so `copy.deepcopy`, which DMD2's
   "generator and fake score start from the teacher" uses, gives a copy that hooks its own block); one forward
   computes output and features.
4. `export_student` writes a K-step student as a diffusers DDPMPipeline folder whose scheduler is an LCMScheduler
   with original_inference_steps 1000: its K-step schedule is then DMD2's tau (999, 749, 499, 249 for K = 4), and
   its step is the student's (x0 from eps, re-noised to the next tau with fresh noise, the last x0 returned; the
   boundary scalings c_skip ~ 1e-8 and c_out ~ 1 at tau >= 249). `DDPMPipeline.from_pretrained(folder)(
   num_inference_steps=K)` samples it with diffusers alone; `load_denoiser(folder)` reads it back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlvr.images.diffusion import FLOW, T_STEPS

VP_BETAS = {"linear": (1e-4, 0.02), "scaled_linear": (0.00085, 0.012)}  # rlvr.images.diffusion.SCHEDULES
VP_SCHEDULERS = ("DDPMScheduler", "DDIMScheduler", "LCMScheduler")  # LCMScheduler: an exported student's


def tiny_unet2d_config(*, channels: int = 3, size: int = 16, base: int = 16, width: int = 32) -> dict[str, Any]:
    """A UNet2DModel config small enough for a CPU test: two resolutions, one layer per block, no attention."""
    return {"sample_size": size, "in_channels": channels, "out_channels": channels, "layers_per_block": 1,
            "block_out_channels": (base, width), "down_block_types": ("DownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "UpBlock2D"), "norm_num_groups": 8}


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 + 1e-6 * abs(b)


def schedule_of(config: dict[str, Any], *, where: str = "scheduler") -> str:
    """rlvr's schedule name for a diffusers scheduler config (module docstring 2); ValueError naming the field."""
    cls = config.get("_class_name", "")
    steps = config.get("num_train_timesteps", T_STEPS)
    if steps != T_STEPS:
        raise ValueError(f"{where}.num_train_timesteps: rlvr's schedules have {T_STEPS} steps, got {steps}")
    if cls == "FlowMatchEulerDiscreteScheduler":
        shift = config.get("shift", 1.0)
        if not _close(float(shift), 1.0) or config.get("use_dynamic_shifting", False):
            raise ValueError(f"{where}.shift: only the unshifted flow (shift 1, no dynamic shifting) is supported, got "
                             f"{shift}")
        return FLOW
    if cls not in VP_SCHEDULERS:
        raise ValueError(f"{where}._class_name: one of {', '.join(VP_SCHEDULERS)} or FlowMatchEulerDiscreteScheduler, "
                         f"got {cls!r}")
    prediction = config.get("prediction_type", "epsilon")
    if prediction != "epsilon":
        raise ValueError(f"{where}.prediction_type: rlvr's VP schedules predict epsilon, got {prediction!r}")
    kind = config.get("beta_schedule", "linear")
    betas = (float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02)))
    if kind not in VP_BETAS or not all(_close(a, b) for a, b in zip(betas, VP_BETAS[kind])):
        known = ", ".join(f"{k} {lo:g} .. {hi:g}" for k, (lo, hi) in VP_BETAS.items())
        raise ValueError(f"{where}.beta_schedule: one of {known}; got {kind} {betas[0]:g} .. {betas[1]:g}")
    return kind


def _keep_output(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
    module._rlvr_output = output[0] if isinstance(output, tuple) else output


class Denoiser(nn.Module):
    """A diffusers model called with rlvr's integer timesteps; `features` pools its mid block (module docstring)."""

    def __init__(self, model: nn.Module, *, schedule: str = "linear"):
        super().__init__()
        if getattr(model, "mid_block", None) is None:
            raise ValueError(f"{type(model).__name__}: rlvr's GAN head reads a mid block, and this model has none")
        self.model, self.schedule = model, schedule
        self.width = int(model.config.block_out_channels[-1])
        model.mid_block.register_forward_hook(_keep_output)

    def _timestep(self, t: torch.Tensor) -> torch.Tensor:
        return t + 1 if self.schedule == FLOW else t

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model(x_t, self._timestep(t.expand(len(x_t)))).sample

    def features(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(N, width): the mid block's output of this call, averaged over its positions."""
        self(x_t, t)
        return self.model.mid_block._rlvr_output.mean((2, 3))

    def save(self, folder: str | Path) -> None:
        """The model as a diffusers folder (config.json + safetensors), loadable by its own class."""
        self.model.save_pretrained(str(folder))


def _scheduler_config(folder: Path) -> tuple[dict[str, Any], Path]:
    for path in (folder / "scheduler" / "scheduler_config.json", folder / "scheduler_config.json"):
        if path.is_file():
            return json.loads(path.read_text()), path
    raise ValueError(f"{folder}: no scheduler/scheduler_config.json (a pipeline) or scheduler_config.json beside the "
                     "model: rlvr needs the schedule the model was trained on")


def load_denoiser(folder: str | Path) -> Denoiser:
    """A Denoiser from a local diffusers folder: a pipeline (unet/, scheduler/) or a model folder with its
    scheduler_config.json. The schedule is checked before the weights are read."""
    from diffusers import UNet2DModel

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"model.path: {folder} is not a folder")
    config, where = _scheduler_config(folder)
    schedule = schedule_of(config, where=str(where))
    sub = folder / "unet" if (folder / "unet" / "config.json").is_file() else folder
    if not (sub / "config.json").is_file():
        raise ValueError(f"{folder}: no unet/config.json or config.json")
    return Denoiser(UNet2DModel.from_pretrained(str(sub)), schedule=schedule)


def export_student(student: Denoiser, folder: str | Path, *, steps: int, start: int = T_STEPS - 1) -> Path:
    """The K-step student as a diffusers pipeline folder (module docstring 4); returns the folder."""
    from diffusers import DDPMPipeline, LCMScheduler

    if student.schedule == FLOW:
        raise ValueError("export_student: a flow student has no re-noising K-step scheduler in diffusers that rlvr "
                         "maps (LCMScheduler is a VP scheduler)")
    if start != T_STEPS - 1:
        raise ValueError(f"export_student: LCMScheduler's K-step schedule starts at {T_STEPS - 1}; student.start is "
                         f"{start}")
    lo, hi = VP_BETAS[student.schedule]
    scheduler = LCMScheduler(num_train_timesteps=T_STEPS, beta_start=lo, beta_end=hi, beta_schedule=student.schedule,
                             original_inference_steps=T_STEPS, prediction_type="epsilon", clip_sample=False)
    folder = Path(folder)
    DDPMPipeline(unet=student.model, scheduler=scheduler).save_pretrained(str(folder))
    (folder / "rlvr_student.json").write_text(json.dumps({"num_inference_steps": steps, "schedule": student.schedule},
                                                         indent=1) + "\n")
    return folder
