"""DMD2's losses (arXiv 2405.14867), Flash-DMD's timestep split (arXiv 2511.20549, reconstructed: its method section
and code were not available) and a reward-gradient term for joint RL. Pure functions over tensors.

    x0_real, x0_fake = dm_targets(x0, teacher_eps, fake_eps, generator=g)      # t ~ U{20 .. 980}, no gradient
    loss, m = dm_loss(x0, x0_real, x0_fake)                                    # dL/dx0 = g / numel
    loss, m = fake_score_loss(fake(x_t, t), eps)                               # eps-MSE on detached x0
    loss, m = gan_generator_loss(D(x0)); loss, m = gan_discriminator_loss(D(x0.detach()), D(real))
    w_dm, w_gan = PRESETS["flash"].weights(t_k, split=500)

1. Distribution matching (DMD eq. 7, DMD2 §4.1 and its `compute_distribution_matching_loss`): noise x0 to
   t ~ U{20 .. 980}; x0_real, x0_fake = the teacher's and the fake score's x0 estimates (float64);
   w = per-sample mean |x0 - x0_real|; g = nan_to_num((x0_fake - x0_real) / w); L_DM = 0.5 mean((x0 - sg[x0 - g])^2),
   so dL_DM/dx0 = g / numel: x0 moves toward the teacher's estimate and away from the fake one. Non-finite entries
   of g (w ~ 0) are counted in the metrics (nan_to_num hides them in DMD2).
2. Fake score (DMD2 §4.1): eps-MSE of the fake network on the generator's detached x0 at t ~ U{0 .. 999}.
3. GAN (DMD2 §4.2), non-saturating: generator mean softplus(-D(x0)); discriminator mean softplus(D(sg x0)) +
   mean softplus(-D(real)). DMD2's D is a head on the fake network's middle features at a noised input
   (diffusion-GAN, t' ~ U{0 .. t_gan - 1}): `DiffusionGANHead`. Flash-DMD's D is a head on frozen SAM features of
   decoded pixels; at the 2-D scale its stand-in is `DataDiscriminator`, an MLP on the points themselves.
4. Loss schedule per generator timestep t_k: DMD2 sums DM and GAN at every step; Flash-DMD (reconstruction) uses DM
   where t_k >= split (high noise: structure) and the GAN where t_k < split (low noise: detail), split 500. A
   weighted term is averaged over the rows it acts on, not the whole batch: without backward simulation t_k is per
   sample, and a row that carries one term of a quarter of the batch still gets that term's full gradient.
5. Joint RL (reward gradient): L_RL = -mean R(x0) for a differentiable reward, added as lambda_R L_RL to the
   generator loss; with distillation on, the DM and GAN terms regularise against reward hacking (Flash-DMD §RL,
   reconstruction: its RL algorithm was not available).
6. Data parallelism: a rank holds a contiguous share of the batch; `share=Share(batch, rows)` makes a function that
   draws per-sample noise draw it for the whole batch and keep the rank's rows, so the draws are one process's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from rlvr.images.diffusion import EpsFn, add_noise, timesteps, x0_from_output

DM_T_MIN, DM_T_MAX = 20, 980  # DMD2: min/max_step_percent 0.02 / 0.98 of 1000 steps


class Share(NamedTuple):
    """This rank's rows of a batch of `batch` samples (module docstring 6)."""

    batch: int
    rows: slice


def noised(x0: torch.Tensor, low: int, high: int, *, generator: torch.Generator, share: Share | None = None,
           schedule: str = "linear") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_t, eps, t): x0 noised to t ~ U{low .. high} per sample; with a share, t and eps are drawn for the whole
    batch and this rank's rows kept."""
    n = share.batch if share else len(x0)
    t = timesteps(n, low, high, generator=generator)  # (n,)
    eps = torch.randn((n, *x0.shape[1:]), generator=generator, dtype=x0.dtype)  # on the stream's device (the CPU)
    if share:
        t, eps = t[share.rows], eps[share.rows]
    eps = eps.to(x0.device)  # the same draws whatever device the networks are on; t stays with the schedules
    return add_noise(x0, eps, t, schedule), eps, t


@torch.no_grad()
def dm_targets(x0: torch.Tensor, real_eps: EpsFn, fake_eps: EpsFn, *, generator: torch.Generator,
               t_min: int = DM_T_MIN, t_max: int = DM_T_MAX, share: Share | None = None, schedule: str = "linear"
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0_real, x0_fake), both (N, D) float64: the teacher's and the fake score's x0 estimates at a random t."""
    x_t, _, t = noised(x0.detach(), t_min, t_max, generator=generator, share=share, schedule=schedule)
    x0_real = x0_from_output(x_t.double(), real_eps(x_t, t).double(), t, schedule)
    x0_fake = x0_from_output(x_t.double(), fake_eps(x_t, t).double(), t, schedule)
    return x0_real, x0_fake


def dm_gradient(x0: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor) -> tuple[torch.Tensor, int]:
    """g = nan_to_num((x0_fake - x0_real) / w), w = per-sample mean |x0 - x0_real|; and its count of non-finite
    entries before nan_to_num (module docstring 1)."""
    dims = tuple(range(1, x0.dim()))
    w = (x0.detach().double() - x0_real).abs().mean(dims, keepdim=True)  # (N, 1 ...)
    g = (x0_fake - x0_real) / w
    return torch.nan_to_num(g), int((~torch.isfinite(g)).sum())


def weighted_mean(per: torch.Tensor, weights: torch.Tensor | None = None, rows: float | torch.Tensor | None = None
                  ) -> torch.Tensor:
    """Mean of per-sample terms `per` (N, ...) over the rows they act on (module docstring 4): sum(weights per) /
    (rows x the per-row size), rows = sum(weights) unless given (under data parallelism: the whole batch's sum over
    the ranks, so the averaged gradients are one process's); no weights: the plain mean."""
    if weights is None:
        return per.mean()
    per = per * weights.reshape(-1, *[1] * (per.dim() - 1))
    rows = weights.sum() if rows is None else torch.as_tensor(rows, dtype=per.dtype)
    return per.sum() / (rows.clamp(min=torch.finfo(per.dtype).tiny) * (per[0].numel() if len(per) else 1))


def dm_loss(x0: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor, *, weights: torch.Tensor | None = None,
            rows: float | torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """L_DM = 0.5 (x0 - sg[x0 - g])^2 averaged over the rows with weight (`weighted_mean`; weights (N,), default 1):
    dL/dx0 = weights g / (rows x D), a row's gradient the same whichever share of the batch carries the term."""
    g, nonfinite = dm_gradient(x0, x0_real, x0_fake)
    g = g.to(x0.dtype)
    target = (x0 - g).detach()
    per = 0.5 * (x0 - target).square()  # (N, D)
    metrics = {"dm/grad_norm": float(g.flatten(1).norm(dim=1).mean()), "dm/nonfinite": float(nonfinite)}
    return weighted_mean(per, weights, rows), metrics


def fake_score_loss(eps_pred: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """mean((eps_fake(x_t, t) - eps)^2) on the generator's detached x0 noised to t ~ U{0 .. 999}."""
    loss = (eps_pred - eps).square().mean()
    return loss, {"fake/loss": float(loss.detach())}


def gan_generator_loss(fake_logits: torch.Tensor, *, weights: torch.Tensor | None = None,
                       rows: float | torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Non-saturating generator loss softplus(-D(x0)) averaged over the rows with weight (module docstring 3, 4)."""
    per = F.softplus(-fake_logits.flatten())
    return weighted_mean(per, weights, rows), {"gan/gen_loss": float(F.softplus(-fake_logits.detach()).mean())}


def gan_discriminator_loss(fake_logits: torch.Tensor, real_logits: torch.Tensor
                           ) -> tuple[torch.Tensor, dict[str, float]]:
    """mean softplus(D(sg x0)) + mean softplus(-D(real)); metrics: the loss and D's accuracy on both sides."""
    loss = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
    acc = 0.5 * ((fake_logits < 0).float().mean() + (real_logits > 0).float().mean())
    return loss, {"gan/disc_loss": float(loss.detach()), "gan/disc_acc": float(acc)}


def rl_loss(rewards: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """L_RL = -mean R(x0) for a differentiable reward (module docstring 5)."""
    return -rewards.mean(), {"rl/reward": float(rewards.detach().mean())}


class DiffusionGANHead(nn.Module):
    """DMD2's classifier on the fake score's middle features at a noised input (t' ~ U{0 .. t_gan - 1})."""

    def __init__(self, *, width: int = 128):
        super().__init__()
        self.head = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 1))

    def logits(self, fake: nn.Module, x0: torch.Tensor, *, generator: torch.Generator, t_gan: int = 1000,
               share: Share | None = None, schedule: str = "linear") -> torch.Tensor:
        """(N,) logits of D on x0 noised to a random t' (the fake network's parameters receive D's gradient)."""
        x_t, _, t = noised(x0, 0, t_gan - 1, generator=generator, share=share, schedule=schedule)
        return self.head(fake.features(x_t, t)).squeeze(-1)


class DataDiscriminator(nn.Module):
    """The 2-D stand-in for Flash-DMD's SAM pixel discriminator: an MLP on the clean points (module docstring 3)."""

    def __init__(self, *, width: int = 128, dim: int = 2):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, 1))

    def logits(self, fake: nn.Module, x0: torch.Tensor, *, generator: torch.Generator, t_gan: int = 1000,
               share: Share | None = None, schedule: str = "linear") -> torch.Tensor:
        """(N,) logits on the clean points, images flattened (the other arguments unused: the head's call)."""
        return self.net(x0.flatten(1)).squeeze(-1)


def summed_weights(t_k: torch.Tensor, *, split: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """DMD2: DM and GAN at every step: (w_dm, w_gan) = (1, 1) per sample."""
    ones = torch.ones(t_k.shape)
    return ones, ones.clone()


def flash_weights(t_k: torch.Tensor, *, split: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Flash-DMD's split (reconstruction): w_dm = 1[t_k >= split], w_gan = 1[t_k < split]."""
    dm = (t_k >= split).float()
    return dm, 1.0 - dm


class Preset(NamedTuple):
    weights: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    """t_k (N,) -> (w_dm, w_gan) (N,) each."""
    discriminator: type[nn.Module]
    """The GAN's discriminator class."""


PRESETS = {"dmd2": Preset(summed_weights, DiffusionGANHead), "flash": Preset(flash_weights, DataDiscriminator)}
