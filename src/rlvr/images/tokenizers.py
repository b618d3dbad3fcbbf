"""VQ image tokenizers for `loop: va_pi` (issue 22): rlvr's toy VQTokenizer, a diffusers `VQModel` folder, or a
LlamaGen-format checkpoint folder, all behind the interface rlvr.algos.va_pi and rlvr.images.va_pi_train call.

    vq = load_tokenizer("/models/vqmodel", size=64)   # detects the folder's format (module docstring 1)
    codes = vq.encode(images)                          # (N, 3, S, S) in [0, 1] -> (N, T) codes, T = (S / f)²
    images = vq.decode(codes)                          # (N, T) -> (N, 3, S, S) in [0, 1]
    vq.config.codes, vq.config.size, vq.tokens; vq.save(folder) writes the folder's own format again
    VQModel(**tiny_vqmodel_config()).save_pretrained(folder)   # a tiny random-weight diffusers tokenizer (tests)

1. Formats, told apart by the folder's files: `vq_config.json` is rlvr's toy tokenizer (rlvr.images.vq, a test
   fixture); `config.json` with `_class_name: VQModel` a diffusers VQModel (loaded with `VQModel.from_pretrained`);
   `llamagen.json` a LlamaGen checkpoint folder (rlvr.images.llamagen). `peek(folder)` reads the config alone, so
   the run refuses a wrong folder or an image size the tokenizer cannot split before any weights are loaded.
2. Pixel range: rlvr's images are [0, 1]; diffusers' VQModel and LlamaGen's tokenizer work on [-1, 1]. `encode`
   maps x -> 2x - 1 before the encoder, `decode` maps the decoder's output y -> clamp((y + 1) / 2, 0, 1) (the
   conversion diffusers' image processors and LlamaGen's sampling script apply before saving images), so the loop's
   rewards and metrics see the pixels a user of the model would.
3. diffusers VQModel: codes are `quantize`'s nearest-codebook indices (Euclidean, as VQModel's own forward) of
   `encode(x).latents` in raster order (row-major over the latent grid); `decode` looks the codes up in
   `quantize.embedding` and runs `VQModel.decode(..., force_not_quantize=True)` (post_quant_conv, decoder), which is
   VQModel's own quantize + decode path. Downsampling f = 2^(len(block_out_channels) − 1); the tokenizer is fully
   convolutional, so the image side comes from the run (data.size), a multiple of f.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rlvr.config import ConfigError


@dataclass(frozen=True)
class TokenizerShape:
    """What the loop reads from any tokenizer's `config` (rlvr's VQConfig has the same fields)."""

    format: str
    codes: int
    downsample: int
    size: int | None = None
    """The image side the tokenizer is fixed to (rlvr's toy VQ), or None: fully convolutional, any multiple of
    `downsample`."""


def peek(folder: str | Path) -> TokenizerShape:
    """The format, codebook size and downsampling of a tokenizer folder, from its config alone (module docstring
    1); a folder of no known format is a ConfigError naming the files looked for."""
    folder = Path(folder)
    if (folder / "vq_config.json").is_file():
        cfg = json.loads((folder / "vq_config.json").read_text())
        return TokenizerShape("rlvr", int(cfg.get("codes", 128)), 4, int(cfg.get("size", 16)))
    if (folder / "llamagen.json").is_file():
        from rlvr.images.llamagen import read_folder_config

        vq = read_folder_config(folder).vq()
        return TokenizerShape("llamagen", vq.codebook_size, vq.downsample)
    if (folder / "config.json").is_file():
        cfg = json.loads((folder / "config.json").read_text())
        if cfg.get("_class_name") == "VQModel":
            return TokenizerShape("diffusers", int(cfg.get("num_vq_embeddings", 256)),
                                  2 ** (len(cfg.get("block_out_channels", [64])) - 1))
        raise ConfigError(f"vq.path: {str(folder / 'config.json')!r} is a diffusers {cfg.get('_class_name')!r}, "
                          "not a VQModel")
    raise ConfigError(f"vq.path: '{folder}' holds no tokenizer: expected vq_config.json (rlvr), config.json with "
                      "_class_name VQModel (diffusers) or llamagen.json (LlamaGen)")


def check_size(shape: TokenizerShape, size: int) -> None:
    """One ConfigError line when images of side `size` do not fit the tokenizer."""
    if shape.size is not None and shape.size != size:
        raise ConfigError(f"vq.path: the tokenizer is for {shape.size} px images, data.size is {size}")
    if size % shape.downsample:
        raise ConfigError(f"data.size ({size}) must be a multiple of the {shape.format} tokenizer's downsampling "
                          f"factor {shape.downsample}")


def load_tokenizer(folder: str | Path, *, size: int) -> nn.Module:
    """The tokenizer in `folder` (any format of module docstring 1) for images of side `size`, in eval mode."""
    shape = peek(folder)
    check_size(shape, size)
    if shape.format == "rlvr":
        from rlvr.images.vq import VQTokenizer

        return VQTokenizer.load(folder)
    if shape.format == "llamagen":
        from rlvr.images.llamagen import LlamaGenVQ

        return LlamaGenVQ.load(folder, size=size)
    return DiffusersVQ.load(folder, size=size)


def tiny_vqmodel_config(**over) -> dict:
    """A tiny diffusers VQModel config (2 blocks: downsampling 2; 16 codes of dimension 4) for CPU tests."""
    return {"in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 2,
            "up_block_types": ["UpDecoderBlock2D"] * 2, "block_out_channels": [16, 16], "layers_per_block": 1,
            "latent_channels": 4, "num_vq_embeddings": 16, "vq_embed_dim": 4, "norm_num_groups": 8, "sample_size": 8,
            **over}


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    return x * 2 - 1  # [0, 1] -> [-1, 1] (module docstring 2)


def to_image_range(y: torch.Tensor) -> torch.Tensor:
    return ((y + 1) / 2).clamp(0, 1)  # [-1, 1] -> [0, 1] (module docstring 2)


def check_codes(codes: torch.Tensor, tokens: int, n_codes: int, who: str) -> None:
    if codes.dim() != 2 or codes.shape[1] != tokens:
        raise ValueError(f"{who}.decode: expected (N, {tokens}) codes, got {tuple(codes.shape)}")
    if codes.numel() and (codes.min() < 0 or codes.max() >= n_codes):
        raise ValueError(f"{who}.decode: codes must lie in [0, {n_codes}), got {int(codes.min())}..{int(codes.max())}")


def check_images(x: torch.Tensor, channels: int, size: int, who: str) -> None:
    if x.dim() != 4 or tuple(x.shape[1:]) != (channels, size, size):
        raise ValueError(f"{who}: expected (N, {channels}, {size}, {size}) images, got {tuple(x.shape)}")


@dataclass(frozen=True)
class AdapterConfig:
    """`vq.config` of an adapter: the image side the run uses and the codebook size."""

    size: int
    codes: int
    channels: int = 3


class DiffusersVQ(nn.Module):
    """A diffusers `VQModel` as a frozen rlvr tokenizer (module docstring 3)."""

    def __init__(self, model, *, size: int):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        c = model.config
        self.downsample = 2 ** (len(c.block_out_channels) - 1)
        if size % self.downsample:
            raise ValueError(f"DiffusersVQ: size {size} is not a multiple of the downsampling {self.downsample}")
        self.config = AdapterConfig(size=size, codes=c.num_vq_embeddings, channels=c.in_channels)

    @property
    def side(self) -> int:
        return self.config.size // self.downsample

    @property
    def tokens(self) -> int:
        """Codes per image: (size / downsample)²."""
        return self.side**2

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.config.channels, self.config.size, "DiffusersVQ")
        h = self.model.encode(to_model_range(x)).latents  # (N, d, s, s)
        _, _, (_, _, idx) = self.model.quantize(h)  # (N·s·s,) nearest entries, raster order
        return idx.view(len(x), self.tokens)

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, T) codes -> (N, T, d) codebook vectors."""
        return self.model.quantize.embedding(codes)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        check_codes(codes, self.tokens, self.config.codes, "DiffusersVQ")
        n, s = len(codes), self.side
        if self.model.config.lookup_from_codebook:  # VQModel looks the indices up itself
            d = self.model.quantize.embedding.embedding_dim
            out = self.model.decode(codes.flatten(), force_not_quantize=True, shape=(n, s, s, d)).sample
        else:
            z = self.embed(codes).view(n, s, s, -1).permute(0, 3, 1, 2)  # (N, d, s, s)
            out = self.model.decode(z, force_not_quantize=True).sample
        return to_image_range(out)

    def save(self, folder: str | Path) -> Path:
        self.model.save_pretrained(folder)
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path, *, size: int) -> DiffusersVQ:
        try:
            from diffusers import VQModel
        except ImportError as err:
            raise ImportError("a diffusers VQModel tokenizer needs diffusers: pip install 'rlvr[images]'") from err
        return cls(VQModel.from_pretrained(folder), size=size)
