"""A small VQ image tokenizer (encoder, codebook, decoder) for autoregressive image policies (issue 11).

    tok, report = train_vq(images, steps=400)      # (N, 3, S, S) floats in [0, 1]
    codes = tok.encode(images)                      # (N, (S/4)^2) longs in [0, codes), row-major
    images = tok.decode(codes)                      # (N, 3, S, S) in [0, 1]
    tok.save("runs/vq"); VQTokenizer.load("runs/vq")

1. Encoder: two 4 × 4 stride-2 convolutions (ReLU) and a 1 × 1 projection to `dim`: an S × S image becomes
   (S/4)² vectors. Quantisation as LlamaGen's tokenizer (arXiv 2406.06525, §2.1): vectors and codebook entries are
   l2-normalised and each vector takes its nearest entry (largest cosine). Decoder: the mirror image, sigmoid output.
2. Training loss (VQ-VAE, arXiv 1711.00937, eq. 3): MSE(x̂, x) + ||sg[z_e] − z_q||² + β ||z_e − sg[z_q]||², β = 0.25,
   with the straight-through estimator z_e + sg[z_q − z_e] into the decoder. Codes unused for `restart_every` steps
   are restarted at random encoder outputs of the current batch (so the codebook is used; reported as `usage`).
3. `save(dir)` writes vq_config.json and vq.safetensors; `load(dir)` rebuilds the same tokenizer (codes and decodes
   identical).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class VQConfig:
    size: int = 16
    channels: int = 3
    hidden: int = 64
    codes: int = 128
    dim: int = 16
    beta: float = 0.25


class VQTokenizer(nn.Module):
    def __init__(self, config: VQConfig | None = None, **kwargs):
        super().__init__()
        self.config = c = config or VQConfig(**kwargs)
        if c.size % 4 or c.codes < 2:
            raise ValueError(f"VQTokenizer: size must be a multiple of 4 and codes >= 2, got {c.size}, {c.codes}")
        self.encoder = nn.Sequential(nn.Conv2d(c.channels, c.hidden, 4, 2, 1), nn.ReLU(),
                                     nn.Conv2d(c.hidden, c.hidden, 4, 2, 1), nn.ReLU(), nn.Conv2d(c.hidden, c.dim, 1))
        self.codebook = nn.Embedding(c.codes, c.dim)
        self.decoder = nn.Sequential(nn.Conv2d(c.dim, c.hidden, 1), nn.ReLU(),
                                     nn.ConvTranspose2d(c.hidden, c.hidden, 4, 2, 1), nn.ReLU(),
                                     nn.ConvTranspose2d(c.hidden, c.channels, 4, 2, 1))

    @property
    def tokens(self) -> int:
        """Codes per image: (size / 4)²."""
        return (self.config.size // 4) ** 2

    def _latents(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, dim) l2-normalised encoder outputs."""
        z = self.encoder(x)
        return F.normalize(z.flatten(2).transpose(1, 2), dim=-1)

    def _nearest(self, z: torch.Tensor) -> torch.Tensor:
        return (z @ F.normalize(self.codebook.weight, dim=-1).T).argmax(-1)

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, T) codes -> (N, T, dim) normalised codebook vectors."""
        return F.normalize(self.codebook(codes), dim=-1)

    def _pixels(self, zq: torch.Tensor) -> torch.Tensor:
        n, side = zq.shape[0], self.config.size // 4
        return torch.sigmoid(self.decoder(zq.transpose(1, 2).reshape(n, -1, side, side)))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self._nearest(self._latents(x))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.dim() != 2 or codes.shape[1] != self.tokens:
            raise ValueError(f"VQTokenizer.decode: expected (N, {self.tokens}) codes, got {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.config.codes):
            raise ValueError(f"VQTokenizer.decode: codes must lie in [0, {self.config.codes}), got "
                             f"{int(codes.min())}..{int(codes.max())}")
        return self._pixels(self.embed(codes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction, loss, codes) of a training step (module docstring 2)."""
        self._check(x)
        ze = self._latents(x)
        codes = self._nearest(ze.detach())
        zq = self.embed(codes)
        recon = self._pixels(ze + (zq - ze).detach())  # straight-through
        loss = F.mse_loss(recon, x) + F.mse_loss(zq, ze.detach()) + self.config.beta * F.mse_loss(ze, zq.detach())
        return recon, loss, codes

    def _check(self, x: torch.Tensor) -> None:
        c = self.config
        if x.dim() != 4 or tuple(x.shape[1:]) != (c.channels, c.size, c.size):
            raise ValueError(f"VQTokenizer: expected (N, {c.channels}, {c.size}, {c.size}) images, got "
                             f"{tuple(x.shape)}")

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vq_config.json").write_text(json.dumps(dataclasses.asdict(self.config), indent=1))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, folder / "vq.safetensors")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> VQTokenizer:
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / "vq_config.json").is_file():
            raise FileNotFoundError(f"VQTokenizer.load: no vq_config.json in {str(folder)!r}")
        tok = cls(VQConfig(**json.loads((folder / "vq_config.json").read_text())))
        tok.load_state_dict(load_file(folder / "vq.safetensors"))
        return tok.eval()


def train_vq(images: torch.Tensor, *, steps: int = 400, batch_size: int = 64, lr: float = 2e-3, seed: int = 0,
             restart_every: int = 50, config: VQConfig | None = None) -> tuple[VQTokenizer, dict[str, float]]:
    """A tokenizer trained on `images`; the report holds the final reconstruction MSE over all images and the share
    of codes they use."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    config = config or VQConfig(size=images.shape[-1], channels=images.shape[1])
    tok = VQTokenizer(config)
    opt = torch.optim.Adam(tok.parameters(), lr=lr)
    last_used = torch.zeros(config.codes, dtype=torch.long)
    for step in range(1, steps + 1):
        x = images[torch.randint(len(images), (batch_size,), generator=g)]
        _, loss, codes = tok(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        last_used[codes.unique()] = step
        dead = (step - last_used >= restart_every).nonzero().flatten()
        if len(dead) and step < steps:
            with torch.no_grad():
                pool = tok._latents(x).reshape(-1, config.dim)
                tok.codebook.weight[dead] = pool[torch.randint(len(pool), (len(dead),), generator=g)]
            last_used[dead] = step
    tok.eval()
    with torch.no_grad():
        codes = tok.encode(images)
        mse = float(F.mse_loss(tok.decode(codes), images))
    return tok, {"mse": mse, "usage": len(codes.unique()) / config.codes}
