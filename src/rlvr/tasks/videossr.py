"""VideoSSR's pretext generators (arXiv 2511.06281): verifiable training items made from raw video frames.

    item = grounding(frames, fps, rng, kind="mirror")   # PretextItem: frames, question, answer "1.5-3.0", meta
    item = counting(frames, fps, rng)                    # answer "c,s,t"
    item = jigsaw(frames, fps, rng, clips=6)             # answer "341562"

Each takes the F sampled frames of one video (rlvr.video.read_clip: PIL images and their sampling fps) and a
`random.Random`, and returns new frames with a question whose answer the generator knows. Rewards: rlvr.rewards.video
(interval IoU, counting accuracy, footrule), routed by meta["data_source"].

1. Anomaly grounding: t ~ U{F/6..F/3} frames (the reference's 8..16 at F = 48, scaled with the item: a fixed
   8..16 in 24 frames let the best constant interval score mIoU 0.60), s ~ U{0..F − t}; frames s..s+t−1 perturbed (one
   kind per item: per-frame grayscale, invert, channel_swap (R↔B), rotate90/180/270, noise (Gaussian σ ~ U[35, 70]),
   zoom_in (centre crop ×U[1.3, 1.5]), zoom_out (shrunk ×1/U[1.2, 1.4] on black), mirror, blur (radius 2), saturation
   (×2); temporal shuffle and stutter (n ∈ {2..5} frames of the segment each held ⌊t/n⌋ times, the first t mod n
   once more)); answer f"{s/fps:.1f}-{(s+t)/fps:.1f}" (end exclusive).
2. Object counting: for each of circle, square, triangle in turn, m ~ U{1..3} frames from those still free, pairwise
   more than 8 apart (a frame holds one shape type); each gets k ~ U{1..3} filled instances (colour channels
   U[50, 255], size U[0.2, 0.4]·min(H, W), centres in the central 70% and at least one size apart, rotation
   U[0, 360) for squares and triangles); answer "c,s,t".
3. Temporal jigsaw: the frames split into `clips` equal clips shown in a random order; answer[k] = the position
   (1-based) at which original clip k is shown. The reference generator labels these rows "shuffled" while its
   reward router expects "jigsaw"; rlvr writes "jigsaw" (and its router reads both).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

PER_FRAME = ("grayscale", "invert", "channel_swap", "rotate90", "rotate180", "rotate270", "noise", "zoom_in",
             "zoom_out", "mirror", "blur", "saturation")
TEMPORAL = ("shuffle", "stutter")
KINDS = PER_FRAME + TEMPORAL
TRAINING_MIX = ("channel_swap", "mirror", "zoom_out", "rotate180")  # the released training data's four kinds
DESCRIPTIONS = {
    "grayscale": "the frames lose their colour", "invert": "the colours are inverted",
    "channel_swap": "the red and blue colour channels are swapped", "rotate90": "the frames are rotated",
    "rotate180": "the frames are turned upside down", "rotate270": "the frames are rotated",
    "noise": "heavy noise is added", "zoom_in": "the view zooms in", "zoom_out": "the view zooms out",
    "mirror": "the frames are mirrored left to right", "blur": "the frames are blurred",
    "saturation": "the colours are oversaturated", "shuffle": "the frames play out of order",
    "stutter": "the video stutters, holding frames",
}
GROUNDING_Q = ("In a segment of this video, {description}. Your task is to identify the precise time interval of this "
               "change. Please only provide the start and end times in seconds, formatted as <start_time>-<end_time> "
               "(e.g., '14.5-26.2').")
COUNTING_Q = ("Count the number of circles, squares, and triangles that appear in this video. Be aware that the "
              "shapes can appear in any color and at any angle of rotation. They may be present on one or multiple "
              "frames, and any given frame can contain more than one shape. Provide the answer as three "
              "comma-separated numbers in the format: circles,squares,triangles. For example, if you see 3 circles, "
              "1 square, and 4 triangles, your answer should be '3,1,4'.")
JIGSAW_Q = ("This video is {n} clips of equal length shown out of order. For each original clip, in play order, give "
            "the position (1-{n}) at which it is shown, as a {n}-digit string.")
SYSTEM = "Based on this video, provide the answer directly."  # the reference code's system prompt for every task
SHAPES = ("circle", "square", "triangle")
MIN_GAP, MAX_FRAMES_PER_SHAPE, MAX_PER_FRAME = 8, 3, 3


@dataclass
class PretextItem:
    frames: list[Any]  # PIL RGB images, in the order shown (for jigsaw: the clips one after another)
    fps: float
    question: str
    answer: str
    data_source: str  # grounding | counting | jigsaw: the videossr reward router's key
    meta: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ anomaly grounding


def perturb(image, kind: str, rng: random.Random):
    """One frame under a per-frame perturbation (module docstring 1)."""
    import numpy as np
    from PIL import Image, ImageEnhance, ImageFilter, ImageOps

    w, h = image.size
    if kind == "grayscale":
        return ImageOps.grayscale(image).convert("RGB")
    if kind == "invert":
        return ImageOps.invert(image)
    if kind == "channel_swap":
        r, g, b = image.split()
        return Image.merge("RGB", (b, g, r))
    if kind in ("rotate90", "rotate180", "rotate270"):  # expand, then back to the frame size
        angle = {"rotate90": -90, "rotate180": 180, "rotate270": 90}[kind]
        return image.rotate(angle, expand=True).resize((w, h))
    if kind == "noise":
        a = np.asarray(image, dtype=np.float32) + np.random.default_rng(rng.randrange(1 << 30)).normal(
            0, rng.uniform(35, 70), (h, w, 3))
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    if kind == "zoom_in":
        scale = rng.uniform(1.3, 1.5)
        cw, ch = w / scale, h / scale
        box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
        return image.crop(tuple(round(v) for v in box)).resize((w, h), Image.LANCZOS)
    if kind == "zoom_out":
        scale = rng.uniform(1.2, 1.4)
        small = image.resize((max(1, round(w / scale)), max(1, round(h / scale))), Image.LANCZOS)
        out = Image.new("RGB", (w, h))
        out.paste(small, ((w - small.width) // 2, (h - small.height) // 2))
        return out
    if kind == "mirror":
        return ImageOps.mirror(image)
    if kind == "blur":
        return image.filter(ImageFilter.GaussianBlur(2))
    if kind == "saturation":
        return ImageEnhance.Color(image).enhance(2.0)
    raise ValueError(f"unknown per-frame perturbation {kind!r}; choose from {list(PER_FRAME)}")


def _stutter(segment: list[Any], rng: random.Random) -> list[Any]:
    t = len(segment)
    n = rng.randint(2, 5)
    picks = [round(i * (t - 1) / (n - 1)) for i in range(n)]  # evenly spaced over the segment
    out = []
    for j, p in enumerate(picks):
        out += [segment[p]] * (t // n + (1 if j < t % n else 0))
    return out


def segment_bounds(count: int) -> tuple[int, int]:
    """Shortest and longest perturbed segment for an item of `count` frames: the reference's 8..16 of 48 frames, as
    the same share of the item (F/6 .. F/3), so a fixed guess scores no better on shorter items."""
    low = max(2, round(count / 6))
    return low, max(low, round(count / 3))


def grounding(frames: list[Any], fps: float, rng: random.Random, *, kind: str) -> PretextItem:
    """Anomaly grounding: a segment of F/6 .. F/3 frames (8-16 of 48) perturbed; answer its interval in seconds.
    meta["visible"] is False when no perturbed frame differs from the original (a shuffled or stuttered still shot,
    a mirrored symmetric frame): the item has no answer a model could see, and `build` skips and counts it."""
    if kind not in KINDS:
        raise ValueError(f"grounding: unknown kind {kind!r}; choose from {list(KINDS)}")
    if len(frames) < 6:
        raise ValueError(f"grounding: needs at least 6 frames, got {len(frames)}")
    t = rng.randint(*segment_bounds(len(frames)))
    s = rng.randint(0, len(frames) - t)
    segment = frames[s : s + t]
    if kind == "shuffle":  # a permutation of positions that moves one at least (content may still be equal)
        order = list(range(t))
        while order == sorted(order):
            rng.shuffle(order)
        changed = [segment[i] for i in order]
    elif kind == "stutter":
        changed = _stutter(segment, rng)
    else:
        changed = [perturb(f, kind, rng) for f in segment]
    answer = f"{s / fps:.1f}-{(s + t) / fps:.1f}"
    visible = any(not _same_frame(a, b) for a, b in zip(changed, segment, strict=True))
    return PretextItem(frames[:s] + changed + frames[s + t :], fps,
                       GROUNDING_Q.format(description=DESCRIPTIONS[kind]), answer, "grounding",
                       {"kind": kind, "start_frame": s, "length": t, "visible": visible})


def _same_frame(a: Any, b: Any) -> bool:
    """Equal content (PIL images compare mode, size and pixels; anything else by ==)."""
    return a is b or a == b


# ------------------------------------------------------------------ object counting


def _free_frames(n: int, taken: set[int], m: int, rng: random.Random) -> list[int] | None:
    """m frames not in `taken`, pairwise more than MIN_GAP apart (None when they do not fit)."""
    pool = [i for i in range(n) if i not in taken]
    rng.shuffle(pool)
    chosen: list[int] = []
    for i in pool:
        if all(abs(i - j) > MIN_GAP for j in chosen):
            chosen.append(i)
            if len(chosen) == m:
                return sorted(chosen)
    return None


def _draw_instances(image, shape: str, k: int, rng: random.Random):
    from PIL import ImageDraw

    image = image.copy()
    draw = ImageDraw.Draw(image)
    w, h = image.size
    centres: list[tuple[float, float]] = []
    for _ in range(k):
        size = rng.uniform(0.2, 0.4) * min(w, h)
        lo_x, hi_x = 0.15 * w + 0.75 * size, 0.85 * w - 0.75 * size
        lo_y, hi_y = 0.15 * h + 0.75 * size, 0.85 * h - 0.75 * size
        for _ in range(20):  # a centre at least one size from earlier ones, else the last draw
            x, y = rng.uniform(lo_x, max(lo_x, hi_x)), rng.uniform(lo_y, max(lo_y, hi_y))
            if all(math.dist((x, y), c) >= size for c in centres):
                break
        centres.append((x, y))
        colour = tuple(rng.randint(50, 255) for _ in range(3))
        angle = 0.0 if shape == "circle" else rng.uniform(0, 360)
        if shape == "circle":
            draw.ellipse([x - size / 2, y - size / 2, x + size / 2, y + size / 2], fill=colour)
        else:
            corners = 4 if shape == "square" else 3
            radius = size / math.sqrt(2) if shape == "square" else size / math.sqrt(3)  # side = size
            draw.regular_polygon((x, y, radius), corners, rotation=angle, fill=colour)
    return image


def counting(frames: list[Any], fps: float, rng: random.Random) -> PretextItem:
    """Object counting: 1-3 frames per shape type, 1-3 instances each; answer "circles,squares,triangles"."""
    out, taken, counts, where = list(frames), set(), [], {}
    for shape in SHAPES:
        chosen = None
        for m in range(rng.randint(1, MAX_FRAMES_PER_SHAPE), 0, -1):  # fewer frames when the video is short
            chosen = _free_frames(len(frames), taken, m, rng)
            if chosen:
                break
        if not chosen:
            raise ValueError(f"counting: {len(frames)} frames leave no frame {MIN_GAP + 1} apart for a {shape}")
        taken.update(chosen)
        total = 0
        for i in chosen:
            k = rng.randint(1, MAX_PER_FRAME)
            out[i] = _draw_instances(out[i], shape, k, rng)
            where[i] = (shape, k)
            total += k
        counts.append(total)
    answer = ",".join(str(c) for c in counts)
    return PretextItem(out, fps, COUNTING_Q, answer, "counting", {"frames_with_shapes": where})


# ------------------------------------------------------------------ temporal jigsaw


def jigsaw(frames: list[Any], fps: float, rng: random.Random, *, clips: int = 6) -> PretextItem:
    """Temporal jigsaw: `clips` equal clips shown in a random order; answer each original clip's shown position."""
    if not 2 <= clips <= 9:
        raise ValueError(f"jigsaw: clips must be in 2..9 (one digit each), got {clips}")
    size = len(frames) // clips
    if size < 1:
        raise ValueError(f"jigsaw: {len(frames)} frames cannot make {clips} clips")
    parts = [frames[i * size : (i + 1) * size] for i in range(clips)]
    order = list(range(clips))
    while order == sorted(order):  # a shown order that differs from play order
        rng.shuffle(order)
    shown = [f for k in order for f in parts[k]]  # position p shows original clip order[p]
    answer = "".join(str(order.index(k) + 1) for k in range(clips))
    return PretextItem(shown, fps, JIGSAW_Q.format(n=clips), answer, "jigsaw", {"order": order, "clip_frames": size})


# ------------------------------------------------------------------ a dataset of pretext items


def build(videos: list[str], out: str, *, seed: int = 0, frames: int = 48, mix: tuple[str, ...] = TRAINING_MIX,
          clips: int = 6, skip_bad: bool = True, progress: bool = True) -> dict[str, Any]:
    """`rlvr data videossr`: one pretext item per source video, cycling through the grounding kinds of `mix`, counting
    and jigsaw; each item's frames written as an mp4 beside `out` (a JSONL file of rows a `dataset` task reads:
    prompt (system + user messages), answer, video, fps, data_source, kind, source). Returns counts and skips."""
    import json
    from pathlib import Path

    from tqdm import tqdm

    from rlvr.video import VideoError, read_clip, write_video

    out_path = Path(out)
    folder = out_path.with_suffix("")  # OUT.jsonl -> OUT/ holds the videos
    folder.mkdir(parents=True, exist_ok=True)
    makers = [(k, lambda f, fps, rng, k=k: grounding(f, fps, rng, kind=k)) for k in mix] + [
        ("counting", counting), ("jigsaw", lambda f, fps, rng: jigsaw(f, fps, rng, clips=clips))]
    rows, skipped, unchanged = [], {}, {}
    for i, video in enumerate(tqdm(videos, desc="rlvr data videossr", unit="video", disable=not progress)):
        try:
            clip = read_clip(video, count=frames)
        except VideoError as err:
            if not skip_bad:
                raise
            skipped[str(video)] = str(err)
            continue
        if clip is None:
            skipped[str(video)] = f"too short for {frames} frames"
            continue
        kind, make = makers[len(rows) % len(makers)]  # skipped videos do not shift the mix
        item = make(clip.frames, clip.fps, random.Random(seed * 1_000_003 + i))
        if not item.meta.get("visible", True):  # e.g. a still shot shuffled: nothing to ground
            unchanged[kind] = unchanged.get(kind, 0) + 1
            skipped[str(video)] = f"{kind}: the perturbed frames equal the original ones"
            continue
        name = f"{i:06d}_{kind}.mp4"
        write_video(folder / name, item.frames, fps=item.fps)
        rows.append({"prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": item.question}],
                     "answer": item.answer, "video": f"{folder.name}/{name}", "fps": item.fps,
                     "frames": len(item.frames),
                     "data_source": item.data_source, "kind": kind, "source": str(video)})
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(out_path)  # nothing half-written under the final name
    kinds = {k: sum(r["kind"] == k for r in rows) for k, _ in makers}
    return {"rows": len(rows), "out": str(out_path), "videos": str(folder), "kinds": kinds, "skipped": skipped,
            "unchanged": unchanged}


# ------------------------------------------------------------------ VIUBench-style scores


def viubench(samples: list[Any], texts: list[str]) -> dict[str, float]:
    """Per-task scores in % (VIUBench's definitions as its random-guess row implies them; arXiv 2511.06281):
    grounding = mean interval IoU per perturbation kind, counting = the share of the three counts given exactly,
    jigsaw = exact order; `overall` = the mean of the task columns, as the paper's table."""
    from rlvr.rewards.video import INTEGER, interval_iou

    columns: dict[str, list[float]] = {}
    for s, text in zip(samples, texts):
        source = s.meta.get("data_source")
        if source == "grounding":
            key, value = f"grounding/{s.meta.get('kind', 'all')}", interval_iou(text, s.answer)
        elif source == "counting":
            pred, gold = INTEGER.findall(text[:2000]), INTEGER.findall(str(s.answer))
            value = sum(p == g for p, g in zip(pred, gold)) / 3 if len(pred) == 3 else 0.0
            key = "counting"
        elif source in ("jigsaw", "shuffled"):
            key, value = "jigsaw", float(text.strip() == str(s.answer))
        else:
            continue
        columns.setdefault(key, []).append(value)
    out = {k: 100 * sum(v) / len(v) for k, v in sorted(columns.items())}
    if out:
        out["overall"] = sum(out.values()) / len(out)
    return out


def random_guesses(samples: list[Any], rng: random.Random) -> list[str]:
    """One guess per row as a chance-level answerer would make it: an interval with two uniform ends within the video,
    three counts uniform in 1..9, a uniform permutation."""
    out = []
    for s in samples:
        source, answer = s.meta.get("data_source"), str(s.answer)
        if source == "grounding":
            frames, fps = s.meta.get("frames", 48), s.meta.get("fps") or 1.0
            a, b = sorted(rng.uniform(0, frames / fps) for _ in range(2))
            out.append(f"{a:.1f}-{b:.1f}")
        elif source == "counting":
            out.append(",".join(str(rng.randint(1, 9)) for _ in range(3)))
        elif source in ("jigsaw", "shuffled"):
            out.append("".join(rng.sample(answer, len(answer))))
        else:
            out.append("")
    return out
