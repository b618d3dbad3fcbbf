"""FSDP2 sharding of a Hugging Face causal LM over the data-parallel ranks (distributed.strategy: fsdp).

    shard_model(model, world, compute_dtype=torch.bfloat16, offload=False, reshard_after_forward=True)

1. `fully_shard` (torch.distributed.fsdp, FSDP2) on every decoder layer, then on the root (embeddings, final norm,
   lm_head): each rank keeps 1/world of every parameter, of its gradient and of the AdamW state built over them.
   A layer's weights are all-gathered just before its forward and freed after it (again in backward), gradients are
   reduce-scattered and averaged over ranks; the loss is scaled by the world size as under replicas
   (rlvr.update), so the update is the one process's. Mixed precision: `compute_dtype` gathered weights and fp32
   gradient reduction, the shards (the master weights) and the optimizer state stay in the parameter dtype.
2. rlvr's lean forward reads weights directly instead of calling module forwards; `through(module, fn, *args)` runs
   fn inside `module`'s FSDP pre/post-forward hooks (all-gather, free, the backward hooks), through torch's
   register_fsdp_forward_method. Without FSDP it is fn(*args).
3. The sampler decodes from gathered weights: `gathered(model)` unshards every module once, stops FSDP from
   freeing them after each forward, and reshards on exit (decoding runs no collective, so ranks may generate
   different lengths).
4. `full_state_dict(model)` gathers the full weights (every rank calls it; rank 0 keeps them on CPU) for the final
   Hugging Face folder and for weight sync to a vLLM engine.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from rlvr.distributed import World

_CALL = "rlvr_call"  # the method FSDP hooks are registered on (through())


def sharded(model) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def shard_model(model, world: World, *, compute_dtype: torch.dtype | None = None, offload: bool = False,
                reshard_after_forward: bool = True) -> None:
    """fully_shard each decoder layer, then the root; in place (the model's parameters become DTensor shards)."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    mesh = device_mesh(world, model.get_input_embeddings().weight.device.type)
    options = dict(mesh=mesh, reshard_after_forward=reshard_after_forward,
                   offload_policy=CPUOffloadPolicy() if offload else OffloadPolicy())
    if compute_dtype is not None:
        options["mp_policy"] = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
    layers = list(model.model.layers)
    for layer in layers:
        fully_shard(layer, **options)
    fully_shard(model, **options)
    for module in (*layers, model):
        _register_call(module)
        # what gathered() restores; fully_shard keeps the root's weights between forward and backward
        object.__setattr__(module, "_rlvr_reshard", reshard_after_forward and module is not model)


_MESHES: dict = {}


def device_mesh(world: World, device: str):
    """The 1-D mesh of the data-parallel ranks, made once per device type (every rank must make it together)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    key = (device, world.size, id(dist.group.WORLD))  # a new process group (another run in this process): a new mesh
    if key not in _MESHES:
        _MESHES[key] = init_device_mesh(device, (world.size,))
    return _MESHES[key]


def _register_call(module) -> None:
    from torch.distributed.fsdp import register_fsdp_forward_method

    object.__setattr__(module, _CALL, _apply)  # a plain function in the instance: FSDP wraps it with its hooks
    register_fsdp_forward_method(module, _CALL)


def _apply(fn, *args):
    return fn(*args)


def through(module, fn, *args):
    """fn(*args) as if it were `module`'s forward: under FSDP its weights are gathered for it (and its backward)."""
    call = module.__dict__.get(_CALL)
    return fn(*args) if call is None else call(fn, *args)


def fsdp_modules(model) -> list:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextmanager
def gathered(policy):
    """Every FSDP module of the policy's model (or of a model) unsharded, full weights as plain tensors, until exit;
    no-op without FSDP and inside another gathered(). Every rank must enter it (the all-gathers are collectives)."""
    model = getattr(policy, "model", policy)
    modules = fsdp_modules(model) if isinstance(model, torch.nn.Module) else []
    if not modules or model.__dict__.get("_rlvr_gathered"):
        yield model
        return
    object.__setattr__(model, "_rlvr_gathered", True)
    for m in modules:
        m.unshard()
        m.set_reshard_after_forward(False, recurse=False)
    try:
        yield model
    finally:
        for m in modules:
            m.reshard()
        for m in modules:
            m.set_reshard_after_forward(m.__dict__.get("_rlvr_reshard", True), recurse=False)
        object.__setattr__(model, "_rlvr_gathered", False)


def full_state_dict(model, *, cpu: bool = True) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict; every rank must call it; only rank 0's is filled when cpu=True."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=cpu))
