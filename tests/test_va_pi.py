"""VA-π's pieces (arXiv 2512.19680) against hand-worked values: token noise at rate p, teacher-forced parallel
samples from each position's own conditional, the pixel reward on [-1, 1], clamped group advantages, the PPO + CE
loss; and that a causal model's logits at t do not read the context from t on."""

import math

import pytest
import torch

from rlvr.algos.va_pi import group_advantages, noisy_context, pixel_reward, teacher_forced_samples, va_pi_loss


def test_token_noise_replaces_at_rate_p():
    g = torch.Generator().manual_seed(0)
    codes = torch.zeros(200, 50, dtype=torch.long)
    out = noisy_context(codes, p=0.5, codes_n=64, generator=g)
    rate = float((out != 0).float().mean())  # a replacement may draw code 0 again: expected 0.5 * 63/64
    assert abs(rate - 0.5 * 63 / 64) < 0.01
    assert torch.equal(noisy_context(codes, p=0.0, codes_n=64), codes)
    assert float((noisy_context(codes, p=1.0, codes_n=64, generator=g) != 0).float().mean()) > 0.97
    with pytest.raises(ValueError, match=r"p must lie in \[0, 1\]"):
        noisy_context(codes, p=1.5, codes_n=64)


def test_teacher_forced_samples_follow_each_positions_conditional():
    logits = torch.full((1, 3, 4), -1e9)
    logits[0, 0, 2] = logits[0, 1, 0] = 0.0  # positions 0 and 1 are certain
    logits[0, 2, 1] = logits[0, 2, 3] = 0.0  # position 2: codes 1 or 3, half each
    z = teacher_forced_samples(logits, 4000, generator=torch.Generator().manual_seed(0))
    assert z.shape == (1, 4000, 3) and (z[0, :, 0] == 2).all() and (z[0, :, 1] == 0).all()
    assert set(z[0, :, 2].tolist()) == {1, 3} and abs(float((z[0, :, 2] == 1).float().mean()) - 0.5) < 0.03


def test_a_causal_models_logits_at_t_ignore_the_context_from_t_on():
    from rlvr.images.ar import ar_model, code_tokenizer

    model = ar_model(code_tokenizer(codes=16, classes=2), hidden=32, layers=2, heads=2).eval()
    ids = torch.randint(5, 21, (1, 10), generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    changed[0, 6:] = 5
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, model(input_ids=changed).logits
    torch.testing.assert_close(a[0, :6], b[0, :6])  # positions < 6 read tokens < 6 only
    assert not torch.allclose(a[0, 6:], b[0, 6:])


def test_pixel_reward_hand_worked():
    target = torch.zeros(2, 3, 2, 2)
    decoded = torch.zeros(2, 3, 2, 2)
    decoded[1] = 0.5  # [0, 1] difference 0.5 -> [-1, 1] difference 1.0 -> MSE 1
    assert pixel_reward(decoded, target).tolist() == [0.0, -1.0]
    fake_lpips = lambda a, b: torch.tensor([0.25, 0.5])  # noqa: E731
    assert pixel_reward(decoded, target, w_lpips=2.0, lpips=fake_lpips).tolist() == [-0.5, -2.0]
    with pytest.raises(ValueError, match="rlvr ships no LPIPS weights"):
        pixel_reward(decoded, target, w_lpips=1.0)


def test_group_advantages_hand_worked_and_clamped():
    a = group_advantages(torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]))
    torch.testing.assert_close(a[0], torch.tensor([-1.0, 0.0, 1.0]))  # mean 2, unbiased std 1
    assert a[1].tolist() == [0.0, 0.0, 0.0]  # no spread: no signal
    big = group_advantages(torch.tensor([[0.0] * 99 + [1.0]]))  # (1 - 0.01) / 0.1 = 9.9 -> clamped to 5
    assert float(big.max()) == 5.0


def test_loss_hand_worked():
    logp = torch.log(torch.tensor([[1.5, 1.0], [0.5, 1.0]]))  # ratios against old_logp = 0
    old = torch.zeros(2, 2)
    adv = torch.tensor([1.0, -1.0])
    logits = torch.zeros(1, 2, 4)  # uniform over 4 codes: CE = ln 4
    targets = torch.zeros(1, 2, dtype=torch.long)
    loss, m = va_pi_loss(logp, old, adv, logits, targets, clip=0.2, lambda_ce=0.1)
    # row 0, A = 1: max(-1.5, -1.2) = -1.2, max(-1, -1) = -1 -> -1.1; row 1, A = -1: max(0.5, 0.8) = 0.8, 1 -> 0.9
    assert m["va_pi/ppo"] == pytest.approx((-1.1 + 0.9) / 2)
    assert m["va_pi/ce"] == pytest.approx(math.log(4)) and float(loss) == pytest.approx(-0.1 + 0.1 * math.log(4))
    assert m["va_pi/clip_frac"] == pytest.approx(0.5)


def test_a_va_pi_step_learns_from_the_pixel_reward_alone():
    """PPO only (lambda_CE = 0): the policy never sees the ground-truth codes, yet over 40 steps on 4 images the
    sampled reconstructions' reward rises (measured when written, mean of the first -> last 5 steps: -0.457 -> -0.345,
    -0.454 -> -0.374, -0.451 -> -0.378 with 1, 2, 4 threads; the teacher-forced greedy error is not asserted: it fell
    with 2 and 4 threads and rose with 1)."""
    from rlvr.algos.va_pi import va_pi_step
    from rlvr.images import toy_shapes
    from rlvr.images.ar import ar_model, code_tokenizer, image_policy
    from rlvr.images.vq import VQConfig, train_vq

    x, y = toy_shapes(200, size=16, seed=0)
    vq, _ = train_vq(x, steps=200, batch_size=64, lr=3e-3, config=VQConfig(size=16, hidden=32, codes=32))
    vq.requires_grad_(False)
    tok = code_tokenizer(codes=32, classes=4)
    policy = image_policy(ar_model(tok, hidden=32, layers=2, heads=2, seed=0), tok)
    opt = torch.optim.Adam(policy.model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    steps = [va_pi_step(policy, vq, x[:4], y[:4], opt, group=8, lambda_ce=0.0, generator=g) for _ in range(40)]
    mean = lambda key, part: sum(s[key] for s in part) / len(part)  # noqa: E731
    assert mean("va_pi/reward", steps[-5:]) > mean("va_pi/reward", steps[:5]) + 0.03
    with pytest.raises(ValueError, match="group must be >= 2"):
        va_pi_step(policy, vq, x[:4], y[:4], opt, group=1)


def test_pi_old_is_the_sampling_pass():
    """The ratio is against the sampling pass's log-probs: exactly 1 for one same-mode update (nothing to clip), off
    1 from the second update on one batch (the clip acts), and off 1 from the first with the reference's train-mode
    dropout (token, residual / FFN, class label)."""
    from rlvr.algos.va_pi import va_pi_step
    from rlvr.images import toy_shapes
    from rlvr.images.ar import ar_model, code_tokenizer, image_policy
    from rlvr.images.vq import VQConfig, train_vq

    x, y = toy_shapes(16, size=8, seed=0)
    vq, _ = train_vq(x, steps=20, batch_size=16, lr=3e-3, config=VQConfig(size=8, hidden=16, codes=16))
    vq.requires_grad_(False)
    tok = code_tokenizer(codes=16, classes=4)

    def step(**options):
        policy = image_policy(ar_model(tok, hidden=32, layers=2, heads=2, seed=0), tok)
        opt = torch.optim.Adam(policy.model.parameters(), lr=3e-2)
        return va_pi_step(policy, vq, x[:4], y[:4], opt, group=4, generator=torch.Generator().manual_seed(0),
                          **options)

    assert step()["va_pi/ratio_dev"] == 0.0
    several = step(updates=3)  # metrics: the mean over the 3 updates
    assert several["va_pi/ratio_dev"] > 0.05 and several["va_pi/clip_frac"] > 0.0
    dropped = step(dropout=0.1)
    assert dropped["va_pi/ratio_dev"] > 0.01
    with pytest.raises(ValueError, match="updates must be >= 1 and dropout in"):
        step(dropout=1.0)
