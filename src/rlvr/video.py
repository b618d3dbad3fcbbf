"""Real video in and out (PyAV, `pip install 'rlvr[video]'`): frame sampling, decoding, writing, and a procedural video
maker for tests, demos and benchmarks.

    clip = read_clip("data/v.mp4", count=48)     # Clip(frames: 48 PIL images, fps: sampling fps, indices, ...)
    write_video("out.mp4", frames, fps=8)        # frames: (H, W, 3) uint8 arrays or PIL images
    spec = make_video("out.mp4", seed=3)          # moving / appearing shapes, colour changes, a camera pan

1. Sampling (VideoSSR, arXiv 2511.06281): `count` frames evenly spaced over the central 5-95% of the video,
   idx_i = ⌊0.05 N⌋ + i·((⌊0.95 N⌋ − ⌊0.05 N⌋) // count); their sampling fps is count / (N / native fps), so
   seconds on the kept frames are in the time base of the whole video (the reference code's convention). A video
   too short for `count` distinct frames gives None (the reference code returned (None, None), which callers
   checking `is None` missed).
2. A corrupt, empty or unreadable file is a VideoError (a DataError): one line naming the file. `read_clips` skips
   such files and counts them instead when asked (`skip_bad=True`).
3. `make_video` draws a seeded scene on a plain background: shapes that move in straight lines, shapes that appear
   and vanish, a colour change, and optionally a camera pan (the whole scene drifts); the returned spec says what
   happens on which frame, so generated labels can be checked against the file that was written.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from rlvr.errors import DataError

CENTRAL = (0.05, 0.95)  # VideoSSR samples the central 90% of a video


class VideoError(DataError):
    """A video file that cannot be used (corrupt, empty, unreadable, too short); the message names the file."""


def _av():
    try:
        import av
    except ImportError as err:
        raise ImportError("video files need PyAV: pip install 'rlvr[video]'") from err
    return av


@dataclass
class Clip:
    """Frames sampled from one video file."""

    path: str
    frames: list[Any]  # PIL RGB images
    indices: list[int]  # which frames of the file, 0-based
    fps: float  # sampling fps: len(frames) / duration of the whole video
    native_fps: float
    num_frames: int  # frames in the file


def sample_indices(num_frames: int, count: int) -> list[int] | None:
    """`count` frame indices evenly spaced over the central 90% (module docstring 1); None when too short."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    start = int(CENTRAL[0] * num_frames)
    step = (int(CENTRAL[1] * num_frames) - start) // count
    if step < 1:
        return None
    return [start + i * step for i in range(count)]


def _decode(path: Path) -> tuple[list[Any], float]:
    """Every frame of the file as RGB arrays, and its native fps."""
    av = _av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"video {str(path)!r}: no video stream")
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or 0)
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (av.error.FFmpegError, OSError, ValueError) as err:
        if isinstance(err, VideoError):
            raise
        raise VideoError(f"video {str(path)!r}: cannot be read ({type(err).__name__}: {err})") from err
    if not frames:
        raise VideoError(f"video {str(path)!r}: holds no frames")
    if rate <= 0:
        raise VideoError(f"video {str(path)!r}: no frame rate")
    return frames, rate


def read_frames(path: str | Path) -> tuple[list[Any], float]:
    """Every frame of a video file (PIL RGB) and its native fps; VideoError when unreadable."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video {str(path)!r}: no such file")
    frames, rate = _decode(path)
    return [Image.fromarray(f) for f in frames], rate


def read_clip(path: str | Path, *, count: int = 48) -> Clip | None:
    """`count` sampled frames of a video file (None when it has too few frames); VideoError when unreadable."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video {str(path)!r}: no such file")
    frames, rate = _decode(path)
    indices = sample_indices(len(frames), count)
    if indices is None:
        return None
    fps = count / (len(frames) / rate)
    return Clip(str(path), [Image.fromarray(frames[i]) for i in indices], indices, fps, rate, len(frames))


@dataclass
class ClipReport:
    clips: list[Clip] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # path -> why (unreadable, too short)


def read_clips(paths: list[str | Path], *, count: int = 48, skip_bad: bool = False) -> ClipReport:
    """read_clip over many files; a bad or too-short file raises, or is skipped and counted with `skip_bad`."""
    report = ClipReport()
    for p in paths:
        try:
            clip = read_clip(p, count=count)
        except VideoError as err:
            if not skip_bad:
                raise
            report.skipped[str(p)] = str(err)
            continue
        if clip is None:
            if not skip_bad:
                raise VideoError(f"video {str(p)!r}: fewer frames than the {count} to sample from its central 90%")
            report.skipped[str(p)] = f"too short for {count} frames"
            continue
        report.clips.append(clip)
    return report


def write_video(path: str | Path, frames: list[Any], *, fps: float = 8.0) -> Path:
    """An mp4 file of RGB frames ((H, W, 3) uint8 arrays or PIL images of one even size): H.264 4:4:4 at qp 0,
    lossless up to rounding (small shapes keep their colours; 4:2:0 would smear a 10-px blue square to purple), or
    MPEG-4 part 2 where PyAV's FFmpeg has no libx264."""
    import numpy as np

    av = _av()
    if not frames:
        raise ValueError("write_video: no frames")
    arrays = [np.asarray(f.convert("RGB") if hasattr(f, "convert") else f, dtype=np.uint8) for f in frames]
    h, w = arrays[0].shape[:2]
    if h % 2 or w % 2 or any(a.shape != arrays[0].shape for a in arrays):
        shapes = sorted({a.shape for a in arrays})
        raise ValueError(f"write_video: frames must share one even size (H, W), got {shapes}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        x264 = "libx264" in av.codecs_available
        rate = Fraction(fps).limit_denominator(1001)  # a sampling fps is rarely whole (48 frames over 7.3 s)
        stream = container.add_stream("libx264" if x264 else "mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv444p" if x264 else "yuv420p"
        stream.options = {"qp": "0"} if x264 else {"qscale": "1"}
        for a in arrays:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(a, format="rgb24")))
        container.mux(stream.encode())
    return path


# ------------------------------------------------------------------ procedural videos

COLOURS = {"red": (220, 40, 40), "blue": (40, 80, 220), "green": (30, 150, 50), "yellow": (230, 190, 0)}
SHAPES = ("circle", "square", "triangle")


def scene_spec(seed: int, *, num_frames: int = 64, size: int = 64, movers: int = 2, appearing: int = 1,
               pan: bool = False) -> dict[str, Any]:
    """What happens in a procedural video: movers (shape, colour, start and velocity in px/frame, a colour change at
    one frame or none), appearing shapes (visible on frames [start, end)), the camera pan (px/frame)."""
    rng = random.Random(seed)
    names = list(COLOURS)

    def obj() -> dict[str, Any]:
        return {"shape": rng.choice(SHAPES), "colour": rng.choice(names), "size": rng.randint(size // 8, size // 5),
                "x": rng.uniform(0.2, 0.8) * size, "y": rng.uniform(0.2, 0.8) * size}

    movers_ = []
    for _ in range(movers):
        m = {**obj(), "vx": rng.uniform(-1, 1) * size / num_frames, "vy": rng.uniform(-1, 1) * size / num_frames}
        change = rng.random() < 0.5
        m["change_at"] = rng.randint(num_frames // 4, 3 * num_frames // 4) if change else None
        m["new_colour"] = rng.choice([c for c in names if c != m["colour"]]) if change else None
        movers_.append(m)
    shown = []
    for _ in range(appearing):
        start = rng.randint(0, num_frames - num_frames // 4)
        shown.append({**obj(), "start": start, "end": rng.randint(start + num_frames // 8, num_frames)})
    camera = (rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5)) if pan else (0.0, 0.0)
    return {"seed": seed, "num_frames": num_frames, "size": size, "movers": movers_, "appearing": shown,
            "pan": list(camera)}


def _draw(draw, shape: str, x: float, y: float, r: float, colour) -> None:
    box = [x - r, y - r, x + r, y + r]
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=colour)


def render(spec: dict[str, Any]) -> list[Any]:
    """The frames (PIL RGB) of a scene spec."""
    from PIL import Image, ImageDraw

    size, frames = spec["size"], []
    for t in range(spec["num_frames"]):
        image = Image.new("RGB", (size, size), (245, 245, 245))
        draw = ImageDraw.Draw(image)
        cx, cy = spec["pan"][0] * t, spec["pan"][1] * t
        for m in spec["movers"]:
            colour = m["new_colour"] if m["change_at"] is not None and t >= m["change_at"] else m["colour"]
            x, y = (m["x"] + m["vx"] * t - cx) % size, (m["y"] + m["vy"] * t - cy) % size
            _draw(draw, m["shape"], x, y, m["size"] / 2, COLOURS[colour])
        for a in spec["appearing"]:
            if a["start"] <= t < a["end"]:
                _draw(draw, a["shape"], a["x"] - cx, a["y"] - cy, a["size"] / 2, COLOURS[a["colour"]])
        frames.append(image)
    return frames


def make_video(path: str | Path, *, seed: int, fps: float = 8.0, **options) -> dict[str, Any]:
    """Write a procedural video (scene_spec options) to `path`; returns its spec with the path and fps."""
    spec = scene_spec(seed, **options)
    write_video(path, render(spec), fps=fps)
    return {**spec, "path": str(path), "fps": fps}
