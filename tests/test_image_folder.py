"""`data.kind: folder` (rlvr.images.image_folder, the dmd loop's image side): the pixels are the short-side resize and
centre crop of each file; captions come from metadata.jsonl, else .txt files, else none; the order is the names'
sorted order; the training rows' prompts are their own captions; a text-conditioned run on a folder trains, exports,
resumes as an uninterrupted run and refuses a resume on a changed folder; 2 torchrun ranks train as one process;
every bad folder is a one-line error naming the field and the file or row, raised by validate()."""

import json
import math
import os

import pytest
import torch
import yaml
from PIL import Image
from ranks import assert_rows_close, max_difference, rlvr_train
from safetensors.torch import load_file

from rlvr.config import ConfigError, from_dict
from rlvr.images.dmd_train import RunConfig, train, validate
from rlvr.images.image_folder import load_image, scan
from rlvr.metrics import read_metrics

TINY = {"loop": "dmd", "data": {"kind": "folder", "size": 16, "held_images": 8},
        "teacher": {"kind": "diffusers", "pretrain_steps": 3, "pretrain_batch": 8, "sample_steps": 3},
        "diffusers": {"conditioning": "text", "vae": True, "guidance_scale": 2.0},
        "distill": {"preset": "dmd2", "gan_weight": 0.5, "ratio": 2},
        "train": {"steps": 4, "batch": 4, "eval_every": 2, "eval_size": 8, "save_every": 2, "keep": 3}}
CAPTIONS = ["a red square", "a blue circle", "a green cross"]


def make_folder(folder, n=20, *, captions="txt", size=(20, 16)):
    """n random-noise images of `size` (w, h), captioned by .txt files, a metadata.jsonl or nothing."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(n)
    rows = []
    for i in range(n):
        pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=g, dtype=torch.uint8)
        name = f"img{i:03d}.png"
        Image.fromarray(pixels.numpy()).save(folder / name)
        caption = CAPTIONS[min(i % 4, 2)]  # shares 1/4, 1/4, 1/2
        if captions == "txt":
            (folder / f"img{i:03d}.txt").write_text(caption + "\n")
        rows.append({"file_name": name, "text": caption})
    if captions == "metadata":
        (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def raw(tmp_path, name, **over):
    out = {"name": name, "output_dir": str(tmp_path), **yaml.safe_load(yaml.safe_dump(TINY))}
    out["data"]["path"] = str(tmp_path / "images")
    for key, value in over.items():
        section, field = key.split("__")
        out.setdefault(section, {})[field] = value
    return out


def tiny(tmp_path, name, **over):
    return from_dict(RunConfig, raw(tmp_path, name, **over), "")


def weights(run, step, net="generator"):
    return load_file(run / "checkpoints" / f"step-{step:06d}" / "model" / f"{net}.safetensors")


def _gradient(w, h):
    """An RGB image whose pixel (x, y) is (10 x, 10 y, 77): every position tells where it came from."""
    image = Image.new("RGB", (w, h))
    image.putdata([(10 * x, 10 * y, 77) for y in range(h) for x in range(w)])
    return image


def test_pixels_are_the_short_side_resize_and_centre_crop(tmp_path):
    _gradient(12, 6).save(tmp_path / "wide.png")  # short side 6 already: the crop alone, columns 3 .. 8
    x = load_image(tmp_path / "wide.png", 6) * 255
    assert x.shape == (3, 6, 6)
    cols, rows = torch.arange(6).float(), torch.arange(6).float()
    torch.testing.assert_close(x[0], 10 * (cols[None, :] + 3).expand(6, 6), atol=1e-3, rtol=0)
    torch.testing.assert_close(x[1], 10 * rows[:, None].expand(6, 6), atol=1e-3, rtol=0)
    torch.testing.assert_close(x[2], torch.full((6, 6), 77.0), atol=1e-3, rtol=0)
    _gradient(6, 10).save(tmp_path / "tall.png")  # rows 2 .. 7
    torch.testing.assert_close(load_image(tmp_path / "tall.png", 6)[1] * 255, 10 * (rows[:, None] + 2).expand(6, 6),
                               atol=1e-3, rtol=0)
    big = _gradient(24, 12)
    big.save(tmp_path / "big.png")  # 24 x 12 -> 12 x 6 (bicubic), then columns 3 .. 8
    want = big.resize((12, 6), Image.Resampling.BICUBIC).crop((3, 0, 9, 6))
    want = torch.frombuffer(bytearray(want.tobytes()), dtype=torch.uint8).view(6, 6, 3).permute(2, 0, 1) / 255
    torch.testing.assert_close(load_image(tmp_path / "big.png", 6), want, atol=1e-6, rtol=0)
    Image.new("L", (9, 7), 51).save(tmp_path / "grey.jpg", quality=100)  # grey JPEG -> 3 equal channels
    torch.testing.assert_close(load_image(tmp_path / "grey.jpg", 4), torch.full((3, 4, 4), 51 / 255), atol=2 / 255,
                               rtol=0)


def test_captions_from_metadata_then_txt_files_then_none_in_sorted_order(tmp_path):
    meta = tmp_path / "meta"
    (meta / "sub").mkdir(parents=True)
    for name in ("b.png", "a.png", "sub/c.webp", "unlisted.png"):
        Image.new("RGB", (8, 8)).save(meta / name)
    rows = [{"file_name": "sub/c.webp", "caption": "C"}, {"file_name": "b.png", "caption": "B"},
            {"file_name": "a.png", "caption": "A", "text": "ignored"}]
    (meta / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    (meta / "a.txt").write_text("the metadata wins")
    folder = scan(meta, caption_column="caption")
    assert folder.names() == ["a.png", "b.png", "sub/c.webp"] and folder.captions == ("A", "B", "C")
    txt = tmp_path / "txt"
    txt.mkdir()
    for name in ("b.png", "B.jpg", "a.JPEG", "10.png", "9.png", "notes.md"):
        (txt / name).write_bytes(b"")
        (txt / name).with_suffix(".txt").write_text(f"  caption of {name}\n")
    folder = scan(txt)
    assert folder.names() == ["10.png", "9.png", "B.jpg", "a.JPEG", "b.png"]  # code-point order, not the disk's
    assert folder.captions == tuple(f"caption of {n}" for n in folder.names())
    for name in txt.glob("*.txt"):
        name.unlink()
    assert scan(txt).captions is None


def test_each_training_row_carries_its_own_images_pixels_and_caption(tmp_path):
    from rlvr.images.dmd_diffusers import ImageSide
    from rlvr.images.image_folder import load_image as load

    make_folder(tmp_path / "images", n=20, captions="metadata")
    side = ImageSide(tiny(tmp_path, "rows", teacher__pretrain_steps=0), None)
    data = side.data
    assert len(data.train) == 12 and len(data.held) == 8 and data.names == sorted(CAPTIONS)
    assert [data.names[i] for i in data.labels] == [CAPTIONS[min(i % 4, 2)] for i in range(12)]
    want = side.parts.encode(torch.stack([load(tmp_path / "images" / f"img{i:03d}.png", 16) for i in (0, 11)]) * 2 - 1)
    torch.testing.assert_close(data.train[[0, 11]], want, atol=1e-5, rtol=0)
    torch.testing.assert_close(data.held[-1], load(tmp_path / "images" / "img019.png", 16) * 2 - 1)
    torch.testing.assert_close(side.prompts(data.labels[:4]), side.parts.embed([*CAPTIONS, CAPTIONS[2]]), atol=1e-5,
                               rtol=0)
    drawn = data.prompt_labels(3000, generator=torch.Generator().manual_seed(0))
    share = torch.bincount(drawn, minlength=3).float() / 3000  # the captions' shares of the 12 training images
    want = torch.tensor([3, 6, 3]).float() / 12  # names sorted: blue circle, green cross, red square
    assert (share - want).abs().max() < 0.04
    from rlvr.images.dmd_train import generator_input
    from rlvr.seeding import generator

    _, _, labels = generator_input(side.networks(), side.cfg, data, 5)  # the generator's prompts of step 5
    assert torch.equal(labels, data.prompt_labels(4, generator=generator(side.cfg.seed, "prompts", 5)))


def test_a_text_conditioned_folder_run_trains_exports_and_resumes_as_an_uninterrupted_one(tmp_path):
    from diffusers import StableDiffusionPipeline

    make_folder(tmp_path / "images", n=20)
    short = {"student__backward_simulation": False, "train__steps": 2, "train__eval_every": 1, "train__save_every": 1}
    summary = train(tiny(tmp_path, "full", **short))
    rows = read_metrics(tmp_path / "full" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert {"gen/loss", "gan/gen_loss", "gan/disc_loss", "fake/loss"} <= set(rows[1])
    assert all(math.isfinite(v) for r in rows for v in r.values())
    assert json.loads((tmp_path / "full" / "data.json").read_text())["train"]["images"] == 12
    pipe = StableDiffusionPipeline.from_pretrained(summary["exported"])
    assert pipe.unet is not None and pipe.vae is not None
    train(tiny(tmp_path, "half", **{**short, "train__steps": 1}))
    train(tiny(tmp_path, "half", **short), resume=True)
    for net in ("generator", "fake", "disc"):
        a, b = weights(tmp_path / "full", 2, net), weights(tmp_path / "half", 2, net)
        assert all(torch.equal(a[k], b[k]) for k in a), net
    strip = [[{k: v for k, v in r.items() if "time/" not in k} for r in read_metrics(tmp_path / n / "metrics.jsonl")]
             for n in ("full", "half")]
    assert strip[0] == strip[1]
    (tmp_path / "images" / "img003.txt").write_text("another caption")  # the folder changes under the run
    with pytest.raises(ConfigError, match=r"^data.path: the train images changed since the run started") as err:
        train(tiny(tmp_path, "half", **{**short, "train__steps": 3}), resume=True)
    assert "\n" not in str(err.value)


def _bad_metadata(folder, line):
    make_folder(folder, n=20, captions="metadata")
    rows = (folder / "metadata.jsonl").read_text().splitlines()
    rows[2] = line
    (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n")


BAD = {
    "missing": (lambda f: None, {}, r"^data.path: .*missing is not a folder"),
    "a file": (lambda f: f.write_text("x"), {}, r"^data.path: .*is not a folder"),
    "empty": (lambda f: f.mkdir() or (f / "notes.txt").write_text("x"), {}, r"^data.path: .* holds no images"),
    "unreadable": (lambda f: make_folder(f) and (f / "img005.png").write_bytes(b"not a png"), {},
                   r"^data.path: .*img005.png: not a readable image"),
    "truncated": (lambda f: make_folder(f) and (f / "img006.png").write_bytes((f / "img006.png").read_bytes()[:60]),
                  {}, r"^data.path: .*img006.png: not a readable image"),
    "not json": (lambda f: _bad_metadata(f, '{"file_name": "img002.png", '), {},
                 r"^data.path: .*metadata.jsonl row 3: not a JSON object"),
    "no file_name": (lambda f: _bad_metadata(f, '{"text": "x"}'), {}, r"^data.path: .*row 3: no \"file_name\""),
    "no caption": (lambda f: _bad_metadata(f, '{"file_name": "img002.png", "caption": "x"}'), {},
                   r"^data.path: .*row 3: no caption column 'text'"),
    "other column": (lambda f: make_folder(f, captions="metadata"), {"data__caption_column": "caption"},
                     r"^data.path: .*row 1: no caption column 'caption'"),
    "no such file": (lambda f: _bad_metadata(f, '{"file_name": "gone.png", "text": "x"}'), {},
                     r"^data.path: .*row 3: file_name 'gone.png' is not an image file"),
    "a txt missing": (lambda f: make_folder(f) and (f / "img004.txt").unlink(), {},
                      r"^data.path: .*img004.png: no caption img004.txt beside it"),
    "too few": (lambda f: make_folder(f, n=11), {}, r"^data.path: must be at least train.batch = 4 training images "
                r"after the last data.held_images = 8 are held out, got 3$"),
    "few held": (lambda f: make_folder(f, n=20), {"data__held_path": "HELD"},
                 r"^data.held_path: must be at least 8 held-out images, got 5$"),
    "held unreadable": (lambda f: make_folder(f, n=20), {"data__held_path": "BADHELD"},
                        r"^data.held_path: .*img001.png: not a readable image"),
    "size": (lambda f: make_folder(f), {"data__size": 10}, r"^data.size: must be a multiple of 4"),
    "no path": (lambda f: make_folder(f), {"data__path": None}, r"^data.path: must be a folder of images"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_folders_are_one_line_errors_before_any_model(tmp_path, case, monkeypatch):
    import rlvr.images.dmd_diffusers as side

    make, over, message = BAD[case]
    make(tmp_path / "images")
    if over.get("data__held_path") == "HELD":
        over = {**over, "data__held_path": str(make_folder(tmp_path / "held", n=5))}
    if over.get("data__held_path") == "BADHELD":
        make_folder(tmp_path / "held", n=9)
        (tmp_path / "held" / "img001.png").write_bytes(b"\x89PNG\r\n")
        over = {**over, "data__held_path": str(tmp_path / "held")}
    path = str(tmp_path / "images") if case != "missing" else str(tmp_path / "missing")
    cfg = tiny(tmp_path, "bad", **{"data__path": path, **over})
    monkeypatch.setattr(side, "build_parts", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(ConfigError, match=message) as err:
        train(cfg)
    assert "\n" not in str(err.value)
    validate(tiny(tmp_path, "good", data__path=str(make_folder(tmp_path / "good"))))  # a good folder passes


def test_an_uncaptioned_folder_gives_a_text_teacher_the_empty_prompt(tmp_path):
    from rlvr.images.dmd_diffusers import ImageSide

    make_folder(tmp_path / "images", n=16, captions="none")
    side = ImageSide(tiny(tmp_path, "plain", teacher__pretrain_steps=0), None)
    assert side.data.names == [""] and int(side.data.labels.max()) == 0
    torch.testing.assert_close(side.prompts(torch.zeros(2, dtype=torch.long)), side.prompts.uncond.expand(2, -1, -1))


def test_two_ranks_train_a_folder_run_as_one_process(tmp_path):
    make_folder(tmp_path / "images", n=20, captions="metadata")
    runs = {}
    for ranks in (1, 2):
        recipe = tmp_path / f"tiny{ranks}.yaml"
        recipe.write_text(yaml.safe_dump(raw(tmp_path, f"r{ranks}")))
        rlvr_train(recipe, ranks=ranks, cwd=tmp_path)
        runs[ranks] = tmp_path / f"r{ranks}"
    assert_rows_close(*(read_metrics(runs[n] / "metrics.jsonl") for n in (1, 2)), steps=[0, 1, 2, 3, 4])
    for net in ("generator", "fake", "disc"):
        assert max_difference(weights(runs[1], 4, net), weights(runs[2], 4, net)) <= 1e-4, net


def test_the_folder_recipe_runs_on_the_example_folder_its_comment_makes(tmp_path, monkeypatch):
    from rlvr.config import raw_config
    from rlvr.images.image_folder import write_shapes

    recipe = raw_config(os.path.join(os.path.dirname(__file__), "..", "recipes", "dmd2_folder.yaml"))
    monkeypatch.chdir(tmp_path)
    write_shapes(recipe["data"]["path"])
    recipe["output_dir"] = str(tmp_path / "runs")
    recipe["teacher"].update(pretrain_steps=1, pretrain_batch=4, sample_steps=1)
    recipe["train"].update(steps=1, eval_size=8, save_every=1)
    summary = train(from_dict(RunConfig, recipe, ""))
    assert summary["steps"] == 1 and summary["exported"]
    data = json.loads((tmp_path / "runs" / "dmd2_folder" / "data.json").read_text())
    assert data["train"]["images"] == 1000 and data["held"]["images"] == 256


# ---------------------------------------------------------------- loop: va_pi on class subfolders (ImageNet's layout)

VA = {"loop": "va_pi", "name": "va", "data": {"name": "folder", "size": 8, "train_size": 64, "eval_size": 16},
      "vq": {"steps": 5, "codes": 16, "hidden": 16, "dim": 4},
      "policy": {"hidden": 32, "layers": 1, "heads": 2, "pretrain_steps": 2},
      "algo": {"group": 4, "token_noise": 0.5}, "optim": {"lr": 1e-3},
      "train": {"steps": 2, "batch": 4, "eval_every": 2, "samples_per_class": 2, "classifier_steps": 3,
                "save_every": 1}}
COLOURS = {"cat": (250, 10, 10), "dog": (10, 250, 10), "emu": (10, 10, 250)}


def make_classes(root, counts=(16, 12, 12)):
    """root/<class>/<i>.png: each class a solid colour, a different image size per file."""
    for (name, colour), n in zip(COLOURS.items(), counts):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (10 + i % 3, 12), colour).save(root / name / f"{i:02d}.png")
    return root


def va_config(tmp_path, **over):
    from rlvr.config import raw_config
    from rlvr.images.va_pi_train import RunConfig as VaConfig

    base = {**VA, "output_dir": str(tmp_path)}
    base["data"] = {**VA["data"], "path": str(tmp_path / "classes")}
    return from_dict(VaConfig, raw_config(base, [f"{k}={v}" for k, v in over.items()]), "")


def test_class_subfolders_are_the_labels_and_the_split_keeps_each_image_with_its_label(tmp_path):
    from rlvr.images.image_folder import scan_classes
    from rlvr.images.va_pi_train import image_data

    make_classes(tmp_path / "classes")
    (tmp_path / "classes" / ".cache").mkdir()
    folder, labels, names = scan_classes(tmp_path / "classes")
    assert names == ["cat", "dog", "emu"] and labels.tolist() == [0] * 16 + [1] * 12 + [2] * 12
    assert folder.names()[:3] == ["cat/00.png", "cat/01.png", "cat/02.png"]
    train_x, train_y, held_x, held_y = image_data(va_config(tmp_path))
    assert len(train_x) == 32 and len(held_x) == 8  # 80 / 20 of 40
    for x, y in ((train_x, train_y), (held_x, held_y)):
        colours = torch.tensor(list(COLOURS.values())).float() / 255
        torch.testing.assert_close(x.mean((2, 3)), colours[y], atol=1 / 255, rtol=0)
    assert len(set(train_y.tolist())) == len(set(held_y.tolist())) == 3  # a shuffled split, not the last class


def test_a_va_pi_run_on_class_subfolders_trains_resumes_and_refuses_a_changed_folder(tmp_path):
    from rlvr.images.va_pi_train import train as va_train

    make_classes(tmp_path / "classes")
    every = {"train.eval_every": 1}  # the 1-step run's last step evaluates: so does the whole run's
    va_train(va_config(tmp_path, name="whole", **every))
    va_train(va_config(tmp_path, **every, **{"train.steps": 1}))
    assert torch.load(tmp_path / "va" / "classifier.pt")["classes"] == 3
    assert json.loads((tmp_path / "va" / "data.json").read_text())["data.path"]["images"] == 40
    va_train(va_config(tmp_path, **every), resume=True)
    strip = [[{k: v for k, v in r.items() if "time/" not in k} for r in read_metrics(tmp_path / n / "metrics.jsonl")]
             for n in ("whole", "va")]
    assert [r["step"] for r in strip[1]] == [0, 1, 2] and strip[0] == strip[1]
    Image.new("RGB", (10, 12)).save(tmp_path / "classes" / "dog" / "99.png")
    with pytest.raises(ConfigError, match=r"^data.path: the data.path images changed since the run started") as err:
        va_train(va_config(tmp_path, **every, **{"train.steps": 3}), resume=True)
    assert "\n" not in str(err.value)


def _va_bad(tmp_path, case):
    root = make_classes(tmp_path / "classes")
    if case == "empty class":
        (root / "fox").mkdir()
    elif case == "flat folder":
        for d in COLOURS:
            for f in (root / d).iterdir():
                f.unlink()
            (root / d).rmdir()
        Image.new("RGB", (8, 8)).save(root / "a.png")
    elif case == "unreadable":
        (root / "dog" / "03.png").write_bytes(b"garbage")
    elif case == "held classes":
        make_classes(tmp_path / "held")
        (tmp_path / "held" / "emu").rename(tmp_path / "held" / "elk")
        return {"data.held_path": str(tmp_path / "held")}
    elif case == "few held":
        make_classes(tmp_path / "held", counts=(3, 2, 2))
        return {"data.held_path": str(tmp_path / "held")}
    elif case == "no path":
        return {"data.path": "null"}
    return {}


@pytest.mark.parametrize("case,message", [
    ("empty class", r"^data.path: .*fox: a class subfolder with no images"),
    ("flat folder", r"^data.path: .*has no class subfolders"),
    ("unreadable", r"^data.path: .*dog/03.png: not a readable image"),
    ("held classes", r"^data.held_path: its class subfolders \['cat', 'dog', 'elk'\] must be data.path's"),
    ("few held", r"^data.held_path must give at least 8 held-out images \(all of data.held_path\), got 7$"),
    ("no path", r"^data.path must be a folder of class subfolders"),
])
def test_bad_class_folders_are_one_line_errors(tmp_path, case, message):
    from rlvr.images.va_pi_train import validate as va_validate

    over = _va_bad(tmp_path, case)
    with pytest.raises(ConfigError, match=message) as err:
        va_validate(va_config(tmp_path, **over))
    assert "\n" not in str(err.value)


def test_two_ranks_train_a_va_pi_folder_run_as_one_process(tmp_path):
    make_classes(tmp_path / "classes")
    runs = {}
    for ranks in (1, 2):
        cfg = {**VA, "name": f"v{ranks}", "output_dir": str(tmp_path)}
        cfg["data"] = {**VA["data"], "path": str(tmp_path / "classes")}
        (tmp_path / f"va{ranks}.yaml").write_text(yaml.safe_dump(cfg))
        rlvr_train(tmp_path / f"va{ranks}.yaml", ranks=ranks, cwd=tmp_path)
        runs[ranks] = read_metrics(tmp_path / f"v{ranks}" / "metrics.jsonl")
    assert_rows_close(runs[1], runs[2], steps=[0, 1, 2])
