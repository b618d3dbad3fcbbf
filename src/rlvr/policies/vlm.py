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
from typing import Any

import torch

from rlvr.batch import Batch, Sample
from rlvr.errors import DataError
from rlvr.policies.base import ModelPolicy, SamplingParams
from rlvr.policies.sampling import generate
from rlvr.policies.vlm_forward import VisionDecoder, Visuals, rope_positions, vision_inputs
from rlvr.policies.vlm_models import EMBEDDING_ONLY, VISION_TOKENS, load_vlm

# ------------------------------------------------------------------ the policy


def _row_name(sample: Sample | None, row: int) -> str:
    if sample is None:
        return f"row {row}"
    names = f", images {sample.image_names}" if sample.image_names else ""
    return f"row {row} ({sample.task or 'task'} item {sample.index}{names})"


class HFVisionLM(ModelPolicy):
    """The policy: a transformers vision-language model, its tokenizer and image processor (module docstring)."""

    prompt_inputs: tuple[str, ...] = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")

    def __init__(self, model, tokenizer, image_processor, *, autocast: torch.dtype | None = None,
                 chat_template: str = "auto"):
        self.model, self.tokenizer, self.image_processor, self.autocast = model, tokenizer, image_processor, autocast
        if chat_template not in ("auto", "none"):
            tokenizer.chat_template = chat_template
        self.templated = chat_template != "none" and bool(getattr(tokenizer, "chat_template", None))
        self.image_token_id, self.video_token_id = model.config.image_token_id, model.config.video_token_id
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

    def _videos(self, sample: Sample, row: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pixel_values_videos (n_patches, D), video_grid_thw (n_videos, 3), seconds per temporal patch (n_videos,))
        of one sample's videos (each with .frames, PIL, and .fps). Each frame goes through the image processor; pairs
        of frames (temporal_patch_size) form one temporal patch, laid out as Qwen2-VL's video processor does
        (t, h/m, w/m, m, m, C, T, p, p); a video of an odd frame count repeats its last frame."""
        proc = self.image_processor
        T, p = proc.temporal_patch_size, proc.patch_size
        if sample.videos and self.model.config.model_type not in EMBEDDING_ONLY:
            raise ValueError(f"{_row_name(sample, row)}: videos reach {self.model.config.model_type} models only as "
                             "Qwen2-VL / Qwen2.5-VL lay them out; Qwen3-VL's prompts interleave frame timestamps, "
                             "which rlvr does not build yet")
        pixels, grids, seconds = [], [], []
        for k, video in enumerate(sample.videos):
            frames, fps = getattr(video, "frames", None), getattr(video, "fps", None)
            if not frames or not fps or fps <= 0:
                raise DataError(f"{_row_name(sample, row)}: video {k} has no frames or no fps")
            out = proc(images=[f.convert("RGB") for f in frames], return_tensors="pt")
            grid = out["image_grid_thw"][0]
            per = out["pixel_values"].reshape(len(frames), int(grid.prod()), 3, T, p, p)[:, :, :, 0]  # (F, n, C, p, p)
            if len(frames) % T:
                per = torch.cat([per, per[-1:].expand(T - len(frames) % T, -1, -1, -1, -1)])
            groups = per.reshape(len(per) // T, T, *per.shape[1:]).permute(0, 2, 3, 1, 4, 5)  # (t, n, C, T, p, p)
            pixels.append(groups.reshape(-1, 3 * T * p * p))
            grids.append(torch.tensor([len(per) // T, int(grid[1]), int(grid[2])]))
            seconds.append(T / float(fps))
        width = 3 * T * p * p
        if not pixels:
            return torch.zeros(0, width), torch.zeros(0, 3, dtype=torch.long), torch.zeros(0)
        return torch.cat(pixels), torch.stack(grids).long(), torch.tensor(seconds, dtype=torch.float32)

    def _text(self, sample: Sample, n_images: int, n_videos: int = 0) -> tuple[str, bool]:
        """(prompt text with one placeholder per image, then per video, whether it already holds the special tokens)."""
        image, video = "<|vision_start|><|image_pad|><|vision_end|>", "<|vision_start|><|video_pad|><|vision_end|>"
        prompt = sample.prompt
        if self.templated:
            if isinstance(prompt, str):
                prompt = [{"role": "user", "content": prompt}]
            prompt = copy.deepcopy(prompt)
            user = next((m for m in prompt if m.get("role") == "user"), prompt[-1])
            if isinstance(user["content"], str) and (n_images or n_videos):
                user["content"] = ([{"type": "image"}] * n_images + [{"type": "video"}] * n_videos
                                   + [{"type": "text", "text": user["content"]}])
            return self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True), True
        text = prompt if isinstance(prompt, str) else "\n".join(str(m["content"]) for m in prompt)
        return image * n_images + video * n_videos + text, False

    def encode_inputs(self, samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Left-padded prompt ids and mask (N, P) and the per-row vision inputs (lists, module docstring 1). A sample
        repeated in `samples` (a group) is processed once and its rows share the tensors."""
        cache: dict[int, tuple] = {}
        rows, parts = [], []
        for i, s in enumerate(samples):
            if id(s) not in cache:
                px, grid = self._images(s, i)
                vpx, vgrid, vsec = self._videos(s, i)
                text, special = self._text(s, len(grid), len(vgrid))
                ids = self.tokenizer(text, add_special_tokens=not special)["input_ids"]
                cache[id(s)] = (self._expand(ids, grid, vgrid, s, i), (px, grid, vpx, vgrid, vsec))
            ids, part = cache[id(s)]
            rows.append(ids)
            parts.append(part)
        keys = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "video_seconds")
        extras = {k: [p[j] for p in parts] for j, k in enumerate(keys)}
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)  # (N, P)
        mask = torch.zeros((len(rows), width), dtype=torch.long)  # (N, P)
        for i, r in enumerate(rows):
            ids[i, width - len(r):], mask[i, width - len(r):] = torch.tensor(r, dtype=torch.long), 1
        return ids.to(self.device), mask.to(self.device), extras

    def _expand(self, ids: list[int], grid: torch.Tensor, video_grid: torch.Tensor, sample: Sample,
                row: int) -> list[int]:
        """Each image (video) placeholder expanded to its image's (video's) number of merged patches, as the HF
        processor does."""
        pending = {self.image_token_id: list(grid), self.video_token_id: list(video_grid)}
        for token, what, given in ((self.image_token_id, "image", grid), (self.video_token_id, "video", video_grid)):
            if ids.count(token) != len(given):
                raise DataError(f"{_row_name(sample, row)}: the prompt holds {ids.count(token)} {what} placeholders "
                                 f"for {len(given)} {what}s")
        out = []
        for t in ids:
            out += [t] * (int(pending[t].pop(0).prod()) // self.merge) if t in pending else [t]
        return out

    def observation_tokens(self, text: str, images: list[Any]) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        """An environment's observation with images (rlvr.envs.base.Observation): its token ids, each IMAGE_MARK
        replaced by the image's expanded placeholders, and the images' pixel rows and grids."""
        from rlvr.envs.base import IMAGE_MARK

        probe = Sample(prompt=text, images=list(images), task="observation")
        if text.count(IMAGE_MARK) != len(images):
            raise DataError(f"an observation holds {text.count(IMAGE_MARK)} {IMAGE_MARK} marks for {len(images)} "
                            "images")
        pixels, grid = self._images(probe, 0)
        slot = "<|vision_start|><|image_pad|><|vision_end|>"
        ids = self.tokenizer(text.replace(IMAGE_MARK, slot), add_special_tokens=False)["input_ids"]
        return self._expand(ids, grid, torch.zeros(0, 3, dtype=torch.long), probe, 0), pixels, grid

    def encode(self, samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask, _ = self.encode_inputs(samples)
        return ids, mask

    def check_inputs(self, prompt_ids: torch.Tensor, vis: Visuals, samples: list | None) -> None:
        """One-line error naming the first row whose image (video) placeholder tokens do not match its images' (videos')
        features."""
        for token, grids, what in ((self.image_token_id, vis.grids, "image"),
                                   (self.video_token_id, vis.video_grids, "video")):
            tokens = (prompt_ids == token).sum(-1).tolist()
            for i, (n, g) in enumerate(zip(tokens, grids)):
                feats = int(g.prod(-1).sum()) // self.merge if len(g) else 0
                if n != feats:
                    sample = samples[i] if samples is not None else None
                    raise DataError(f"{_row_name(sample, i)}: {n} {what} placeholder tokens but its {what}s give "
                                     f"{feats} features; build prompts with policy.encode_inputs")

    def check_completions(self, batch: Batch) -> None:
        """One-line error naming the first row whose completion holds a vision placeholder token (the sampler never
        draws one; a reference text that spells one would be read as an image slot)."""
        banned = torch.tensor(self.vision_token_ids, device=batch.device)
        trained = batch.completion_mask.bool() & (batch.loss_mask > 0)  # an observation's image slots are fine
        bad = (torch.isin(batch.completion_ids, banned) & trained).any(-1).nonzero()
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
        vis = Visuals.of(extras or {}, len(prompt_ids))
        self.check_inputs(prompt_ids, vis, None)
        decoder = VisionDecoder(self.model, prompt_ids, prompt_mask, params.max_new_tokens, params.dtype, vis=vis)
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

    def forward_logits(self, batch: Batch) -> torch.Tensor:
        """Logits (N, T, V) at the completion positions: position t predicts completion token t."""
        vis = Visuals.of(batch.extras, len(batch))
        self.check_completions(batch)
        self.check_inputs(batch.input_ids, vis, batch.samples)  # observations of a multi-turn row show images too
        ids, mask, T = batch.input_ids, batch.attention_mask, batch.completion_ids.shape[1]
        pos, _ = rope_positions(self.model, ids, mask, vis)
        dev = ids.device.type
        with torch.autocast(dev, dtype=self.autocast or torch.bfloat16, enabled=self.autocast is not None):
            inputs = vision_inputs(self.model, ids, vis)
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
        """(N,) bool: the rows that show at least one image (VPPO corrupts images; videos are left as they are)."""
        grids = Visuals.of(batch.extras, len(batch)).grids
        return torch.tensor([len(g) > 0 for g in grids], dtype=torch.bool, device=batch.device)

    def corrupt(self, batch: Batch, seeds: torch.Tensor, *, p: float = 0.5) -> Batch:
        """The batch with each row's image patches set to black with probability p (a fresh mask per distinct seed;
        rows that share a seed and an image share the corrupted copy)."""
        vis = Visuals.of(batch.extras, len(batch))
        pixels, grids = vis.pixels, vis.grids
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

    def save(self, folder, *, merge_adapters: bool = True) -> None:
        """A Hugging Face folder (model, tokenizer, image processor): AutoModelForImageTextToText loads it."""
        super().save(folder, merge_adapters=merge_adapters)
        self.image_processor.save_pretrained(folder)

    def frozen_copy(self) -> HFVisionLM:
        return HFVisionLM(self.frozen_model(), self.tokenizer, self.image_processor, autocast=self.autocast,
                          chat_template="auto" if self.templated else "none")
