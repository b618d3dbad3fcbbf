"""DMD2 / Flash-DMD distillation with optional joint RL on a 2-D Gaussian mixture: `rlvr train recipes/flash_dmd.yaml`.

1. Teacher: the exact eps of the noised mixture (`teacher.kind: exact`), or a `ScoreMLP` trained on data samples for
   `teacher.pretrain_steps` at the start of the run (`mlp`: a realistic, imperfect teacher). The pretrained MLP is
   also the generator's and the fake score's starting point (`student.init: pretrained`), as DMD2 initialises both
   from the teacher; it is saved with the run (teacher.safetensors and every checkpoint). `teacher.radius` other than
   data.radius makes a biased teacher (it learns a mixture on another circle); evaluation is always against the data.
2. Each iteration (DMD2 `train_one_step`): the generator G makes x0 at a step of its K-step schedule (backward
   simulation: one k per iteration, its own k-step output re-noised to tau[k]; otherwise a per-sample k on data
   re-noised). Every `ratio`-th iteration G is updated (guidance networks frozen) on
   w_dm(t_k) dm_weight L_DM + w_gan(t_k) gan_weight L_G,GAN + lambda_R L_RL, with the preset's weights (dmd2: both at
   every step; flash: DM for t_k >= split, GAN below, reconstruction). Every iteration the fake score and the
   discriminator are updated on the detached x0: L_fake + disc_weight L_D (two time-scale rule).
3. `rl.distill: false` drops the distillation terms and the guidance updates: RL alone on the student, the
   reward-hacking baseline. Rewards are differentiable functions of x0 (mode posterior, distance, or "module:fn").
4. Evaluation on `eval_size` student samples vs fresh data: Fréchet distance between Gaussian fits of the 2-D points
   (the "feature-FID" of this scale, the features being the points), energy distance, modes covered (>= 5% of
   samples within 3 sigma of the mode), precision / recall (k = 3), mean reward, within-mode std, median radius; the
   teacher's DDIM samples get the same metrics once, with their wall time. A scatter PNG of the final samples lands in
   the run folder.
5. Every random draw comes from a named stream keyed by the step (rlvr.seeding), so a resumed run repeats the
   uninterrupted one exactly; checkpoints hold every network and optimizer. The run folder, config.yaml, the
   checkpoints' RNG streams and Ctrl-C (finish the step, checkpoint, exit 130) are rlvr.loop_run's, as for every loop.
6. Under `torchrun --nproc_per_node N` (train.batch divisible by N) each rank trains a contiguous share of every
   iteration's batch: the generator's input and every per-sample noise are drawn for the whole batch and the rank's
   rows kept (rlvr.algos.dmd.Share), which branches run is decided over all ranks, the gradients are averaged before
   clipping and the metrics over ranks, so N ranks train as one process does (tests/test_dmd_train.py). Every rank
   pretrains the teacher MLP itself (the same stream); the main rank alone evaluates, logs and writes files.
7. `teacher.kind: diffusers` runs the same iteration on images with diffusers models (a local pipeline folder or
   tiny random parts; text conditioning, VAE latents, the student exported as a pipeline folder): the image side
   is rlvr.images.dmd_diffusers, the networks called through rlvr.images.diffusers_nets.Denoiser. There
   `student.lora` makes the generator (and the fake score) peft LoRA adapters over the frozen teacher
   (rlvr.images.diffusers_lora): the optimizers and checkpoints hold the adapters (and the GAN parts) alone.
8. The recipe schema and its range checks are in rlvr.images.dmd_config; the 2-D side (mixture, teacher, point
   metrics) in rlvr.images.dmd_points; the rewards in rlvr.images.dmd_rewards.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlvr.algos.dmd import (
    PRESETS,
    Share,
    dm_loss,
    dm_targets,
    fake_score_loss,
    gan_discriminator_loss,
    gan_generator_loss,
    noised,
    rl_loss,
)
from rlvr.config import ConfigError
from rlvr.distributed import World, all_reduce, average_gradients, barrier, mean_over_ranks
from rlvr.images.diffusers_nets import Bound
from rlvr.images.diffusion import (
    T_STEPS,
    GaussianMixture,
    ScoreMLP,
    add_noise,
    backward_simulation,
    generator_x0,
    student_timesteps,
    target,
)
from rlvr.images.dmd_config import RunConfig, validate
from rlvr.images.dmd_points import Points
from rlvr.loop_run import StopRequest, due, open_logger, restore_state, run_in_world, save_state
from rlvr.seeding import generator, stream_seed

__all__ = ["RunConfig", "train", "validate"]  # the loop's interface to rlvr.cli (LOOPS)


# ---------------------------------------------------------------- networks


class Networks:
    """Every network of a run; `save` writes each state dict as safetensors (the checkpoint's model folder)."""

    def __init__(self, cfg: RunConfig, pretrained: ScoreMLP | None):
        with torch.random.fork_rng():  # initial weights from the run's own stream, global RNG untouched
            torch.manual_seed(stream_seed(cfg.seed, "init"))
            self.pretrained = pretrained
            self.generator = _copy(pretrained) if cfg.student.init == "pretrained" else ScoreMLP()
            self.fake = _copy(pretrained) if cfg.student.init == "pretrained" else ScoreMLP()
            self.disc = PRESETS[cfg.distill.preset].discriminator()
        if pretrained is not None:
            pretrained.requires_grad_(False)

    @classmethod
    def from_parts(cls, cfg: RunConfig, parts) -> Networks:
        """A diffusers run's networks: generator and fake score copies of the teacher, the preset's discriminator;
        the teacher is not among them (it is a pipeline folder of its own, rlvr.images.dmd_diffusers)."""
        from rlvr.images.dmd_diffusers import copies

        nets = cls.__new__(cls)
        nets.pretrained = None
        nets.generator, nets.fake, nets.disc = copies(parts, cfg)
        return nets

    def bound(self, cond: torch.Tensor | None) -> Networks:
        """A view whose generator and fake score carry this batch's prompt embeddings (self when None)."""
        if cond is None:
            return self
        view = copy.copy(self)
        view.generator, view.fake = Bound(self.unbound("generator"), cond), Bound(self.unbound("fake"), cond)
        return view

    def unbound(self, name: str) -> nn.Module:
        net = getattr(self, name)
        return net.net if isinstance(net, Bound) else net

    def named(self) -> dict[str, nn.Module]:
        nets = {"generator": self.unbound("generator"), "fake": self.unbound("fake"), "disc": self.disc}
        return nets if self.pretrained is None else {**nets, "pretrained": self.pretrained}

    def generator_parameters(self) -> list[nn.Parameter]:
        """What the generator's optimizer trains: every weight, or a LoRA generator's adapters."""
        from rlvr.images.diffusers_lora import trainable

        return trainable(self.unbound("generator"))

    def guidance_parameters(self) -> list[nn.Parameter]:
        from rlvr.images.diffusers_lora import trainable

        return [*trainable(self.unbound("fake")), *self.disc.parameters()]

    def save(self, folder: Path, merge_adapters: bool = False) -> None:
        """Each network's state dict (a LoRA network's adapters alone, rlvr.images.diffusers_lora)."""
        from safetensors.torch import save_file

        from rlvr.images.diffusers_lora import adapter_state
        folder.mkdir(parents=True, exist_ok=True)
        for name, net in self.named().items():
            save_file({k: v.contiguous() for k, v in adapter_state(net).items()}, str(folder / f"{name}.safetensors"))

    def load(self, folder: Path) -> None:
        from safetensors.torch import load_file

        from rlvr.images.diffusers_lora import load_adapter_state
        for name, net in self.named().items():
            path = folder / f"{name}.safetensors"
            try:
                load_adapter_state(net, load_file(str(path)), str(path))
            except ValueError as err:
                raise ConfigError(str(err)) from err


def _copy(net: ScoreMLP) -> ScoreMLP:
    fresh = ScoreMLP()
    fresh.load_state_dict(net.state_dict())
    return fresh.requires_grad_(True)


# ---------------------------------------------------------------- one iteration


def _shape(data) -> tuple[int, ...]:
    """One sample's shape: (2,) for the mixture, (C, H, W) for images."""
    return tuple(getattr(data, "shape", (2,)))


def generator_input(nets: Networks, cfg: RunConfig, gmm: GaussianMixture, step: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(x_t (B, ...), t_k (B,), prompt labels (B,) or None): where G is applied this iteration, and for which
    prompts (module docstring 2; rlvr.images.dmd_diffusers docstring 3)."""
    batch, steps = cfg.train.batch, cfg.student.steps
    g = generator(cfg.seed, "generator_input", step)
    noises = [torch.randn(batch, *_shape(gmm), generator=g) for _ in range(steps)]
    tau = torch.tensor(student_timesteps(steps, start=cfg.student.start))
    prompts = getattr(gmm, "prompts", None)  # images with a text encoder (rlvr.images.dmd_diffusers.Prompts)
    if cfg.student.backward_simulation:
        k = int(torch.randint(steps, (1,), generator=g))  # one k for the whole batch (DMD2)
        labels = cond = None
        if prompts is not None:
            labels = gmm.prompt_labels(batch, generator=generator(cfg.seed, "prompts", step))
            cond = prompts(labels)
        x_t, t = backward_simulation(nets.bound(cond).generator, noises, steps=steps, k=k, start=cfg.student.start,
                                     schedule=cfg.teacher.schedule)
        return x_t, torch.full((batch,), t, dtype=torch.long), labels
    t_k = tau[torch.randint(steps, (batch,), generator=g)]  # (B,) per-sample step
    real, labels = gmm.sample(batch, generator=g)
    renoised = add_noise(real, noises[1 % steps], t_k, cfg.teacher.schedule)
    first = (t_k == tau[0]).reshape(-1, *[1] * (real.dim() - 1))
    return torch.where(first, noises[0], renoised), t_k, labels if prompts is not None else None


def generator_loss(nets: Networks, cfg: RunConfig, x0: torch.Tensor, t_k: torch.Tensor, teacher_eps, reward_fn,
                   step: int, world: World | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """w_dm dm_weight L_DM + w_gan gan_weight L_G,GAN + lambda_R L_RL (module docstring 2); under data parallelism
    x0 and t_k are this rank's share."""
    d, metrics, world = cfg.distill, {}, world or World()
    share = _share(len(x0), world)
    loss = torch.zeros(())
    dm = gan = None
    if cfg.rl.distill:
        w_dm, w_gan = PRESETS[d.preset].weights(t_k, split=d.split)
        # each term's mean is over the whole batch's rows it acts on; gradients are averaged over the ranks after
        rows_dm, rows_gan = (all_reduce(torch.stack([w_dm.sum(), w_gan.sum()]).double(), world, "sum") / world.size
                             ).tolist()
        if d.dm_weight > 0 and rows_dm > 0:
            x0_real, x0_fake = dm_targets(x0, teacher_eps, nets.fake, generator=generator(cfg.seed, "dm", step),
                                          t_min=d.t_min, t_max=d.t_max, share=share, schedule=cfg.teacher.schedule)
            dm, m = dm_loss(x0, x0_real, x0_fake, weights=w_dm, rows=rows_dm)
            loss, metrics = loss + d.dm_weight * dm, {**metrics, **m, "dm/loss": float(dm.detach())}
        if d.gan_weight > 0 and rows_gan > 0:
            logits = nets.disc.logits(nets.fake, x0, generator=generator(cfg.seed, "gan_gen", step), t_gan=d.gan_t_max,
                                      share=share, schedule=cfg.teacher.schedule)
            gan, m = gan_generator_loss(logits, weights=w_gan, rows=rows_gan)
            loss, metrics = loss + d.gan_weight * gan, {**metrics, **m}
    if dm is not None and gan is not None:  # both act on the same samples: do they pull x0 the same way?
        metrics["gen/dm_gan_cos"] = gradient_cosine(dm, gan, x0)
    if cfg.rl.lambda_R > 0:
        rl, m = rl_loss(reward_fn(x0))
        loss, metrics = loss + cfg.rl.lambda_R * rl, {**metrics, **m}
    return loss, metrics


def gradient_cosine(a: torch.Tensor, b: torch.Tensor, x0: torch.Tensor) -> float:
    """Mean over samples of the cosine between d a / d x0 and d b / d x0: the conflict Flash-DMD names between the
    DM and GAN terms (negative: they pull each sample's output apart). No parameter gradient is touched."""
    ga = torch.autograd.grad(a, x0, retain_graph=True)[0]
    gb = torch.autograd.grad(b, x0, retain_graph=True)[0]
    return float(torch.nn.functional.cosine_similarity(ga.flatten(1), gb.flatten(1), dim=1).mean())


def guidance_loss(nets: Networks, cfg: RunConfig, gmm: GaussianMixture, x0: torch.Tensor, step: int,
                  world: World | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """L_fake + disc_weight L_D on the detached x0 (module docstring 2); under data parallelism x0 is this rank's
    share."""
    g = generator(cfg.seed, "guidance", step)
    x0, share = x0.detach(), _share(len(x0), world or World())
    x_t, eps, t = noised(x0, 0, T_STEPS - 1, generator=g, share=share, schedule=cfg.teacher.schedule)
    loss, metrics = fake_score_loss(nets.fake(x_t, t), target(x0, eps, cfg.teacher.schedule))
    d = cfg.distill
    if d.gan_weight > 0 and d.disc_weight > 0:
        real, labels = gmm.sample(share.batch if share else len(x0), generator=g)
        real, labels = (real[share.rows], labels[share.rows]) if share else (real, labels)
        fake_logits = nets.disc.logits(nets.fake, x0, generator=g, t_gan=d.gan_t_max, share=share,
                                       schedule=cfg.teacher.schedule)
        prompts = getattr(gmm, "prompts", None)
        real_fake = Bound(nets.unbound("fake"), prompts(labels)) if prompts is not None else nets.fake
        real_logits = nets.disc.logits(real_fake, real, generator=g, t_gan=d.gan_t_max, share=share,
                                       schedule=cfg.teacher.schedule)
        disc, m = gan_discriminator_loss(fake_logits, real_logits)
        loss, metrics = loss + d.disc_weight * disc, {**metrics, **m}
    return loss, metrics


def _update(opt: torch.optim.Optimizer, params: list[nn.Parameter], loss: torch.Tensor, clip: float,
            world: World | None = None) -> float:
    """Zero, backward, average over ranks, clip, step; the gradients stay until the next update of `opt` (tests
    read them)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    average_gradients(params, world or World())  # equal shares of the batch: the mean is the whole batch's
    norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
    opt.step()
    return norm


def generator_update(nets: Networks, opts: dict[str, torch.optim.Optimizer], cfg: RunConfig, x0: torch.Tensor,
                     t_k: torch.Tensor, teacher_eps, reward_fn, step: int, world: World | None = None
                     ) -> dict[str, float]:
    """One generator update with the guidance networks frozen, as DMD2 does: no gradient reaches them."""
    guidance = nets.guidance_parameters()
    for p in guidance:
        p.requires_grad_(False)
    try:
        loss, metrics = generator_loss(nets, cfg, x0, t_k, teacher_eps, reward_fn, step, world)
        metrics["gen/grad_norm"] = _update(opts["generator"], nets.generator_parameters(), loss,
                                           cfg.optim.grad_clip, world)
    finally:
        for p in guidance:
            p.requires_grad_(True)
    metrics["gen/loss"] = float(loss.detach())
    return metrics


def train_step(nets: Networks, opts: dict[str, torch.optim.Optimizer], cfg: RunConfig, gmm: GaussianMixture,
               teacher_eps, reward_fn, step: int, world: World | None = None) -> dict[str, float]:
    """One iteration (1-based `step`): a generator update every `ratio`-th, then a guidance update; under data
    parallelism on this rank's share of the batch, the metrics averaged over ranks (module docstring 6)."""
    world = world or World()
    x_t, t_k, labels = generator_input(nets, cfg, gmm, step)  # the whole batch's
    if share := _share(len(x_t) // world.size, world):
        x_t, t_k = x_t[share.rows], t_k[share.rows]
        labels = labels[share.rows] if labels is not None else None
    if labels is not None:  # the generator's prompts bind the generator, the fake score and the teacher
        cond = gmm.prompts(labels)
        nets, teacher_eps = nets.bound(cond), teacher_eps.bind(cond)
    elif hasattr(teacher_eps, "bind"):
        teacher_eps = teacher_eps.bind(None)
    ratio = cfg.distill.ratio if cfg.rl.distill else 1
    gen_turn = (step - 1) % ratio == 0
    metrics = {}
    with torch.set_grad_enabled(gen_turn):
        x0 = generator_x0(nets.generator, x_t, t_k, cfg.teacher.schedule)  # (B, 2)
    if gen_turn:
        metrics = generator_update(nets, opts, cfg, x0, t_k, teacher_eps, reward_fn, step, world)
    if cfg.rl.distill:
        loss, m = guidance_loss(nets, cfg, gmm, x0, step, world)
        metrics.update(m)
        metrics["guidance/grad_norm"] = _update(opts["guidance"], nets.guidance_parameters(), loss,
                                                cfg.optim.grad_clip, world)
    metrics["gen/t_k"] = float(t_k.float().mean())
    return mean_over_ranks(metrics, world, sums=("dm/nonfinite",))  # norms are already equal on every rank


def _share(n: int, world: World) -> Share | None:
    """This rank's contiguous rows of the iteration's batch of n * ranks samples (None in one process)."""
    if world.size == 1:
        return None
    return Share(n * world.size, slice(world.rank * n, (world.rank + 1) * n)) if n else None


def _set_lr(opts: dict[str, torch.optim.Optimizer], cfg: RunConfig, step: int) -> None:
    scale = min(1.0, step / cfg.optim.warmup) if cfg.optim.warmup else 1.0
    lrs = {"generator": cfg.optim.lr, "guidance": cfg.optim.guidance_lr or cfg.optim.lr}
    for name, opt in opts.items():
        for group in opt.param_groups:
            group["lr"] = lrs[name] * scale


# ---------------------------------------------------------------- the loop


def _side(cfg: RunConfig, checkpoint: Path | None):
    """The run's data side: images on diffusers models (rlvr.images.dmd_diffusers) or the 2-D check
    (rlvr.images.dmd_points)."""
    if cfg.teacher.kind == "diffusers":
        from rlvr.images.dmd_diffusers import ImageSide

        return ImageSide(cfg, checkpoint)
    return Points(cfg, checkpoint)


def _setup(cfg: RunConfig, checkpoint: Path | None, side) -> tuple[Networks, dict[str, torch.optim.Optimizer], int]:
    nets = side.networks()
    op = cfg.optim
    kw = {"betas": tuple(op.betas), "weight_decay": op.weight_decay}
    opts = {"generator": torch.optim.AdamW(nets.generator_parameters(), lr=op.lr, **kw),
            "guidance": torch.optim.AdamW(nets.guidance_parameters(), lr=op.guidance_lr or op.lr, **kw)}
    if checkpoint is None:
        return nets, opts, 0
    nets.load(checkpoint / "model")
    state = restore_state(checkpoint)
    for name, opt in opts.items():
        opt.load_state_dict(state[f"optim/{name}"])
    return nets, opts, int(state["step"])


def _save(cfg: RunConfig, nets: Networks, opts: dict[str, torch.optim.Optimizer], step: int, world: World):
    return save_state(cfg, step, nets, world, **{f"optim/{name}": opt.state_dict() for name, opt in opts.items()})


def train(cfg: RunConfig, *, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Run the loop of the module docstring; returns a summary (final and teacher metrics, files, timings)."""
    validate(cfg)
    return run_in_world(cfg, _train, resume=resume, overwrite=overwrite, batch=cfg.train.batch)


def _train(cfg: RunConfig, checkpoint: Path | None, world: World) -> dict[str, Any]:
    start = time.perf_counter()
    side = _side(cfg, checkpoint)
    nets, opts, step = _setup(cfg, checkpoint, side)
    gmm, reward_fn = side.data, side.reward_fn
    run_dir, main = cfg.run_dir, world.is_main
    if main and checkpoint is None:
        side.write_start(run_dir)
    setup_seconds = time.perf_counter() - start
    teacher = side.teacher_summary() if main else {}
    logger = open_logger(cfg, world, resumed=checkpoint is not None)
    if step == 0 and logger:
        logger.log(0, {f"eval/{k}": v for k, v in side.evaluate(nets)[0].items()})
    final, samples, loop_start, last = None, None, time.perf_counter(), cfg.train.steps
    try:
        with StopRequest() as stop:
            while step < last:
                step += 1
                tick = time.perf_counter()
                _set_lr(opts, cfg, step)
                metrics = train_step(nets, opts, cfg, gmm, side.teacher, reward_fn, step, world)
                metrics["time/step"] = time.perf_counter() - tick
                if main and due(step, cfg.train.eval_every, last):  # the same weights on every rank
                    final, samples = side.evaluate(nets)
                    if step % cfg.train.eval_every == 0:
                        metrics.update({f"eval/{k}": v for k, v in final.items()})
                if logger:
                    logger.log(step, metrics)
                if due(step, cfg.train.save_every, last) or stop.requested:
                    path = _save(cfg, nets, opts, step, world)
                if stop.requested and step < last:
                    barrier(world)
                    print(f"rlvr: stopped at step {step}; resume with --resume ({path})")
                    return {"interrupted": True, "step": step, "checkpoint": str(path)}
    finally:
        if logger:
            logger.close()
    extra = {}
    if main:
        if final is None:
            final, samples = side.evaluate(nets)
        extra = side.finish(nets, samples, step)
    barrier(world)  # the last checkpoint is written before any rank returns
    return {"run_dir": str(run_dir), "steps": step, "final": final, "teacher": teacher,
            "time/setup": setup_seconds, "time/train": time.perf_counter() - loop_start, "interrupted": False, **extra}
