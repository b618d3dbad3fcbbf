"""LoRA students for the diffusers side of `loop: dmd` (`student.lora`, rlvr.images.dmd_config.StudentLoraConfig).

    gen = lora_copy(parts.denoiser, r=8, lora_alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    state = adapter_state(gen)             # the checkpoint's generator.safetensors: the adapters alone
    full = merged(gen)                     # a plain Denoiser, W + (lora_alpha / r) B A in every adapted layer

1. `lora_copy` gives a Denoiser whose every parameter and buffer *is* the teacher's (a copy of the module tree,
   not of the tensors), frozen, with peft LoRA layers injected into the target modules (arXiv 2106.09685: W x +
   (alpha / r) B A x, B = 0 at the start, so the student starts as the teacher, as DMD2's copies do). Only the
   adapters train and sit in the optimizer; a LoRA generator and a LoRA fake score add their adapters to the one
   teacher in memory instead of two full copies (benchmarks/dmd_lora.py counts it).
2. A target name matches a module whose dotted name is it or ends with "." + it (peft's rule); every name must match
   at least one nn.Linear or nn.Conv2d, otherwise one line names the field and what the model has.
3. Checkpoints hold `adapter_state` (the lora_A / lora_B tensors); `load_adapter_state` refuses any other key set.
4. Export: `merged` folds the adapters into a full copy (the <run>/student pipeline), and `save_diffusers_lora`
   writes the adapters in diffusers' LoRA format (pytorch_lora_weights.safetensors, keys "unet." / "transformer."
   + the model's module path + ".lora_A.weight", the LoraConfig as metadata) with the pipeline class's own
   save_lora_weights, which its load_lora_weights reads onto the teacher's pipeline. DDPMPipeline (UNet2DModel) has
   no LoRA loader in diffusers: a pixel student is exported merged only.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

ADAPTER_NAME = "default"  # peft's; its parameters are named ...lora_A.default.weight


def is_lora(net: nn.Module) -> bool:
    return getattr(net, "lora_config", None) is not None


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def _short(name: str) -> str:
    """A layer's name as a target names it: its last part ('to_q'), two for a list entry ('to_out.0')."""
    parts = name.split(".")
    return ".".join(parts[-2:]) if parts[-1].isdigit() else parts[-1]


def check_targets(model: nn.Module, target_modules: list[str]) -> None:
    """ValueError naming the first target no nn.Linear / nn.Conv2d of `model` matches (module docstring 2)."""
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    for target in target_modules:
        if not any(_matches(n, target) for n in layers):
            ends = sorted({_short(n) for n in layers})
            raise ValueError(f"no nn.Linear / nn.Conv2d of {type(model).__name__} is named {target!r}; its layers "
                             f"end in: {', '.join(ends[:24])}{' ...' if len(ends) > 24 else ''}")


def lora_copy(teacher: nn.Module, *, r: int, lora_alpha: float, target_modules: list[str]) -> nn.Module:
    """The teacher Denoiser with peft LoRA adapters over its own (shared, frozen) weights (module docstring 1); the
    adapters' A is drawn from the global RNG (fork and seed it around the call)."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as err:
        raise ImportError("student.lora needs the extra: pip install 'rlvr[lora]'") from err

    check_targets(teacher.model, target_modules)
    shared = {id(t): t for t in (*teacher.parameters(), *teacher.buffers())}
    net = copy.deepcopy(teacher, shared).requires_grad_(False)
    config = {"r": r, "lora_alpha": lora_alpha, "target_modules": list(target_modules)}
    inject_adapter_in_model(LoraConfig(**config, lora_dropout=0.0, init_lora_weights=True), net.model, ADAPTER_NAME)
    for name, p in net.named_parameters():
        p.requires_grad_(".lora_" in name)
    net.lora_config = config
    return net.train()


def trainable(net: nn.Module) -> list[nn.Parameter]:
    """A network's trained parameters: a LoRA net's adapters, every parameter of any other."""
    if not is_lora(net):
        return list(net.parameters())
    return [p for name, p in net.named_parameters() if ".lora_" in name]


def adapter_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint holds of `net`: its adapters (LoRA) or its whole state dict."""
    state = net.state_dict()
    return {k: v for k, v in state.items() if ".lora_" in k} if is_lora(net) else state


def load_adapter_state(net: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """`adapter_state`'s inverse; ValueError naming `where` when the keys are not this net's (another student.lora)."""
    want = set(adapter_state(net))
    if set(state) != want:
        extra, missing = sorted(set(state) - want), sorted(want - set(state))
        raise ValueError(f"{where}: its tensors are not this run's student.lora networks' (unexpected "
                         f"{extra[:2]}, missing {missing[:2]}); resume with the checkpoint's student.lora")
    net.load_state_dict(state, strict=not is_lora(net))


def merged(net: nn.Module) -> nn.Module:
    """A full copy of `net` with every LoRA layer folded into its base layer and removed (module docstring 4)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    out = copy.deepcopy(net)
    if not is_lora(out):
        return out
    for name, module in list(out.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge(adapter_names=[ADAPTER_NAME])
            parent, _, child = name.rpartition(".")
            setattr(out.get_submodule(parent), child, module.get_base_layer())
    out.model.__dict__.pop("peft_config", None)  # set by inject_adapter_in_model; the merged model is plain diffusers
    out.lora_config = None
    return out


def diffusers_lora_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters keyed as diffusers' LoRA loaders read them, relative to the diffusers model (no prefix)."""
    return {k.removeprefix("model.").replace(f".{ADAPTER_NAME}.", "."): v.detach().contiguous()
            for k, v in adapter_state(net).items()}


def save_diffusers_lora(net: nn.Module, pipeline_class: type, folder: str | Path) -> Path:
    """pytorch_lora_weights.safetensors in `folder` through `pipeline_class.save_lora_weights` (module docstring 4)."""
    name = "transformer" if net.transformer else "unet"
    kwargs: dict[str, Any] = {f"{name}_lora_layers": diffusers_lora_state(net),
                              f"{name}_lora_adapter_metadata": dict(net.lora_config)}
    pipeline_class.save_lora_weights(str(folder), **kwargs)
    return Path(folder) / "pytorch_lora_weights.safetensors"


def parameter_counts(nets: dict[str, nn.Module]) -> dict[str, dict[str, int]]:
    """{network: {trainable, total, optimizer_state_bytes}}: AdamW keeps two fp32-sized moments per trained value."""
    out = {}
    for name, net in nets.items():
        train = trainable(net)
        out[name] = {"trainable": sum(p.numel() for p in train), "total": sum(p.numel() for p in net.parameters()),
                     "optimizer_state_bytes": sum(2 * p.numel() * p.element_size() for p in train)}
    return out
