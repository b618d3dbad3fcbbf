"""Hugging Face vision-language models (the Qwen2-VL family) as a Policy (rlvr.policies.base).

    policy = HFVisionLM.load(config="qwen2.5-vl-micro")          # or path="/models/Qwen2.5-VL-3B-Instruct"
    batch = policy.generate(samples, group_ids=ids, seeds=seeds, params=SamplingParams(max_new_tokens=16))
    logp, entropy = policy.logp(batch, with_entropy=True)         # (N, T) each, the HF forward's numbers

1. Prompts: each Sample's images (Sample.images, PIL) go through the image processor (resize to a multiple of
   patch * merge pixels within min/max_pixels, 14-px patches flattened as rows of `pixel_values`); the prompt text
   carries one `<|vision_start|><|image_pad|><|vision_end|>` per image (the tokenizer's chat template puts them in a
   user turn when it has one), and each `<|image_pad|>` is expanded to the image's number of merged patches, as the
   HF processor does. Per row, `extras` holds `pixel_values` (n_patches, D) and `image_grid_thw` (n_images, 3): lists,
   so select / concat carry them row by row; a text-only row holds empty tensors.
2. Positions are the model's own multimodal rotary (M-RoPE) ids, `get_rope_index` over the real tokens of the whole
   sequence, passed explicitly to every forward: sampling (prefill, then text positions + each row's delta under the
   KV cache) and training agree by construction and no forward reads state a previous one left on the model.
3. The vision tower runs once per distinct image tensor of a call (a group's G rows share their sample's), its
   features are scattered into the token embeddings, and the language model runs on those; every row has its own
   forward over its own image, so two rows with one question and different images never share anything.
4. A row whose placeholder tokens do not match its images' features, or whose image is missing or unreadable, is a
   one-line ValueError naming the row (task item and image name), before any forward.
5. `corrupt(batch, seeds)` is VPPO's uninformative image (arXiv 2510.09285; docs/methods.md §7.2): after the
   processor's resize, each 14-px patch is set to black independently with probability p, a fresh mask per row.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import torch

from rlvr.batch import Batch, Sample
from rlvr.errors import DataError
from rlvr.policies.base import SamplingParams
from rlvr.policies.sampling import HFDecoder, generate
from rlvr.policies.vlm_models import (  # noqa: F401  (re-exported: the policy's public names)
    EMBEDDING_ONLY,
    VISION_TOKENS,
    VLM_CONFIGS,
    VLM_MODEL_TYPES,
    is_vlm,
    load_vlm,
)

# ------------------------------------------------------------------ positions and embeddings


def _inner(model):
    """The Qwen2-VL family's inner model (get_rope_index, visual), under PEFT adapters too."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model


def rope_positions(model, ids: torch.Tensor, mask: torch.Tensor, grids: torch.Tensor | None):
    """M-RoPE position ids (3, N, L) of the real tokens and each row's text delta (N, 1): position of a text token
    after the prompt = its index among the row's real tokens + delta."""
    core = _inner(model)
    kwargs: dict[str, Any] = dict(image_grid_thw=grids if grids is not None and len(grids) else None,
                                  attention_mask=mask)
    if "mm_token_type_ids" in inspect.signature(core.get_rope_index).parameters:
        kwargs["mm_token_type_ids"] = (ids == model.config.image_token_id).int()  # 1 = image token, 0 = text
    return core.get_rope_index(ids, **kwargs)


def _distinct(tensors: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[int]]:
    """The distinct tensor objects of `tensors` (a group's rows hold one sample's) and each entry's index among them."""
    seen: dict[int, int] = {}
    order = [seen.setdefault(id(t), len(seen)) for t in tensors]
    firsts = {i: t for t, i in zip(tensors, order)}
    return [firsts[i] for i in range(len(firsts))], order


def vision_inputs(model, ids: torch.Tensor, pixels: list[torch.Tensor], grids: list[torch.Tensor]) -> dict[str, Any]:
    """The inputs of a prompt forward: embeddings with the image features in place (EMBEDDING_ONLY models), or the
    token ids with the rows' pixels for the model's own forward (Qwen3-VL)."""
    if model.config.model_type in EMBEDDING_ONLY:
        return {"inputs_embeds": embed(model, ids, pixels, grids)}
    rows = [i for i, g in enumerate(grids) if len(g)]
    if not rows:
        return {"input_ids": ids}
    dev = ids.device
    return {"input_ids": ids, "pixel_values": torch.cat([pixels[i].to(dev) for i in rows]),
            "image_grid_thw": torch.cat([grids[i].to(dev) for i in rows])}


def embed(model, ids: torch.Tensor, pixels: list[torch.Tensor], grids: list[torch.Tensor]) -> torch.Tensor:
    """Token embeddings (N, L, H) with each row's image features in place of its image placeholder tokens; the vision
    tower runs once per distinct image tensor."""
    embeds = model.get_input_embeddings()(ids)  # (N, L, H)
    rows = [i for i, g in enumerate(grids) if len(g)]
    if not rows:
        return embeds
    unique, order = _distinct([pixels[i] for i in rows])
    first: dict[int, int] = {}
    for row, u in zip(rows, order):
        first.setdefault(u, row)
    unique_grids = [grids[first[u]] for u in range(len(unique))]
    visual = _inner(model).visual
    dev, dtype = embeds.device, visual.dtype
    feats = visual(torch.cat([u.to(dev, dtype) for u in unique]),
                               grid_thw=torch.cat([g.to(dev) for g in unique_grids]))
    feats = getattr(feats, "pooler_output", feats)  # (n_merged, H) of every distinct image
    merge = visual.spatial_merge_size ** 2
    sizes = [int(g.prod(-1).sum()) // merge for g in unique_grids]
    per_image = torch.split(feats, sizes)
    image_mask = ids == model.config.image_token_id  # (N, L)
    chosen = torch.cat([per_image[order[j]] for j in range(len(rows))]).to(embeds.dtype)  # (n_tokens, H)
    return embeds.masked_scatter(image_mask[..., None].expand_as(embeds), chosen)


# ------------------------------------------------------------------ sampling


class VisionDecoder(HFDecoder):
    """HFDecoder over a VLM: the prefill embeds the images and sets each row's M-RoPE delta; decode steps place
    each new token at its text position + delta (a KV cache throughout)."""

    def __init__(self, model, prompt_ids, prompt_mask, max_new_tokens, dtype, *, pixels, grids):
        super().__init__(model, prompt_ids, prompt_mask, max_new_tokens, dtype)
        self.pixels, self.grids = pixels, grids

    def prefill(self) -> torch.Tensor:
        grids = torch.cat(self.grids) if self.grids else None
        pos, self.delta = rope_positions(self.model, self.ids, self.mask, grids)  # (3, N, P), (N, 1)
        return self._forward(vision_inputs(self.model, self.ids, self.pixels, self.grids), pos)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(tokens), 1)], dim=1)
        pos, self.next_pos = self.next_pos, self.next_pos + 1
        pos = (pos + self.delta.to(pos.device))[None].expand(3, -1, -1)  # (3, N, 1)
        return self._forward({"input_ids": tokens[:, None]}, pos)

    def _forward(self, inputs: dict[str, Any], pos: torch.Tensor) -> torch.Tensor:
        dev = pos.device.type
        with torch.autocast(dev, dtype=self.autocast or torch.bfloat16, enabled=self.autocast is not None):
            out = self.model(**inputs, attention_mask=self.mask, position_ids=pos, use_cache=True, **self.kwargs)
        return out.logits[:, -1]  # (N, V)


# ------------------------------------------------------------------ the policy


def _row_name(sample: Sample | None, row: int) -> str:
    if sample is None:
        return f"row {row}"
    names = f", images {sample.image_names}" if sample.image_names else ""
    return f"row {row} ({sample.task or 'task'} item {sample.index}{names})"


class HFVisionLM:
    """The policy: a transformers vision-language model, its tokenizer and image processor (module docstring)."""

    prompt_inputs: tuple[str, ...] = ("pixel_values", "image_grid_thw")  # per-row inputs of the prompt forward

    def __init__(self, model, tokenizer, image_processor, *, autocast: torch.dtype | None = None,
                 chat_template: str = "auto"):
        self.model, self.tokenizer, self.image_processor, self.autocast = model, tokenizer, image_processor, autocast
        if chat_template not in ("auto", "none"):
            tokenizer.chat_template = chat_template
        self.templated = chat_template != "none" and bool(getattr(tokenizer, "chat_template", None))
        self.image_token_id = model.config.image_token_id
        vocab = tokenizer.get_vocab()
        self.vision_token_ids = [vocab[t] for t in VISION_TOKENS if t in vocab]  # never sampled
        self.merge = model.config.vision_config.spatial_merge_size ** 2

    @classmethod
    def load(cls, *, path=None, config: str | None = None, config_overrides: dict[str, Any] | None = None,
             tokenizer: Any = None, processor: dict[str, Any] | None = None, dtype: str = "float32", seed: int = 0,
             autocast: torch.dtype | None = None, chat_template: str = "auto") -> HFVisionLM:
        """A local checkpoint (`path`) or a tiny random-weight model (`config`, a VLM_CONFIGS name); `processor`:
        image processor options (min_pixels, max_pixels)."""
        model, tok, proc = load_vlm(path=path, config=config, config_overrides=config_overrides, tokenizer=tokenizer,
                                    processor=processor, dtype=dtype, seed=seed)
        return cls(model, tok, proc, autocast=autocast, chat_template=chat_template)

    @property
    def prompt_format(self) -> str:
        how = "the tokenizer's chat template (images first in the user turn)" if self.templated else \
            "plain text after the image placeholders"
        return f"{how}; images through {type(self.image_processor).__name__}"

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    # ---- prompts --------------------------------------------------------------------------------------------------

    def _images(self, sample: Sample, row: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixel_values (n_patches, D), image_grid_thw (n_images, 3)) of one sample's images."""
        from PIL import Image

        if not sample.images:
            width = 3 * self.image_processor.temporal_patch_size * self.image_processor.patch_size ** 2
            return torch.zeros(0, width), torch.zeros(0, 3, dtype=torch.long)
        for k, image in enumerate(sample.images):
            if not isinstance(image, Image.Image):
                raise DataError(f"{_row_name(sample, row)}: image {k} is {type(image).__name__}, not a PIL image "
                                 "(missing or unreadable)")
        try:
            out = self.image_processor(images=[im.convert("RGB") for im in sample.images], return_tensors="pt")
        except Exception as err:  # a broken image file surfaces here, deep in PIL
            raise DataError(f"{_row_name(sample, row)}: its image could not be processed ({err})") from err
        return out["pixel_values"], out["image_grid_thw"].long()

    def _text(self, sample: Sample, n_images: int) -> tuple[str, bool]:
        """(prompt text with one placeholder per image, whether it already holds the special tokens)."""
        slot = "<|vision_start|><|image_pad|><|vision_end|>"
        prompt = sample.prompt
        if self.templated:
            if isinstance(prompt, str):
                prompt = [{"role": "user", "content": prompt}]
            prompt = copy.deepcopy(prompt)
            user = next((m for m in prompt if m.get("role") == "user"), prompt[-1])
            if isinstance(user["content"], str) and n_images:
                user["content"] = [{"type": "image"}] * n_images + [{"type": "text", "text": user["content"]}]
            return self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True), True
        text = prompt if isinstance(prompt, str) else "\n".join(str(m["content"]) for m in prompt)
        return slot * n_images + text, False

    def encode_inputs(self, samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Left-padded prompt ids and mask (N, P) and the per-row vision inputs (lists, module docstring 1). A sample
        repeated in `samples` (a group) is processed once and its rows share the tensors."""
        cache: dict[int, tuple] = {}
        rows, pixels, grids = [], [], []
        for i, s in enumerate(samples):
            if id(s) not in cache:
                px, grid = self._images(s, i)
                text, special = self._text(s, len(grid))
                ids = self.tokenizer(text, add_special_tokens=not special)["input_ids"]
                cache[id(s)] = (self._expand(ids, grid, s, i), px, grid)
            ids, px, grid = cache[id(s)]
            rows.append(ids)
            pixels.append(px)
            grids.append(grid)
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)  # (N, P)
        mask = torch.zeros((len(rows), width), dtype=torch.long)  # (N, P)
        for i, r in enumerate(rows):
            ids[i, width - len(r):], mask[i, width - len(r):] = torch.tensor(r, dtype=torch.long), 1
        return ids.to(self.device), mask.to(self.device), {"pixel_values": pixels, "image_grid_thw": grids}

    def _expand(self, ids: list[int], grid: torch.Tensor, sample: Sample, row: int) -> list[int]:
        """Each image placeholder expanded to its image's number of merged patches (as the HF processor does)."""
        slots = [j for j, t in enumerate(ids) if t == self.image_token_id]
        if len(slots) != len(grid):
            raise DataError(f"{_row_name(sample, row)}: the prompt holds {len(slots)} image placeholders for "
                             f"{len(grid)} images")
        out, last = [], 0
        for j, g in zip(slots, grid):
            out += ids[last:j] + [self.image_token_id] * (int(g.prod()) // self.merge)
            last = j + 1
        return out + ids[last:]

    def encode(self, samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask, _ = self.encode_inputs(samples)
        return ids, mask

    def check_inputs(self, prompt_ids: torch.Tensor, grids: list[torch.Tensor], samples: list | None) -> None:
        """One-line error naming the first row whose image placeholder tokens do not match its images' features."""
        tokens = (prompt_ids == self.image_token_id).sum(-1).tolist()
        for i, (n, g) in enumerate(zip(tokens, grids)):
            feats = int(g.prod(-1).sum()) // self.merge if len(g) else 0
            if n != feats:
                sample = samples[i] if samples is not None else None
                raise DataError(f"{_row_name(sample, i)}: {n} image placeholder tokens but its images give {feats} "
                                 "features; build prompts with policy.encode_inputs")

    def check_completions(self, batch: Batch) -> None:
        """One-line error naming the first row whose completion holds a vision placeholder token (the sampler never
        draws one; a reference text that spells one would be read as an image slot)."""
        banned = torch.tensor(self.vision_token_ids, device=batch.device)
        bad = (torch.isin(batch.completion_ids, banned) & batch.completion_mask.bool()).any(-1).nonzero()
        if len(bad):
            i = int(bad[0])
            raise DataError(f"{_row_name(batch.samples[i] if batch.samples else None, i)}: its completion holds a "
                             f"vision placeholder token ({', '.join(VISION_TOKENS)}); completions are text only")

    # ---- what the loop asks ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, *, seeds: torch.Tensor,
               params: SamplingParams, offsets: torch.Tensor | None = None,
               extras: dict[str, Any] | None = None) -> dict:
        """Completions of prompts with their images (`extras` from encode_inputs; none: text-only prompts)."""
        self.model.eval()
        n = len(prompt_ids)
        pixels = (extras or {}).get("pixel_values") or [torch.zeros(0, 1)] * n
        grids = (extras or {}).get("image_grid_thw") or [torch.zeros(0, 3, dtype=torch.long)] * n
        self.check_inputs(prompt_ids, grids, None)
        decoder = VisionDecoder(self.model, prompt_ids, prompt_mask, params.max_new_tokens, params.dtype,
                                pixels=pixels, grids=grids)
        return generate(self.model, self.tokenizer, prompt_ids, prompt_mask, max_new_tokens=params.max_new_tokens,
                        temperature=params.temperature, top_p=params.top_p, top_k=params.top_k, stop=params.stop,
                        greedy=params.greedy, seeds=seeds, offsets=offsets, decoder=decoder,
                        banned=self.vision_token_ids)

    def generate(self, samples: list[Sample], *, group_ids: torch.Tensor, seeds: torch.Tensor,
                 params: SamplingParams) -> Batch:
        """One completion per sample (repeat a sample G times for a group), as a Batch with its vision extras."""
        ids, mask, extras = self.encode_inputs(samples)
        out = self.sample(ids, mask, seeds=seeds, params=params, extras=extras)
        return Batch(prompt_ids=ids, prompt_mask=mask, completion_ids=out["completion_ids"],
                     completion_mask=out["completion_mask"], loss_mask=out["completion_mask"].float(),
                     rollout_logp=out["logp"], truncated=out["truncated"], texts=out["texts"],
                     group_ids=group_ids.to(self.device), samples=list(samples), extras=extras)

    def _vision(self, batch: Batch) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        n = len(batch)
        pixels = batch.extras.get("pixel_values") or [torch.zeros(0, 1)] * n
        grids = [g if g is not None else torch.zeros(0, 3, dtype=torch.long)
                 for g in (batch.extras.get("image_grid_thw") or [None] * n)]
        return pixels, grids

    def forward_logits(self, batch: Batch) -> torch.Tensor:
        """Logits (N, T, V) at the completion positions: position t predicts completion token t."""
        pixels, grids = self._vision(batch)
        self.check_inputs(batch.prompt_ids, grids, batch.samples)
        self.check_completions(batch)
        ids, mask, T = batch.input_ids, batch.attention_mask, batch.completion_ids.shape[1]
        pos, _ = rope_positions(self.model, ids, mask, torch.cat(grids) if any(len(g) for g in grids) else None)
        dev = ids.device.type
        with torch.autocast(dev, dtype=self.autocast or torch.bfloat16, enabled=self.autocast is not None):
            inputs = vision_inputs(self.model, ids, pixels, grids)
            out = self.model(**inputs, attention_mask=mask, position_ids=pos, logits_to_keep=T + 1)
        return out.logits[:, :-1]  # (N, T, V)

    def logp(self, batch: Batch, *, temperature: float = 1.0,
             with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs (N, T) of the batch's completion tokens (differentiable), and their entropy when asked."""
        logits = self.forward_logits(batch).float()
        if temperature != 1.0:
            logits = logits / temperature
        logp_all = logits.log_softmax(-1)  # (N, T, V)
        logp = logp_all.gather(-1, batch.completion_ids[..., None])[..., 0]  # (N, T)
        entropy = -(logp_all.exp() * logp_all).sum(-1) if with_entropy else None
        return logp, entropy

    def has_images(self, batch: Batch) -> torch.Tensor:
        """(N,) bool: the rows that show at least one image."""
        _, grids = self._vision(batch)
        return torch.tensor([len(g) > 0 for g in grids], dtype=torch.bool, device=batch.device)

    def corrupt(self, batch: Batch, seeds: torch.Tensor, *, p: float = 0.5) -> Batch:
        """The batch with each row's image patches set to black with probability p (a fresh mask per distinct seed;
        rows that share a seed and an image share the corrupted copy)."""
        pixels, grids = self._vision(batch)
        black = self._black_patch()
        made: dict[tuple[int, int], torch.Tensor] = {}
        out = []
        for px, g, seed in zip(pixels, grids, seeds.tolist()):
            key = (id(px), seed)
            if len(g) and key not in made:
                gen = torch.Generator().manual_seed(seed)
                drop = torch.rand(len(px), generator=gen) < p  # (n_patches,) one 14-px patch per row of px
                made[key] = torch.where(drop[:, None], black.to(px.dtype), px)
            out.append(made.get(key, px))
        return batch.replace(extras={**batch.extras, "pixel_values": out})

    def _black_patch(self) -> torch.Tensor:
        """One flattened patch (C * temporal * patch * patch,) of a black image after rescaling and normalising."""
        proc = self.image_processor
        mean, std = torch.tensor(proc.image_mean), torch.tensor(proc.image_std)
        per_channel = (0.0 - mean) / std if proc.do_normalize else torch.zeros(3)
        return per_channel.repeat_interleave(proc.temporal_patch_size * proc.patch_size ** 2)

    # ---- the module underneath ------------------------------------------------------------------------------------

    def parameters(self):
        return self.model.parameters()

    def train(self, mode: bool = True) -> HFVisionLM:
        self.model.train(mode)
        return self

    def eval(self) -> HFVisionLM:
        return self.train(False)

    def to(self, device) -> HFVisionLM:
        self.model.to(device)
        return self

    def save(self, folder, *, merge_adapters: bool = True) -> None:
        """A Hugging Face folder (model, tokenizer, image processor): AutoModelForImageTextToText loads it."""
        if merge_adapters and hasattr(self.model, "merge_and_unload"):
            self.model = self.model.merge_and_unload()
        self.model.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)
        self.image_processor.save_pretrained(folder)

    def frozen_copy(self) -> HFVisionLM:
        model = copy.deepcopy(self.model).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return HFVisionLM(model, self.tokenizer, self.image_processor, autocast=self.autocast,
                          chat_template="auto" if self.templated else "none")
