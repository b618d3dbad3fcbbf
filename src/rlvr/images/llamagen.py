"""LlamaGen's VQ image tokenizer (arXiv 2406.06525 §2.1) written for LlamaGen-format checkpoint folders (issue 22).

    vq = LlamaGenVQ.load("/models/llamagen", size=256)   # llamagen.json + the tokenizer's .pt ({"model": state})
    codes = vq.encode(images)                             # (N, 3, S, S) in [0, 1] -> (N, (S / 16)²) for VQ-16
    images = vq.decode(codes)                             # -> (N, 3, S, S) in [0, 1]

1. The folder: `llamagen.json` names the published files and the settings LlamaGen's sampling script takes on its
   command line, e.g. {"vq_model": "VQ-16", "vq_ckpt": "vq_ds16_c2i.pt", "codebook_size": 16384,
   "codebook_embed_dim": 8, "gpt_model": "GPT-B", "gpt_ckpt": "c2i_B_256.pt", "image_size": 256,
   "num_classes": 1000}. The generator reads (image_size / downsampling)² codes (its block_size; the downsampling
   is the folder's tokenizer's, else `downsample_size`). `vq_args` / `gpt_args` override single fields of the
   named presets (the tests' tiny models). A folder may hold the tokenizer, the generator
   (rlvr.images.llamagen_gpt) or both.
2. Architecture (VQ-16: channel multipliers (1, 1, 2, 2, 4), downsampling 16; VQ-8: (1, 2, 2, 4), 8): a
   taming-style encoder (conv_in; per level `num_res_blocks` ResNet blocks, attention blocks at the last level, a
   stride-2 downsample except at the last; mid ResNet / attention / ResNet; GroupNorm(32), swish, conv_out to
   z_channels), a 1×1 quant_conv to the 8-dim codebook space, nearest-entry quantisation with l2-normalised
   vectors and codebook (largest cosine), a 1×1 post_quant_conv and the mirror decoder (num_res_blocks + 1 blocks
   per level, nearest ×2 upsampling). Module names and shapes are LlamaGen's, so its state dicts load with
   strict=True (`load_state`: a missing, unexpected or misshapen key is one line naming it).
   `quantize.codebook_used` (65536 slots) is LlamaGen's codebook-usage buffer, kept so its files load; unused here.
3. Pixels: LlamaGen's tokenizer works on [-1, 1]; rlvr.images.tokenizers maps rlvr's [0, 1] in and out (its
   module docstring 2).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from rlvr.config import ConfigError

USAGE_SLOTS = 65536  # LlamaGen's codebook_used buffer length


@dataclass
class VQArgs:
    """LlamaGen's tokenizer settings (its ModelArgs, plus the Encoder / Decoder defaults it does not expose)."""

    codebook_size: int = 16384
    codebook_embed_dim: int = 8
    codebook_l2_norm: bool = True
    codebook_show_usage: bool = True
    encoder_ch_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4])
    decoder_ch_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4])
    z_channels: int = 256
    ch: int = 128
    num_res_blocks: int = 2
    norm_groups: int = 32

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.encoder_ch_mult) - 1)


VQ_PRESETS = {"VQ-16": {"encoder_ch_mult": [1, 1, 2, 2, 4], "decoder_ch_mult": [1, 1, 2, 2, 4]},
              "VQ-8": {"encoder_ch_mult": [1, 2, 2, 4], "decoder_ch_mult": [1, 2, 2, 4]}}


@dataclass
class FolderConfig:
    """llamagen.json (module docstring 1); `vq_args` / `gpt_args` in the file are `vq_overrides` / `gpt_overrides`."""

    folder: Path
    vq_model: str | None = None
    vq_ckpt: str | None = None
    gpt_model: str | None = None
    gpt_ckpt: str | None = None
    codebook_size: int = 16384
    codebook_embed_dim: int = 8
    image_size: int = 256
    downsample_size: int = 16
    """The tokenizer's downsampling when the folder holds no tokenizer (LlamaGen's --downsample-size)."""
    num_classes: int = 1000
    cls_token_num: int = 1
    vq_overrides: dict = field(default_factory=dict)
    gpt_overrides: dict = field(default_factory=dict)

    @property
    def where(self) -> str:
        return str(self.folder / "llamagen.json")

    def vq(self) -> VQArgs:
        """The tokenizer's settings: the named preset, the codebook, then vq_args."""
        if self.vq_model is None or self.vq_ckpt is None:
            raise ConfigError(f"{self.where}: no tokenizer in this folder (set vq_model and vq_ckpt)")
        fields = {**preset(VQ_PRESETS, self.vq_model, "vq_model", self.where),
                  "codebook_size": self.codebook_size, "codebook_embed_dim": self.codebook_embed_dim}
        return build(VQArgs, {**fields, **self.vq_overrides}, f"{self.where}: vq_args")


def read_folder_config(folder: str | Path) -> FolderConfig:
    """llamagen.json of `folder`; an unknown key is one ConfigError line naming it."""
    folder = Path(folder)
    path = folder / "llamagen.json"
    if not path.is_file():
        raise ConfigError(f"'{folder}' is not a LlamaGen folder: no llamagen.json")
    raw = json.loads(path.read_text())
    renamed = {"vq_args": "vq_overrides", "gpt_args": "gpt_overrides"}
    values = {renamed.get(k, k): v for k, v in raw.items()}
    if "folder" in values:
        raise ConfigError(f"{path}: unknown key 'folder'")
    return build(FolderConfig, {"folder": folder, **values}, str(path))


def write_folder_config(folder: Path, **values) -> None:
    """Merge `values` into folder/llamagen.json (a tokenizer and a generator may share one folder)."""
    path = folder / "llamagen.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**old, **values}, indent=1))


def preset(presets: dict, name: str, key: str, where: str) -> dict:
    if name not in presets:
        raise ConfigError(f"{where}: {key} {name!r} is not one of {sorted(presets)}")
    return presets[name]


def build(cls, values: dict, where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {sorted(names - {'folder'})})")
    return cls(**values)


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """A LlamaGen .pt file's state dict: under "model" (its DDP checkpoints), "module" (DeepSpeed), "state_dict",
    or the file itself (FSDP), as LlamaGen's sampling script reads them."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such checkpoint file")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle with non-tensor objects (e.g. the training args)
        raise ConfigError(f"{path}: not a plain tensor checkpoint ({type(err).__name__}); re-save it as "
                          "torch.save({'model': state_dict}, path)") from err
    for key in ("model", "module", "state_dict"):
        if isinstance(saved, dict) and isinstance(saved.get(key), dict):
            return saved[key]
    return saved


def load_state(module: nn.Module, state: dict[str, torch.Tensor], path: Path, *, ignore: tuple[str, ...] = ()) -> None:
    """load_state_dict(strict=True) with one line naming the first missing, unexpected or misshapen key."""
    want = module.state_dict()
    state = {k: v for k, v in state.items() if k not in ignore}
    for key in want:
        if key not in state:
            raise ConfigError(f"{path}: missing key {key!r}")
        if tuple(state[key].shape) != tuple(want[key].shape):
            raise ConfigError(f"{path}: key {key!r} has shape {tuple(state[key].shape)}, the config's model wants "
                              f"{tuple(want[key].shape)}")
    extra = sorted(set(state) - set(want))
    if extra:
        raise ConfigError(f"{path}: unexpected key {extra[0]!r} (the config's model has no such weight)")
    module.load_state_dict(state, strict=True)


# ---- the tokenizer (module docstring 2) ---------------------------------------------------------------------


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-6)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-6)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(swish(self.norm2(self.conv1(swish(self.norm1(x))))))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H·W positions (1×1 convolutions for q, k, v and the output)."""

    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch, eps=1e-6)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(ch, ch, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        h = self.norm(x)
        q, k, v = (f(h).flatten(2).transpose(1, 2) for f in (self.q, self.k, self.v))  # (B, HW, C)
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]  # softmax(q kᵀ / √C) v
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, hh, ww))


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric padding, then stride 2


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def level(cin: int, cout: int, blocks: int, groups: int, attn: bool) -> tuple[nn.Module, int]:
    """One resolution level: `blocks` ResNet blocks (res.i), an attention block after each at the top (attn.i)."""
    mod = nn.Module()
    mod.res = nn.ModuleList()
    mod.attn = nn.ModuleList()
    for _ in range(blocks):
        mod.res.append(ResnetBlock(cin, cout, groups))
        cin = cout
        if attn:
            mod.attn.append(AttnBlock(cout, groups))
    return mod, cout


def run_level(mod: nn.Module, h: torch.Tensor) -> torch.Tensor:
    for i, block in enumerate(mod.res):
        h = block(h)
        if len(mod.attn):
            h = mod.attn[i](h)
    return h


def middle(ch: int, groups: int) -> nn.ModuleList:
    return nn.ModuleList([ResnetBlock(ch, ch, groups), AttnBlock(ch, groups), ResnetBlock(ch, ch, groups)])


class Encoder(nn.Module):
    def __init__(self, a: VQArgs, in_channels: int = 3):
        super().__init__()
        mult, g = a.encoder_ch_mult, a.norm_groups
        self.conv_in = nn.Conv2d(in_channels, a.ch, 3, 1, 1)
        self.conv_blocks = nn.ModuleList()
        ch = a.ch
        for i, m in enumerate(mult):
            top = i == len(mult) - 1
            mod, ch = level(ch, a.ch * m, a.num_res_blocks, g, attn=top)
            if not top:
                mod.downsample = Downsample(ch)
            self.conv_blocks.append(mod)
        self.mid = middle(ch, g)
        self.norm_out = nn.GroupNorm(g, ch, eps=1e-6)
        self.conv_out = nn.Conv2d(ch, a.z_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for mod in self.conv_blocks:
            h = run_level(mod, h)
            if hasattr(mod, "downsample"):
                h = mod.downsample(h)
        for block in self.mid:
            h = block(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, a: VQArgs, out_channels: int = 3):
        super().__init__()
        mult, g = a.decoder_ch_mult, a.norm_groups
        ch = a.ch * mult[-1]
        self.conv_in = nn.Conv2d(a.z_channels, ch, 3, 1, 1)
        self.mid = middle(ch, g)
        self.conv_blocks = nn.ModuleList()
        for i in reversed(range(len(mult))):  # conv_blocks.0 is the top (lowest-resolution) level
            mod, ch = level(ch, a.ch * mult[i], a.num_res_blocks + 1, g, attn=i == len(mult) - 1)
            if i != 0:
                mod.upsample = Upsample(ch)
            self.conv_blocks.append(mod)
        self.norm_out = nn.GroupNorm(g, ch, eps=1e-6)
        self.conv_out = nn.Conv2d(ch, out_channels, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        for block in self.mid:
            h = block(h)
        for mod in self.conv_blocks:
            h = run_level(mod, h)
            if hasattr(mod, "upsample"):
                h = mod.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))


class Quantizer(nn.Module):
    def __init__(self, a: VQArgs):
        super().__init__()
        self.l2_norm = a.codebook_l2_norm
        self.embedding = nn.Embedding(a.codebook_size, a.codebook_embed_dim)
        if a.codebook_show_usage:
            self.register_buffer("codebook_used", torch.zeros(USAGE_SLOTS))

    def codebook(self) -> torch.Tensor:
        w = self.embedding.weight
        return F.normalize(w, dim=-1) if self.l2_norm else w

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """(N, d, h, w) -> (N, h·w) indices of the nearest entries (raster order)."""
        z = z.flatten(2).transpose(1, 2)  # (N, hw, d)
        if self.l2_norm:
            z = F.normalize(z, dim=-1)
        e = self.codebook()
        dist = z.square().sum(-1, keepdim=True) + e.square().sum(-1) - 2 * z @ e.T  # (N, hw, K)
        return dist.argmin(-1)


class LlamaGenVQModel(nn.Module):
    """LlamaGen's VQModel: its module names (encoder, decoder, quantize, quant_conv, post_quant_conv)."""

    def __init__(self, args: VQArgs):
        super().__init__()
        self.args = args
        self.encoder = Encoder(args)
        self.decoder = Decoder(args)
        self.quantize = Quantizer(args)
        self.quant_conv = nn.Conv2d(args.z_channels, args.codebook_embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(args.codebook_embed_dim, args.z_channels, 1)

    def encode_codes(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) in [-1, 1] -> (N, (S / f)²) codes."""
        return self.quantize.nearest(self.quant_conv(self.encoder(x)))

    def decode_codes(self, codes: torch.Tensor, side: int) -> torch.Tensor:
        """(N, side²) codes -> (N, 3, S, S) decoder output (≈ [-1, 1])."""
        z = self.quantize.codebook()[codes].view(len(codes), side, side, -1).permute(0, 3, 1, 2)  # (N, d, s, s)
        return self.decoder(self.post_quant_conv(z))


class LlamaGenVQ(nn.Module):
    """A LlamaGen tokenizer as a frozen rlvr tokenizer (rlvr.images.tokenizers' interface)."""

    def __init__(self, model: LlamaGenVQModel, *, size: int):
        super().__init__()
        from rlvr.images.tokenizers import AdapterConfig

        self.model = model.eval().requires_grad_(False)
        self.downsample = model.args.downsample
        if size % self.downsample:
            raise ValueError(f"LlamaGenVQ: size {size} is not a multiple of the downsampling {self.downsample}")
        self.config = AdapterConfig(size=size, codes=model.args.codebook_size)

    @property
    def tokens(self) -> int:
        return (self.config.size // self.downsample) ** 2

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        from rlvr.images.tokenizers import check_images, to_model_range

        check_images(x, 3, self.config.size, "LlamaGenVQ")
        return self.model.encode_codes(to_model_range(x))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        from rlvr.images.tokenizers import check_codes, to_image_range

        check_codes(codes, self.tokens, self.config.codes, "LlamaGenVQ")
        return to_image_range(self.model.decode_codes(codes, self.config.size // self.downsample))

    def save(self, folder: str | Path) -> Path:
        """llamagen.json and vq.pt ({"model": state dict}, LlamaGen's layout)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({"model": self.model.state_dict()}, folder / "vq.pt")
        a = self.model.args
        base = VQ_PRESETS["VQ-16"]
        write_folder_config(folder, vq_model="VQ-16", vq_ckpt="vq.pt", codebook_size=a.codebook_size,
                            codebook_embed_dim=a.codebook_embed_dim,
                            vq_args={k: v for k, v in dataclasses.asdict(a).items()
                                     if k not in ("codebook_size", "codebook_embed_dim")
                                     and base.get(k, getattr(VQArgs(), k)) != v})
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, size: int) -> LlamaGenVQ:
        fc = read_folder_config(folder)
        model = LlamaGenVQModel(fc.vq())
        path = fc.folder / fc.vq_ckpt
        load_state(model, read_state(path), path)
        return cls(model, size=size)
