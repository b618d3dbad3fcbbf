"""rlvr.video: VideoSSR's frame sampling against hand-worked indices; procedural videos written as real mp4 files
and read back (frame count, rates, what happens on which frame); corrupt, empty and missing files give one line
naming the file, or are skipped and counted."""

import pytest

av = pytest.importorskip("av")

from rlvr.errors import DataError  # noqa: E402
from rlvr.video import VideoError, make_video, read_clip, read_clips, render, sample_indices, scene_spec  # noqa: E402


def test_sample_indices_hand_worked():
    # N = 100: start 5, (95 - 5) // 48 = 1 -> 5, 6, ..., 52
    assert sample_indices(100, 48) == list(range(5, 53))
    # N = 1000: start 50, (950 - 50) // 48 = 18 -> 50, 68, ...
    assert sample_indices(1000, 48)[:3] == [50, 68, 86] and sample_indices(1000, 48)[-1] == 50 + 47 * 18
    assert sample_indices(50, 48) is None  # (47 - 2) // 48 = 0: too short
    with pytest.raises(ValueError, match="count must be >= 1"):
        sample_indices(10, 0)


def test_a_procedural_video_round_trips(tmp_path):
    spec = make_video(tmp_path / "v.mp4", seed=3, num_frames=60, size=64, movers=1, appearing=1, fps=10)
    clip = read_clip(tmp_path / "v.mp4", count=16)
    assert clip.num_frames == 60 and clip.native_fps == pytest.approx(10)
    assert clip.indices == sample_indices(60, 16) and len(clip.frames) == 16
    assert clip.fps == pytest.approx(16 / (60 / 10))  # sampling fps over the whole video's duration
    assert clip.frames[0].size == (64, 64)
    make_video(tmp_path / "w.mp4", seed=3, num_frames=20, fps=6.4)  # a sampling fps is rarely whole
    assert read_clip(tmp_path / "w.mp4", count=4).native_fps == pytest.approx(6.4)
    # the appearing shape is visible exactly on its frames: compare the decoded pixels with the rendered ones
    rendered = render(spec)
    a = spec["appearing"][0]
    x, y = int(a["x"]), int(a["y"])
    for i, frame in zip(clip.indices, clip.frames):
        got, want = frame.getpixel((x, y)), rendered[i].getpixel((x, y))
        assert max(abs(g - w) for g, w in zip(got, want)) <= 2, (i, got, want)  # lossless up to rounding


def test_the_scene_spec_is_seeded_and_says_what_happens():
    a, b = scene_spec(7, pan=True), scene_spec(7, pan=True)
    assert a == b and scene_spec(8) != a
    for shown in scene_spec(1, appearing=3)["appearing"]:
        assert 0 <= shown["start"] < shown["end"] <= 64


def test_bad_files_name_the_file_or_are_skipped(tmp_path):
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x01 not a video")
    (tmp_path / "empty.mp4").write_bytes(b"")
    make_video(tmp_path / "short.mp4", seed=0, num_frames=12)
    for name in ("corrupt.mp4", "empty.mp4", "missing.mp4"):
        with pytest.raises(VideoError, match=f"video '.*{name}'") as err:
            read_clip(tmp_path / name)
        assert "\n" not in str(err.value) and isinstance(err.value, DataError)
    assert read_clip(tmp_path / "short.mp4", count=48) is None
    make_video(tmp_path / "good.mp4", seed=1, num_frames=64)
    paths = [tmp_path / n for n in ("good.mp4", "corrupt.mp4", "empty.mp4", "short.mp4")]
    report = read_clips(paths, count=48, skip_bad=True)
    assert len(report.clips) == 1 and len(report.skipped) == 3
    with pytest.raises(VideoError, match="corrupt.mp4"):
        read_clips(paths, count=48)
