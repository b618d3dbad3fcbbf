"""Visual tasks and dataset images.

The six seeded visual tasks: the same seed gives the same image bytes and answer; train and eval items never
share a holdout key (the scene) nor an image, though their prompts repeat; the image shows what the answer says
(pixels read back by hand: colours at cell centres, glyph bits, bar and shape areas); the reference scores 1.0, a
wrong answer and garbage 0.0; difficulty widens the answers; bad options fail naming the option.
Dataset tasks with `image_field`: relative paths in JSONL, bytes in Parquet, a save_to_disk Image column, several
images per row; a missing file fails at build and a corrupt one at the item, each naming the file, row and field.
"""

import io
import json

import pytest
from PIL import Image

from rlvr.batch import Sample
from rlvr.tasks import TASKS
from rlvr.tasks.base import is_eval_item
from rlvr.tasks.visual import GLYPHS, PALETTE, score_answer

VISUAL = ["count_shapes", "object_attribute", "larger_shape", "digit_grid", "bar_chart", "odd_one_out"]
VARIANTS = [(name, {}) for name in VISUAL] + [
    ("object_attribute", {"ask": "colour"}),
    ("object_attribute", {"ask": "position"}),
    ("bar_chart", {"labels": "letter"}),
]
WHITE = (255, 255, 255)


def pixels(sample):
    return sample.images[0].tobytes()


@pytest.mark.parametrize("name", VISUAL)
def test_items_are_deterministic_rgb_images(name):
    a, b = TASKS.build(name, seed=3), TASKS.build(name, seed=3)
    for i in (0, 7, 9_999):
        assert pixels(a[i]) == pixels(b[i]) and (a[i].prompt, a[i].answer) == (b[i].prompt, b[i].answer)
    s = a[5]
    assert (s.index, s.task, s.image_names) == (5, name, [f"{name}/all/5#0"])
    assert s.images[0].mode == "RGB" and s.images[0].size == (56, 56)
    assert a[-1] == a[9_999]
    assert pixels(a[1]) == pixels(TASKS.build(name, seed=4)[0])  # item i of seed s is item i-1 of seed s+1
    assert TASKS.build(name, seed=3, image_size=80)[5].images[0].size == (80, 80)
    assert all(ord(ch) < 128 for ch in s.prompt + a.reference(s)) and len(s.prompt) <= 25


@pytest.mark.parametrize("name", VISUAL)
def test_different_items_have_different_images(name):
    task = TASKS.build(name, seed=0, size=60)
    assert len({pixels(s) for s in task}) >= 55


@pytest.mark.parametrize("name", VISUAL)
@pytest.mark.parametrize("difficulty", [1, 3])
def test_holdout_sides_share_no_scene(name, difficulty):
    train = TASKS.build(name, seed=0, size=300, holdout="train", difficulty=difficulty)
    evals = TASKS.build(name, seed=0, size=300, holdout="eval", difficulty=difficulty)
    train_items, eval_items = list(train), list(evals)
    assert not {train.holdout_key(s) for s in train_items} & {evals.holdout_key(s) for s in eval_items}
    assert not {pixels(s) for s in train_items} & {pixels(s) for s in eval_items}
    assert len({pixels(s) for s in eval_items}) > 100  # the eval side is not a handful of scenes repeated
    # prompts repeat across items, so both sides ask the same questions (count_shapes has one prompt only)
    assert {s.prompt for s in train_items} & {s.prompt for s in eval_items}
    assert eval_items[4].image_names == [f"{name}/eval/4#0"]


def test_default_holdout_key_is_the_prompt():
    task = TASKS.build("arithmetic", seed=0, size=50, holdout="eval")
    assert all(is_eval_item(s) and task.holdout_key(s) == s.prompt for s in task)


@pytest.mark.parametrize("name,kwargs", VARIANTS)
@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_reference_scores_one_and_a_wrong_answer_zero(name, kwargs, difficulty):
    task = TASKS.build(name, seed=0, size=150, difficulty=difficulty, **kwargs)
    samples = list(task)
    answers = sorted({s.answer for s in samples})
    assert len(answers) >= 2
    for s in samples:
        ref = task.reference(s)
        assert ref == f"{s.meta['evidence']}. answer: {s.answer}" and task.score(s, ref) == 1.0
        wrong = next(a for a in answers if a != s.answer)
        assert task.score(s, f"{s.meta['evidence']}. answer: {wrong}") == 0.0
        assert task.score(s, s.answer) == 0.0  # no "answer:" tag


def test_score_reads_the_last_answer_on_the_first_line():
    s = Sample(prompt="how many shapes?", answer="3", meta={"evidence": "2 red 1 blue"})
    right = ["2 red 1 blue. answer: 3", "ANSWER: 3 ", "  answer:3", "answer: 2. answer: 3", "answer: 3\nanswer: 4"]
    wrong = ["answer: 3. answer: 2", "so\nanswer: 3", "answer: 3.", "3", "", "answer:", "answer: 33",
             "x" * 10_000 + "answer: 3", "answer:" * 5_000, "\x00\xff answer: ??", "answer: \u0663"]
    assert [score_answer(t, s.answer) for t in right] == [1.0] * len(right)
    assert [score_answer(t, s.answer) for t in wrong] == [0.0] * len(wrong)


def test_count_shapes_image_shows_its_objects():
    task = TASKS.build("count_shapes", seed=1, size=40, difficulty=3)
    for s in task:
        side = s.meta["grid"]
        cell = 56 / side
        filled = {(row, col): colour for row, col, _, colour in s.meta["objects"]}
        for row in range(side):
            for col in range(side):
                centre = (round((col + 0.5) * cell), round((row + 0.5) * cell))
                expected = PALETTE[filled[row, col]] if (row, col) in filled else WHITE
                assert s.images[0].getpixel(centre) == expected
        assert int(s.answer) == len(filled)
        # e.g. "2 red 1 blue": per-colour counts in palette order, summing to the answer
        words = s.meta["evidence"].split()
        assert sum(int(n) for n in words[::2]) == int(s.answer) and words[1::2] == [c for c in PALETTE if c in words]


def read_digit(image, cx, cy, scale):
    """Read back a 3x5 glyph by sampling the centre of each font pixel."""
    x0, y0 = cx - (3 * scale) // 2, cy - (5 * scale) // 2
    bits = ["".join("0" if image.getpixel((x0 + c * scale + scale // 2, y0 + r * scale + scale // 2)) == WHITE
                    else "1" for c in range(3)) for r in range(5)]
    return next(ch for ch, rows in GLYPHS.items() if rows == bits)


@pytest.mark.parametrize("difficulty,scale", [(1, 4), (2, 2), (3, 2)])  # cells 28, 18.7, 14 px
def test_digit_grid_image_shows_the_answer(difficulty, scale):
    task = TASKS.build("digit_grid", seed=0, size=30, difficulty=difficulty)
    for s in task:
        side = len(s.meta["grid"])
        row, col = s.meta["row"], s.meta["col"]
        centre = (round((col - 0.5) * 56 / side), round((row - 0.5) * 56 / side))
        assert read_digit(s.images[0], *centre, scale) == s.answer == str(s.meta["grid"][row - 1][col - 1])
        assert s.prompt == f"digit at row {row} col {col}?"


def coloured(image, box):
    return sum(px != WHITE for px in image.crop(box).getdata())


def test_larger_shape_has_more_coloured_pixels_on_its_side():
    task = TASKS.build("larger_shape", seed=0, size=60, difficulty=3)
    for s in task:
        left, right = coloured(s.images[0], (0, 0, 28, 56)), coloured(s.images[0], (28, 0, 56, 56))
        assert s.answer == ("left" if left > right else "right")
        assert s.meta["evidence"] == f"{s.meta['sizes'][0]} vs {s.meta['sizes'][1]}"


def test_bar_chart_tallest_bar_is_the_answer():
    task = TASKS.build("bar_chart", seed=0, size=60, difficulty=3, labels="letter")
    for s in task:
        slot = 56 / 5  # five bars at difficulty 3; scale 2 labels take the bottom 14 rows
        tall = [coloured(s.images[0], (round((k + 0.5) * slot), 0, round((k + 0.5) * slot) + 1, 41))
                for k in range(5)]
        assert s.answer == "abcde"[tall.index(max(tall))]
        assert [int(h) for h in s.meta["evidence"].split()] == s.meta["heights"]


def test_odd_one_out_and_object_attribute_images():
    for s in TASKS.build("odd_one_out", seed=0, size=40, difficulty=2):
        cell = int(s.answer) - 1
        centre = (round((cell % 3 + 0.5) * 56 / 3), round((cell // 3 + 0.5) * 56 / 3))
        assert s.images[0].getpixel(centre) == PALETTE[s.meta["odd_colour"]]
        assert (s.meta["odd_shape"], s.meta["odd_colour"]) != (s.meta["shape"], s.meta["colour"])
    for s in TASKS.build("object_attribute", seed=0, size=40, ask="position"):
        x, y = s.meta["x"], s.meta["y"]
        assert s.images[0].getpixel((x, y)) == PALETTE[s.meta["colour"]]
        side = "left" if x < 19 else "right" if x > 37 else "top" if y < 19 else "bottom"
        assert s.answer == side and s.prompt == "where is the shape?"


def answers(name, difficulty, **kwargs):
    return [s.answer for s in TASKS.build(name, seed=0, size=300, difficulty=difficulty, **kwargs)]


def test_difficulty_widens_the_answers():
    assert [max(map(int, answers("count_shapes", d))) for d in (1, 2, 3)] == [3, 5, 8]
    assert [sorted(set(answers("bar_chart", d))) for d in (1, 3)] == [["1", "2", "3"], ["1", "2", "3", "4", "5"]]
    assert [max(map(int, answers("odd_one_out", d))) for d in (1, 2, 3)] == [4, 9, 16]
    assert [len(set(answers("object_attribute", d, ask="colour"))) for d in (1, 3)] == [3, 6]
    ratios = {d: [max(s.meta["sizes"]) / min(s.meta["sizes"]) for s in TASKS.build("larger_shape", size=200,
                                                                                       difficulty=d)] for d in (1, 3)}
    assert min(ratios[1]) > 1.5 and max(ratios[3]) < 1.4  # difficulty shrinks the size gap
    gaps = {d: [sorted(s.meta["heights"])[-1] - sorted(s.meta["heights"])[-2]
                for s in TASKS.build("bar_chart", size=200, difficulty=d)] for d in (1, 3)}
    assert min(gaps[1]) == 3 and min(gaps[3]) == 1


@pytest.mark.parametrize("name", VISUAL)
@pytest.mark.parametrize("kwargs,option", [
    ({"difficulty": 0}, "difficulty"), ({"difficulty": 4}, "difficulty"), ({"difficulty": "2"}, "difficulty"),
    ({"image_size": 27}, "image_size"), ({"image_size": 56.0}, "image_size"), ({"size": 0}, "size"),
    ({"holdout": "test"}, "holdout"), ({"dificulty": 2}, "dificulty"),
])
def test_bad_options_name_the_option(name, kwargs, option):
    with pytest.raises(ValueError, match=option):
        TASKS.build(name, **kwargs)


def test_bad_choices_name_the_option():
    with pytest.raises(ValueError, match=r"object_attribute: ask must be one of \['colour', 'position', 'both'\]"):
        TASKS.build("object_attribute", ask="shape")
    with pytest.raises(ValueError, match="bar_chart: labels must be one of"):
        TASKS.build("bar_chart", labels="roman")


# ---------------------------------------------------------------- dataset tasks with images


def write_png(path, colour, *, mode="RGB"):
    Image.new(mode, (6, 4), colour).save(path)
    return path


def png_bytes(colour):
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_relative_paths_and_several_images_per_row(tmp_path, monkeypatch):
    (tmp_path / "img").mkdir()
    write_png(tmp_path / "img" / "red.png", (255, 0, 0))
    grey = write_png(tmp_path / "img" / "grey.png", 128, mode="L")
    rows = [
        {"prompt": "colour?", "answer": "red", "image": "img/red.png", "level": 1},
        {"prompt": "colours?", "answer": "red, grey", "image": ["img/red.png", str(grey)], "level": 2},
    ]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    monkeypatch.chdir(tmp_path / "img")  # relative paths resolve against the data file's folder, not the cwd
    exact = {"scorer": "exact", "scorer_kwargs": {"extract": "none"}}
    task = TASKS.build("dataset", path=str(path), image_field="image", **exact)
    one, two = task[0], task[1]
    assert [im.getpixel((0, 0)) for im in one.images] == [(255, 0, 0)] and one.images[0].mode == "RGB"
    assert one.image_names == [str(tmp_path / "img" / "red.png")]
    assert one.meta == {"level": 1}  # the image column is not meta
    assert [im.getpixel((0, 0)) for im in two.images] == [(255, 0, 0), (128, 128, 128)]
    assert two.image_names == [f"{tmp_path / 'img' / 'red.png'}#0", f"{grey}#1"]
    assert task.score(one, "red") == 1.0 and task.score(one, "blue") == 0.0
    assert TASKS.build("dataset", path=str(path))[0].images == []  # no image_field: text only, as before


def test_missing_image_file_or_column_fails_at_build_naming_the_row(tmp_path):
    write_png(tmp_path / "a.png", (0, 0, 0))
    rows = [{"prompt": "p", "answer": "1", "image": "a.png"},
            {"prompt": "q", "answer": "2", "image": ["a.png", "b.png"]}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(ValueError, match=r"d.jsonl', row 2, field 'image': image file '.*b.png' not found"):
        TASKS.build("dataset", path=str(path), image_field="image")
    with pytest.raises(ValueError, match=r"row 1, field 'picture': missing"):
        TASKS.build("dataset", path=str(path), image_field="picture")
    bad = write_jsonl(tmp_path / "n.jsonl", [{"prompt": "p", "answer": "1", "image": 7}])
    with pytest.raises(ValueError, match=r"n.jsonl', row 1, field 'image': expected an image path.*got int"):
        TASKS.build("dataset", path=str(bad), image_field="image")


def test_corrupt_image_fails_at_the_item_naming_the_row(tmp_path):
    write_png(tmp_path / "a.png", (0, 0, 0))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    rows = [{"prompt": "p", "answer": "1", "image": "a.png"}, {"prompt": "q", "answer": "2", "image": "broken.png"}]
    task = TASKS.build("dataset", path=str(write_jsonl(tmp_path / "d.jsonl", rows)), image_field="image")
    assert len(task[0].images) == 1
    with pytest.raises(ValueError, match=r"d.jsonl', row 2, field 'image': cannot read image '.*broken.png'"):
        task[1]


def test_parquet_with_bytes_and_bytes_path_dicts(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"prompt": "p", "answer": "1", "raw": png_bytes((255, 0, 0)), "image": {"bytes": png_bytes((0, 255, 0)),
                                                                              "path": "orig.png"}},
        {"prompt": "q", "answer": "2", "raw": b"junk", "image": {"bytes": png_bytes((0, 0, 255)), "path": None}},
    ]
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    raw = TASKS.build("dataset", path=str(path), image_field="raw")
    assert raw[0].images[0].getpixel((0, 0)) == (255, 0, 0) and raw[0].image_names == [f"{path}#row1"]
    assert "raw" not in raw[0].meta and "image" in raw[0].meta
    with pytest.raises(ValueError, match=r"d.parquet', row 2, field 'raw': cannot read image"):
        raw[1]
    dicts = TASKS.build("dataset", path=str(path), image_field="image")
    assert [dicts[i].images[0].getpixel((0, 0)) for i in range(2)] == [(0, 255, 0), (0, 0, 255)]
    assert [dicts[i].image_names for i in range(2)] == [["orig.png"], [f"{path}#row2"]]


def image_dataset():
    import datasets

    red, blue = Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 255))
    features = datasets.Features({"prompt": datasets.Value("string"), "answer": datasets.Value("string"),
                                  "image": datasets.Image(), "pics": datasets.Sequence(datasets.Image())})
    data = {"prompt": ["a", "b"], "answer": ["1", "2"], "image": [red, blue], "pics": [[red, blue], [blue]]}
    return datasets.Dataset.from_dict(data, features=features)


def test_save_to_disk_image_column_and_its_parquet_export(tmp_path):
    image_dataset().save_to_disk(str(tmp_path / "hf"))
    image_dataset().to_parquet(str(tmp_path / "export.parquet"))
    for path in (tmp_path / "hf", tmp_path / "export.parquet"):
        single = TASKS.build("dataset", path=str(path), image_field="image")
        assert single[1].images[0].getpixel((0, 0)) == (0, 0, 255) and single[1].image_names == [f"{path}#row2"]
        assert "image" not in single[1].meta
        several = TASKS.build("dataset", path=str(path), image_field="pics")
        assert [im.getpixel((0, 0)) for im in several[0].images] == [(255, 0, 0), (0, 0, 255)]
        assert several[0].image_names == [f"{path}#row1#0", f"{path}#row1#1"]
        assert all(im.mode == "RGB" for im in several[0].images)


def test_rows_from_python_hold_pil_images():
    rows = [{"prompt": "p", "answer": "1", "image": Image.new("L", (3, 3), 200)}]
    sample = TASKS.build("dataset", rows=rows, image_field="image")[0]
    assert sample.images[0].mode == "RGB" and sample.images[0].getpixel((1, 1)) == (200, 200, 200)
    assert sample.image_names == ["<rows>#row1"]


@pytest.mark.parametrize("name", VISUAL)
def test_scratch_prefixes_the_reference_with_image_independent_letters(name):
    # scratch = 12: "<12 letters>. <the plain reference>"; the item (image, answer, split) is the plain task's
    plain, padded = TASKS.build(name, seed=4, holdout="eval"), TASKS.build(name, seed=4, holdout="eval", scratch=12)
    prefixes = set()
    for i in (0, 1, 2, 3):
        p, s = plain[i], padded[i]
        assert (pixels(p), p.prompt, p.answer, p.index) == (pixels(s), s.prompt, s.answer, s.index)
        ref = padded.reference(s)
        head, body = ref[:12], ref[14:]
        assert head.isalpha() and head.islower() and ref[12:14] == ". " and body == plain.reference(p)
        assert padded.score(s, ref) == 1.0 and padded.reference(padded[i]) == ref  # deterministic per item
        prefixes.add(head)
    assert len(prefixes) == 4  # drawn per item, not one fixed string
    assert plain.reference(plain[0]) == TASKS.build(name, seed=4, holdout="eval", scratch=0).reference(plain[0])
    with pytest.raises(ValueError, match="scratch"):
        TASKS.build(name, scratch=-1)
