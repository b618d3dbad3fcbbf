"""The image side of `loop: dmd` (issue 22): DMD2 / Flash-DMD over diffusers models (`teacher.kind: diffusers`).

    loop: dmd
    teacher: {kind: diffusers, pretrain_steps: 300}           # tiny random parts, pretrained on the data at the start
    diffusers: {path: /models/sd-tiny}                         # or a local pipeline folder as the teacher
    diffusers: {conditioning: text, vae: true, guidance_scale: 2.0}
    data: {kind: shapes, size: 16}

1. Parts (rlvr.images.diffusers_nets.Parts): the teacher Denoiser and, when the pipeline has them, its VAE and text
   encoder, all frozen. `diffusers.path` loads a local pipeline folder (its scheduler decides the schedule, checked
   before any weight is read); without it tiny random parts are built from configs and the teacher is pretrained by
   eps-MSE (flow: v-MSE) on the data for `teacher.pretrain_steps`, then written to <run>/teacher as a pipeline folder
   (a resumed run reads it back). Generator and fake score start as copies of the teacher (DMD2).
2. Data (`data.kind: shapes`): rlvr.images.data.toy_shapes at `data.size` px, 4 classes, in [-1, 1]; a training set
   (the GAN's real side, the teacher's pretraining) and a held-out set (the metrics). `data.kind: folder`: the
   user's images in `data.path` (rlvr.images.image_folder: resized and centre-cropped, captions from metadata.jsonl
   or .txt files), held out by `data.held_path` or the folder's last `data.held_images`; the folder's fingerprint is
   recorded in <run>/data.json and a resume on a changed folder is refused. With a VAE every image is encoded once
   (the posterior mode x scaling_factor) and the whole loop runs on latents.
3. Conditioning: with a text encoder a sample's prompt is its class name ("circle", ...) or its caption (folder:
   each distinct caption is a label; an uncaptioned folder gives every image the empty prompt, so a conditional
   teacher is distilled on its unconditional branch). The generator's prompts are drawn per iteration (stream
   "prompts": a class uniformly, a training image's caption for a folder; without backward simulation, the real
   rows' own labels); the GAN's real images carry their own. The teacher's eps is classifier-free guided,
   eps_u + s (eps_c - eps_u) with the empty prompt's embedding as eps_u (DMD2 §4 distils a guided teacher); the fake
   score and the student are not. The tiny teacher's pretraining drops the prompt (the empty one) on 10% of the rows
   so that guidance has an unconditional branch to read.
4. Rewards take decoded images in [-1, 1] (N, 3, H, W) and return (N,): 'file.py:function' or 'module:function';
   the 2-D rewards (mode, distance) have no image meaning and are not evaluated here.
5. Evaluation on `train.eval_size` samples from fixed noise (prompts cycling through the classes, or through the
   training images' captions in order) against the held-out images: the Fréchet distance of Gaussian fits of 4 x 4
   average-pooled pixels (48 numbers per image: a cheap, model-free stand-in for FID at this scale, not comparable to
   published FIDs), the pixels' mean and standard deviation, and the mean reward; a PNG grid of the samples goes to
   <run>/samples.png.
6. At the end the student is exported as a diffusers pipeline folder, <run>/student (export_student: DDPMPipeline
   on pixels, StableDiffusionPipeline with a text encoder and VAE, StableDiffusion3Pipeline for an SD3 flow
   transformer, `diffusers.arch: sd3`), which samples in K steps with diffusers alone.
7. LoRA students (`student.lora.r > 0`, rlvr.images.diffusers_lora): the generator (and with `student.lora.fake` the
   fake score) is peft LoRA adapters over the frozen teacher's own weights; the optimizers hold the adapters (and
   the GAN head / discriminator, full), checkpoints the adapters alone. The export is the merged student, plus the
   adapters in diffusers' LoRA format in <run>/student_lora (StableDiffusionPipeline / StableDiffusion3Pipeline:
   `load_lora_weights` onto the teacher's pipeline). The summary's "parameters" counts each network's trained
   weights and their AdamW state.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlvr.config import ConfigError
from rlvr.images.data import SHAPE_CLASSES, toy_shapes
from rlvr.images.diffusers_lora import check_targets, lora_copy, merged, parameter_counts, save_diffusers_lora
from rlvr.images.diffusers_nets import Bound, Parts, export_student, load_pipeline, pipeline_class
from rlvr.images.diffusion import FLOW, T_STEPS, add_noise, ddim_sample, student_sample, target, timesteps
from rlvr.images.dmd_config import folder_data
from rlvr.images.metrics import frechet_distance, save_grid
from rlvr.seeding import generator, stream_seed

UNCOND_DROP = 0.1  # module docstring 3
CHUNK = 64  # folder images read and VAE-encoded (prompts embedded) this many at a time


class ImageData:
    """The training images in the denoiser's space with their labels (indices into `names`, the prompts), the
    held-out pixels (module docstring 2); `folders`: data.kind folder's (training, held-out) ImageFolders."""

    def __init__(self, cfg, parts: Parts, folders=None):
        d = cfg.data
        self.by_row = folders is not None  # folder: prompts follow the images' captions (module docstring 3)
        if folders is None:
            images, self.labels = toy_shapes(d.images, size=d.size, seed=stream_seed(cfg.seed, "images") % 2**31)
            held, self.held_labels = toy_shapes(d.held_images, size=d.size,
                                                seed=stream_seed(cfg.seed, "held_images") % 2**31)
            self.train = parts.encode(images * 2 - 1)  # (N, C, H, W)
            self.held, self.pixels = held * 2 - 1, images * 2 - 1
            self.names = list(SHAPE_CLASSES)
        else:
            from rlvr.images.image_folder import caption_labels

            train, held = folders
            self.names, self.labels = caption_labels(train.captions, len(train))
            self.train = torch.cat([parts.encode(train.load(d.size, slice(i, i + CHUNK)) * 2 - 1)
                                    for i in range(0, len(train), CHUNK)])  # (N, C, H, W)
            self.held, self.pixels = held.load(d.size) * 2 - 1, train.load(d.size, slice(cfg.train.eval_size)) * 2 - 1
        self.shape = tuple(self.train.shape[1:])
        self.classes = len(self.names)

    def prompt_labels(self, n: int, *, generator: torch.Generator) -> torch.Tensor:
        """(n,) labels of the generator's prompts: a class uniformly, or a training image's caption (as often as
        the captions occur in the folder)."""
        if self.by_row:
            return self.labels[torch.randint(len(self.labels), (n,), generator=generator)]
        return torch.randint(self.classes, (n,), generator=generator)

    def eval_labels(self, n: int) -> torch.Tensor:
        """(n,) labels of the evaluation's prompts: cycling through the classes, or the training images' captions."""
        rows = torch.arange(n)
        return self.labels[rows % len(self.labels)] if self.by_row else rows % self.classes

    def sample(self, n: int, *, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(x (n, C, H, W), labels (n,)): training rows drawn with replacement."""
        rows = torch.randint(len(self.train), (n,), generator=generator)
        return self.train[rows], self.labels[rows]


class Prompts:
    """Labels -> prompt embeddings, every name's (class or distinct caption) computed once; `uncond` the empty
    prompt's."""

    def __init__(self, parts: Parts, names: tuple[str, ...] | list[str] = SHAPE_CLASSES):
        self.table = None if not parts.conditional else torch.cat(
            [parts.embed(list(names[i:i + CHUNK])) for i in range(0, len(names), CHUNK)])  # (classes, L, D)
        self.uncond = parts.embed([""])

    def __call__(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        return None if self.table is None or labels is None else self.table[labels]


class Teacher:
    """The frozen teacher's (x_t, t) -> output for one batch's prompts, classifier-free guided (module docstring 3)."""

    def __init__(self, parts: Parts, prompts: Prompts, scale: float):
        self.net, self.prompts, self.scale = parts.denoiser, prompts, scale

    def bind(self, cond: torch.Tensor | None):
        if cond is None or self.scale == 1.0:
            return Bound(self.net, cond)

        def guided(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            n = len(x_t)
            both = self.net(torch.cat([x_t, x_t]), torch.cat([t.expand(n), t.expand(n)]),
                            torch.cat([self.prompts.uncond.expand(n, -1, -1), cond]))
            uncond, conditional = both.chunk(2)
            return uncond + self.scale * (conditional - uncond)
        return guided


def build_parts(cfg, run_dir: Path, *, resume: bool) -> tuple[Parts, bool]:
    """(frozen parts, whether the teacher must still be pretrained): diffusers.path, <run>/teacher of a resumed run,
    or tiny random parts (module docstring 1)."""
    dc = cfg.diffusers
    if dc.path:
        return load_pipeline(dc.path).frozen(), False
    if resume and (run_dir / "teacher").is_dir():
        return load_pipeline(run_dir / "teacher").frozen(), False
    parts = Parts.build(size=cfg.data.size, conditional=dc.conditioning == "text", vae=dc.vae,
                        schedule=cfg.teacher.schedule, arch=dc.arch, seed=stream_seed(cfg.seed, "init") % 2**31)
    return parts, True


def pretrain_teacher(cfg, parts: Parts, data: ImageData, prompts: Prompts) -> None:
    """eps-MSE (flow: v-MSE) of the teacher on the data, t ~ U{0 .. 999}, prompts dropped on 10% of the rows,
    cosine-decayed AdamW; then frozen."""
    tc, net = cfg.teacher, parts.denoiser
    net.requires_grad_(True).train()
    opt = torch.optim.AdamW(net.parameters(), lr=tc.pretrain_lr, weight_decay=cfg.optim.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(tc.pretrain_steps, 1))
    for step in range(tc.pretrain_steps):
        g = generator(cfg.seed, "pretrain", step)
        x0, labels = data.sample(tc.pretrain_batch, generator=g)
        t = timesteps(len(x0), 0, T_STEPS - 1, generator=g)
        eps = torch.randn(x0.shape, generator=g)
        cond = prompts(labels)
        if cond is not None:
            drop = torch.rand(len(x0), generator=g) < UNCOND_DROP
            cond = torch.where(drop[:, None, None], prompts.uncond.expand_as(cond), cond)
        loss = (net(add_noise(x0, eps, t, tc.schedule), t, cond) - target(x0, eps, tc.schedule)).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.requires_grad_(False).eval()


def copies(parts: Parts, cfg) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(generator, fake score, discriminator): copies of the teacher (DMD2), or LoRA adapters over it
    (`student.lora`, module docstring 7), and the preset's discriminator."""
    from rlvr.algos.dmd import PRESETS, DiffusionGANHead

    lora = cfg.student.lora
    with torch.random.fork_rng():  # the adapters' A from their own stream: the discriminator's draw is unchanged
        torch.manual_seed(stream_seed(cfg.seed, "lora_init"))
        gen, fake = (_lora(parts, lora) if on else copy.deepcopy(parts.denoiser).requires_grad_(True).train()
                     for on in (lora.r > 0, lora.r > 0 and lora.fake))
    with torch.random.fork_rng():
        torch.manual_seed(stream_seed(cfg.seed, "init"))
        kind = PRESETS[cfg.distill.preset].discriminator
        disc = kind(width=parts.denoiser.width) if kind is DiffusionGANHead else kind(
            dim=math.prod(parts.shape(cfg.data.size)))
    return gen, fake, disc


def _lora(parts: Parts, lora) -> nn.Module:
    return lora_copy(parts.denoiser, r=lora.r, lora_alpha=lora.lora_alpha or lora.r,
                     target_modules=lora.target_modules)


def check_lora(cfg, parts: Parts) -> None:
    """student.lora.target_modules against the teacher's layers: one ConfigError line before any training."""
    if cfg.student.lora.r:
        try:
            check_targets(parts.denoiser.model, cfg.student.lora.target_modules)
        except ValueError as err:
            raise ConfigError(f"student.lora.target_modules: {err}") from err


def image_reward(fn, parts: Parts):
    """A reward on decoded images, called with the denoiser-space x0 (module docstring 4)."""
    return lambda x0: fn(parts.decode(x0))


def _pooled(images: torch.Tensor) -> torch.Tensor:
    return nn.functional.adaptive_avg_pool2d(images.float(), 4).flatten(1).double()


def eval_inputs(cfg, data: ImageData) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The fixed evaluation noises (one per student step) and labels (cycling through the classes)."""
    g = generator(cfg.seed, "eval")
    n = cfg.train.eval_size
    noises = [torch.randn((n, *data.shape), generator=g) for _ in range(cfg.student.steps)]
    return noises, data.eval_labels(n)


@torch.no_grad()
def image_metrics(images: torch.Tensor, data: ImageData, reward_fn) -> dict[str, float]:
    """Pooled-pixel Fréchet distance to the held-out images, pixel mean / std, mean reward (module docstring 5)."""
    images = torch.nan_to_num(images.float()).clamp(-1, 1)
    a, b = _pooled(images), _pooled(data.held)
    metrics = {"frechet": frechet_distance(a.mean(0), torch.cov(a.T), b.mean(0), torch.cov(b.T)),
               "pixel_mean": float(images.mean()), "pixel_std": float(images.std())}
    if reward_fn is not None:
        metrics["reward"] = float(reward_fn(images).mean())
    return metrics


@torch.no_grad()
def sample_student(net: nn.Module, cfg, parts: Parts, data: ImageData, prompts: Prompts) -> torch.Tensor:
    """The student's evaluation images in [-1, 1]."""
    noises, labels = eval_inputs(cfg, data)
    x = student_sample(Bound(net, prompts(labels)), noises, steps=cfg.student.steps, start=cfg.student.start,
                       schedule=cfg.teacher.schedule)
    return parts.decode(x)


@torch.no_grad()
def sample_teacher(teacher: Teacher, cfg, parts: Parts, data: ImageData, prompts: Prompts) -> torch.Tensor:
    noises, labels = eval_inputs(cfg, data)
    x = ddim_sample(teacher.bind(prompts(labels)), noises[0], steps=cfg.teacher.sample_steps,
                    schedule=cfg.teacher.schedule)
    return parts.decode(x)


def save_samples(path: Path, images: torch.Tensor) -> None:
    save_grid(((images[:32].clamp(-1, 1) + 1) / 2), path, nrow=8, scale=2)


def export(net: nn.Module, cfg, parts: Parts, folder: Path) -> dict[str, Any]:
    """The student as a diffusers pipeline folder (module docstring 6); what was written, or why not."""
    if cfg.teacher.schedule == FLOW and not parts.denoiser.transformer:
        return {"exported": None, "why": "a flow U-Net has no diffusers pipeline rlvr writes (flow: SD3)"}
    if cfg.teacher.schedule != FLOW and cfg.student.start != T_STEPS - 1:
        return {"exported": None, "why": "LCMScheduler's K-step schedule starts at 999; student.start differs"}
    if parts.vae is not None and not parts.conditional:
        return {"exported": None, "why": "an unconditional latent model has no diffusers pipeline rlvr writes"}
    student = merged(net).eval()
    export_student(student, folder, steps=cfg.student.steps, parts=parts)
    out: dict[str, Any] = {"exported": str(folder)}
    if cfg.student.lora.r:
        kind = pipeline_class(parts)
        if hasattr(kind, "save_lora_weights"):
            out["lora_weights"] = str(save_diffusers_lora(net, kind, folder.parent / f"{folder.name}_lora"))
        else:
            out["lora_weights"], out["lora_why"] = None, f"{kind.__name__} has no LoRA loader in diffusers"
    return out


def fingerprints(cfg, folders, run_dir: Path, *, resume: bool) -> None:
    """<run>/data.json: written by a new run, compared by a resumed one (module docstring 2)."""
    from rlvr.config import ConfigError
    from rlvr.images.image_folder import record_fingerprints

    train, held = folders
    change = record_fingerprints(run_dir / "data.json", {"train": train, "held": held}, resume=resume)
    if change:
        key = "data.held_path" if cfg.data.held_path and change[0] == "held" else "data.path"
        raise ConfigError(f"{key}: {change[1]}: resume on the same images, or start a new run")


class ImageSide:
    """An image run's side of `loop: dmd` (rlvr.images.dmd_points.Points' methods): parts, data, prompts, the guided
    teacher, rewards on decoded images, the image metrics, the student's export."""

    def __init__(self, cfg, checkpoint: Path | None):
        from rlvr.images.dmd_rewards import build_reward

        self.cfg = cfg
        self.folders = folder_data(cfg) if cfg.data.kind == "folder" else None  # read before any model is built
        if self.folders is not None and checkpoint is not None:
            fingerprints(cfg, self.folders, cfg.run_dir, resume=True)
        self.parts, fresh = build_parts(cfg, cfg.run_dir, resume=checkpoint is not None)
        check_lora(cfg, self.parts)
        self.data = ImageData(cfg, self.parts, self.folders)
        self.prompts = Prompts(self.parts, self.data.names)
        self.data.prompts = self.prompts if self.parts.conditional else None
        self.fresh = fresh
        if fresh:
            pretrain_teacher(cfg, self.parts, self.data, self.prompts)
        self.parts.frozen()
        self.teacher = Teacher(self.parts, self.prompts, cfg.diffusers.guidance_scale)
        self.pixel_reward = build_reward(cfg.rl, None, images=True)
        self.reward_fn = image_reward(self.pixel_reward, self.parts) if self.pixel_reward else None

    def networks(self):
        from rlvr.images.dmd_train import Networks

        return Networks.from_parts(self.cfg, self.parts)

    def write_start(self, run_dir: Path) -> None:
        """The pretrained tiny teacher as a pipeline folder, <run>/teacher (a loaded one stays where it is)."""
        if self.fresh:
            self.parts.save(run_dir / "teacher")
        if self.folders is not None:
            fingerprints(self.cfg, self.folders, run_dir, resume=False)

    def evaluate(self, nets) -> tuple[dict[str, float], torch.Tensor]:
        import time

        start = time.perf_counter()
        images = sample_student(nets.unbound("generator"), self.cfg, self.parts, self.data, self.prompts)
        metrics = image_metrics(images, self.data, self.pixel_reward)
        metrics["time/sample_per_1000"] = (time.perf_counter() - start) * 1000 / len(images)
        return metrics, images

    def teacher_summary(self) -> dict[str, Any]:
        import json

        path = self.cfg.run_dir / "teacher.json"
        if path.is_file():
            return json.loads(path.read_text())
        images = sample_teacher(self.teacher, self.cfg, self.parts, self.data, self.prompts)
        real = self.data.pixels[:self.cfg.train.eval_size]  # training images vs held-out: the metrics' floor
        metrics = {**image_metrics(images, self.data, self.pixel_reward), "sample_steps": self.cfg.teacher.sample_steps,
                   "kind": "diffusers", "real": image_metrics(real, self.data, self.pixel_reward)}
        path.write_text(json.dumps(metrics, indent=1))
        save_samples(self.cfg.run_dir / "teacher.png", images)
        return metrics

    def finish(self, nets, samples: torch.Tensor, step: int) -> dict[str, Any]:
        save_samples(self.cfg.run_dir / "samples.png", samples)
        counts = parameter_counts({name: nets.unbound(name) for name in ("generator", "fake")} | {"disc": nets.disc})
        return {**export(nets.unbound("generator"), self.cfg, self.parts, self.cfg.run_dir / "student"),
                "parameters": counts}
