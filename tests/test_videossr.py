"""rlvr.tasks.videossr: VideoSSR's pretext generators (arXiv 2511.06281), each item written as a real mp4 file and its
label checked against the file that was written: the grounding interval is exactly the frames that changed, for
every perturbation kind; the counting frames are the ones drawn on, > 8 apart, one shape type each; the jigsaw
answer, read as a permutation, puts the written clips back in play order. Their answers score 1 under the rewards."""

import random

import numpy as np
import pytest

pytest.importorskip("av")

from rlvr.rewards.video import count_accuracy, footrule, interval_iou  # noqa: E402
from rlvr.tasks.videossr import KINDS, counting, grounding, jigsaw, segment_bounds  # noqa: E402
from rlvr.video import make_video, read_clip, read_frames, write_video  # noqa: E402


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("v") / "source.mp4"
    make_video(path, seed=5, num_frames=120, size=64, movers=3, appearing=1, fps=10)
    return read_clip(path, count=48)


def written(item, tmp_path, name):
    frames, _ = read_frames(write_video(tmp_path / f"{name}.mp4", item.frames, fps=item.fps))
    return [np.asarray(f, dtype=int) for f in frames]


def changed(a, b) -> bool:
    return int(np.abs(a - b).max()) > 2  # the writer is lossless up to rounding


@pytest.mark.parametrize("kind", KINDS)
def test_grounding_labels_the_frames_that_changed(clip, tmp_path, kind):
    item = grounding(clip.frames, clip.fps, random.Random(KINDS.index(kind)), kind=kind)
    out, orig = written(item, tmp_path, kind), [np.asarray(f, dtype=int) for f in clip.frames]
    s, t = item.meta["start_frame"], item.meta["length"]
    assert 8 <= t <= 16 and len(out) == 48
    diff = [changed(a, b) for a, b in zip(out, orig)]
    assert not any(diff[:s]) and not any(diff[s + t :])  # nothing outside the segment
    assert any(diff[s : s + t])  # and the segment did change (temporal kinds may keep a frame in place)
    if kind not in ("shuffle", "stutter"):
        assert all(diff[s : s + t]), kind
    assert item.answer == f"{s / clip.fps:.1f}-{(s + t) / clip.fps:.1f}" and item.data_source == "grounding"
    assert interval_iou(item.answer, item.answer) == 1.0


def test_counting_labels_the_frames_drawn_on(clip, tmp_path):
    for seed in range(5):
        item = counting(clip.frames, clip.fps, random.Random(seed))
        out, orig = written(item, tmp_path, f"count{seed}"), [np.asarray(f, dtype=int) for f in clip.frames]
        where = item.meta["frames_with_shapes"]
        assert {i for i in range(48) if changed(out[i], orig[i])} == set(where)
        per_shape = {s: sorted(i for i, (shape, _) in where.items() if shape == s)
                     for s in ("circle", "square", "triangle")}
        for frames in per_shape.values():
            assert 1 <= len(frames) <= 3 and all(b - a > 8 for a, b in zip(frames, frames[1:]))
        counts = [sum(k for shape, k in where.values() if shape == s) for s in ("circle", "square", "triangle")]
        assert item.answer == ",".join(map(str, counts)) and count_accuracy(item.answer, item.answer) == 1.0


def best_constant_miou(count: int, items: int = 400) -> float:
    """The mIoU of the best single interval guessed for every grounding item of `count` frames (a grid search)."""
    frames = [object() for _ in range(count)]
    truths = []
    for seed in range(items):
        meta = grounding(frames, 1.0, random.Random(seed), kind="shuffle").meta
        truths.append((meta["start_frame"], meta["start_frame"] + meta["length"]))
    best = 0.0
    for a in range(count):
        for b in range(a + 1, count + 1):
            iou = [max(0, min(b, e) - max(a, s)) / (max(b, e) - min(a, s)) for s, e in truths]
            best = max(best, sum(iou) / len(iou))
    return best


def test_segments_scale_with_the_item_so_a_constant_guess_stays_poor():
    """The reference's 8..16 frames of 48; the same share of shorter items (a fixed 8..16 of 24 frames let one
    constant interval score mIoU 0.60: best_constant_miou(24) on the old bounds)."""
    assert segment_bounds(48) == (8, 16) and segment_bounds(24) == (4, 8)
    at_48, at_24 = best_constant_miou(48), best_constant_miou(24)
    assert at_48 < 0.35 and at_24 < 0.35, (at_48, at_24)


def test_shuffle_of_a_still_shot_ends_and_is_skipped(tmp_path):
    """A segment of identical frames has no reordering that shows: the generator ends (it once reshuffled until the
    content changed, forever) and `rlvr data videossr` skips and counts the item instead of writing an answer no
    model could see."""
    import json
    import subprocess
    import sys

    from PIL import Image

    still = [Image.new("RGB", (32, 32), (90, 140, 200))] * 24
    item = grounding(still, 8.0, random.Random(0), kind="shuffle")
    assert item.meta["visible"] is False
    make_video(tmp_path / "m.mp4", seed=1, num_frames=40, size=32)
    moving = read_clip(tmp_path / "m.mp4", count=24)
    assert grounding(moving.frames, moving.fps, random.Random(0), kind="shuffle").meta["visible"] is True
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "still.mp4", still * 3, fps=8)
    write_video(videos / "still2.mp4", still * 3, fps=8)
    out = subprocess.run([sys.executable, "-m", "rlvr.cli", "data", "videossr", str(videos), str(tmp_path / "s.jsonl"),
                          "--mix", "shuffle", "--frames", "24"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["rows"] == 0 and report["unchanged"] == {"shuffle": 2}
    assert (tmp_path / "s.jsonl").read_text() == ""


def test_jigsaw_answer_restores_play_order(clip, tmp_path):
    for seed in range(3):
        item = jigsaw(clip.frames, clip.fps, random.Random(seed), clips=6)
        out, orig = written(item, tmp_path, f"jig{seed}"), [np.asarray(f, dtype=int) for f in clip.frames]
        size = item.meta["clip_frames"]
        assert size == 8 and sorted(item.answer) == list("123456") and item.answer != "123456"
        for k, pos in enumerate(item.answer):  # original clip k is shown at position pos
            shown = out[(int(pos) - 1) * size : int(pos) * size]
            assert not any(changed(a, b) for a, b in zip(shown, orig[k * size : (k + 1) * size]))
        assert footrule(item.answer, item.answer) == 1.0 and item.data_source == "jigsaw"


def test_bad_generator_options():
    frames = [None] * 10
    with pytest.raises(ValueError, match="unknown kind 'tilt'"):
        grounding(frames * 5, 8.0, random.Random(0), kind="tilt")
    with pytest.raises(ValueError, match="needs at least 6 frames"):
        grounding(frames[:5], 8.0, random.Random(0), kind="mirror")
    with pytest.raises(ValueError, match="clips must be in 2..9"):
        jigsaw(frames, 8.0, random.Random(0), clips=12)


def test_rlvr_data_videossr_writes_rows_a_dataset_task_reads(tmp_path, capsys):
    import json

    from rlvr.cli import main
    from rlvr.tasks import TASKS

    src = tmp_path / "videos"
    for i in range(7):
        make_video(src / f"v{i}.mp4", seed=i, num_frames=100, size=64)
    (src / "broken.mp4").write_bytes(b"nope")
    assert main(["data", "videossr", str(src), str(tmp_path / "ssr.jsonl"), "--frames", "32"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == 7 and list(report["skipped"]) == [str(src / "broken.mp4")]
    assert report["kinds"] == {"channel_swap": 2, "mirror": 1, "zoom_out": 1, "rotate180": 1, "counting": 1,
                               "jigsaw": 1}
    rows = [json.loads(x) for x in (tmp_path / "ssr.jsonl").read_text().splitlines()]
    assert {r["data_source"] for r in rows} == {"grounding", "counting", "jigsaw"}
    assert all((tmp_path / r["video"]).is_file() for r in rows)
    task = TASKS.build("dataset", path=str(tmp_path / "ssr.jsonl"), scorer="videossr")
    for i in range(len(task)):  # every answer scores 1 under the router, every row keeps its video path
        s = task[i]
        assert task.score(s, s.answer) == 1.0 and s.meta["video"].endswith(".mp4")
    assert main(["data", "videossr", str(src), str(tmp_path / "x.jsonl"), "--mix", "tilt"]) == 2
    assert main(["data", "videossr", str(src), str(tmp_path / "y.jsonl"), "--strict"]) == 1  # the broken file


def test_a_vision_language_model_trains_on_videossr_rows(tmp_path, capsys):
    """rlvr data videossr -> a dataset task with video_field -> a VLM trains on the videos with the videossr reward;
    samples.jsonl names each row's video."""
    import json

    from rlvr.cli import main
    from rlvr.config import load_config
    from rlvr.trainer import train

    for i in range(6):
        make_video(tmp_path / "videos" / f"v{i}.mp4", seed=i, num_frames=40, size=56)
    assert main(["data", "videossr", str(tmp_path / "videos"), str(tmp_path / "ssr.jsonl"), "--frames", "16"]) == 0
    capsys.readouterr()
    cfg = load_config(None, [
        "model.config=qwen2.5-vl-micro", "task.name=dataset", f"output_dir={tmp_path}", "name=v", "train.steps=1",
        f"task.kwargs={{path: {tmp_path / 'ssr.jsonl'}, video_field: video, video_frames: 0, scorer: videossr}}",
        "task.eval_size=2", "rollout.prompts_per_step=2", "rollout.group_size=2", "rollout.max_new_tokens=6",
        "rewards=[{name: videossr}]", "train.progress=false", "train.diversity_unit=char", "model.chat_template=none"])
    assert train(cfg)["steps"] == 1
    logged = [json.loads(x) for x in (tmp_path / "v" / "samples.jsonl").read_text().splitlines()]
    assert all(r["videos"][0].endswith(".mp4") for r in logged)
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "v" / "final"), "--task", "dataset", "--task-kwargs",
                 f"path={tmp_path / 'ssr.jsonl'}", "video_field=video", "video_frames=0", "scorer=videossr",
                 "--size", "6", "--viubench", "--max-new-tokens", "8"]) == 0
    report = json.loads(capsys.readouterr().out)  # rlvr eval --viubench: per-task scores beside a random row
    assert report["rows"] == 6 and set(report["model"]) == set(report["random"]) >= {"counting", "jigsaw", "overall"}


def test_viubench_scores_and_the_random_row():
    from rlvr.batch import Sample
    from rlvr.tasks.videossr import random_guesses, viubench

    grounding = {"data_source": "grounding", "kind": "mirror", "frames": 48, "fps": 8.0}
    rows = [Sample("q", answer="1.0-2.0", meta=grounding),
            Sample("q", answer="3,2,4", meta={"data_source": "counting"}),
            Sample("q", answer="213456", meta={"data_source": "jigsaw"})]
    scores = viubench(rows, ["1.5-2.5", "3,1,4", "213456"])
    # IoU 1/3; two of three counts exact; the order exact; overall = the mean of the three columns
    assert scores["grounding/mirror"] == pytest.approx(100 / 3) and scores["counting"] == pytest.approx(200 / 3)
    assert scores["jigsaw"] == 100.0 and scores["overall"] == pytest.approx((100 / 3 + 200 / 3 + 100) / 3)
    many = rows * 3000
    chance = viubench(many, random_guesses(many, random.Random(0)))
    assert chance["counting"] == pytest.approx(100 / 9, abs=1.0)  # each count right with probability 1/9
    assert chance["jigsaw"] == pytest.approx(100 / 720, abs=0.2)
    assert 0 < chance["grounding/mirror"] < 20  # a 1-second truth in a 6-second video
