"""DMD2 distillation and joint RL at image scale: a 4-step student of a many-step U-Net teacher on 16 px toy shapes,
scored by feature-FID against held-out real images.

    python benchmarks/dmd_images.py --threads 1                 # 3 seeds; JSON on stdout and docs/results/
    python benchmarks/dmd_images.py --seeds 0 --iters 300       # fewer seeds / iterations
    python benchmarks/dmd_images.py --quick                     # a smoke run (checks the script, not claims)

1. Data (rlvr.images.data.toy_shapes, 16 px, 4 classes): a training set and a disjoint held-out real set. A metric
   classifier (rlvr.images.metrics.train_classifier) gives the 64-d features of feature-FID, precision / recall
   (k = 3) and the class of each sample; a second classifier, trained on the same rows from another seed, is the
   reward, so the metric that reports the target class is not the network the reward gradient was taken through.
   Both held-out accuracies are reported. A real-vs-real row (training images vs held-out) gives the metrics' floor.
2. Teacher: `rlvr.images.unet.TinyUNet` (--net diffusers: a diffusers UNet2DModel of the same widths behind
   rlvr.images.diffusers_nets.Denoiser) trained by eps-MSE (DDPM, t ~ U{0 .. 999}) on the training images mapped
   to [-1, 1] (AdamW, cosine decay), sampled with deterministic DDIM (--ddim-steps).
3. Students (DMD2, arXiv 2405.14867): generator and fake score both start from the teacher's weights; K = 4
   (tau = 999, 749, 499, 249), backward simulation, one generator update every `ratio` = 5 guidance updates with
   the guidance networks frozen, AdamW (weight decay 0.01, clip 10), generator lr below the guidance lr, as the 2-D
   loop rlvr.images.dmd_train (whose step functions hard-code 2-D noise, so the iteration is rewritten here over
   the same pure functions of rlvr.algos.dmd and rlvr.images.diffusion). Arms, same seeds and iterations:
   - dmd2_4step: L_DM + gan_weight L_G,GAN; the diffusion-GAN head (DiffusionGANHead) on the fake U-Net's pooled
     middle block; guidance loss L_fake + L_D on the detached x0 and real training images.
   - joint_rl: dmd2_4step + lambda_R L_RL, L_RL = -mean R(x0) (Flash-DMD's joint stage, arXiv 2511.20549,
     reconstruction: reward gradient).
   - rl_alone: lambda_R L_RL only, no distillation and no guidance updates; as in the 2-D benchmark the generator is
     then updated every iteration (5x the generator updates of the distilled arms).
   Reward: R(x0) = log p_reward(target | (clamp(x0, -1, 1) + 1) / 2), differentiable through the generator's x0
   (clamped pixels pass no gradient: the image scored is the clamped one).
4. Metrics on --eval-size samples from fixed noise vs the held-out real images, at the start, a few points and the
   end: feature-FID, precision, recall, the class distribution and target-class share (metric classifier), the
   target share under the reward classifier, mean reward, and sampling wall time per 256 images (teacher: DDIM
   steps; students: 4 steps). Seed 0's samples are saved as grids beside the JSON
   (docs/results/dmd_images_<arm>_seed0.png).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from machine import cpu_model
from torch import nn

from rlvr.algos.dmd import (
    DiffusionGANHead,
    dm_loss,
    dm_targets,
    fake_score_loss,
    gan_discriminator_loss,
    gan_generator_loss,
    rl_loss,
)
from rlvr.images.data import SHAPE_CLASSES, toy_shapes
from rlvr.images.diffusion import (
    T_STEPS,
    add_noise,
    backward_simulation,
    ddim_sample,
    generator_x0,
    student_sample,
    timesteps,
)
from rlvr.images.metrics import FeatureNet, feature_fid, precision_recall, save_grid, train_classifier
from rlvr.images.unet import TinyUNet
from rlvr.seeding import generator, stream_seed

ROOT = Path(__file__).resolve().parents[1]
SIZE = 16


@dataclass
class Settings:
    train_images: int = 2000
    """Training images (teacher, classifiers, the GAN's real side)."""
    held_images: int = 500
    """Held-out real images every metric compares against."""
    classifier_steps: int = 400
    """Adam steps of each classifier (metric and reward)."""
    teacher_steps: int = 2000
    """eps-MSE steps of the teacher U-Net."""
    teacher_batch: int = 64
    """Images per teacher step."""
    teacher_lr: float = 2e-3
    """Teacher AdamW learning rate (cosine decay to 0)."""
    ddim_steps: int = 50
    """DDIM steps of the teacher's samples."""
    student_steps: int = 4
    """K of the student."""
    iters: int = 500
    """Iterations per arm (guidance updates; the generator updates every `ratio`-th in the distilled arms)."""
    batch: int = 32
    """Samples per iteration."""
    ratio: int = 5
    """Guidance updates per generator update (DMD2's two time-scale rule)."""
    gen_lr: float = 2e-5
    """Generator AdamW learning rate."""
    guidance_lr: float = 2e-4
    """Fake score and GAN head AdamW learning rate."""
    gan_weight: float = 0.01
    """Weight of the generator's GAN loss (2-D recipe)."""
    lambda_r: float = 1.0
    """Weight of L_RL = -mean reward (joint_rl, rl_alone); L_DM's gradient is g / numel, so the reward needs a
    weight near 1 to move a 768-pixel image as much as the DM term does."""
    target: int = 1
    """Rewarded class (1: square; the 4-step student's blurry start is mostly classified as circles)."""
    eval_size: int = 500
    """Samples per evaluation."""
    evals: int = 4
    """Evaluations after the start (evenly spaced, the last at the end)."""
    net: str = "tiny"
    """The networks: tiny (rlvr.images.unet.TinyUNet) or diffusers (a diffusers UNet2DModel of the same widths,
    rlvr.images.diffusers_nets.Denoiser; the same losses and samplers)."""


ARMS = {
    "dmd2_4step": {"distill": True, "rl": False},
    "joint_rl": {"distill": True, "rl": True},
    "rl_alone": {"distill": False, "rl": True},
}
QUICK = {"train_images": 300, "held_images": 100, "classifier_steps": 60, "teacher_steps": 60, "ddim_steps": 10,
         "iters": 10, "batch": 8, "eval_size": 40, "evals": 1}


# ---------------------------------------------------------------- data, classifiers, teacher


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] model space -> [0, 1] images (clamped)."""
    return (x.clamp(-1, 1) + 1) / 2


def make_reward(net: FeatureNet, target: int):
    """x0 (N, 3, H, W) in [-1, 1] -> (N,) log p(target | image), differentiable in x0 (module docstring 3)."""
    net.requires_grad_(False)
    return lambda x0: net(to_unit(x0)).log_softmax(-1)[:, target]


def make_net(st: Settings) -> nn.Module:
    """A fresh eps-predicting network of the kind `st.net` names."""
    if st.net == "tiny":
        return TinyUNet()
    if st.net == "diffusers":
        from diffusers import UNet2DModel

        from rlvr.images.diffusers_nets import Denoiser, tiny_unet2d_config

        return Denoiser(UNet2DModel(**tiny_unet2d_config(size=SIZE, base=32, width=48)))
    raise SystemExit(f"--net: tiny or diffusers, got {st.net!r}")


def train_teacher(images: torch.Tensor, st: Settings, seed: int) -> TinyUNet:
    """The network of `st.net` by eps-MSE on images in [-1, 1], t ~ U{0 .. 999}, AdamW with cosine decay."""
    with torch.random.fork_rng():
        torch.manual_seed(stream_seed(seed, "teacher_init"))
        net = make_net(st)
    opt = torch.optim.AdamW(net.parameters(), lr=st.teacher_lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, st.teacher_steps)
    x_all = images * 2 - 1
    for step in range(st.teacher_steps):
        g = generator(seed, "teacher_batch", step)
        x0 = x_all[torch.randint(len(x_all), (st.teacher_batch,), generator=g)]  # (B, 3, H, W)
        t = timesteps(len(x0), 0, T_STEPS - 1, generator=g)
        eps = torch.randn(x0.shape, generator=g)
        loss = (net(add_noise(x0, eps, t), t) - eps).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        opt.step()
        sched.step()
    return net.eval().requires_grad_(False)


# ---------------------------------------------------------------- metrics


@torch.no_grad()
def image_metrics(images: torch.Tensor, held: torch.Tensor, metric_net: FeatureNet, reward_net: FeatureNet,
                  reward_fn, target: int) -> dict[str, float]:
    """Metrics of (N, 3, H, W) images in [0, 1] against the held-out real images (module docstring 4)."""
    classes = metric_net(images).argmax(-1)
    share = torch.bincount(classes, minlength=len(SHAPE_CLASSES)).double() / len(images)
    precision, recall = precision_recall(metric_net, held, images)
    return {"fid": feature_fid(metric_net, held, images), "precision": precision, "recall": recall,
            "target_share": float(share[target]),
            "target_share_reward_net": float((reward_net(images).argmax(-1) == target).double().mean()),
            "reward": float(reward_fn(images * 2 - 1).mean()), "class_share": share.tolist()}


def eval_noises(seed: int, n: int, steps: int) -> list[torch.Tensor]:
    """The fixed evaluation noises (one per student step; the teacher uses the first): the same at every evaluation."""
    g = generator(seed, "eval")
    return [torch.randn(n, 3, SIZE, SIZE, generator=g) for _ in range(steps)]


def timed(fn, *args, **kwargs) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    with torch.no_grad():
        out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


# ---------------------------------------------------------------- one student iteration


@dataclass
class Student:
    generator: TinyUNet
    fake: TinyUNet
    disc: DiffusionGANHead
    opts: dict[str, torch.optim.Optimizer]

    def guidance_parameters(self) -> list[nn.Parameter]:
        return [*self.fake.parameters(), *self.disc.parameters()]


def make_student(teacher: TinyUNet, st: Settings, seed: int) -> Student:
    """Generator and fake score copied from the teacher (DMD2), a fresh GAN head, one AdamW each side."""
    gen, fake = (copy.deepcopy(teacher).train().requires_grad_(True) for _ in range(2))
    with torch.random.fork_rng():
        torch.manual_seed(stream_seed(seed, "disc_init"))
        disc = DiffusionGANHead(width=teacher.width)
    kw = {"betas": (0.9, 0.999), "weight_decay": 0.01}
    student = Student(gen, fake, disc, {})
    student.opts = {"generator": torch.optim.AdamW(gen.parameters(), lr=st.gen_lr, **kw),
                    "guidance": torch.optim.AdamW(student.guidance_parameters(), lr=st.guidance_lr, **kw)}
    return student


def _update(opt: torch.optim.Optimizer, params: list[nn.Parameter], loss: torch.Tensor) -> float:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = float(nn.utils.clip_grad_norm_(params, 10.0))
    opt.step()
    return norm


def generator_loss(s: Student, x0: torch.Tensor, teacher: TinyUNet, reward_fn, arm: dict, st: Settings,
                   seed: int, step: int) -> tuple[torch.Tensor, dict[str, float]]:
    """L_DM + gan_weight L_G,GAN (distilled arms) + lambda_R L_RL (RL arms)."""
    loss, metrics = torch.zeros(()), {}
    if arm["distill"]:
        x0_real, x0_fake = dm_targets(x0, teacher, s.fake, generator=generator(seed, "dm", step))
        dm, m = dm_loss(x0, x0_real, x0_fake)
        logits = s.disc.logits(s.fake, x0, generator=generator(seed, "gan_gen", step))
        gan, m2 = gan_generator_loss(logits)
        loss, metrics = loss + dm + st.gan_weight * gan, {**metrics, **m, **m2}
    if arm["rl"]:
        rl, m = rl_loss(reward_fn(x0))
        loss, metrics = loss + st.lambda_r * rl, {**metrics, **m}
    return loss, metrics


def guidance_loss(s: Student, x0: torch.Tensor, real: torch.Tensor, seed: int, step: int
                  ) -> tuple[torch.Tensor, dict[str, float]]:
    """L_fake + L_D on the detached x0 and a batch of real training images (DMD2 §4.1-4.2)."""
    g = generator(seed, "guidance", step)
    x0 = x0.detach()
    t = timesteps(len(x0), 0, T_STEPS - 1, generator=g)
    eps = torch.randn(x0.shape, generator=g)
    loss, metrics = fake_score_loss(s.fake(add_noise(x0, eps, t), t), eps)
    batch = real[torch.randint(len(real), (len(x0),), generator=g)]  # (B, 3, H, W)
    disc, m = gan_discriminator_loss(s.disc.logits(s.fake, x0, generator=g), s.disc.logits(s.fake, batch, generator=g))
    return loss + disc, {**metrics, **m}


def train_step(s: Student, teacher: TinyUNet, real: torch.Tensor, reward_fn, arm: dict, st: Settings, seed: int,
               step: int) -> dict[str, float]:
    """One iteration (1-based): backward simulation, a generator update every ratio-th, a guidance update."""
    g = generator(seed, "generator_input", step)
    noises = [torch.randn(st.batch, 3, SIZE, SIZE, generator=g) for _ in range(st.student_steps)]
    k = int(torch.randint(st.student_steps, (1,), generator=g))  # one k per iteration (DMD2)
    x_t, t = backward_simulation(s.generator, noises, steps=st.student_steps, k=k)
    gen_turn = (step - 1) % (st.ratio if arm["distill"] else 1) == 0
    metrics = {}
    with torch.set_grad_enabled(gen_turn):
        x0 = generator_x0(s.generator, x_t, t)  # (B, 3, H, W)
    if gen_turn:
        guidance = s.guidance_parameters()
        for p in guidance:  # no gradient reaches the guidance networks in the generator update (DMD2)
            p.requires_grad_(False)
        loss, metrics = generator_loss(s, x0, teacher, reward_fn, arm, st, seed, step)
        metrics["gen/grad_norm"] = _update(s.opts["generator"], list(s.generator.parameters()), loss)
        for p in guidance:
            p.requires_grad_(True)
    if arm["distill"]:
        loss, m = guidance_loss(s, x0, real, seed, step)
        metrics.update(m)
        _update(s.opts["guidance"], s.guidance_parameters(), loss)
    return metrics


# ---------------------------------------------------------------- one seed


def eval_points(st: Settings) -> list[int]:
    return sorted({round(st.iters * (i + 1) / st.evals) for i in range(st.evals)})


def run_arm(name: str, teacher: TinyUNet, ctx: dict, st: Settings, seed: int) -> tuple[dict, torch.Tensor]:
    arm_seed = stream_seed(seed, name)  # every arm of a seed draws its own streams
    arm, s = ARMS[name], make_student(teacher, st, arm_seed)
    noises = ctx["noises"]

    def evaluate(step: int) -> dict:
        x, seconds = timed(student_sample, s.generator, noises, steps=st.student_steps)
        images = to_unit(x)
        return {"step": step, **ctx["metrics"](images), "s_per_256": seconds * 256 / len(x)}, images

    row, images = evaluate(0)
    curve, logs, start = [row], [], time.perf_counter()
    for step in range(1, st.iters + 1):
        logs.append(train_step(s, teacher, ctx["real"], ctx["reward_fn"], arm, st, arm_seed, step))
        if step in eval_points(st):
            row, images = evaluate(step)
            curve.append(row)
    train_s = time.perf_counter() - start
    last = {k: statistics.fmean(m[k] for m in logs[-50:] if k in m) for k in sorted(set().union(*logs[-50:]))}
    return {"final": {**curve[-1], "train_s": train_s}, "curve": curve, "train_metrics_last50": last}, images


def run_seed(seed: int, st: Settings, arms: list[str], grids: Path | None) -> dict:
    """One seed's classifiers, teacher and arms; `grids`: where seed 0's grids go, as <grids>_<row>_seed0.png."""
    tick = time.perf_counter()
    train, labels = toy_shapes(st.train_images, size=SIZE, seed=stream_seed(seed, "train_images"))
    held, held_labels = toy_shapes(st.held_images, size=SIZE, seed=stream_seed(seed, "held_images"))
    metric_net, metric_acc = train_classifier(train, labels, steps=st.classifier_steps, seed=seed)
    reward_net, reward_acc = train_classifier(train, labels, steps=st.classifier_steps,
                                              seed=stream_seed(seed, "reward_classifier") % 2**31)
    reward_fn = make_reward(reward_net, st.target)
    metric_net.requires_grad_(False)

    def metrics(images):
        return image_metrics(images, held, metric_net, reward_net, reward_fn, st.target)

    out = {"classifier": {"metric_heldout_acc": metric_acc, "reward_heldout_acc": reward_acc,
                          "metric_acc_on_held_real": _acc(metric_net, held, held_labels),
                          "reward_acc_on_held_real": _acc(reward_net, held, held_labels)},
           "real_vs_held": metrics(train[: st.held_images])}
    out["time/setup_s"] = time.perf_counter() - tick
    start = time.perf_counter()
    teacher = train_teacher(train, st, seed)
    out["time/teacher_train_s"] = time.perf_counter() - start
    noises = eval_noises(seed, st.eval_size, st.student_steps)
    x, seconds = timed(ddim_sample, teacher, noises[0], steps=st.ddim_steps)
    out["teacher"] = {**metrics(to_unit(x)), "s_per_256": seconds * 256 / len(x), "ddim_steps": st.ddim_steps}
    if grids is not None:
        save_grid(to_unit(x[:64]), f"{grids}_teacher_seed0.png", nrow=8, scale=4)
        save_grid(held[:64], f"{grids}_real_seed0.png", nrow=8, scale=4)
    ctx = {"noises": noises, "real": train * 2 - 1, "reward_fn": reward_fn, "metrics": metrics}
    out["arms"] = {}
    for name in arms:
        out["arms"][name], images = run_arm(name, teacher, ctx, st, seed)
        if grids is not None:
            save_grid(images[:64], f"{grids}_{name}_seed0.png", nrow=8, scale=4)
        print(f"seed {seed} {name}: " + json.dumps(_short(out["arms"][name]["final"])), file=sys.stderr, flush=True)
    print(f"seed {seed} teacher: " + json.dumps(_short(out["teacher"])), file=sys.stderr, flush=True)
    out["time/seed_s"] = time.perf_counter() - tick
    return out


@torch.no_grad()
def _acc(net: FeatureNet, images: torch.Tensor, labels: torch.Tensor) -> float:
    return float((net(images).argmax(-1) == labels).double().mean())


def _short(row: dict) -> dict:
    return {k: round(v, 4) for k, v in row.items() if isinstance(v, float)}


# ---------------------------------------------------------------- aggregation and CLI

KEYS = ("fid", "precision", "recall", "target_share", "target_share_reward_net", "reward", "s_per_256")


def _mean_std(values: list[float]) -> list[float]:
    return [statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0]


def summarise(per_seed: dict[int, dict], arms: list[str]) -> dict:
    """{row: {metric: [mean, std over seeds]}} for the real floor, the teacher, each arm's start and end."""
    seeds = list(per_seed.values())
    rows = {"real_vs_held": [s["real_vs_held"] for s in seeds], "teacher": [s["teacher"] for s in seeds],
            "student_start": [s["arms"][arms[0]]["curve"][0] for s in seeds]}
    rows.update({arm: [s["arms"][arm]["final"] for s in seeds] for arm in arms})
    out = {row: {k: _mean_std([r[k] for r in rs]) for k in KEYS if k in rs[0]} for row, rs in rows.items()}
    for arm in arms:  # the student's FID as a multiple of its own seed's teacher
        out[arm]["fid_over_teacher"] = _mean_std([s["arms"][arm]["final"]["fid"] / s["teacher"]["fid"] for s in seeds])
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "dmd_images.json")
    parser.add_argument("--quick", action="store_true", help="a smoke run under a minute (output to /tmp)")
    for f in dataclasses.fields(Settings):
        parser.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=None)
    args = parser.parse_args(argv)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(Settings)
                 if getattr(args, f.name) is not None}
    if args.quick:
        overrides = {**QUICK, **overrides}
        args.seeds, args.out = args.seeds[:1], Path("/tmp/rlvr_bench_dmd_images_quick.json")
    st = Settings(**overrides)
    torch.set_num_threads(args.threads)
    grids = args.out.with_suffix("")  # docs/results/dmd_images -> dmd_images_<row>_seed0.png
    start = time.perf_counter()
    per_seed = {seed: run_seed(seed, st, args.arms, grids if seed == 0 else None) for seed in args.seeds}
    result = {"setting": {**dataclasses.asdict(st), "seeds": args.seeds, "threads": args.threads,
                          "cpu": cpu_model(), "arms": ARMS, "target_class": SHAPE_CLASSES[st.target],
                          "unet_params": sum(p.numel() for p in make_net(st).parameters()), "quick": args.quick},
              "summary": summarise(per_seed, args.arms), "per_seed": per_seed,
              "wall_s": time.perf_counter() - start}
    text = json.dumps(result, indent=1)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return result


if __name__ == "__main__":
    main()
