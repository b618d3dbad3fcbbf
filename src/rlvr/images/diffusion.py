"""A 2-D diffusion testbed: VP noise schedule, an exact Gaussian-mixture teacher, a score MLP, DDIM and the few-step
student's schedule (DMD2, arXiv 2405.14867; DMD, arXiv 2311.18828).

    gmm = GaussianMixture()                                   # 8 modes on a circle of radius 4, sigma 0.3
    x0, labels = gmm.sample(512, generator=g)                 # (N, 2), (N,)
    x_t = add_noise(x0, eps, t)                               # sqrt(ab_t) x0 + sqrt(1 - ab_t) eps
    x = ddim_sample(gmm.eps, noise, steps=100)                # the many-step teacher
    x = student_sample(net, noise_list, steps=4)              # tau = [999, 749, 499, 249]

1. Schedule: 1000 steps, ab_t = prod(1 - beta); t = -1 means clean data (ab = 1), the end point of a sampler.
   `linear` (the default): DDPM's betas, linear from 1e-4 to 0.02 (Ho et al., arXiv 2006.11239 §4); `scaled_linear`:
   the Stable Diffusion family's, sqrt(beta) linear from sqrt(0.00085) to sqrt(0.012) (the teachers DMD2 distils,
   arXiv 2405.14867 §5). An eps-predicting one-step student at t = 999 has its eps error multiplied by
   sqrt((1 - ab) / ab) in x0: 157x under `linear`, 14.6x under `scaled_linear`. Every function that noises or
   denoises takes `schedule` (a name in SCHEDULES).
2. x0 from (x_t, eps) is computed in float64 as DMD2's code does: at t = 999 sqrt(ab) = 0.0064 divides the result.
3. The noised mixture p_t = sum_k pi_k N(sqrt(ab) mu_k, (ab sigma^2 + 1 - ab) I) is again a Gaussian mixture, so its
   score and eps = -sqrt(1 - ab) score are exact (the "analytic teacher"); p(k | x) is the same mixture's posterior.
4. `ScoreMLP`: x and a sinusoidal embedding of t, 3 hidden layers of 128 SiLU units, eps out; `features` is the
   second hidden layer (the bottleneck the diffusion-GAN head of DMD2 §4.2 reads).
5. `ddim_sample`: deterministic DDIM (eta = 0, Song et al., arXiv 2010.02502 eq. 12) on n evenly spaced steps.
6. Student (DMD2 §4.3): tau = 999, 999 - 1000/K, ... (K = 4: [999, 749, 499, 249]); inference runs G at each tau,
   re-noising its x0 to the next tau with fresh noise; the last x0 is the sample. Backward simulation trains G at
   tau[k] on its own k-step output re-noised to tau[k] (k = 0: pure noise at 999).
7. Flow matching (`flow`, the rectified flow of SD3, Esser et al. arXiv 2403.03206 §2, and of diffusers'
   FlowMatchEulerDiscreteScheduler without shift): x_t = (1 - s) x0 + s eps with s = (t + 1) / 1000, so t = 999 is
   pure noise (alpha 0) and t = -1 clean data. Its networks predict the velocity v = eps - x0, not eps (at alpha = 0
   an eps-prediction cannot give x0). With alpha = 1 - s and sigma = s: x0 = x_t - sigma v, eps = x_t + alpha v, and
   the score is grad log p_t(x_t) = -eps / sigma = -(x_t + alpha v) / sigma (Tweedie: E[x0 | x_t] = (x_t + sigma^2
   score) / alpha). Every sampler and loss reads a network's output through `x0_from_output` / `eps_from_output`,
   so the VP schedules (eps out) and `flow` (v out) share one code path; DDIM's step x' = alpha' x0 + sigma' eps
   is then the flow ODE's Euler step. `GaussianMixture.predict` is the exact teacher in the schedule's
   parameterisation (eps or v).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

T_STEPS = 1000
EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t (N, 2), t (N,) long) -> eps (or v: flow) (N, 2)


def alpha_bar(steps: int = T_STEPS, *, beta_start: float = 1e-4, beta_end: float = 0.02,
              kind: str = "linear") -> torch.Tensor:
    """(steps,) float64 cumulative products of 1 - beta: betas linear from beta_start to beta_end, or (kind
    scaled_linear) their square roots linear (module docstring 1)."""
    if kind == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64).square()
    elif kind == "linear":
        betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
    else:
        raise ValueError(f"alpha_bar: kind must be linear or scaled_linear, got {kind!r}")
    return torch.cumprod(1.0 - betas, 0)


SCHEDULES = {"linear": alpha_bar(), "scaled_linear": alpha_bar(beta_start=0.00085, beta_end=0.012,
                                                               kind="scaled_linear")}
ALPHA_BAR = SCHEDULES["linear"]
FLOW = "flow"
SCHEDULE_NAMES = (*SCHEDULES, FLOW)  # the VP schedules predict eps, `flow` predicts the velocity (docstring 7)


def coefficients(t: torch.Tensor, schedule: str = "linear") -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, sigma), each (N,) float64, of x_t = alpha x0 + sigma eps: (sqrt(ab), sqrt(1 - ab)) under a VP
    schedule, (1 - s, s) with s = (t + 1) / 1000 under `flow`; t = -1 gives (1, 0)."""
    t = torch.as_tensor(t, dtype=torch.long)
    if schedule == FLOW:
        s = (t.clamp(min=-1) + 1).double() / T_STEPS
        return 1.0 - s, s
    ab = ab_at(t, schedule)
    return ab.sqrt(), (1 - ab).sqrt()


def ab_at(t: torch.Tensor, schedule: str = "linear") -> torch.Tensor:
    """(N,) float64 ab_t for integer timesteps under `schedule`; t = -1 gives 1 (clean data)."""
    t = torch.as_tensor(t, dtype=torch.long)
    return torch.where(t < 0, torch.ones((), dtype=torch.float64), SCHEDULES[schedule][t.clamp(min=0)])


def _col(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N,) schedule values as a column broadcasting over `like`, on its device (timesteps live on the CPU)."""
    return v.reshape(-1, *[1] * (like.dim() - 1)).to(like.device)


def add_noise(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, schedule: str = "linear") -> torch.Tensor:
    """x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps (flow: (1 - s) x0 + s eps), in x0's dtype; t (N,) or a scalar."""
    if schedule == FLOW:
        alpha, sigma = coefficients(t, schedule)
        return _col(alpha.to(x0.dtype), x0) * x0 + _col(sigma.to(x0.dtype), x0) * eps
    ab = _col(ab_at(t, schedule).to(x0.dtype), x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * eps


def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, schedule: str = "linear") -> torch.Tensor:
    """(x_t - sqrt(1 - ab) eps) / sqrt(ab) (flow: (x_t - s eps) / (1 - s)), computed in float64 (module docstring 2),
    returned in x_t's dtype."""
    if schedule == FLOW:
        alpha, sigma = (_col(c, x_t) for c in coefficients(t, schedule))
        return ((x_t.double() - sigma * eps.double()) / alpha).to(x_t.dtype)
    ab = _col(ab_at(t, schedule), x_t)
    return ((x_t.double() - (1 - ab).sqrt() * eps.double()) / ab.sqrt()).to(x_t.dtype)


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, schedule: str = "linear") -> torch.Tensor:
    """(x_t - sqrt(ab) x0) / sqrt(1 - ab) (flow: (x_t - (1 - s) x0) / s), the inverse of `x0_from_eps` (t >= 0)."""
    if schedule == FLOW:
        alpha, sigma = (_col(c, x_t) for c in coefficients(t, schedule))
        return ((x_t.double() - alpha * x0.double()) / sigma).to(x_t.dtype)
    ab = _col(ab_at(t, schedule), x_t)
    return ((x_t.double() - ab.sqrt() * x0.double()) / (1 - ab).sqrt()).to(x_t.dtype)


def x0_from_output(x_t: torch.Tensor, out: torch.Tensor, t: torch.Tensor, schedule: str = "linear") -> torch.Tensor:
    """x0 from a network's output (module docstring 7): eps under a VP schedule, v under `flow` (x_t - s v, in
    float64); returned in x_t's dtype."""
    if schedule == FLOW:
        _, sigma = coefficients(t, schedule)
        return (x_t.double() - _col(sigma, x_t) * out.double()).to(x_t.dtype)
    return x0_from_eps(x_t, out, t, schedule)


def eps_from_output(x_t: torch.Tensor, out: torch.Tensor, t: torch.Tensor, schedule: str = "linear") -> torch.Tensor:
    """eps from a network's output: the output itself under a VP schedule, x_t + (1 - s) v under `flow`."""
    if schedule == FLOW:
        alpha, _ = coefficients(t, schedule)
        return (x_t.double() + _col(alpha, x_t) * out.double()).to(x_t.dtype)
    return out


def score_from_output(x_t: torch.Tensor, out: torch.Tensor, t: torch.Tensor, schedule: str = "linear"
                      ) -> torch.Tensor:
    """(N, D) float64 grad_x log p_t(x_t) = -eps / sigma from a network's output (t >= 0; flow: -(x_t + (1 - s) v) /
    s, module docstring 7)."""
    _, sigma = coefficients(t, schedule)
    return -eps_from_output(x_t.double(), out.double(), t, schedule) / _col(sigma, x_t)


def target(x0: torch.Tensor, eps: torch.Tensor, schedule: str = "linear") -> torch.Tensor:
    """What a network regresses on at x_t = add_noise(x0, eps, t): eps under a VP schedule, v = eps - x0 under
    `flow`."""
    return eps - x0 if schedule == FLOW else eps


def timesteps(n: int, low: int, high: int, *, generator: torch.Generator) -> torch.Tensor:
    """(n,) long timesteps uniform on {low .. high}."""
    return torch.randint(low, high + 1, (n,), generator=generator)


class GaussianMixture:
    """Equal-weight isotropic Gaussian mixture in 2-D: `modes` means on a circle of `radius`, std `sigma`; noised
    under `schedule`."""

    def __init__(self, *, modes: int = 8, radius: float = 4.0, sigma: float = 0.3, schedule: str = "linear"):
        if modes < 1 or radius < 0 or sigma <= 0:
            raise ValueError(f"GaussianMixture: need modes >= 1, radius >= 0, sigma > 0; got {modes}, {radius}, "
                             f"{sigma}")
        angle = torch.arange(modes, dtype=torch.float64) * (2 * math.pi / modes)
        self.means = radius * torch.stack([angle.cos(), angle.sin()], 1)  # (K, 2) float64
        self.sigma = sigma
        self.schedule = schedule

    def sample(self, n: int, *, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 2) float32 points and their (N,) mode labels."""
        labels = torch.randint(len(self.means), (n,), generator=generator)
        noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return (self.means[labels] + self.sigma * noise).float(), labels

    def _noised(self, t: torch.Tensor | None, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 1) scale sqrt(ab) of the means and (N, 1) variance ab sigma^2 + 1 - ab (module docstring 3); under
        `flow` alpha = 1 - s and alpha^2 sigma^2 + s^2."""
        if self.schedule == FLOW and t is not None:
            alpha, sigma = (c.expand(n)[:, None] for c in coefficients(t, self.schedule))
            return alpha, alpha.square() * self.sigma**2 + sigma.square()
        ab = torch.ones(n, dtype=torch.float64) if t is None else ab_at(t, self.schedule).expand(n)
        return ab.sqrt()[:, None], (ab * self.sigma**2 + 1 - ab)[:, None]

    def log_posterior(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """(N, K) float64 log p(k | x_t) of the mixture noised to t (None: clean data)."""
        scale, var = self._noised(t, len(x))
        d2 = (x.double()[:, None, :] - scale[:, :, None] * self.means[None]).square().sum(-1)  # (N, K)
        return (-0.5 * d2 / var).log_softmax(-1)

    def log_prob(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """(N,) float64 log density of the mixture noised to t."""
        scale, var = self._noised(t, len(x))
        d2 = (x.double()[:, None, :] - scale[:, :, None] * self.means[None]).square().sum(-1)
        logn = -0.5 * d2 / var - torch.log(2 * math.pi * var)  # 2-D isotropic normal
        return logn.logsumexp(-1) - math.log(len(self.means))

    def score(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """(N, 2) float64 grad_x log p_t(x) = sum_k p(k | x) (sqrt(ab) mu_k - x) / var."""
        scale, var = self._noised(t, len(x))
        post = self.log_posterior(x, t).exp()  # (N, K)
        return (scale * (post @ self.means) - x.double()) / var

    def eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(N, 2) exact eps-prediction -sqrt(1 - ab) score, in x_t's dtype: the analytic teacher."""
        if self.schedule == FLOW:
            return (-coefficients(t, self.schedule)[1].expand(len(x_t))[:, None] * self.score(x_t, t)).to(x_t.dtype)
        return (-(1 - ab_at(t, self.schedule).expand(len(x_t)))[:, None].sqrt() * self.score(x_t, t)).to(x_t.dtype)

    def x0_mean(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(N, 2) float64 E[x0 | x_t] = sum_k p(k | x_t) (mu_k + alpha sigma^2 / var (x_t - alpha mu_k)): each mode's
        Gaussian posterior mean, with no division by alpha (defined at flow's t = 999)."""
        scale, var = self._noised(t, len(x_t))
        post = self.log_posterior(x_t, t).exp()  # (N, K)
        gain = scale * self.sigma**2 / var  # (N, 1)
        return (1 - gain * scale) * (post @ self.means) + gain * x_t.double()

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(N, 2) exact flow velocity E[eps - x0 | x_t] = -sigma score - E[x0 | x_t], in x_t's dtype."""
        _, sigma = coefficients(t, self.schedule)
        eps = -sigma.expand(len(x_t))[:, None] * self.score(x_t, t)
        return (eps - self.x0_mean(x_t, t)).to(x_t.dtype)

    def predict(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The exact teacher in its schedule's parameterisation (module docstring 7): eps, or v under `flow`."""
        return self.velocity(x_t, t) if self.schedule == FLOW else self.eps(x_t, t)


def time_embedding(t: torch.Tensor, dim: int = 32) -> torch.Tensor:
    """(N, dim) sinusoidal embedding of integer timesteps (Vaswani et al. frequencies, max period 10000)."""
    freqs = torch.exp(-math.log(10000.0) * torch.arange(dim // 2, dtype=torch.float32, device=t.device) / (dim // 2))
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], -1)


class ScoreMLP(nn.Module):
    """eps_theta(x_t, t): [x, emb(t)] -> 3 x (Linear, SiLU) of `width` -> Linear to 2 (module docstring 4)."""

    def __init__(self, *, width: int = 128, emb_dim: int = 32, dim: int = 2):
        super().__init__()
        self.emb_dim = emb_dim
        self.lower = nn.Sequential(nn.Linear(dim + emb_dim, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU())
        self.upper = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, dim))

    def features(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(N, width) middle-layer features."""
        return self.lower(torch.cat([x_t, time_embedding(t.expand(len(x_t)).to(x_t.device), self.emb_dim)], -1))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.upper(self.features(x_t, t))


def full(t: int, n: int) -> torch.Tensor:
    return torch.full((n,), t, dtype=torch.long)


@torch.no_grad()
def ddim_sample(eps_fn: EpsFn, noise: torch.Tensor, *, steps: int, schedule: str = "linear") -> torch.Tensor:
    """(N, 2) samples by deterministic DDIM from `noise` at t = 999 over `steps` evenly spaced timesteps."""
    ts = torch.linspace(T_STEPS - 1, 0, steps).round().long().tolist() + [-1]
    x = noise
    for t, t_next in zip(ts[:-1], ts[1:]):
        out = eps_fn(x, full(t, len(x)))
        x0 = x0_from_output(x, out, full(t, len(x)), schedule)
        eps = eps_from_output(x, out, full(t, len(x)), schedule)
        x = x0 if t_next < 0 else add_noise(x0, eps, full(t_next, len(x)), schedule)
    return x


def student_timesteps(steps: int, *, start: int = T_STEPS - 1) -> list[int]:
    """tau for a K-step student: [start, start - (start + 1) // K, ...] (start 999: K = 4 gives [999, 749, 499, 249],
    K = 1 [999]). The first step always reads pure noise; `start` is the timestep it is told (DMD2's "conditioning
    timestep": 999, or 399 in one of its one-step SDXL configurations)."""
    if not 1 <= steps <= T_STEPS:
        raise ValueError(f"student steps must lie in [1, {T_STEPS}], got {steps}")
    if not steps - 1 <= start < T_STEPS:
        raise ValueError(f"student start timestep must lie in [{steps - 1}, {T_STEPS - 1}], got {start}")
    return [start - i * ((start + 1) // steps) for i in range(steps)]


def generator_x0(net: nn.Module, x_t: torch.Tensor, t: int | torch.Tensor, schedule: str = "linear") -> torch.Tensor:
    """x0-hat = (x_t - sqrt(1 - ab) eps_G(x_t, t)) / sqrt(ab) (flow: x_t - s v_G), the generator's output (DMD2 §3);
    t an int or (N,)."""
    tt = full(t, len(x_t)) if isinstance(t, int) else t
    return x0_from_output(x_t, net(x_t, tt), tt, schedule)


def student_sample(net: nn.Module, noises: list[torch.Tensor], *, steps: int, upto: int | None = None,
                   start: int = T_STEPS - 1, schedule: str = "linear") -> torch.Tensor:
    """Run the K-step student from noises[0]; noises[i] re-noises step i's x0 to tau[i]. `upto` = k stops after k
    steps and returns the input of step k (x_t at tau[k]; k = 0: pure noise) instead of the last x0."""
    tau = student_timesteps(steps, start=start)
    x = noises[0]
    stop = steps if upto is None else upto
    for i in range(stop):
        x0 = generator_x0(net, x, tau[i], schedule)
        last = i + 1 == steps
        if last and upto is None:
            return x0
        x = add_noise(x0, noises[i + 1], full(tau[i + 1], len(x0)), schedule)
    return x


def backward_simulation(net: nn.Module, noises: list[torch.Tensor], *, steps: int, k: int,
                        start: int = T_STEPS - 1, schedule: str = "linear") -> tuple[torch.Tensor, int]:
    """(x_t, t) to train the generator at: its own k-step output re-noised to tau[k], pure noise at k = 0
    (DMD2 §4.3, module docstring 6). No gradient flows into the first k steps."""
    if not 0 <= k < steps:
        raise ValueError(f"backward simulation: k must lie in [0, {steps - 1}], got {k}")
    with torch.no_grad():
        x_t = student_sample(net, noises, steps=steps, upto=k, start=start, schedule=schedule)
    return x_t, student_timesteps(steps, start=start)[k]
