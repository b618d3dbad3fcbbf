"""A tiny convolutional eps-prediction U-Net for 16 x 16 RGB images in [-1, 1]: the image-scale teacher, generator
and fake score of DMD2 (arXiv 2405.14867), small enough for CPU benchmarks.

    net = TinyUNet()                                # 0.24 M parameters (base 32, width 48)
    eps = net(x_t, t)                               # x_t (N, 3, 16, 16), t (N,) long -> (N, 3, 16, 16)
    feats = net.features(x_t, t)                    # (N, net.width): the pooled middle block
    head = DiffusionGANHead(width=net.width)        # rlvr.algos.dmd's diffusion-GAN head reads these features

1. Layout (Ho et al., arXiv 2006.11239 Appendix B, shrunk): a 3 x 3 conv stem to `base` channels at 16 x 16; two
   down blocks, each a residual block then a stride-2 conv (16 -> 8 -> 4, `width` channels); a middle residual
   block at 4 x 4; two up blocks, each a nearest 2x upsample, a concatenated skip from the matching down block and a
   residual block; GroupNorm, SiLU and a 3 x 3 conv to 3 channels out.
2. Residual block: GroupNorm -> SiLU -> conv -> + Linear(time embedding) per channel -> GroupNorm -> SiLU -> conv,
   plus the input (a 1 x 1 conv where the channel count changes). The 16 x 16 blocks have one conv instead of two:
   they dominate the cost and the budget is a CPU thread.
3. Time: the sinusoidal embedding of `rlvr.images.diffusion.time_embedding`, an MLP (Linear, SiLU, Linear), added
   to every residual block through its own Linear.
4. `features(x_t, t)` = the middle block's output averaged over its 4 x 4 positions, (N, width): the bottleneck
   DMD2's GAN classifier reads (§4.2). `forward` computes them on the way and returns eps.
5. The output conv starts at zero, so an untrained network predicts eps = 0 (x0-hat = x_t / sqrt(ab)).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from rlvr.images.diffusion import time_embedding


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, channels), channels)


class ResBlock(nn.Module):
    """Residual conv block with a per-channel time shift (module docstring 2); `convs` is 1 or 2."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, *, convs: int = 2, groups: int = 8):
        super().__init__()
        if convs not in (1, 2):
            raise ValueError(f"ResBlock: convs must be 1 or 2, got {convs}")
        self.norm1, self.conv1 = _norm(c_in, groups), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.second = nn.Sequential(_norm(c_out, groups), nn.SiLU(), nn.Conv2d(c_out, c_out, 3, padding=1)
                                    ) if convs == 2 else nn.Identity()
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.emb(emb)[:, :, None, None]  # (N, c_out, H, W)
        return self.skip(x) + self.second(h)


class TinyUNet(nn.Module):
    """eps_theta(x_t, t) for (N, 3, 16, 16) images (module docstring); `features` has `width` entries."""

    def __init__(self, *, channels: int = 3, base: int = 32, width: int = 48, emb_dim: int = 64, groups: int = 8):
        super().__init__()
        self.width, self.emb_dim = width, emb_dim
        self.time = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.stem = nn.Conv2d(channels, base, 3, padding=1)
        self.down1 = ResBlock(base, base, emb_dim, convs=1, groups=groups)
        self.pool1 = nn.Conv2d(base, width, 3, stride=2, padding=1)
        self.down2 = ResBlock(width, width, emb_dim, groups=groups)
        self.pool2 = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.mid = ResBlock(width, width, emb_dim, groups=groups)
        self.up2 = ResBlock(2 * width, width, emb_dim, groups=groups)
        self.up1 = ResBlock(width + base, base, emb_dim, convs=1, groups=groups)
        self.out = nn.Sequential(_norm(base, groups), nn.SiLU(), nn.Conv2d(base, channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def _embed(self, t: torch.Tensor, n: int) -> torch.Tensor:
        return self.time(time_embedding(t.expand(n), self.emb_dim))  # (N, emb_dim)

    def _trunk(self, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(middle (N, width, H/4, W/4), skip at H/2, skip at H, time embedding)."""
        emb = self._embed(t, len(x_t))
        s1 = self.down1(self.stem(x_t), emb)  # (N, base, H, W)
        s2 = self.down2(self.pool1(s1), emb)  # (N, width, H/2, W/2)
        mid = self.mid(self.pool2(s2), emb)  # (N, width, H/4, W/4)
        return mid, s2, s1, emb

    def features(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(N, width) pooled middle block (module docstring 4)."""
        return self._trunk(x_t, t)[0].mean((2, 3))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        mid, s2, s1, emb = self._trunk(x_t, t)
        h = self.up2(torch.cat([F.interpolate(mid, scale_factor=2.0), s2], 1), emb)  # (N, width, H/2, W/2)
        h = self.up1(torch.cat([F.interpolate(h, scale_factor=2.0), s1], 1), emb)  # (N, base, H, W)
        return self.out(h)
