"""rlvr.images.unet.TinyUNet: eps has the input's shape and `features` is (N, width), so DMD2's diffusion-GAN head
reads it unchanged; the timestep changes the output; a few eps-MSE steps on toy shapes lower the loss on a fixed
held-out batch; the parameter count stays small."""

import pytest
import torch

from rlvr.algos.dmd import DiffusionGANHead
from rlvr.images.data import toy_shapes
from rlvr.images.diffusion import add_noise, generator_x0, timesteps
from rlvr.images.unet import ResBlock, TinyUNet


def _net(seed: int = 0, **kwargs) -> TinyUNet:
    torch.manual_seed(seed)
    return TinyUNet(**kwargs)


def _randomise_output(net: TinyUNet) -> None:
    """The output conv starts at zero (eps = 0 everywhere); give it weights so inputs can show through."""
    torch.nn.init.normal_(net.out[-1].weight, std=0.1)


def test_shapes_and_features_width():
    net = _net(width=40)
    x, t = torch.randn(5, 3, 16, 16), torch.tensor([0, 10, 500, 998, 999])
    assert net(x, t).shape == (5, 3, 16, 16)
    assert net.features(x, t).shape == (5, 40)
    head = DiffusionGANHead(width=net.width)
    logits = head.logits(net, x, generator=torch.Generator().manual_seed(0))  # (N,) as in rlvr.algos.dmd
    assert logits.shape == (5,)
    assert generator_x0(net, x, 749).shape == x.shape  # the scalar-t path of the student's sampler


def test_zero_output_at_init():
    net = _net()
    assert net(torch.randn(3, 3, 16, 16), torch.tensor([1, 2, 3])).abs().max() == 0


def test_time_conditioning_matters():
    net = _net()
    _randomise_output(net)
    x = torch.randn(1, 3, 16, 16).expand(2, 3, 16, 16)  # the same image twice
    t = torch.tensor([50, 900])
    with torch.no_grad():
        out, feats = net(x, t), net.features(x, t)
    assert (out[0] - out[1]).abs().mean() > 1e-3
    assert (feats[0] - feats[1]).abs().mean() > 1e-3
    assert torch.allclose(net(x[:1], t[:1]), out[:1], atol=1e-5)  # batch rows are independent (GroupNorm per row)


def test_training_lowers_eps_mse():
    torch.set_num_threads(1)
    images, _ = toy_shapes(128, size=16, seed=0)
    x_all = images * 2 - 1
    net = _net(base=16, width=32)
    g = torch.Generator().manual_seed(1)
    t_eval = timesteps(64, 0, 999, generator=g)
    eps_eval = torch.randn(64, 3, 16, 16, generator=g)
    x_eval = add_noise(x_all[:64], eps_eval, t_eval)

    def held_mse() -> float:
        with torch.no_grad():
            return float((net(x_eval, t_eval) - eps_eval).square().mean())

    before = held_mse()  # eps = 0 at init: the mean square of unit noise, about 1
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(40):
        x0 = x_all[torch.randint(len(x_all), (32,), generator=g)]
        t = timesteps(32, 0, 999, generator=g)
        eps = torch.randn(x0.shape, generator=g)
        loss = (net(add_noise(x0, eps, t), t) - eps).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_mse()
    assert before == pytest.approx(1.0, abs=0.1)
    assert after < 0.7 * before


def test_parameter_count_bounded():
    count = sum(p.numel() for p in TinyUNet().parameters())
    assert 50_000 < count < 500_000


def test_resblock_rejects_bad_conv_count():
    with pytest.raises(ValueError, match="convs must be 1 or 2"):
        ResBlock(8, 8, 16, convs=3)
