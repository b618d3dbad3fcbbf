"""The `loop: dmd` recipe schema (rlvr.images.dmd_train): typed sections with one docstring per field, and `validate`,
the range check of every field (one ConfigError line naming it) before anything is written."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlvr.algos.dmd import PRESETS
from rlvr.config import ConfigError
from rlvr.images.diffusion import SCHEDULE_NAMES, T_STEPS

REWARD_NAMES = ("distance", "mode")  # rlvr.images.dmd_rewards.REWARDS; or 'file.py:function' / 'module:function'


@dataclass
class DataConfig:
    kind: str = "mixture"
    """mixture: the 2-D Gaussian mixture below (teacher.kind exact or mlp); shapes: 4-class toy shape images
    (rlvr.images.data.toy_shapes) for a diffusers teacher (rlvr.images.dmd_diffusers); folder: your own images in
    `path` (rlvr.images.image_folder), for a diffusers teacher."""
    size: int = 16
    """shapes, folder: image side in pixels (folder: each image's short side resized to it, then centre-cropped)."""
    path: str | None = None
    """folder: a local folder of .png / .jpg / .jpeg / .webp images, captioned by its metadata.jsonl (Hugging Face
    imagefolder's layout) or a <stem>.txt beside each image, or uncaptioned (the empty prompt)."""
    caption_column: str = "text"
    """folder: the caption's key in each metadata.jsonl row."""
    held_path: str | None = None
    """folder: another such folder of held-out images for the evaluation; None: the last `held_images` of `path` in
    sorted order (not trained on)."""
    images: int = 2000
    """shapes: training images (the GAN's real side, the tiny teacher's pretraining)."""
    held_images: int = 256
    """shapes: held-out images the evaluation compares against; folder without held_path: how many of the folder's
    last images (in sorted order) are held out."""
    modes: int = 8
    """Mixture modes, evenly spaced on a circle."""
    radius: float = 4.0
    """Radius of the circle of means."""
    sigma: float = 0.3
    """Standard deviation of each mode."""


@dataclass
class TeacherConfig:
    kind: str = "exact"
    """exact: the analytic eps of the noised mixture; mlp: a ScoreMLP trained on data at the start of the run;
    diffusers: a diffusers U-Net on images (the `diffusers` section; data.kind shapes)."""
    pretrain_steps: int = 2000
    """Steps of eps-MSE training of the ScoreMLP on data (the mlp teacher, and the student's start); 0: none."""
    pretrain_batch: int = 512
    """Data points per pretraining step."""
    pretrain_lr: float = 2e-3
    """AdamW learning rate of the pretraining (cosine decay to 0)."""
    sample_steps: int = 100
    """DDIM steps of the teacher's evaluation samples."""
    radius: float | None = None
    """Radius of the circle of means of the mixture the teacher learns (the mlp teacher's pretraining data, the exact
    teacher's score); None: data.radius. Another value makes a biased teacher: the distribution-matching loss then
    pulls the student toward the teacher's ring while the GAN's real samples are the data's (the case where the two
    gradients can conflict, docs/RESULTS.md)."""
    schedule: str = "linear"
    """The diffusion's noise schedule (rlvr.images.diffusion.SCHEDULE_NAMES): linear (DDPM's betas 1e-4 .. 0.02),
    scaled_linear (the Stable Diffusion family's, which DMD2 distils: a one-step student's eps error reaches x0
    14.6x amplified at t = 999 instead of 157x), or flow (rectified flow as SD3's: x_t = (1 - s) x0 + s eps, every
    network predicts the velocity eps - x0; distribution matching reads x0 = x_t - s v, docs/methods.md §11)."""


@dataclass
class DiffusersConfig:
    path: str | None = None
    """A local diffusers pipeline folder (unet/ and scheduler/, with vae/, text_encoder/ and tokenizer/ when it has
    them) as the teacher; its scheduler sets the schedule (teacher.schedule must name the same). None: tiny random
    parts built from configs and pretrained on the data for teacher.pretrain_steps."""
    conditioning: str = "none"
    """Tiny parts only: none (a UNet2DModel) or text (a UNet2DConditionModel with a tiny CLIP text encoder; the
    class names are the prompts; needs vae, Stable Diffusion's shape)."""
    vae: bool = False
    """Tiny parts only: an AutoencoderKL; distillation then runs on its latents."""
    arch: str = "unet"
    """Tiny parts only: unet (UNet2DModel / UNet2DConditionModel) or sd3 (an SD3Transformer2DModel with two CLIP
    text encoders and a VAE: needs conditioning text, vae true and teacher.schedule flow)."""
    guidance_scale: float = 1.0
    """Classifier-free guidance of the teacher's eps (conditional models; 1: none)."""


LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # diffusers' Attention projections (U-Nets' and SD3's)


@dataclass
class StudentLoraConfig:
    r: int = 0
    """LoRA rank (peft LoraConfig's r, as model.lora names it on the language side); 0: full-weight students (the
    default). > 0 (teacher.kind diffusers only): the generator, and with `fake` the fake score, become peft LoRA
    adapters over the teacher's frozen weights (shared, not copied); only the adapters, the GAN head and the
    discriminator train (rlvr.images.diffusers_lora)."""
    lora_alpha: float | None = None
    """The adapters' scale is lora_alpha / r (LoraConfig's lora_alpha); None: r (scale 1)."""
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    """Names of the nn.Linear / nn.Conv2d layers that get adapters: a layer whose dotted name is the entry or ends
    with "." + it (peft's rule). The default, the attention projections, exists in UNet2DConditionModel,
    SD3Transformer2DModel (its joint attention's context side is add_q_proj, add_k_proj, add_v_proj, to_add_out)
    and UNet2DModel (its attention blocks and mid block); convolutions (conv1, conv2) and time_emb_proj take
    adapters too. Each entry must match a layer (checked when the teacher is built, before any training)."""
    fake: bool = False
    """The fake score as LoRA adapters too (its own, over the same frozen teacher); false: a full trained copy."""


@dataclass
class StudentConfig:
    steps: int = 4
    """K: generator steps at inference (tau = start, start - (start + 1) // K, ...)."""
    start: int = 999
    """The timestep the first step is told while it reads pure noise (DMD2's conditioning timestep: 999; one of its
    one-step SDXL configs uses 399). With eps-prediction at 999, x0 = (x_t - sqrt(1 - ab) eps) / 0.0064 amplifies
    the network's error 157x; a lower start tempers that for a 1-step student."""
    backward_simulation: bool = True
    """Train G on its own k-step outputs (one k per iteration); false: data re-noised to a per-sample tau[k]."""
    init: str = "pretrained"
    """pretrained: generator and fake score start from the pretrained ScoreMLP (DMD2); fresh: random weights."""
    lora: StudentLoraConfig = field(default_factory=StudentLoraConfig)
    """LoRA students (r > 0): {r, lora_alpha, target_modules, fake}; see StudentLoraConfig."""


@dataclass
class DistillConfig:
    preset: str = "dmd2"
    """dmd2: DM + GAN at every step, diffusion-GAN head on the fake score; flash: Flash-DMD's split (DM at
    t_k >= split, GAN below) with a data-space discriminator (reconstruction)."""
    split: int = 500
    """Flash split timestep tau*."""
    dm_weight: float = 1.0
    """Weight of L_DM in the generator loss."""
    gan_weight: float = 0.0
    """Weight of the generator's GAN loss; 0 turns the GAN (and its discriminator) off."""
    disc_weight: float = 1.0
    """Weight of the discriminator loss in the guidance loss."""
    gan_t_max: int = 1000
    """Diffusion-GAN noise level: t' ~ U{0 .. gan_t_max - 1} (dmd2 preset)."""
    ratio: int = 5
    """Guidance updates per generator update (two time-scale rule)."""
    t_min: int = 20
    """Lowest DM timestep."""
    t_max: int = 980
    """Highest DM timestep."""


@dataclass
class RLConfig:
    reward: str = "distance"
    """mode: the mode posterior of `mode`; distance: -distance to mode `mode`; or "file.py:function" /
    "module:function" taking x0 (N, 2) and returning (N,) differentiable rewards."""
    rewards: dict[str, float] = field(default_factory=dict)
    """Several rewards summed with weights, {reward: weight} (each key as `reward` takes it); when non-empty it
    replaces `reward`. Every reward's output is checked: a wrong shape or a non-finite value is an error naming the
    reward and the sample."""
    mode: int = 0
    """The rewarded mode."""
    form: str = "log"
    """mode reward: log (log p(mode | x)) or prob (p(mode | x))."""
    lambda_R: float = 0.0
    """Weight of L_RL = -mean R(x0) in the generator loss; 0: no RL (the reward is still evaluated)."""
    distill: bool = True
    """false: drop the distillation terms and guidance updates (RL alone on the student)."""


@dataclass
class OptimConfig:
    lr: float = 1e-4
    """AdamW learning rate of the generator."""
    guidance_lr: float | None = None
    """AdamW learning rate of the fake score and discriminator; None: `lr`."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    grad_clip: float = 10.0
    """Gradient-norm clip of each update."""
    warmup: int = 0
    """Linear learning-rate warm-up steps (DMD2: 500)."""


@dataclass
class TrainConfig:
    steps: int = 1000
    """Iterations (guidance updates; the generator updates every `distill.ratio`-th)."""
    batch: int = 256
    """Samples per iteration."""
    eval_every: int = 250
    """Evaluate every this many steps (and at step 0 and the end)."""
    eval_size: int = 1000
    """Samples per evaluation."""
    save_every: int = 500
    """Checkpoint every this many steps (and at the end)."""
    keep: int = 2
    """Checkpoints kept."""


@dataclass
class RunConfig:
    loop: str = "dmd"
    """This loop's name in `rlvr train` (rlvr.cli.LOOPS)."""
    name: str = "dmd"
    """Run folder name under output_dir."""
    seed: int = 0
    """Seed of every random stream."""
    output_dir: str = "runs"
    """Parent folder of run folders."""
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    diffusers: DiffusersConfig = field(default_factory=DiffusersConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def _check(ok: bool, key: str, want: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key}: must be {want}, got {value!r}")


def validate(cfg: RunConfig) -> None:
    """Range checks of every field, before anything is written; one ConfigError line naming the field."""
    _check(cfg.loop == "dmd", "loop", "'dmd'", cfg.loop)
    _check(cfg.data.modes >= 1, "data.modes", ">= 1", cfg.data.modes)
    _check(cfg.data.radius >= 0, "data.radius", ">= 0", cfg.data.radius)
    _check(cfg.data.sigma > 0, "data.sigma", "> 0", cfg.data.sigma)
    _check(cfg.teacher.kind in ("exact", "mlp", "diffusers"), "teacher.kind", "exact, mlp or diffusers",
           cfg.teacher.kind)
    _validate_images(cfg)
    _check(cfg.teacher.radius is None or cfg.teacher.radius >= 0, "teacher.radius", ">= 0 or null", cfg.teacher.radius)
    _check(cfg.teacher.pretrain_steps >= 0, "teacher.pretrain_steps", ">= 0", cfg.teacher.pretrain_steps)
    needs = cfg.teacher.kind == "mlp" or (cfg.student.init == "pretrained" and cfg.teacher.kind == "exact")
    _check(not needs or cfg.teacher.pretrain_steps > 0, "teacher.pretrain_steps", "> 0 for an mlp teacher or a "
           "pretrained student init", cfg.teacher.pretrain_steps)
    _check(cfg.teacher.pretrain_batch >= 1, "teacher.pretrain_batch", ">= 1", cfg.teacher.pretrain_batch)
    _check(cfg.teacher.pretrain_lr > 0, "teacher.pretrain_lr", "> 0", cfg.teacher.pretrain_lr)
    _check(1 <= cfg.teacher.sample_steps <= T_STEPS, "teacher.sample_steps", f"in [1, {T_STEPS}]",
           cfg.teacher.sample_steps)
    _check(cfg.teacher.schedule in SCHEDULE_NAMES, "teacher.schedule", f"one of {sorted(SCHEDULE_NAMES)}",
           cfg.teacher.schedule)
    _check(1 <= cfg.student.steps <= 100, "student.steps", "in [1, 100]", cfg.student.steps)
    _check(cfg.student.steps - 1 <= cfg.student.start < T_STEPS, "student.start", f"in [student.steps - 1, "
           f"{T_STEPS - 1}]", cfg.student.start)
    _check(cfg.student.init in ("pretrained", "fresh"), "student.init", "pretrained or fresh", cfg.student.init)
    _validate_lora(cfg)
    _validate_distill(cfg.distill)
    _validate_rl(cfg.rl, cfg.data.modes)
    _validate_optim(cfg.optim)
    tr = cfg.train
    for key in ("steps", "batch", "eval_every", "save_every", "keep"):
        _check(getattr(tr, key) >= 1, f"train.{key}", ">= 1", getattr(tr, key))
    _check(tr.eval_size >= 8, "train.eval_size", ">= 8 (precision / recall need k + 1 = 4 points)", tr.eval_size)


def _validate_images(cfg: RunConfig) -> None:
    d, dc, images = cfg.data, cfg.diffusers, cfg.teacher.kind == "diffusers"
    _check(d.kind in ("mixture", "shapes", "folder"), "data.kind", "mixture, shapes or folder", d.kind)
    _check(images == (d.kind in ("shapes", "folder")), "data.kind", "shapes or folder with teacher.kind diffusers, "
           "mixture otherwise", d.kind)
    if not images:
        return
    _check(d.size >= 8 and d.size % 4 == 0, "data.size", "a multiple of 4, at least 8", d.size)
    _check(d.images >= 8, "data.images", ">= 8", d.images)
    _check(d.held_images >= 8, "data.held_images", ">= 8", d.held_images)
    _check(dc.conditioning in ("none", "text"), "diffusers.conditioning", "none or text", dc.conditioning)
    _check(dc.conditioning == "none" or dc.vae or dc.path, "diffusers.vae", "true with text conditioning (Stable "
           "Diffusion's shape)", dc.vae)
    _check(dc.arch in ("unet", "sd3"), "diffusers.arch", "unet or sd3", dc.arch)
    _check(dc.arch != "sd3" or (dc.conditioning == "text" and dc.vae and cfg.teacher.schedule == "flow"),
           "diffusers.arch", "sd3 only with conditioning text, vae true and teacher.schedule flow", dc.arch)
    _check(dc.guidance_scale >= 1, "diffusers.guidance_scale", ">= 1", dc.guidance_scale)
    if d.kind == "folder":
        folder_data(cfg, check=True)
    _check(cfg.student.init == "pretrained", "student.init", "pretrained with a diffusers teacher (generator and "
           "fake score start from it)", cfg.student.init)
    _check(dc.path is not None or cfg.teacher.pretrain_steps >= 0, "teacher.pretrain_steps", ">= 0",
           cfg.teacher.pretrain_steps)
    if dc.path is not None:
        from rlvr.images.diffusers_nets import folder_schedule

        folder = Path(dc.path)
        _check(folder.is_dir(), "diffusers.path", "a local diffusers folder", dc.path)
        try:
            schedule = folder_schedule(folder)
        except ValueError as err:
            raise ConfigError(f"diffusers.path: {err}") from err
        _check(schedule == cfg.teacher.schedule, "teacher.schedule", f"{schedule!r}, the schedule of {folder}",
               cfg.teacher.schedule)
    from rlvr.images.scorers import is_scorer, parse

    rl = cfg.rl
    for key, spec in [("rl.reward", rl.reward)] + [(f"rl.rewards[{k!r}]", k) for k in rl.rewards]:
        if is_scorer(spec):  # the folder is checked here, the model loaded when the reward is built
            try:
                parse(spec)
            except ValueError as err:
                raise ConfigError(f"{key}: {err}") from err
        _check(rl.lambda_R == 0 or spec not in REWARD_NAMES, key, "'file.py:function' or 'module:function' on images "
               f"(the 2-D rewards {sorted(REWARD_NAMES)} have no image meaning)", spec)


def _validate_lora(cfg: RunConfig) -> None:
    lo = cfg.student.lora
    _check(lo.r >= 0, "student.lora.r", ">= 0 (0: full-weight students)", lo.r)
    if lo.r == 0:
        _check(not lo.fake, "student.lora.fake", "false when student.lora.r is 0 (no LoRA)", lo.fake)
        return
    _check(cfg.teacher.kind == "diffusers", "student.lora.r", "0 unless teacher.kind is diffusers (the 2-D ScoreMLP "
           "students train whole: LoRA is for diffusers models)", lo.r)
    _check(lo.lora_alpha is None or lo.lora_alpha > 0, "student.lora.lora_alpha", "> 0 or null (null: r)",
           lo.lora_alpha)
    _check(len(lo.target_modules) > 0 and all(isinstance(t, str) and t.strip(".") == t and t for t in
                                              lo.target_modules),
           "student.lora.target_modules", "a non-empty list of layer names (e.g. to_q, to_out.0)", lo.target_modules)


def folder_data(cfg: RunConfig, *, check: bool = False):
    """(training, held-out) ImageFolders of `data.kind: folder` (rlvr.images.image_folder); check: also open every
    image and count them against train.batch and 8 held-out images. One ConfigError line naming the field."""
    from rlvr.images.image_folder import check_readable, scan, split

    d = cfg.data
    _check(d.path is not None, "data.path", "a folder of images with data.kind folder", d.path)
    folders = {}
    for key, path in (("data.path", d.path), ("data.held_path", d.held_path)):
        if path is None:
            continue
        try:
            folders[key] = scan(path, caption_column=d.caption_column)
            if check:
                check_readable(folders[key])
        except ValueError as err:
            raise ConfigError(f"{key}: {err}") from err
    train, held = split(folders["data.path"], folders.get("data.held_path"), d.held_images)
    if check:
        rest = "" if d.held_path else f" after the last data.held_images = {d.held_images} are held out"
        _check(len(train) >= cfg.train.batch, "data.path", f"at least train.batch = {cfg.train.batch} training "
               f"images{rest}", len(train))
        _check(len(held) >= 8, "data.held_path" if d.held_path else "data.held_images", "at least 8 held-out images",
               len(held))
    return train, held


def _validate_distill(d: DistillConfig) -> None:
    _check(d.preset in PRESETS, "distill.preset", f"one of {sorted(PRESETS)}", d.preset)
    _check(0 <= d.split <= T_STEPS, "distill.split", f"in [0, {T_STEPS}]", d.split)
    for key in ("dm_weight", "gan_weight", "disc_weight"):
        _check(getattr(d, key) >= 0, f"distill.{key}", ">= 0", getattr(d, key))
    _check(1 <= d.gan_t_max <= T_STEPS, "distill.gan_t_max", f"in [1, {T_STEPS}]", d.gan_t_max)
    _check(d.ratio >= 1, "distill.ratio", ">= 1", d.ratio)
    _check(0 <= d.t_min <= d.t_max < T_STEPS, "distill.t_min / t_max", f"0 <= t_min <= t_max < {T_STEPS}",
           (d.t_min, d.t_max))


def _validate_rl(rl: RLConfig, modes: int) -> None:
    for key, spec in [("rl.reward", rl.reward)] + [(f"rl.rewards[{k!r}]", k) for k in rl.rewards]:
        _check(isinstance(spec, str) and (spec in REWARD_NAMES or ":" in spec), key,
               f"one of {sorted(REWARD_NAMES)}, 'file.py:function' or 'module:function'", spec)
    for spec, weight in rl.rewards.items():
        _check(isinstance(weight, (int, float)) and not isinstance(weight, bool) and math.isfinite(weight),
               f"rl.rewards[{spec!r}]", "a finite number (the reward's weight)", weight)
    _check(0 <= rl.mode < modes, "rl.mode", f"in [0, data.modes - 1 = {modes - 1}]", rl.mode)
    _check(rl.form in ("log", "prob"), "rl.form", "log or prob", rl.form)
    _check(rl.lambda_R >= 0, "rl.lambda_R", ">= 0", rl.lambda_R)
    _check(rl.distill or rl.lambda_R > 0, "rl.lambda_R", "> 0 when rl.distill is false (nothing would train)",
           rl.lambda_R)


def _validate_optim(op: OptimConfig) -> None:
    _check(op.lr > 0, "optim.lr", "> 0", op.lr)
    _check(op.guidance_lr is None or op.guidance_lr > 0, "optim.guidance_lr", "> 0 or null", op.guidance_lr)
    _check(len(op.betas) == 2 and all(0 <= b < 1 for b in op.betas), "optim.betas", "two values in [0, 1)", op.betas)
    _check(op.weight_decay >= 0, "optim.weight_decay", ">= 0", op.weight_decay)
    _check(op.grad_clip > 0, "optim.grad_clip", "> 0", op.grad_clip)
    _check(op.warmup >= 0, "optim.warmup", ">= 0", op.warmup)
