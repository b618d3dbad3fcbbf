"""The forward of the Qwen2-VL family as rlvr runs it (rlvr.policies.vlm): per-row vision inputs, M-RoPE positions
passed explicitly, vision features scattered into the token embeddings, and the KV-cached decoder.

1. `Visuals`: each row's images (pixel rows, grids) and videos (pixel rows, grids, seconds per temporal patch), as
   lists over rows; `rope_positions` turns them into the model's own M-RoPE ids over the real tokens.
2. `vision_inputs`: for Qwen2-VL / Qwen2.5-VL the features only replace the placeholder embeddings, so the vision
   tower runs once per distinct pixel tensor and rlvr scatters them (`embed`); Qwen3-VL's forward takes the pixels.
3. `VisionDecoder`: the prefill embeds the images and keeps each row's text delta; decode steps place each new
   token at its text position + delta.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch

from rlvr.policies.sampling import HFDecoder
from rlvr.policies.vlm_models import EMBEDDING_ONLY

# ------------------------------------------------------------------ positions and embeddings


def _inner(model):
    """The Qwen2-VL family's inner model (get_rope_index, visual), under PEFT adapters too."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model


@dataclass
class Visuals:
    """Per-row vision inputs of a call, each a list over rows: images (pixel rows, grids) and videos (pixel rows,
    grids, seconds per temporal patch); a row without any holds empty tensors."""

    pixels: list[torch.Tensor]
    grids: list[torch.Tensor]
    video_pixels: list[torch.Tensor]
    video_grids: list[torch.Tensor]
    video_seconds: list[torch.Tensor]

    @staticmethod
    def of(extras: dict[str, Any], n: int) -> Visuals:
        def get(key: str, empty):
            values = extras.get(key) or [None] * n
            return [v if v is not None else empty() for v in values]

        grid = lambda: torch.zeros(0, 3, dtype=torch.long)  # noqa: E731
        return Visuals(get("pixel_values", lambda: torch.zeros(0, 1)), get("image_grid_thw", grid),
                       get("pixel_values_videos", lambda: torch.zeros(0, 1)), get("video_grid_thw", grid),
                       get("video_seconds", lambda: torch.zeros(0)))

    def any_video(self) -> bool:
        return any(len(g) for g in self.video_grids)


def rope_positions(model, ids: torch.Tensor, mask: torch.Tensor, vis: Visuals):
    """M-RoPE position ids (3, N, L) of the real tokens and each row's text delta (N, 1): position of a text token
    after the prompt = its index among the row's real tokens + delta. Video tokens' temporal ids advance by the
    seconds each temporal patch spans (Qwen2.5-VL; Qwen2-VL counts patches)."""
    core = _inner(model)
    images = torch.cat(vis.grids) if any(len(g) for g in vis.grids) else None
    videos = torch.cat(vis.video_grids) if vis.any_video() else None
    kwargs: dict[str, Any] = dict(image_grid_thw=images, video_grid_thw=videos, attention_mask=mask)
    if videos is not None:
        kwargs["second_per_grid_ts"] = torch.cat(vis.video_seconds)
    if "mm_token_type_ids" in inspect.signature(core.get_rope_index).parameters:
        types = (ids == model.config.image_token_id).int() + 2 * (ids == model.config.video_token_id).int()
        kwargs["mm_token_type_ids"] = types  # 0 text, 1 image, 2 video
    return core.get_rope_index(ids, **kwargs)


def _distinct(tensors: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[int]]:
    """The distinct tensor objects of `tensors` (a group's rows hold one sample's) and each entry's index among them."""
    seen: dict[int, int] = {}
    order = [seen.setdefault(id(t), len(seen)) for t in tensors]
    firsts = {i: t for t, i in zip(tensors, order)}
    return [firsts[i] for i in range(len(firsts))], order


def vision_inputs(model, ids: torch.Tensor, vis: Visuals) -> dict[str, Any]:
    """The inputs of a prompt forward: embeddings with the image and video features in place (EMBEDDING_ONLY
    models), or the token ids with the rows' pixels for the model's own forward (Qwen3-VL)."""
    if model.config.model_type in EMBEDDING_ONLY:
        return {"inputs_embeds": embed(model, ids, vis)}
    dev, out = ids.device, {"input_ids": ids}
    for pixels, grids, key, grid_key in ((vis.pixels, vis.grids, "pixel_values", "image_grid_thw"),
                                         (vis.video_pixels, vis.video_grids, "pixel_values_videos", "video_grid_thw")):
        rows = [i for i, g in enumerate(grids) if len(g)]
        if rows:
            out[key] = torch.cat([pixels[i].to(dev) for i in rows])
            out[grid_key] = torch.cat([grids[i].to(dev) for i in rows])
    return out


def _features(visual, pixels: list[torch.Tensor], grids: list[torch.Tensor], dev) -> torch.Tensor | None:
    """Merged vision features (n_tokens, H) of every row's images (or videos) in row order; the tower runs once per
    distinct pixel tensor."""
    rows = [i for i, g in enumerate(grids) if len(g)]
    if not rows:
        return None
    unique, order = _distinct([pixels[i] for i in rows])
    first: dict[int, int] = {}
    for row, u in zip(rows, order):
        first.setdefault(u, row)
    unique_grids = [grids[first[u]] for u in range(len(unique))]
    feats = visual(torch.cat([u.to(dev, visual.dtype) for u in unique]),
                   grid_thw=torch.cat([g.to(dev) for g in unique_grids]))
    feats = getattr(feats, "pooler_output", feats)  # (n_merged, H) of every distinct image
    merge = visual.spatial_merge_size ** 2
    per_input = torch.split(feats, [int(g.prod(-1).sum()) // merge for g in unique_grids])
    return torch.cat([per_input[order[j]] for j in range(len(rows))])


def embed(model, ids: torch.Tensor, vis: Visuals) -> torch.Tensor:
    """Token embeddings (N, L, H) with each row's image and video features in place of their placeholder tokens."""
    embeds = model.get_input_embeddings()(ids)  # (N, L, H)
    visual = _inner(model).visual
    for pixels, grids, token in ((vis.pixels, vis.grids, model.config.image_token_id),
                                 (vis.video_pixels, vis.video_grids, model.config.video_token_id)):
        chosen = _features(visual, pixels, grids, embeds.device)
        if chosen is not None:
            slots = (ids == token)[..., None].expand_as(embeds)  # (N, L, H)
            embeds = embeds.masked_scatter(slots, chosen.to(embeds.dtype))
    return embeds


# ------------------------------------------------------------------ sampling


class VisionDecoder(HFDecoder):
    """HFDecoder over a VLM: the prefill embeds the images and sets each row's M-RoPE delta; decode steps place
    each new token at its text position + delta (a KV cache throughout)."""

    def __init__(self, model, prompt_ids, prompt_mask, max_new_tokens, dtype, *, vis: Visuals):
        super().__init__(model, prompt_ids, prompt_mask, max_new_tokens, dtype)
        self.vis = vis

    def prefill(self) -> torch.Tensor:
        pos, self.delta = rope_positions(self.model, self.ids, self.mask, self.vis)  # (3, N, P), (N, 1)
        return self._forward(vision_inputs(self.model, self.ids, self.vis), pos)

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
