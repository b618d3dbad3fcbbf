"""diffusers models as rlvr's denoisers (issue 22): a `UNet2DModel` (or any diffusers model with a `mid_block`)
behind the (x_t, t) -> output interface that rlvr.images.diffusion's samplers and rlvr.algos.dmd's losses call.

    net = Denoiser(UNet2DModel(**tiny_unet2d_config()), schedule="linear")
    out = net(x_t, t)                      # x_t (N, C, H, W), rlvr's integer t (N,) -> eps (VP) or v (flow)
    feats = net.features(x_t, t)           # (N, net.width): the mid block averaged over positions
    net = load_denoiser("/models/ddpm-16")  # a diffusers folder: unet/ and scheduler/ (a pipeline) or a bare model
    parts = load_pipeline("/models/sd-tiny")  # Parts: denoiser, vae, text encoder + tokenizer of a local pipeline

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
   num_inference_steps=K)` samples it with diffusers alone; `load_denoiser(folder)` reads it back. A student with
   a text encoder and a VAE exports as a StableDiffusionPipeline folder the same way (the student has no CFG:
   sample it with guidance_scale 1).
5. Text conditioning (`Parts.embed`): prompts through the pipeline's own tokenizer (padded to its model_max_length)
   and text encoder, the last hidden state: the `prompt_embeds` StableDiffusionPipeline computes, so a student
   trained on them samples the same under the pipeline. `Denoiser(..., cond)` passes them as encoder_hidden_states.
6. VAE latents (`Parts.encode` / `Parts.decode`): images in [-1, 1] <-> (latents - shift_factor) * scaling_factor
   (the encoder's posterior mode, so the data's latents are fixed); distillation runs on latents, rewards and
   metrics on decoded pixels.
7. SD3 (`SD3Transformer2DModel`, flow matching): the transformer has no mid block, so `features` pools the hidden
   states of its middle joint block; its two CLIP text encoders (no T5: StableDiffusion3Pipeline then feeds zeros)
   are read through the pipeline's own `encode_prompt`, and the (N, L, D) prompt embeddings and (N, P) pooled
   embedding travel packed as one (N, L + 1, D) tensor (the pooled one in the last row's first P entries, P <= D).
   A flow student exports as a StableDiffusion3Pipeline whose FlowMatchEulerDiscreteScheduler has
   stochastic_sampling on: its step x0 = x_t - sigma v, re-noised to the next sigma with fresh noise, is the
   student's; sample it with `sigmas=` the list in rlvr_student.json ((tau + 1) / 1000: 1.0, 0.75, 0.5, 0.25 for
   K = 4; diffusers' default K-step grid is another one), after
   `StableDiffusion3Pipeline.from_pretrained(folder, text_encoder_3=None, tokenizer_3=None)` (no T5 is saved).
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


def tiny_conditional_config(*, channels: int = 4, size: int = 8, base: int = 16, width: int = 32, text: int = 32
                            ) -> dict[str, Any]:
    """A UNet2DConditionModel config for a CPU test: Stable Diffusion's block types at two resolutions, cross-
    attention to `text`-wide prompt embeddings."""
    return {"sample_size": size, "in_channels": channels, "out_channels": channels, "layers_per_block": 1,
            "block_out_channels": (base, width), "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"), "cross_attention_dim": text,
            "attention_head_dim": 8, "norm_num_groups": 8}


def tiny_vae_config(*, channels: int = 3, size: int = 16, latents: int = 4) -> dict[str, Any]:
    """An AutoencoderKL config for a CPU test: one downsampling (16 px -> 8 x 8 latents)."""
    return {"in_channels": channels, "out_channels": channels, "latent_channels": latents, "sample_size": size,
            "down_block_types": ("DownEncoderBlock2D",) * 2, "up_block_types": ("UpDecoderBlock2D",) * 2,
            "block_out_channels": (16, 32), "layers_per_block": 1, "norm_num_groups": 8}


def tiny_text_encoder(*, width: int = 32, length: int = 16, seed: int = 0):
    """(tokenizer, CLIPTextModel) built offline: a character-level CLIP BPE vocabulary (every byte, alone and as a
    word end, no merges) and a 2-layer text transformer of `width` with random weights."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    chars = sorted(ByteLevel.alphabet())
    words = [*chars, *(c + "</w>" for c in chars), "<|startoftext|>", "<|endoftext|>"]
    tokenizer = CLIPTokenizer(vocab={w: i for i, w in enumerate(words)}, merges=[], model_max_length=length)
    config = CLIPTextConfig(vocab_size=len(words), hidden_size=width, intermediate_size=2 * width,
                            num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=length,
                            bos_token_id=len(words) - 2, eos_token_id=len(words) - 1, pad_token_id=len(words) - 1)
    torch.manual_seed(seed)
    return tokenizer, CLIPTextModel(config)


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
    if getattr(module, "_rlvr_keep", False):  # only inside `features`: no graph is left hanging on the module
        module._rlvr_output = output[0] if isinstance(output, tuple) else output


def _keep_hidden(module: nn.Module, inputs: Any, output: tuple) -> None:
    if getattr(module, "_rlvr_keep", False):  # a joint block returns (encoder_hidden_states, hidden_states)
        module._rlvr_output = output[1].transpose(1, 2)[..., None]  # (N, D, L, 1): pooled like a feature map


class Bound(nn.Module):
    """A Denoiser with its prompt embeddings fixed for one batch: the (x_t, t) interface the samplers and the DMD
    losses call (rows of x_t and cond correspond)."""

    def __init__(self, net: Denoiser, cond: torch.Tensor | None):
        super().__init__()
        self.net, self.cond = net, cond

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x_t, t, self.cond)

    def features(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net.features(x_t, t, self.cond)


class Denoiser(nn.Module):
    """A diffusers model called with rlvr's integer timesteps; `features` pools its mid block (module docstring)."""

    def __init__(self, model: nn.Module, *, schedule: str = "linear"):
        super().__init__()
        self.transformer = hasattr(model, "transformer_blocks")
        if getattr(model, "mid_block", None) is None and not self.transformer:
            raise ValueError(f"{type(model).__name__}: rlvr's GAN head reads a mid block (or a transformer's middle "
                             "block), and this model has neither")
        self.model, self.schedule = model, schedule
        self.width = int(model.inner_dim if self.transformer else model.config.block_out_channels[-1])
        self._block.register_forward_hook(_keep_hidden if self.transformer else _keep_output)

    @property
    def _block(self) -> nn.Module:
        """The block `features` reads: the mid block, or a transformer's middle joint block."""
        blocks = getattr(self.model, "transformer_blocks", None)
        return blocks[len(blocks) // 2] if self.transformer else self.model.mid_block

    def _timestep(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """diffusers' timestep for rlvr's t (flow: t + 1, module docstring), on the sample's device."""
        return (t + 1 if self.schedule == FLOW else t).to(like.device)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The model's output at rlvr's t; `cond` (N, L, D) prompt embeddings for a conditional U-Net."""
        t = self._timestep(t.expand(len(x_t)), x_t)
        if self.transformer:
            pooled = cond[:, -1, :self.model.config.pooled_projection_dim]  # module docstring 7
            return self.model(hidden_states=x_t, timestep=t, encoder_hidden_states=cond[:, :-1],
                              pooled_projections=pooled).sample
        if cond is None:
            return self.model(x_t, t).sample
        return self.model(x_t, t, encoder_hidden_states=cond).sample

    def features(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """(N, width): the mid block's output of this call, averaged over its positions."""
        block = self._block
        block._rlvr_keep = True
        try:
            self(x_t, t, cond)
            return block.__dict__.pop("_rlvr_output").mean((2, 3))
        finally:
            block._rlvr_keep = False

    def save(self, folder: str | Path) -> None:
        """The model as a diffusers folder (config.json + safetensors), loadable by its own class."""
        self.model.save_pretrained(str(folder))


def _scheduler_config(folder: Path) -> tuple[dict[str, Any], Path]:
    for path in (folder / "scheduler" / "scheduler_config.json", folder / "scheduler_config.json"):
        if path.is_file():
            return json.loads(path.read_text()), path
    raise ValueError(f"{folder}: no scheduler/scheduler_config.json (a pipeline) or scheduler_config.json beside the "
                     "model: rlvr needs the schedule the model was trained on")


SUBFOLDERS = {"unet": ("UNet2DModel", "UNet2DConditionModel"), "transformer": ("SD3Transformer2DModel",)}


def folder_schedule(folder: str | Path) -> str:
    """rlvr's schedule name of a diffusers folder's scheduler config, read without loading any weight; ValueError
    naming the file and field."""
    config, where = _scheduler_config(Path(folder))
    return schedule_of(config, where=str(where))


def _model_folder(folder: Path) -> tuple[Path, Any]:
    """(the denoiser's folder, its diffusers class): unet/ or transformer/ of a pipeline, or a bare model folder."""
    import diffusers

    for sub in (folder / "unet", folder / "transformer", folder):
        if (sub / "config.json").is_file():
            name = json.loads((sub / "config.json").read_text()).get("_class_name", "UNet2DModel")
            known = [c for names in SUBFOLDERS.values() for c in names]
            if name not in known:
                raise ValueError(f"{sub / 'config.json'}: _class_name must be one of {', '.join(known)}, got "
                                 f"{name!r}")
            return sub, getattr(diffusers, name)
    raise ValueError(f"{folder}: no unet/config.json, transformer/config.json or config.json")


def load_denoiser(folder: str | Path) -> Denoiser:
    """A Denoiser from a local diffusers folder: a pipeline (unet/ or transformer/, scheduler/) or a model folder
    with its scheduler_config.json. The schedule is checked before the weights are read."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"model.path: {folder} is not a folder")
    schedule = folder_schedule(folder)
    sub, cls = _model_folder(folder)
    return Denoiser(cls.from_pretrained(str(sub)), schedule=schedule)


def tiny_sd3_config(*, channels: int = 4, size: int = 8, text: int = 64, pooled: int = 64) -> dict[str, Any]:
    """An SD3Transformer2DModel config for a CPU test: 2 joint blocks of 4 heads x 8, patch 2."""
    return {"sample_size": size, "patch_size": 2, "in_channels": channels, "out_channels": channels, "num_layers": 2,
            "attention_head_dim": 8, "num_attention_heads": 4, "joint_attention_dim": text,
            "caption_projection_dim": 32, "pooled_projection_dim": pooled}


def _tiny_clip_with_projection(tokenizer, *, width: int = 32, projection: int = 32, seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    n = len(tokenizer)
    config = CLIPTextConfig(vocab_size=n, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                            num_attention_heads=2, max_position_embeddings=tokenizer.model_max_length,
                            projection_dim=projection, bos_token_id=n - 2, eos_token_id=n - 1, pad_token_id=n - 1)
    torch.manual_seed(seed)
    return CLIPTextModelWithProjection(config)


class Parts:
    """A pipeline's pieces as the DMD loop uses them: the teacher Denoiser, and an optional VAE and text encoder(s)
    (module docstring 5-7). `Parts.build` makes tiny random ones, `load_pipeline` reads a folder; `frozen` turns
    their gradients off."""

    def __init__(self, denoiser: Denoiser, *, vae: nn.Module | None = None, tokenizer: Any = None,
                 text_encoder: nn.Module | None = None, tokenizer_2: Any = None,
                 text_encoder_2: nn.Module | None = None):
        if (tokenizer is None) != (text_encoder is None) or (tokenizer_2 is None) != (text_encoder_2 is None):
            raise ValueError("Parts: a text encoder needs its tokenizer and the other way round")
        conditional = "encoder_hidden_states" in _forward_arguments(denoiser.model)
        if conditional != (text_encoder is not None):
            raise ValueError(f"{type(denoiser.model).__name__}: " + ("a conditional model needs a text encoder and a "
                             "tokenizer" if conditional else "an unconditional U-Net takes no text encoder"))
        if denoiser.transformer and (text_encoder_2 is None or vae is None):
            raise ValueError("Parts: an SD3 transformer needs a VAE and both CLIP text encoders (StableDiffusion3"
                             "Pipeline's text_encoder and text_encoder_2)")
        self.denoiser, self.vae, self.tokenizer, self.text_encoder = denoiser, vae, tokenizer, text_encoder
        self.tokenizer_2, self.text_encoder_2 = tokenizer_2, text_encoder_2

    def frozen(self) -> Parts:
        """Every part without gradients, in eval mode (the teacher's side of a run); returns self."""
        for part in (self.denoiser, self.vae, self.text_encoder, self.text_encoder_2):
            if part is not None:
                part.requires_grad_(False).eval()
        return self

    @property
    def conditional(self) -> bool:
        return self.text_encoder is not None

    @property
    def scale(self) -> float:
        return float(self.vae.config.scaling_factor) if self.vae is not None else 1.0

    @property
    def shift(self) -> float:
        return float(getattr(self.vae.config, "shift_factor", None) or 0.0) if self.vae is not None else 0.0

    @classmethod
    def build(cls, *, size: int = 16, conditional: bool = False, vae: bool = False, schedule: str = "linear",
              arch: str = "unet", seed: int = 0) -> Parts:
        """Tiny random parts (the tiny_* configs): a UNet2DModel on pixels, or with `vae` on 4-channel latents of
        a 2x-downsampling AutoencoderKL; `conditional` a UNet2DConditionModel and a tiny CLIP text encoder;
        arch sd3: an SD3Transformer2DModel with two tiny CLIP encoders (conditional, VAE, flow)."""
        from diffusers import AutoencoderKL, SD3Transformer2DModel, UNet2DConditionModel, UNet2DModel

        if arch == "sd3" and (schedule != FLOW or not conditional or not vae):
            raise ValueError("Parts.build: arch sd3 is a text-conditioned latent flow model (schedule flow, "
                             "conditional, vae)")
        if conditional and not vae:
            raise ValueError("Parts.build: text conditioning is built as Stable Diffusion's shape, with a VAE")
        torch.manual_seed(seed)
        auto = AutoencoderKL(**tiny_vae_config(size=size), shift_factor=0.0 if arch == "sd3" else None) if vae \
            else None
        channels, side = (4, size // 2) if vae else (3, size)
        if arch == "sd3":
            model = SD3Transformer2DModel(**tiny_sd3_config(channels=channels, size=side))
            tokenizer, _ = tiny_text_encoder(seed=seed + 1)
            first, second = (_tiny_clip_with_projection(tokenizer, seed=seed + k) for k in (1, 2))
            return cls(Denoiser(model, schedule=schedule), vae=auto, tokenizer=tokenizer, text_encoder=first,
                       tokenizer_2=tokenizer, text_encoder_2=second)
        if conditional:
            unet = UNet2DConditionModel(**tiny_conditional_config(channels=channels, size=side))
            tokenizer, text = tiny_text_encoder(seed=seed + 1)
        else:
            unet, tokenizer, text = UNet2DModel(**tiny_unet2d_config(channels=channels, size=side)), None, None
        return cls(Denoiser(unet, schedule=schedule), vae=auto, tokenizer=tokenizer, text_encoder=text)

    def shape(self, size: int) -> tuple[int, int, int]:
        """The (C, H, W) the denoiser works on for `size` px images."""
        if self.vae is None:
            return (int(self.denoiser.model.config.in_channels), size, size)
        down = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return (int(self.vae.config.latent_channels), size // down, size // down)

    @torch.no_grad()
    def embed(self, prompts: list[str]) -> torch.Tensor | None:
        """(N, L, D) prompt embeddings (module docstring 5; SD3: packed, docstring 7); None for an unconditional
        model."""
        if not self.conditional:
            return None
        if self.denoiser.transformer:
            pipe = _pipeline(self, self.denoiser.model, _train_scheduler(FLOW))
            embeds, _, pooled, _ = pipe.encode_prompt(prompts, prompt_2=None, prompt_3=None,
                                                      do_classifier_free_guidance=False, device=torch.device("cpu"))
            if pooled.shape[-1] > embeds.shape[-1]:
                raise ValueError(f"SD3: the pooled embedding ({pooled.shape[-1]}) is wider than the prompt embeddings "
                                 f"({embeds.shape[-1]}); rlvr packs it as one more row")
            last = torch.nn.functional.pad(pooled, (0, embeds.shape[-1] - pooled.shape[-1]))[:, None]
            return torch.cat([embeds, last], dim=1)
        ids = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        return self.text_encoder(ids)[0]

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> the space the denoiser works on (module docstring 6)."""
        if self.vae is None:
            return images
        return (self.vae.encode(images).latent_dist.mode() - self.shift) * self.scale

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """The denoiser's space -> images in [-1, 1] (differentiable: a reward's gradient reaches the latents)."""
        return x if self.vae is None else self.vae.decode(x / self.scale + self.shift).sample

    def save(self, folder: str | Path) -> Path:
        """The teacher's pipeline as a diffusers folder (the student's export with the teacher's own scheduler)."""
        return _save_pipeline(self, self.denoiser.model, folder, _train_scheduler(self.denoiser.schedule))


def _forward_arguments(model: nn.Module) -> tuple[str, ...]:
    import inspect

    return tuple(inspect.signature(model.forward).parameters)


def _train_scheduler(schedule: str, *, stochastic: bool = False):
    from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler

    if schedule == FLOW:
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=T_STEPS, shift=1.0, stochastic_sampling=stochastic)
    lo, hi = VP_BETAS[schedule]
    return DDPMScheduler(num_train_timesteps=T_STEPS, beta_start=lo, beta_end=hi, beta_schedule=schedule,
                         prediction_type="epsilon", clip_sample=False, steps_offset=1)  # Stable Diffusion's


def _pipeline(parts: Parts, model: nn.Module, scheduler):
    from diffusers import DDPMPipeline, StableDiffusion3Pipeline, StableDiffusionPipeline

    if parts.denoiser.transformer:
        return StableDiffusion3Pipeline(transformer=model, scheduler=scheduler, vae=parts.vae,
                                        text_encoder=parts.text_encoder, tokenizer=parts.tokenizer,
                                        text_encoder_2=parts.text_encoder_2, tokenizer_2=parts.tokenizer_2,
                                        text_encoder_3=None, tokenizer_3=None)
    if parts.conditional:
        return StableDiffusionPipeline(vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer,
                                       unet=model, scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    if parts.vae is None:
        return DDPMPipeline(unet=model, scheduler=scheduler)
    raise ValueError("export: an unconditional model on VAE latents has no diffusers pipeline rlvr writes "
                     "(DDPMPipeline: pixels; StableDiffusionPipeline: text-conditioned latents)")


def pipeline_class(parts: Parts) -> type:
    """The diffusers pipeline class an export of these parts is (DDPMPipeline, StableDiffusionPipeline, SD3)."""
    from diffusers import DDPMPipeline, StableDiffusion3Pipeline, StableDiffusionPipeline

    if parts.denoiser.transformer:
        return StableDiffusion3Pipeline
    return StableDiffusionPipeline if parts.conditional else DDPMPipeline


def _save_pipeline(parts: Parts, model: nn.Module, folder: str | Path, scheduler) -> Path:
    folder = Path(folder)
    _pipeline(parts, model, scheduler).save_pretrained(str(folder))
    return folder


def load_pipeline(folder: str | Path) -> Parts:
    """Parts of a local diffusers pipeline folder: unet/ or transformer/ and scheduler/ (checked first), and vae/,
    text_encoder/ (+ text_encoder_2/ for SD3) and tokenizer/ when present (StableDiffusionPipeline's and
    StableDiffusion3Pipeline's layouts); a bare model folder gives the denoiser alone."""
    folder = Path(folder)
    denoiser = load_denoiser(folder)
    vae, texts = None, {}
    if (folder / "vae" / "config.json").is_file():
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(str(folder / "vae"))
    for suffix in ("", "_2"):
        if (folder / f"text_encoder{suffix}" / "config.json").is_file():
            from transformers import AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection

            if not (folder / f"tokenizer{suffix}").is_dir():
                raise ValueError(f"{folder}: text_encoder{suffix}/ without tokenizer{suffix}/")
            kind = CLIPTextModelWithProjection if denoiser.transformer else CLIPTextModel
            texts[f"text_encoder{suffix}"] = kind.from_pretrained(str(folder / f"text_encoder{suffix}"))
            texts[f"tokenizer{suffix}"] = AutoTokenizer.from_pretrained(str(folder / f"tokenizer{suffix}"))
    return Parts(denoiser, vae=vae, **texts)


def student_sigmas(steps: int, start: int = T_STEPS - 1) -> list[float]:
    """A flow student's K-step sigmas for StableDiffusion3Pipeline(sigmas=...): (tau + 1) / 1000."""
    from rlvr.images.diffusion import student_timesteps

    return [(t + 1) / T_STEPS for t in student_timesteps(steps, start=start)]


def export_student(student: Denoiser, folder: str | Path, *, steps: int, start: int = T_STEPS - 1,
                   parts: Parts | None = None) -> Path:
    """The K-step student as a diffusers pipeline folder (module docstring 4, 7), with the teacher's VAE and text
    encoders when `parts` has them; returns the folder."""
    from diffusers import LCMScheduler

    info: dict[str, Any] = {"num_inference_steps": steps, "schedule": student.schedule}
    if student.schedule == FLOW:
        if not student.transformer:
            raise ValueError("export_student: a flow student exports as an SD3 transformer pipeline; a flow U-Net "
                             "has no diffusers pipeline rlvr writes")
        scheduler = _train_scheduler(FLOW, stochastic=True)
        info["sigmas"] = student_sigmas(steps, start)
        info["load"] = "StableDiffusion3Pipeline.from_pretrained(folder, text_encoder_3=None, tokenizer_3=None)"
    else:
        if start != T_STEPS - 1:
            raise ValueError(f"export_student: LCMScheduler's K-step schedule starts at {T_STEPS - 1}; student.start "
                             f"is {start}")
        lo, hi = VP_BETAS[student.schedule]
        scheduler = LCMScheduler(num_train_timesteps=T_STEPS, beta_start=lo, beta_end=hi,
                                 beta_schedule=student.schedule, original_inference_steps=T_STEPS,
                                 prediction_type="epsilon", clip_sample=False,
                                 steps_offset=1)  # never read by LCMScheduler; 1 spares the pipeline's warning
    folder = _save_pipeline(parts or Parts(student), student.model, folder, scheduler)
    (folder / "rlvr_student.json").write_text(json.dumps(info, indent=1) + "\n")
    return folder
