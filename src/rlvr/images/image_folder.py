"""A folder of the user's own images, with or without captions, as image data (`data.kind: folder`).

1. Images: the files ending in .png, .jpg, .jpeg or .webp (any case) directly in the folder, sorted by name (Python's
   code-point order of the names: the same on every file system). Each is read with PIL, turned upright by its EXIF
   orientation, converted to RGB, resized (bicubic) so that its short side is `size` and centre-cropped to
   `size` x `size`; pixels in [0, 1] as rlvr.images.data.toy_shapes gives them.
2. Captions, the first that applies: a metadata.jsonl in the folder (Hugging Face imagefolder's layout: one JSON
   object per line with "file_name", relative to the folder, and a caption column, "text" unless told; the rows name
   the images, in subfolders too, and images it does not name are not used), else a <stem>.txt beside each image
   (when any image has one, every image must), else none (an unconditional set).
3. `fingerprint`: the number of images and a SHA-256 of their sorted names, byte sizes and captions; a run records it
   and refuses to resume on a folder whose fingerprint changed.
4. Every problem is a ValueError of one line naming the file or the metadata row (the config check prefixes the
   field), raised by `scan` and `check_readable` before any model is built.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

SUFFIXES = (".jpeg", ".jpg", ".png", ".webp")
METADATA = "metadata.jsonl"


@dataclass(frozen=True)
class ImageFolder:
    """The images of one folder in their sorted order and their captions (None: no captions)."""

    root: Path
    files: tuple[Path, ...]
    captions: tuple[str, ...] | None

    def __len__(self) -> int:
        return len(self.files)

    def names(self) -> list[str]:
        return [f.relative_to(self.root).as_posix() for f in self.files]

    def take(self, rows: slice) -> ImageFolder:
        """The images at `rows` of the sorted order (the held-out split is the last ones)."""
        captions = None if self.captions is None else self.captions[rows]
        return ImageFolder(self.root, self.files[rows], captions)

    def pick(self, rows: list[int]) -> ImageFolder:
        """The images at these positions of the sorted order, in this order."""
        captions = None if self.captions is None else tuple(self.captions[i] for i in rows)
        return ImageFolder(self.root, tuple(self.files[i] for i in rows), captions)

    def fingerprint(self) -> dict[str, int | str]:
        """{"images": count, "sha256": hash of the sorted names, byte sizes and captions} (module docstring 3)."""
        digest = hashlib.sha256()
        for i, (name, file) in enumerate(zip(self.names(), self.files)):
            caption = "" if self.captions is None else self.captions[i]
            digest.update(json.dumps([name, file.stat().st_size, caption]).encode() + b"\n")
        return {"images": len(self.files), "sha256": digest.hexdigest()}

    def load(self, size: int, rows: slice = slice(None)) -> torch.Tensor:
        """(N, 3, size, size) pixels in [0, 1] of the images at `rows` (module docstring 1)."""
        files = self.files[rows]
        out = torch.empty(len(files), 3, size, size)
        for i, file in enumerate(files):
            out[i] = load_image(file, size)
        return out


def load_image(file: Path, size: int) -> torch.Tensor:
    """(3, size, size) in [0, 1]: upright, RGB, short side resized to `size`, centre crop."""
    from PIL import Image, ImageOps

    try:
        with Image.open(file) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except Exception as err:  # PIL raises many kinds; each is one unreadable file
        raise ValueError(f"{file}: not a readable image ({type(err).__name__}: {err})") from err
    w, h = image.size
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    if new != image.size:
        image = image.resize(new, Image.Resampling.BICUBIC)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    image = image.crop((left, top, left + size, top + size))
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(size, size, 3)  # (H, W, 3)
    return pixels.permute(2, 0, 1).float() / 255


def scan(path: str | Path, *, caption_column: str = "text") -> ImageFolder:
    """The folder's images and captions (module docstring 2); a ValueError naming the file or row otherwise."""
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder")
    if (root / METADATA).is_file():
        files, captions = _from_metadata(root, caption_column)
    else:
        files = sorted((p for p in root.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES),
                       key=lambda p: p.name)
        captions = _from_text_files(files)
    if not files:
        raise ValueError(f"{root} holds no images (files ending in {', '.join(SUFFIXES)})")
    return ImageFolder(root, tuple(files), captions)


def _from_metadata(root: Path, column: str) -> tuple[list[Path], tuple[str, ...]]:
    where = root / METADATA
    rows: dict[str, str] = {}
    for row, line in enumerate(where.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where} row {row}: not a JSON object ({err.msg})") from err
        if not isinstance(item, dict) or not isinstance(item.get("file_name"), str):
            raise ValueError(f"{where} row {row}: no \"file_name\" (the image's path in the folder)")
        if not isinstance(item.get(column), str):
            raise ValueError(f"{where} row {row}: no caption column {column!r} of text (data.caption_column)")
        name = item["file_name"]
        if not (root / name).is_file() or Path(name).suffix.lower() not in SUFFIXES:
            raise ValueError(f"{where} row {row}: file_name {name!r} is not an image file in {root}")
        if name in rows:
            raise ValueError(f"{where} row {row}: file_name {name!r} is listed twice")
        rows[name] = item[column]
    names = sorted(rows)
    return [root / n for n in names], tuple(rows[n] for n in names)


def _from_text_files(files: list[Path]) -> tuple[str, ...] | None:
    texts = [f.with_suffix(".txt") for f in files]
    if not any(t.is_file() for t in texts):
        return None
    for file, text in zip(files, texts):
        if not text.is_file():
            raise ValueError(f"{file}: no caption {text.name} beside it (other images have one: give every image "
                             "its .txt, or use a metadata.jsonl)")
    return tuple(t.read_text(encoding="utf-8").strip() for t in texts)


def scan_classes(path: str | Path) -> tuple[ImageFolder, torch.Tensor, list[str]]:
    """(images, (N,) labels, class names) of ImageNet's layout, <path>/<class name>/<image>: the classes are the
    subfolders in sorted name order (hidden ones, starting with ".", left out), the images of each sorted by name."""
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{root} has no class subfolders (the layout is <path>/<class name>/<image>)")
    files, labels = [], []
    for k, name in enumerate(classes):
        found = sorted((p for p in (root / name).iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES),
                       key=lambda p: p.name)
        if not found:
            raise ValueError(f"{root / name}: a class subfolder with no images (files ending in {', '.join(SUFFIXES)})")
        files += found
        labels += [k] * len(found)
    return ImageFolder(root, tuple(files), None), torch.tensor(labels, dtype=torch.long), classes


def record_fingerprints(record: Path, folders: dict[str, ImageFolder], *, resume: bool) -> tuple[str, str] | None:
    """A new run writes the folders' fingerprints to `record` (module docstring 3); a resumed one compares: (name,
    what changed) of the first folder that differs, None when none does (or the run has no record)."""
    now = {name: {"path": str(f.root), **f.fingerprint()} for name, f in folders.items()}
    if not resume:
        record.write_text(json.dumps(now, indent=1))
        return None
    if not record.is_file():
        return None
    saved = json.loads(record.read_text())
    for name, new in now.items():
        old = saved.get(name, {"images": 0, "sha256": "none"})
        if (old["images"], old["sha256"]) != (new["images"], new["sha256"]):
            return name, (f"the {name} images changed since the run started ({old['images']} images, sha256 "
                          f"{old['sha256'][:12]} in {record}; now {new['images']}, {new['sha256'][:12]})")
    return None


def check_readable(folder: ImageFolder) -> None:
    """Every image opens and decodes its header and structure (PIL's verify); a ValueError naming the first that
    does not."""
    from PIL import Image

    for file in folder.files:
        try:
            with Image.open(file) as image:
                image.verify()
        except Exception as err:  # PIL raises many kinds; each is one unreadable file
            raise ValueError(f"{file}: not a readable image ({type(err).__name__}: {err})") from err


def split(folder: ImageFolder, held: ImageFolder | None, held_images: int) -> tuple[ImageFolder, ImageFolder]:
    """(training, held-out): the held-out folder when given, else the last `held_images` of the sorted order."""
    if held is not None:
        return folder, held
    cut = max(0, len(folder) - held_images)
    return folder.take(slice(0, cut)), folder.take(slice(cut, None))


def caption_labels(captions: tuple[str, ...] | None, n: int) -> tuple[list[str], torch.Tensor]:
    """(the distinct captions, sorted; (n,) index of each image's caption among them); no captions: the empty
    prompt for every image."""
    if captions is None:
        return [""], torch.zeros(n, dtype=torch.long)
    names = sorted(set(captions))
    index = {c: i for i, c in enumerate(names)}
    return names, torch.tensor([index[c] for c in captions], dtype=torch.long)


def write_shapes(path: str | Path, *, images: int = 1256, size: int = 32, seed: int = 0) -> Path:
    """An example folder: `images` toy shapes (rlvr.images.data.toy_shapes) as PNGs, each with its caption ("a
    circle", ...) in a .txt beside it (recipes/dmd2_folder.yaml runs on it as written)."""
    from PIL import Image

    from rlvr.images.data import SHAPE_CLASSES, toy_shapes

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    pixels, labels = toy_shapes(images, size=size, seed=seed)
    for i, (x, label) in enumerate(zip(pixels, labels)):
        Image.fromarray((x.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()).save(out / f"{i:05d}.png")
        (out / f"{i:05d}.txt").write_text(f"a {SHAPE_CLASSES[int(label)]}\n")
    return out
