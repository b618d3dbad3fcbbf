"""LlamaGen's class-conditional GPT (arXiv 2406.14838 §2.2-2.3) as a VA-π image policy (issue 22).

    policy = load_llamagen_policy("/models/llamagen")  # llamagen.json + the generator's .pt ({"model": state})
    logits = policy.model(input_ids=ids).logits        # ids [<class_k>, <code_..>..] -> (B, L, V) as an HF causal LM
    batch = policy.generate(samples, group_ids=..., seeds=..., params=SamplingParams(max_new_tokens=T))
    policy.save(folder)                                # llamagen.json + gpt.pt, LlamaGen's layout again

1. Architecture (c2i, LlamaGen's names and shapes, so its state dicts load with strict=True): the class label's
   embedding (`cls_embedding.embedding_table`, num_classes + 1 rows: the last is the null class of
   classifier-free guidance) is the first token, then the codes (`tok_embeddings`); pre-norm blocks
   (`attention_norm`, `attention.wqkv` one fused q/k/v projection with n_kv_head key/value heads, `attention.wo`;
   `ffn_norm`, SwiGLU `feed_forward.w1 / w3 / w2` with hidden size 2·4·dim/3 rounded up to `multiple_of`); RMSNorm
   `norm`, `output` to the codes. GPT-B / L / XL / XXL / XXXL are LlamaGen's c2i presets (layers, heads, dim).
2. Positions: 2-D RoPE (§2.2) over the √block_size × √block_size code grid: head_dim / 2 rotation pairs, the first
   half rotated by the code's row, the second by its column, frequencies base^(−2i / (head_dim / 2)); the class
   token's rotation table is all zeros (LlamaGen's table: its query and key are zeroed), which is kept so that
   published weights give their logits.
3. As rlvr's image policy (rlvr.images.ar's vocabulary: `<class_k>` and `<code_j>` tokens from `code_tokenizer`):
   `CodeLM` maps those ids to LlamaGen's class labels and code indices (`<unk>` -> the null class) and returns
   logits over the whole vocabulary with every non-code token at −inf, so rlvr.algos.va_pi's teacher forcing reads
   it as it reads the Llama policy. `generate` samples codes free-running with a KV cache, each row from its own
   seed, from the conditional logits only: no classifier-free guidance and no top-k (LlamaGen's sampler defaults
   to cfg 4.0, top-k 2000; VA-π's teacher-forced samples use the conditional logits too).
4. Not supported: LlamaGen's t2i models (caption embeddings), cls_token_num > 1, and rlvr's train-mode dropout
   (algo.train_mode_dropout, refused with the config).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn
from torch.nn import functional as F

from rlvr.config import ConfigError
from rlvr.images.llamagen import FolderConfig, build, load_state, preset, read_folder_config, read_state

GPT_PRESETS = {"GPT-B": {"n_layer": 12, "n_head": 12, "dim": 768}, "GPT-L": {"n_layer": 24, "n_head": 16, "dim": 1024},
               "GPT-XL": {"n_layer": 36, "n_head": 20, "dim": 1280},
               "GPT-XXL": {"n_layer": 48, "n_head": 24, "dim": 1536},
               "GPT-XXXL": {"n_layer": 48, "n_head": 40, "dim": 2560}}


@dataclass
class GPTArgs:
    """LlamaGen's GPT settings (its ModelArgs, the c2i fields)."""

    dim: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int | None = None
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    rope_base: float = 10000
    norm_eps: float = 1e-5
    num_classes: int = 1000
    class_dropout_prob: float = 0.1
    vocab_size: int = 16384
    cls_token_num: int = 1
    block_size: int = 256

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def ffn_hidden(self) -> int:
        hidden = int(2 * 4 * self.dim / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return -(-hidden // self.multiple_of) * self.multiple_of


def gpt_args(fc: FolderConfig) -> GPTArgs:
    """The generator's settings of a folder: the named preset, the folder's codebook / classes / grid, gpt_args."""
    if fc.gpt_model is None or fc.gpt_ckpt is None:
        raise ConfigError(f"{fc.where}: no generator in this folder (set gpt_model and gpt_ckpt)")
    grid = fc.image_size // (fc.vq().downsample if fc.vq_model and fc.vq_ckpt else fc.downsample_size)
    fields = {**preset(GPT_PRESETS, fc.gpt_model, "gpt_model", fc.where), "vocab_size": fc.codebook_size,
              "num_classes": fc.num_classes, "cls_token_num": fc.cls_token_num, "block_size": grid * grid}
    args = build(GPTArgs, {**fields, **fc.gpt_overrides}, f"{fc.where}: gpt_args")
    side = round(args.block_size**0.5)
    rules = [(side * side == args.block_size, f"block_size {args.block_size} must be a square (the code grid)"),
             (args.cls_token_num == 1, "cls_token_num must be 1 (c2i)"),
             (args.dim % args.n_head == 0 and args.head_dim % 4 == 0,
              "dim / n_head must be a whole multiple of 4 (2-D RoPE)"),
             (args.class_dropout_prob > 0, "class_dropout_prob must be > 0 (the null class row)")]
    for ok, want in rules:
        if not ok:
            raise ConfigError(f"{fc.where}: {want}")
    return args


def rope_2d(grid: int, head_dim: int, base: float, prefix: int) -> torch.Tensor:
    """(prefix + grid², head_dim / 2, 2) cos / sin table of module docstring 2; the prefix rows are zeros."""
    half = head_dim // 2
    inv = 1.0 / base ** (torch.arange(0, half, 2)[: half // 2].float() / half)  # (half / 2,)
    ang = torch.outer(torch.arange(grid).float(), inv)  # (grid, half / 2)
    both = torch.cat([ang[:, None].expand(-1, grid, -1), ang[None].expand(grid, -1, -1)], -1)  # (g, g, half): row, col
    table = torch.stack([both.cos(), both.sin()], -1).flatten(0, 1)  # (g², half, 2)
    return torch.cat([torch.zeros(prefix, half, 2), table])


def apply_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """x (B, L, H, D) rotated pairwise (x_2i, x_2i+1) by table (L, D / 2, 2)."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)  # (B, L, H, D / 2, 2)
    cos, sin = table[None, :, None, :, 0], table[None, :, None, :, 1]
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack([a * cos - b * sin, b * cos + a * sin], -1).flatten(3).type_as(x)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class Attention(nn.Module):
    def __init__(self, a: GPTArgs):
        super().__init__()
        self.a = a
        self.wqkv = nn.Linear(a.dim, (a.n_head + 2 * a.kv_heads) * a.head_dim, bias=False)
        self.wo = nn.Linear(a.dim, a.dim, bias=False)

    def forward(self, x: torch.Tensor, table: torch.Tensor, cache: dict | None) -> torch.Tensor:
        a, (b, n, _) = self.a, x.shape
        kv = a.kv_heads * a.head_dim
        q, k, v = self.wqkv(x).split([a.dim, kv, kv], -1)
        q = apply_rope(q.view(b, n, a.n_head, a.head_dim), table).transpose(1, 2)  # (B, H, L, D)
        k = apply_rope(k.view(b, n, a.kv_heads, a.head_dim), table).transpose(1, 2)
        v = v.view(b, n, a.kv_heads, a.head_dim).transpose(1, 2)
        past = cache is not None and "k" in cache
        if cache is not None:
            if past:
                k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
            cache["k"], cache["v"] = k, v
        rep = a.n_head // a.kv_heads
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        # a decoding step (one new position with a cache) attends to everything before it: no mask
        out = F.scaled_dot_product_attention(q, k, v, is_causal=not past)
        return self.wo(out.transpose(1, 2).reshape(b, n, a.dim))


class FeedForward(nn.Module):
    def __init__(self, a: GPTArgs):
        super().__init__()
        self.w1 = nn.Linear(a.dim, a.ffn_hidden, bias=False)
        self.w3 = nn.Linear(a.dim, a.ffn_hidden, bias=False)
        self.w2 = nn.Linear(a.ffn_hidden, a.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, a: GPTArgs):
        super().__init__()
        self.attention = Attention(a)
        self.feed_forward = FeedForward(a)
        self.attention_norm = RMSNorm(a.dim, a.norm_eps)
        self.ffn_norm = RMSNorm(a.dim, a.norm_eps)

    def forward(self, x: torch.Tensor, table: torch.Tensor, cache: dict | None) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), table, cache)
        return h + self.feed_forward(self.ffn_norm(h))


class LabelEmbedder(nn.Module):
    def __init__(self, a: GPTArgs):
        super().__init__()
        self.embedding_table = nn.Embedding(a.num_classes + 1, a.dim)  # the last row: the null class


class LlamaGenGPT(nn.Module):
    """LlamaGen's c2i Transformer (module docstring 1); `forward` returns logits at every input position."""

    def __init__(self, args: GPTArgs, *, seed: int = 0):
        super().__init__()
        self.args = args
        torch.manual_seed(seed)
        self.cls_embedding = LabelEmbedder(args)
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(TransformerBlock(args) for _ in range(args.n_layer))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        for mod in self.modules():  # LlamaGen's init: N(0, 0.02) (it zeroes `output`; random here, for tests)
            if isinstance(mod, (nn.Linear, nn.Embedding)):
                nn.init.normal_(mod.weight, std=0.02)
        grid = round(args.block_size**0.5)
        self.register_buffer("rope", rope_2d(grid, args.head_dim, args.rope_base, args.cls_token_num),
                             persistent=False)

    def forward(self, labels: torch.Tensor | None, codes: torch.Tensor, *, start: int = 0,
                caches: list[dict] | None = None) -> torch.Tensor:
        """labels (B,) (start 0: the class token leads) and codes (B, L) -> (B, L [+ 1], V) logits; position p reads
        positions <= p (with `caches`, those of earlier calls too)."""
        h = self.tok_embeddings(codes)  # (B, L, dim)
        if labels is not None:
            h = torch.cat([self.cls_embedding.embedding_table(labels)[:, None], h], 1)
        table = self.rope[start : start + h.shape[1]]
        for i, layer in enumerate(self.layers):
            h = layer(h, table, caches[i] if caches is not None else None)
        return self.output(self.norm(h)).float()


class CodeLM(nn.Module):
    """The GPT over rlvr's code vocabulary, called as an HF causal LM (module docstring 3)."""

    def __init__(self, gpt: LlamaGenGPT, tokenizer):
        super().__init__()
        from rlvr.images.ar import first_code_id

        self.gpt = gpt
        self.first_class = tokenizer.convert_tokens_to_ids("<class_0>")
        self.first_code, self.unk, self.vocab = first_code_id(tokenizer), tokenizer.unk_token_id, len(tokenizer)

    def labels_of(self, class_ids: torch.Tensor) -> torch.Tensor:
        labels = class_ids - self.first_class
        return torch.where(class_ids == self.unk, self.gpt.args.num_classes, labels)  # <unk>: the null class

    def forward(self, input_ids: torch.Tensor, **_) -> SimpleNamespace:
        codes = input_ids[:, 1:] - self.first_code
        if codes.numel() and codes.min() < 0:
            raise ValueError("CodeLM: every token after the class token must be a code")
        logits = self.gpt(self.labels_of(input_ids[:, 0]), codes)  # (B, L, codes)
        full = logits.new_full((*logits.shape[:2], self.vocab), float("-inf"))
        full[..., self.first_code : self.first_code + logits.shape[-1]] = logits
        return SimpleNamespace(logits=full)


class LlamaGenPolicy:
    """A LlamaGen GPT with the methods `loop: va_pi` calls on an image policy (module docstring 3)."""

    def __init__(self, gpt: LlamaGenGPT):
        from rlvr.images.ar import code_tokenizer

        self.tokenizer = code_tokenizer(codes=gpt.args.vocab_size, classes=gpt.args.num_classes)
        self.model = CodeLM(gpt, self.tokenizer)

    @property
    def gpt(self) -> LlamaGenGPT:
        return self.model.gpt

    @torch.no_grad()
    def generate(self, samples, *, group_ids: torch.Tensor, seeds: torch.Tensor, params):
        """One free-running image (params.max_new_tokens codes) per sample, its class from the prompt
        ("<class_k>"), row i drawn from seeds[i]; a Batch with the codes as completion ids."""
        from rlvr.batch import Batch

        dev = self.gpt.output.weight.device
        class_ids = torch.tensor([self.tokenizer.convert_tokens_to_ids(s.prompt) for s in samples], device=dev)
        bad = (class_ids < self.model.first_class) | (class_ids >= self.model.first_code)
        if bad.any():
            raise ValueError(f"LlamaGenPolicy.generate: prompt {samples[int(bad.nonzero()[0])].prompt!r} is not a "
                             "class token")
        gens = [torch.Generator(device=dev).manual_seed(int(s)) for s in seeds]
        caches = [{} for _ in self.gpt.layers]
        logits = self.gpt(self.model.labels_of(class_ids), class_ids.new_zeros(len(samples), 0), caches=caches)
        codes, logp = [], []
        for t in range(params.max_new_tokens):
            lp = (logits[:, -1] / params.temperature).log_softmax(-1)  # (N, codes)
            z = torch.cat([torch.multinomial(lp[i].exp(), 1, generator=g) for i, g in enumerate(gens)])  # (N,)
            codes.append(z)
            logp.append(lp.gather(-1, z[:, None])[:, 0])
            if t + 1 < params.max_new_tokens:
                logits = self.gpt(None, z[:, None], start=t + 1, caches=caches)
        ids = torch.stack(codes, 1) + self.model.first_code  # (N, T)
        ones = torch.ones_like(ids)
        return Batch(prompt_ids=class_ids[:, None], prompt_mask=ones[:, :1], completion_ids=ids, completion_mask=ones,
                     loss_mask=ones.float(), rollout_logp=torch.stack(logp, 1),
                     truncated=torch.zeros(len(ids), dtype=torch.bool, device=dev), texts=[""] * len(ids),
                     group_ids=group_ids.to(dev), samples=list(samples))

    def save(self, folder: str | Path, merge_adapters: bool = True) -> Path:
        """llamagen.json and gpt.pt ({"model": state dict}, LlamaGen's layout); `merge_adapters` is unused (no LoRA)."""
        from rlvr.images.llamagen import write_folder_config

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({"model": self.gpt.state_dict()}, folder / "gpt.pt")
        a = self.gpt.args
        write_folder_config(folder, gpt_model="GPT-B", gpt_ckpt="gpt.pt", codebook_size=a.vocab_size,
                            num_classes=a.num_classes, cls_token_num=a.cls_token_num,
                            gpt_args={k: v for k, v in dataclasses.asdict(a).items()
                                      if k not in ("vocab_size", "num_classes", "cls_token_num")})
        return folder


def load_llamagen_policy(folder: str | Path) -> LlamaGenPolicy:
    """The generator of a LlamaGen folder, its weights loaded strictly (a wrong key is one line naming it)."""
    fc = read_folder_config(folder)
    gpt = LlamaGenGPT(gpt_args(fc))
    path = fc.folder / fc.gpt_ckpt
    load_state(gpt, read_state(path), path, ignore=("freqs_cis",))  # a buffer some LlamaGen files carry
    return LlamaGenPolicy(gpt)


TINY_VQ_ARGS = {"encoder_ch_mult": [1, 1], "decoder_ch_mult": [1, 1], "z_channels": 16, "ch": 16,
                "num_res_blocks": 1, "norm_groups": 8}
TINY_GPT_ARGS = {"dim": 32, "n_layer": 2, "n_head": 2, "multiple_of": 16}


def write_tiny_folder(folder: str | Path, *, size: int = 8, classes: int = 4, codes: int = 16, seed: int = 0) -> Path:
    """A LlamaGen-format folder with random weights for CPU tests: the VQ-16 / GPT-B presets shrunk by vq_args /
    gpt_args (downsampling 2, so (size / 2)² codes; 2 layers of dim 32), each file {"model": state dict} under
    LlamaGen's published names."""
    from rlvr.images.llamagen import LlamaGenVQModel, VQArgs

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"vq_model": "VQ-16", "vq_ckpt": "vq_ds2_c2i.pt", "codebook_size": codes, "codebook_embed_dim": 8,
              "gpt_model": "GPT-B", "gpt_ckpt": "c2i_tiny_8.pt", "image_size": size, "num_classes": classes,
              "vq_args": TINY_VQ_ARGS, "gpt_args": TINY_GPT_ARGS}
    torch.manual_seed(seed)
    vq = LlamaGenVQModel(VQArgs(codebook_size=codes, **TINY_VQ_ARGS))
    gpt = LlamaGenGPT(GPTArgs(vocab_size=codes, num_classes=classes, block_size=(size // 2) ** 2, **TINY_GPT_ARGS),
                      seed=seed)
    torch.save({"model": vq.state_dict()}, folder / config["vq_ckpt"])
    torch.save({"model": gpt.state_dict()}, folder / config["gpt_ckpt"])
    import json

    (folder / "llamagen.json").write_text(json.dumps(config, indent=1))
    return folder
