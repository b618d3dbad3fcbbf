"""The 2-D check's side of `loop: dmd` (rlvr.images.dmd_train): a Gaussian mixture on a circle as the data, its exact
score or a pretrained ScoreMLP as the teacher, and point metrics (the image side, with the same methods, is
rlvr.images.dmd_diffusers.ImageSide).

1. `Points` is what the loop calls: networks, write_start, evaluate, teacher_summary, finish.
2. The teacher: the mixture's exact eps (`teacher.kind: exact`) or a ScoreMLP pretrained by eps-MSE (flow: v-MSE) on
   the teacher's mixture (`mlp`; `teacher.radius` makes it biased), which is also the student's start.
3. Evaluation on `train.eval_size` samples from fixed noise against fresh data: Fréchet distance of Gaussian fits,
   energy distance, modes covered, precision / recall, reward, mode spread, radius; scatter PNGs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from rlvr.images.diffusion import (
    T_STEPS,
    GaussianMixture,
    ScoreMLP,
    add_noise,
    ddim_sample,
    student_sample,
    target,
    timesteps,
)
from rlvr.images.dmd_config import RunConfig
from rlvr.images.dmd_rewards import build_reward
from rlvr.images.metrics import frechet_distance, manifold_precision_recall
from rlvr.seeding import generator, stream_seed


def pretrain_denoiser(cfg: RunConfig, gmm: GaussianMixture) -> ScoreMLP:
    """A ScoreMLP trained by eps-MSE on data samples, t ~ U{0 .. 999} (DDPM's objective; flow: v-MSE, rectified flow's),
    cosine-decayed AdamW."""
    tc = cfg.teacher
    with torch.random.fork_rng():
        torch.manual_seed(stream_seed(cfg.seed, "pretrain_init"))
        net = ScoreMLP()
    opt = torch.optim.AdamW(net.parameters(), lr=tc.pretrain_lr, weight_decay=cfg.optim.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, tc.pretrain_steps)
    for step in range(tc.pretrain_steps):
        g = generator(cfg.seed, "pretrain", step)
        x0, _ = gmm.sample(tc.pretrain_batch, generator=g)
        t = timesteps(len(x0), 0, T_STEPS - 1, generator=g)
        eps = torch.randn(x0.shape, generator=g)
        loss = (net(add_noise(x0, eps, t, tc.schedule), t) - target(x0, eps, tc.schedule)).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


# ---------------------------------------------------------------- evaluation


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """2 E|X - Y| - E|X - X'| - E|Y - Y'| (Székely & Rizzo), V-statistic form."""
    x, y = x.double(), y.double()
    return float(2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean())


def _gauss_fit(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.double()
    return x.mean(0), torch.cov(x.T)


@torch.no_grad()
def sample_metrics(x: torch.Tensor, data: torch.Tensor, gmm: GaussianMixture, reward_fn, *, target: int
                   ) -> dict[str, float]:
    """Fréchet distance of Gaussian fits, energy distance, modes covered, precision / recall, reward, mode spread, the
    samples' median distance from the origin (radius: where a biased teacher's ring pulls them)."""
    x = torch.nan_to_num(x.float(), nan=1e6, posinf=1e6, neginf=-1e6)
    dist = torch.cdist(x.double(), gmm.means)  # (N, K)
    near, mode = dist.min(1)
    inside = near <= 3 * gmm.sigma
    share = torch.bincount(mode[inside], minlength=len(gmm.means)).double() / len(x)  # (K,)
    spread = (x.double()[inside] - gmm.means[mode[inside]]).square().mean().sqrt() if inside.any() else float("nan")
    precision, recall = manifold_precision_recall(data, x, k=3)
    return {"frechet": frechet_distance(*_gauss_fit(x), *_gauss_fit(data)), "energy": energy_distance(x, data),
            "modes_covered": float((share >= 0.05).sum()), "in_mode": float(inside.double().mean()),
            "target_share": float(share[target]), "precision": precision, "recall": recall,
            "reward": float(reward_fn(x).mean()), "mode_std": float(spread),
            "radius": float(x.double().norm(dim=1).median())}


def eval_batch(cfg: RunConfig, gmm: GaussianMixture) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The fixed evaluation noises (one per student step) and data points: the same at every evaluation."""
    g = generator(cfg.seed, "eval")
    noises = [torch.randn(cfg.train.eval_size, 2, generator=g) for _ in range(cfg.student.steps)]
    return noises, gmm.sample(cfg.train.eval_size, generator=g)[0]


def evaluate_student(nets, cfg: RunConfig, gmm: GaussianMixture, reward_fn
                     ) -> tuple[dict[str, float], torch.Tensor]:
    noises, data = eval_batch(cfg, gmm)
    start = time.perf_counter()
    with torch.no_grad():
        x = student_sample(nets.generator, noises, steps=cfg.student.steps, start=cfg.student.start,
                           schedule=cfg.teacher.schedule)
    seconds = time.perf_counter() - start
    metrics = sample_metrics(x, data, gmm, reward_fn, target=cfg.rl.mode)
    metrics["time/sample_per_1000"] = seconds * 1000 / len(x)
    return metrics, x


def evaluate_teacher(cfg: RunConfig, gmm: GaussianMixture, teacher_eps, reward_fn) -> tuple[dict[str, Any], Any]:
    noises, data = eval_batch(cfg, gmm)
    start = time.perf_counter()
    x = ddim_sample(teacher_eps, noises[0], steps=cfg.teacher.sample_steps, schedule=cfg.teacher.schedule)
    seconds = time.perf_counter() - start
    metrics = sample_metrics(x, data, gmm, reward_fn, target=cfg.rl.mode)
    return {**metrics, "sample_steps": cfg.teacher.sample_steps, "kind": cfg.teacher.kind,
            "time/sample_per_1000": seconds * 1000 / len(x)}, x


def save_scatter(path: Path, samples: torch.Tensor, data: torch.Tensor, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(*data.T.numpy(), s=3, c="0.7", label="data")
    ax.scatter(*samples.clamp(-8, 8).T.numpy(), s=3, c="C3", label="samples")
    ax.set(xlim=(-7, 7), ylim=(-7, 7), aspect="equal", title=title)
    ax.legend(loc="upper right", markerscale=4)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------- the side


def mixture(cfg: RunConfig, *, teacher: bool = False) -> GaussianMixture:
    """The data's mixture; teacher=True: the one the teacher learns, on the circle of `teacher.radius` when set."""
    radius = cfg.teacher.radius if teacher and cfg.teacher.radius is not None else cfg.data.radius
    return GaussianMixture(modes=cfg.data.modes, radius=radius, sigma=cfg.data.sigma, schedule=cfg.teacher.schedule)


def _teacher(cfg: RunConfig, pretrained: ScoreMLP | None):
    if cfg.teacher.kind == "exact":
        return mixture(cfg, teacher=True).predict
    return lambda x_t, t: pretrained(x_t, t)


class Points:
    """The 2-D check's side of a run: the mixture, its rewards, the teacher and the point metrics (the images' side
    is rlvr.images.dmd_diffusers.ImageSide, with the same methods)."""

    def __init__(self, cfg: RunConfig, checkpoint: Path | None):
        self.cfg, self.data = cfg, mixture(cfg)
        self.reward_fn = build_reward(cfg.rl, self.data)
        needs = cfg.teacher.kind == "mlp" or cfg.student.init == "pretrained"
        self.pretrained = ScoreMLP().eval() if checkpoint is not None and needs else None
        if checkpoint is None and needs:
            self.pretrained = pretrain_denoiser(cfg, mixture(cfg, teacher=True))
        self.teacher = _teacher(cfg, self.pretrained)

    def networks(self):
        from rlvr.images.dmd_train import Networks

        return Networks(self.cfg, self.pretrained)

    def write_start(self, run_dir: Path) -> None:
        """The pretrained MLP, once (the checkpoints hold it too)."""
        if self.pretrained is not None:
            from safetensors.torch import save_file
            save_file(self.pretrained.state_dict(), str(run_dir / "teacher.safetensors"))

    def evaluate(self, nets) -> tuple[dict[str, float], torch.Tensor]:
        return evaluate_student(nets, self.cfg, self.data, self.reward_fn)

    def teacher_summary(self) -> dict[str, Any]:
        return _teacher_summary(self.cfg, self.data, self.teacher, self.reward_fn)

    def finish(self, nets, samples: torch.Tensor, step: int) -> dict[str, Any]:
        cfg = self.cfg
        save_scatter(cfg.run_dir / "samples.png", samples, eval_batch(cfg, self.data)[1],
                     f"{cfg.student.steps}-step student, {_arm(cfg)}, step {step}")
        return {}


def _arm(cfg: RunConfig) -> str:
    """What the run trains, for plot titles: the preset, with RL's weight; or RL alone."""
    if not cfg.rl.distill:
        return f"RL alone (lambda_R {cfg.rl.lambda_R:g})"
    return cfg.distill.preset + (f" + RL (lambda_R {cfg.rl.lambda_R:g})" if cfg.rl.lambda_R else "")


def _teacher_summary(cfg: RunConfig, gmm: GaussianMixture, teacher_eps, reward_fn) -> dict[str, Any]:
    """The teacher's evaluation, computed once per run folder (teacher.json, teacher.png)."""
    path = cfg.run_dir / "teacher.json"
    if path.is_file():
        return json.loads(path.read_text())
    metrics, x = evaluate_teacher(cfg, gmm, teacher_eps, reward_fn)
    path.write_text(json.dumps(metrics, indent=1))
    save_scatter(cfg.run_dir / "teacher.png", x, eval_batch(cfg, gmm)[1],
                 f"teacher ({cfg.teacher.kind}), DDIM {cfg.teacher.sample_steps} steps")
    return metrics
