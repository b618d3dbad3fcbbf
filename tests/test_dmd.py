"""DMD2 / Flash-DMD math (rlvr.algos.dmd) and the 2-D diffusion testbed (rlvr.images.diffusion): the DM loss's
gradient against its formula and its direction on a mixture with known scores, the exact mixture eps against
autograd, x0 round trips, the student schedule and backward simulation, the Flash split and the GAN losses."""

import math

import pytest
import torch

from rlvr.algos.dmd import (
    DataDiscriminator,
    DiffusionGANHead,
    dm_gradient,
    dm_loss,
    dm_targets,
    flash_weights,
    gan_discriminator_loss,
    gan_generator_loss,
    rl_loss,
    summed_weights,
)
from rlvr.images.diffusion import (
    ALPHA_BAR,
    SCHEDULES,
    GaussianMixture,
    ScoreMLP,
    ab_at,
    add_noise,
    backward_simulation,
    coefficients,
    ddim_sample,
    eps_from_output,
    eps_from_x0,
    full,
    generator_x0,
    score_from_output,
    student_sample,
    student_timesteps,
    target,
    x0_from_eps,
    x0_from_output,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_schedule_values():
    # ab_0 = 1 - 1e-4; ab_1 = (1 - 1e-4)(1 - beta_1), beta_1 = 1e-4 + 0.0199 / 999
    assert ALPHA_BAR[0].item() == pytest.approx(0.9999)
    assert ALPHA_BAR[1].item() == pytest.approx(0.9999 * (1 - (1e-4 + 0.0199 / 999)))
    assert ALPHA_BAR[-1].item() == pytest.approx(4.04e-5, rel=0.01)
    assert ALPHA_BAR.dtype == torch.float64 and len(ALPHA_BAR) == 1000


def test_scaled_linear_schedule_values():
    # SD's betas: sqrt(beta) linear from sqrt(0.00085) to sqrt(0.012); at t = 999 an eps error reaches x0 14.6x
    ab = SCHEDULES["scaled_linear"]
    assert ab[0].item() == pytest.approx(1 - 0.00085)
    beta_1 = (0.00085**0.5 + (0.012**0.5 - 0.00085**0.5) / 999) ** 2
    assert ab[1].item() == pytest.approx((1 - 0.00085) * (1 - beta_1))
    assert ((1 - ab[-1]) / ab[-1]).sqrt().item() == pytest.approx(14.61, abs=0.01)
    assert ((1 - ALPHA_BAR[-1]) / ALPHA_BAR[-1]).sqrt().item() == pytest.approx(157.4, abs=0.1)
    assert ab_at(torch.tensor([999]), "scaled_linear").item() == ab[-1].item()


def test_x0_round_trip():
    x0, eps = torch.randn(6, 2, generator=gen(1)), torch.randn(6, 2, generator=gen(2))
    t = torch.tensor([0, 20, 250, 500, 980, 999])
    x_t = add_noise(x0, eps, t)
    torch.testing.assert_close(x0_from_eps(x_t, eps, t), x0, atol=2e-4, rtol=0)  # /0.0064 at t = 999 in float32 x_t
    x_t64 = add_noise(x0.double(), eps.double(), t)
    torch.testing.assert_close(eps_from_x0(x_t64, x0.double(), t), eps.double(), atol=1e-10, rtol=0)
    torch.testing.assert_close(x0_from_eps(x_t64, eps.double(), t), x0.double(), atol=1e-10, rtol=0)


def test_mixture_eps_is_minus_sqrt_one_minus_ab_times_autograd_score():
    gmm = GaussianMixture()
    x = (3 * torch.randn(5, 2, generator=gen(3))).double().requires_grad_(True)
    for t_int in (0, 100, 500, 999):
        t = full(t_int, 5)
        (score,) = torch.autograd.grad(gmm.log_prob(x, t).sum(), x)
        want = -math.sqrt(1 - ALPHA_BAR[t_int].item()) * score
        torch.testing.assert_close(gmm.eps(x.detach(), t), want, atol=1e-9, rtol=1e-7)


def test_flow_schedule_interpolates_and_its_velocity_round_trips_at_every_t():
    """x_t = (1 - s) x0 + s eps, s = (t + 1) / 1000; a network output equal to the target v = eps - x0 gives back
    x0 and eps exactly, also at t = 999 where alpha = 0 (no division by alpha on the v path)."""
    t = torch.tensor([-1, 0, 249, 499, 998, 999])
    alpha, sigma = coefficients(t, "flow")
    assert alpha.tolist() == pytest.approx([1, 0.999, 0.75, 0.5, 0.001, 0]) and (alpha + sigma == 1).all()
    x0, eps = torch.randn(6, 2, generator=gen(40)).double(), torch.randn(6, 2, generator=gen(41)).double()
    x_t = add_noise(x0, eps, t, "flow")
    torch.testing.assert_close(x_t, alpha[:, None] * x0 + sigma[:, None] * eps)
    v = target(x0, eps, "flow")
    torch.testing.assert_close(x0_from_output(x_t, v, t, "flow"), x0, atol=1e-12, rtol=0)
    torch.testing.assert_close(eps_from_output(x_t, v, t, "flow"), eps, atol=1e-12, rtol=0)
    assert torch.equal(target(x0, eps, "linear"), eps)  # the VP schedules regress on eps


def test_one_gaussian_flow_velocity_has_its_closed_form():
    """x0 ~ N(0, s0^2 I), x_t = a x0 + s eps: E[v | x_t] = E[eps - x0 | x_t] = (s - a s0^2) / (a^2 s0^2 + s^2) x_t."""
    gmm = GaussianMixture(modes=1, radius=0.0, sigma=0.5, schedule="flow")
    x = 2 * torch.randn(7, 2, generator=gen(42)).double()
    for t_int in (0, 300, 700, 999):
        a, s = (c.item() for c in coefficients(torch.tensor(t_int), "flow"))
        want = (s - a * 0.25) / (a * a * 0.25 + s * s) * x
        torch.testing.assert_close(gmm.velocity(x, full(t_int, 7)), want, atol=1e-12, rtol=1e-10)


def test_velocity_to_score_conversion_gives_the_mixtures_score_at_every_t():
    """The known answer: the noised mixture's score grad log p_t by autograd of its density, against
    -(x_t + (1 - s) v) / s from the exact velocity (E[x0 | x_t] by the modes' posterior means, no score used)."""
    gmm = GaussianMixture(schedule="flow")
    x = (3 * torch.randn(9, 2, generator=gen(43))).double().requires_grad_(True)
    for t_int in (0, 20, 250, 500, 980, 999):
        t = full(t_int, 9)
        (score,) = torch.autograd.grad(gmm.log_prob(x, t).sum(), x)
        x0 = gmm.x0_mean(x.detach(), t)
        v = (-coefficients(t, "flow")[1][:, None] * score) - x0  # E[eps | x_t] - E[x0 | x_t], eps from autograd
        torch.testing.assert_close(gmm.velocity(x.detach(), t), v, atol=1e-9, rtol=1e-7)
        torch.testing.assert_close(score_from_output(x.detach(), gmm.velocity(x.detach(), t), t, "flow"), score,
                                   atol=1e-9, rtol=1e-7)
        # Tweedie: E[x0 | x_t] = (x_t + s^2 score) / (1 - s), where alpha > 0
        if t_int < 999:
            a, s = (c[:, None] for c in coefficients(t, "flow"))
            torch.testing.assert_close(x0, (x.detach() + s * s * score) / a, atol=1e-8, rtol=1e-7)


def test_mixture_log_prob_is_a_density_and_posterior_sums_to_one():
    gmm = GaussianMixture(modes=3, radius=1.0, sigma=0.5)
    grid = torch.linspace(-6, 6, 241, dtype=torch.float64)
    xy = torch.cartesian_prod(grid, grid)
    mass = gmm.log_prob(xy).exp().sum() * (12 / 240) ** 2
    assert mass.item() == pytest.approx(1.0, abs=1e-4)
    posterior = gmm.log_posterior(xy[:7], full(300, 7)).exp()
    torch.testing.assert_close(posterior.sum(-1), torch.ones(7, dtype=torch.float64))


def test_dm_loss_gradient_is_g_over_numel():
    x0 = torch.randn(4, 2, generator=gen(4), requires_grad=True)
    x0_real, x0_fake = torch.randn(4, 2, generator=gen(5)).double(), torch.randn(4, 2, generator=gen(6)).double()
    loss, metrics = dm_loss(x0, x0_real, x0_fake)
    loss.backward()
    w = (x0.detach().double() - x0_real).abs().mean(1, keepdim=True)
    g = (x0_fake - x0_real) / w
    torch.testing.assert_close(x0.grad, (g / 8).float())  # numel = 4 x 2
    assert metrics["dm/nonfinite"] == 0


def test_dm_loss_weights_zero_rows():
    x0 = torch.randn(4, 2, generator=gen(4), requires_grad=True)
    x0_real, x0_fake = torch.randn(4, 2, generator=gen(5)).double(), torch.randn(4, 2, generator=gen(6)).double()
    dm_loss(x0, x0_real, x0_fake, weights=torch.tensor([1.0, 0.0, 1.0, 0.0]))[0].backward()
    assert x0.grad[1].abs().sum() == 0 and x0.grad[3].abs().sum() == 0 and x0.grad[0].abs().sum() > 0


def test_a_weighted_term_is_averaged_over_the_rows_it_acts_on():
    # without backward simulation t_k is per sample: a row carrying 1 of 4 weights gets the term's full gradient
    x0 = torch.randn(4, 2, generator=gen(4), requires_grad=True)
    x0_real, x0_fake = torch.randn(4, 2, generator=gen(5)).double(), torch.randn(4, 2, generator=gen(6)).double()
    dm_loss(x0, x0_real, x0_fake, weights=torch.tensor([0.0, 1.0, 0.0, 0.0]))[0].backward()
    alone = x0.detach()[1:2].clone().requires_grad_(True)
    dm_loss(alone, x0_real[1:2], x0_fake[1:2])[0].backward()
    torch.testing.assert_close(x0.grad[1], alone.grad[0])
    logits = torch.randn(4, generator=gen(7), requires_grad=True)
    gan_generator_loss(logits, weights=torch.tensor([0.0, 0.0, 1.0, 0.0]))[0].backward()
    one = logits.detach()[2:3].clone().requires_grad_(True)
    gan_generator_loss(one)[0].backward()
    torch.testing.assert_close(logits.grad[2], one.grad[0])
    # `rows` (the whole batch's count under data parallelism) replaces the local count
    loss, _ = gan_generator_loss(logits.detach(), weights=torch.tensor([1.0, 1.0, 0.0, 0.0]), rows=4.0)
    torch.testing.assert_close(loss, torch.nn.functional.softplus(-logits.detach()[:2]).sum() / 4)


def test_equal_scores_give_zero_gradient_and_nonfinite_entries_are_counted():
    x0 = torch.randn(5, 2, generator=gen(7))
    gmm = GaussianMixture()
    x0_real, x0_fake = dm_targets(x0, gmm.eps, gmm.eps, generator=gen(8))
    g, bad = dm_gradient(x0, x0_real, x0_fake)
    assert torch.equal(g, torch.zeros_like(g)) and bad == 0
    # w = 0 for row 0 (x0 == x0_real) and x0_fake != x0_real: inf, zeroed by nan_to_num but counted
    x0_real = x0.double().clone()
    x0_fake = x0_real + 1.0
    g, bad = dm_gradient(x0, x0_real, x0_fake)
    assert bad == 10 and torch.isfinite(g).all()


def test_dm_gradient_points_from_generator_toward_data():
    """Generator = the data mixture shifted by c, its exact eps as the fake score: -g points back, along -c."""
    data = GaussianMixture()
    fake = GaussianMixture()
    c = torch.tensor([0.6, -0.3], dtype=torch.float64)
    fake.means = fake.means + c
    x0 = data.sample(2000, generator=gen(9))[0] + c.float()  # samples of the generator distribution
    x0_real, x0_fake = dm_targets(x0, data.eps, fake.eps, generator=gen(10))
    g, _ = dm_gradient(x0, x0_real, x0_fake)
    step = -g.mean(0)
    cos = float(step @ -c / (step.norm() * c.norm()))
    assert cos > 0.9
    moved = x0.double() - 0.05 * g  # a small step along -g lowers the distance to the nearest mode
    before = torch.cdist(x0.double(), data.means).min(1).values.mean()
    after = torch.cdist(moved, data.means).min(1).values.mean()
    assert after < before


def test_dm_loss_step_moves_a_shrunk_gaussian_outward():
    """Generator = one Gaussian at the origin (std 1), exact noised score N(0, ab + 1 - ab) = N(0, I): eps = sqrt(1-ab)
    x_t; the data are the ring of radius 4, so -g must push samples outward (positive radial component)."""
    data = GaussianMixture()
    x0 = torch.randn(2000, 2, generator=gen(11))

    def fake_eps(x_t, t):  # noised N(0, I) is N(0, I) for every t: score = -x, eps = sqrt(1 - ab) x
        return (1 - ALPHA_BAR[t]).sqrt()[:, None].float() * x_t

    x0_real, x0_fake = dm_targets(x0, data.eps, fake_eps, generator=gen(12))
    g, _ = dm_gradient(x0, x0_real, x0_fake)
    radial = ((-g) * x0.double()).sum(1) / x0.double().norm(dim=1)
    assert radial.mean() > 0.1


def test_student_timesteps():
    assert student_timesteps(4) == [999, 749, 499, 249]
    assert student_timesteps(1) == [999]
    assert student_timesteps(2) == [999, 499]
    with pytest.raises(ValueError, match="student steps"):
        student_timesteps(0)


def test_backward_simulation_pure_noise_at_999_and_k_steps():
    torch.manual_seed(0)
    net = ScoreMLP()
    noises = [torch.randn(3, 2, generator=gen(13 + i)) for i in range(4)]
    x_t, t = backward_simulation(net, noises, steps=4, k=0)
    assert t == 999 and torch.equal(x_t, noises[0])
    x_t, t = backward_simulation(net, noises, steps=4, k=2)
    with torch.no_grad():  # by hand: G at 999, re-noise to 749 with noises[1], G at 749, re-noise to 499 with noises[2]
        x = add_noise(generator_x0(net, noises[0], 999), noises[1], full(749, 3))
        x = add_noise(generator_x0(net, x, 749), noises[2], full(499, 3))
    assert t == 499 and torch.equal(x_t, x)
    with pytest.raises(ValueError, match="k must lie"):
        backward_simulation(net, noises, steps=4, k=4)


def test_student_sample_returns_last_x0():
    torch.manual_seed(0)
    net = ScoreMLP()
    noises = [torch.randn(3, 2, generator=gen(20 + i)) for i in range(4)]
    with torch.no_grad():
        x_t, _ = backward_simulation(net, noises, steps=4, k=3)
        assert torch.equal(student_sample(net, noises, steps=4), generator_x0(net, x_t, 249))


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "flow"])
def test_ddim_with_exact_teacher_lands_on_the_modes(schedule):
    gmm = GaussianMixture(schedule=schedule)  # the teacher and the sampler on one schedule, or the points miss
    x = ddim_sample(gmm.predict, torch.randn(300, 2, generator=gen(14)), steps=50, schedule=schedule)
    near = torch.cdist(x.double(), gmm.means).min(1).values
    assert (near < 3 * gmm.sigma).float().mean() > 0.95


def test_flash_split_at_the_boundary():
    t_k = torch.tensor([999, 749, 500, 499, 249])
    w_dm, w_gan = flash_weights(t_k, split=500)
    assert w_dm.tolist() == [1, 1, 1, 0, 0] and w_gan.tolist() == [0, 0, 0, 1, 1]
    w_dm, w_gan = summed_weights(t_k, split=500)
    assert w_dm.tolist() == w_gan.tolist() == [1] * 5


def test_gan_losses_hand_worked():
    # softplus(0) = ln 2; softplus(1) = ln(1 + e) = 1.31326
    loss, _ = gan_generator_loss(torch.zeros(3))
    assert loss.item() == pytest.approx(math.log(2))
    loss, m = gan_discriminator_loss(torch.tensor([1.0]), torch.tensor([-1.0]))
    assert loss.item() == pytest.approx(2 * math.log1p(math.e)) and m["gan/disc_acc"] == 0.0
    loss, m = gan_discriminator_loss(torch.tensor([-2.0, 0.0]), torch.tensor([3.0, 1.0]))
    # fake: (softplus(-2) + softplus(0)) / 2 = (0.126928 + 0.693147) / 2; real: (softplus(-3) + softplus(-1)) / 2
    want = (0.126928 + 0.693147) / 2 + (0.048587 + 0.313262) / 2
    assert loss.item() == pytest.approx(want, abs=1e-5) and m["gan/disc_acc"] == 0.75
    loss, _ = gan_generator_loss(torch.tensor([0.0, 2.0]), weights=torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx(math.log(2))  # the mean over the one row the term acts on


def test_rl_loss_is_minus_mean_reward():
    loss, m = rl_loss(torch.tensor([1.0, -3.0]))
    assert loss.item() == 1.0 and m["rl/reward"] == -1.0


def test_discriminators_return_one_logit_per_point_and_head_reads_fake_features():
    torch.manual_seed(0)
    fake, x0 = ScoreMLP(), torch.randn(5, 2)
    head, data_d = DiffusionGANHead(), DataDiscriminator()
    assert head.logits(fake, x0, generator=gen(1)).shape == (5,)
    assert data_d.logits(fake, x0, generator=gen(1)).shape == (5,)
    head.logits(fake, x0, generator=gen(1)).sum().backward()
    assert all(p.grad is not None for p in fake.lower.parameters())


def test_student_timesteps_from_another_conditioning_timestep():
    assert student_timesteps(1, start=399) == [399]
    assert student_timesteps(2, start=399) == [399, 199]
    assert student_timesteps(4) == student_timesteps(4, start=999)
    with pytest.raises(ValueError, match="start timestep must lie in"):
        student_timesteps(4, start=2)


def test_gradient_cosine_of_two_terms_on_the_outputs():
    from rlvr.images.dmd_train import gradient_cosine

    x0 = torch.tensor([[1.0, 2.0], [3.0, -1.0]], requires_grad=True)
    u, v = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[0.0, 5.0], [0.0, 1.0]])
    # row 0: gradients (1, 0) and (0, 5): orthogonal; row 1: (0, 2) and (0, 1): parallel -> mean cos 0.5
    assert abs(gradient_cosine((x0 * u).sum(), (x0 * v).sum(), x0) - 0.5) < 1e-6
    assert abs(gradient_cosine((x0 * u).sum(), -(x0 * u).sum(), x0) + 1.0) < 1e-6
    assert x0.grad is None  # nothing accumulated
