"""dataset: prompts and reference answers from a local file (or rows in memory), scored by a named reward (math by
default).

Formats: .jsonl, .json (a list of rows, or {split: [rows]}), .csv, .parquet (read with pyarrow, which
`datasets` itself uses, to avoid writing a cache copy), or a folder written by `datasets`' save_to_disk
(a Dataset or a DatasetDict, from which `split` is taken; rows are read lazily from the memory map). From Python,
`rows=` takes a list of dicts or a `datasets.Dataset` instead of a path (rlvr.api).

1. Rows are checked when the task is built: a missing or empty prompt/answer field fails with the file,
   the 1-based row number, the missing field and the fields that row does have.
2. sample.prompt is the prompt text, or chat messages [system, user] when `system_prompt` is given
   (a prompt that is already a list of messages is kept, with the system message put first).
3. sample.meta holds the row's other fields, for rewards that need them; sample.task is `task_name`
   (give two dataset tasks different names so the "task" reward can route their samples).
4. score(sample, text) = the `scorer` reward (REWARDS name, e.g. "math", "exact", "numeric") on that one
   completion; reference(sample) = "\\boxed{answer}", which the answer-checking rewards all accept, or the answer
   as written with reference="plain" (what `rlvr sft` imitates: VideoSSR's rows are answered directly).
5. `image_field` names a column of images the prompt shows: a path (relative to the folder that holds `path`, or
   to the working directory for `rows=`), raw bytes, a {"bytes", "path"} dict (a `datasets` Image column in
   Parquet), a PIL image (a save_to_disk Image column decodes to one), or a list of these. Paths of in-file rows
   are checked at build; images decode to RGB at __getitem__ into sample.images, named in sample.image_names by
   their path, or "{path}#row{n}" for bytes, with "#k" added per image when a row has several.
6. Hostile rows fail as one line naming the file and row: JSON nested deeper than Python's parser recurses, a list
   prompt that is not chat messages. A CSV field may pass the csv module's default 131,072 characters: prompts too
   long for the model are found at setup (rlvr.prompt_limit), which keeps the rows it cuts to fit in `cut_prompts`.
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any

from rlvr.batch import Sample
from rlvr.errors import DataError
from rlvr.tasks.base import TASKS, Task, check_index


@TASKS.register("dataset")
class DatasetTask(Task):
    """Rows of a local JSONL / JSON / CSV / Parquet file or save_to_disk folder."""

    def __init__(
        self,
        *,
        path: str | None = None,
        rows: Any = None,
        prompt_field: str = "prompt",
        answer_field: str = "answer",
        system_prompt: str | None = None,
        split: str = "train",
        size: int | None = None,
        scorer: str = "math",
        scorer_kwargs: dict[str, Any] | None = None,
        task_name: str = "dataset",
        image_field: str | None = None,
        video_field: str | None = None,
        video_frames: int = 48,
        reference: str = "boxed",
    ):
        from rlvr.rewards import REWARDS  # lazy: rewards never import tasks, but keep the edge one-way at runtime

        if (path is None) == (rows is None):
            raise ValueError("dataset: give exactly one of path (a local file or folder) and rows (from Python)")
        self.path, self.name = ("<rows>" if path is None else str(path)), task_name
        self.prompt_field, self.answer_field, self.system_prompt = prompt_field, answer_field, system_prompt
        self.image_field = image_field
        self.video_field, self.video_frames = video_field, video_frames
        if reference not in ("boxed", "plain"):
            raise ValueError(f"dataset: reference must be 'boxed' or 'plain', got {reference!r}")
        self.reference_format = reference
        self._image_root = os.getcwd() if path is None else os.path.dirname(os.path.abspath(path))
        self._rows = load_rows(self.path, split=split) if path is not None else _in_memory(rows)
        available = len(self._rows)
        if size is not None and (not isinstance(size, int) or not 1 <= size <= available):
            raise ValueError(f"dataset {self.path!r}: size must be an integer in [1, {available}] (rows), got {size!r}")
        self.size = available if size is None else size
        self.cut_prompts: dict[int, str | list[dict[str, Any]]] = {}  # row -> its prompt cut to fit the model
        if self.size == 0:
            raise ValueError(f"dataset {self.path!r} (split {split!r}) has no rows")
        lazy = not isinstance(self._rows, list)
        for i in range(1 if lazy else self.size):  # lazy (memory-mapped) sources: columns here, nulls below
            self._check(self._rows[i], i)
            self._check_images(self._rows[i], i, files=not lazy)
            self._check_video(self._rows[i], i)
        if lazy:
            self._check_nulls()
        self._scorer = REWARDS.build(scorer, **(scorer_kwargs or {}))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> Sample:
        i = check_index(i, self.size, self.name)
        row = self._rows[i]
        self._check(row, i)
        prompt = self.cut_prompts[i] if i in self.cut_prompts else self.as_prompt(row[self.prompt_field])
        fields = (self.prompt_field, self.answer_field, self.image_field)
        meta = {k: v for k, v in row.items() if k not in fields}
        images, names = self._images(row, i)
        videos, video_names = self._videos(row, i)
        return Sample(prompt=prompt, answer=row[self.answer_field], task=self.name, index=i, meta=meta,
                      images=images, image_names=names, videos=videos, video_names=video_names)

    def _video_path(self, row: dict[str, Any]) -> str | None:
        return ref_path(row.get(self.video_field), root=self._image_root) if self.video_field else None

    def _check_video(self, row: dict[str, Any], i: int) -> None:
        if self.video_field is not None and (path := self._video_path(row)) is not None and not os.path.isfile(path):
            raise ValueError(f"dataset {self.path!r}, row {i + 1}, field {self.video_field!r}: video file {path!r} "
                             "not found")

    def _videos(self, row: dict[str, Any], i: int) -> tuple[list[Any], list[str]]:
        """The row's video: `video_frames` frames sampled from its central 90% (rlvr.video.read_clip), or every frame
        when video_frames is 0 (items `rlvr data videossr` wrote: their answers are in the row's own `fps`)."""
        path = self._video_path(row)
        if path is None:
            return [], []
        from rlvr.video import Clip, read_clip, read_frames

        if self.video_frames == 0:
            frames, rate = read_frames(path)
            fps = float(row["fps"]) if isinstance(row.get("fps"), (int, float)) else rate
            return [Clip(path, frames, list(range(len(frames))), fps, rate, len(frames))], [path]
        clip = read_clip(path, count=self.video_frames)  # an unreadable file: a VideoError naming it
        if clip is None:
            raise DataError(f"dataset {self.path!r}, row {i + 1}, field {self.video_field!r}: video {path!r} has "
                            f"fewer than the {self.video_frames} frames to sample")
        return [clip], [path]

    def score(self, sample: Sample, text: str) -> float:
        value = self._scorer([sample], [text])[0]
        return 0.0 if value is None else float(value)

    def reference(self, sample: Sample) -> str:
        return f"\\boxed{{{sample.answer}}}" if self.reference_format == "boxed" else str(sample.answer)

    def prompt(self, i: int) -> str | list[dict[str, Any]]:
        """Row i's prompt as its sample carries it (system prompt added, cut when it was cut to fit), without
        decoding the row's images or video."""
        if i in self.cut_prompts:
            return self.cut_prompts[i]
        row = self._rows[i]
        self._check(row, i)
        return self.as_prompt(row[self.prompt_field])

    def prompt_bytes(self) -> list[int | None]:
        """UTF-8 bytes of each row's prompt field, None where it is chat messages: a bound on its tokens that
        reads an Arrow string column (a save_to_disk folder) without decoding its rows."""
        if isinstance(self._rows, list):
            return [None if isinstance(r[self.prompt_field], list) else _utf8_len(r[self.prompt_field])
                    for r in self._rows[: self.size]]
        import pyarrow as pa
        import pyarrow.compute as pc

        column = self._rows.with_format("arrow")[self.prompt_field].slice(0, self.size)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            return pc.binary_length(column).to_pylist()  # a null: None, so the row is read (and refused) later
        return [None] * self.size

    def as_prompt(self, prompt: Any) -> str | list[dict[str, Any]]:
        """A row's prompt field as the sample's prompt: the text, or chat messages with the system prompt first."""
        if isinstance(prompt, list):  # already chat messages
            has_system = bool(prompt) and prompt[0].get("role") == "system"
            if self.system_prompt is None or has_system:
                return prompt
            return [{"role": "system", "content": self.system_prompt}, *prompt]
        if self.system_prompt is None:
            return str(prompt)
        return [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": str(prompt)}]

    def _images(self, row: dict[str, Any], i: int) -> tuple[list[Any], list[str]]:
        """The row's images decoded to RGB, and their names; an unreadable one fails naming file, row and field."""
        if self.image_field is None:
            return [], []
        refs = image_refs(row.get(self.image_field))
        images, names = [], []
        for k, ref in enumerate(refs):
            name = image_name(ref, self.path, i, root=self._image_root)
            try:
                images.append(open_image(ref, root=self._image_root))
            except (OSError, ValueError, SyntaxError, EOFError) as exc:  # PIL's ways of saying "not an image"
                raise DataError(f"dataset {self.path!r}, row {i + 1}, field {self.image_field!r}: cannot read image "
                                 f"{name!r} ({exc})") from exc
            names.append(f"{name}#{k}" if len(refs) > 1 else name)
        return images, names

    def _check_images(self, row: dict[str, Any], i: int, *, files: bool) -> None:
        """The image column exists; with `files`, each image it references by path exists too."""
        if self.image_field is None:
            return
        where = f"dataset {self.path!r}, row {i + 1}, field {self.image_field!r}"
        if self.image_field not in row:
            raise ValueError(f"{where}: missing (the row has {sorted(row)}); set image_field to the image column")
        for ref in image_refs(row[self.image_field]):
            if not is_image_ref(ref):
                raise ValueError(f"{where}: expected an image path, bytes, a {{'bytes', 'path'}} dict or a PIL image, "
                                 f"got {type(ref).__name__}")
            path = ref_path(ref, root=self._image_root)
            if files and path is not None and not os.path.isfile(path):
                raise ValueError(f"{where}: image file {path!r} not found")

    def _check_nulls(self) -> None:
        """Find a null prompt/answer in a `datasets.Dataset` from its Arrow columns, without reading every row."""
        import pyarrow.compute as pc

        if self._rows._indices is not None:  # a filtered/shuffled view: row i is not Arrow row i; checked on read
            return
        for field in (self.prompt_field, self.answer_field):
            column = self._rows.data.column(field)
            if column.null_count:
                i = pc.index(pc.is_null(column), True).as_py()
                self._check(self._rows[i], i)

    def _check(self, row: dict[str, Any], i: int) -> None:
        for field in (self.prompt_field, self.answer_field):
            if row.get(field) is None or row.get(field) == "":
                raise DataError(
                    f"dataset {self.path!r}, row {i + 1}: missing field {field!r} (the row has {sorted(row)}); "
                    f"set prompt_field / answer_field to the right column names"
                )
        prompt = row[self.prompt_field]
        if isinstance(prompt, list) and not all(isinstance(m, dict) and "content" in m for m in prompt):
            raise DataError(f"dataset {self.path!r}, row {i + 1}, field {self.prompt_field!r}: a list prompt must be "
                            "chat messages ({role, content} objects); write the prompt as text or as messages")


def image_refs(value: Any) -> list[Any]:
    """A row's image field as a list of references (null = no image)."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def is_image_ref(ref: Any) -> bool:
    """Whether `ref` is a path, bytes, a {"bytes", "path"} dict or a PIL image."""
    if isinstance(ref, dict):
        return bool(ref.get("bytes")) or isinstance(ref.get("path"), str)
    return isinstance(ref, (str, os.PathLike, bytes, bytearray, memoryview)) or _is_pil(ref)


def ref_path(ref: Any, *, root: str) -> str | None:
    """The file `ref` must be read from (relative paths joined to `root`), or None when it carries its pixels."""
    if isinstance(ref, dict):
        ref = None if ref.get("bytes") else ref.get("path")
    if isinstance(ref, (str, os.PathLike)):
        return os.path.join(root, os.fspath(ref))  # an absolute path stays as it is
    return None


def open_image(ref: Any, *, root: str):
    """`ref` decoded to an RGB PIL image (bytes through io.BytesIO, paths from disk)."""
    from PIL import Image  # lazy: text-only datasets never load PIL

    if _is_pil(ref):
        return ref.convert("RGB")
    data = ref.get("bytes") if isinstance(ref, dict) else ref
    source = io.BytesIO(bytes(data)) if isinstance(data, (bytes, bytearray, memoryview)) else ref_path(ref, root=root)
    if source is None:
        raise ValueError(f"not an image reference: {type(ref).__name__}")
    with Image.open(source) as image:
        return image.convert("RGB")


def image_name(ref: Any, path: str, i: int, *, root: str) -> str:
    """The file an image came from, else "{data file}#row{n}" (bytes, or a PIL image without a filename)."""
    file = ref_path(ref, root=root)
    if file is None and isinstance(ref, dict) and isinstance(ref.get("path"), str):
        file = ref["path"]  # bytes with their original file name (a datasets Image column)
    if file is None and _is_pil(ref):
        file = getattr(ref, "filename", "") or None
    return file or f"{path}#row{i + 1}"


def _is_pil(ref: Any) -> bool:
    from PIL import Image

    return isinstance(ref, Image.Image)


def load_rows(path: str, *, split: str = "train"):
    """A list of dict rows (files) or a `datasets.Dataset` (save_to_disk folders); indexable either way."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"dataset file or folder {path!r} not found (relative to {os.getcwd()})")
    if os.path.isdir(path):
        return _load_saved_dataset(path, split)
    ext = os.path.splitext(path)[1].lower()
    readers = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}
    if ext not in readers:
        raise ValueError(f"dataset {path!r}: unsupported extension {ext!r}; use one of {sorted(readers)} or a folder")
    return readers[ext](path, split)


def _read_jsonl(path: str, split: str) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"dataset {path!r}, line {line_no}: invalid JSON ({exc.msg})") from exc
            except RecursionError as exc:  # json's C parser recurses once per nesting level
                raise DataError(f"dataset {path!r}, row {len(rows) + 1} (line {line_no}): JSON nested too deep to "
                                "parse; flatten the row") from exc
            rows.append(_as_row(row, path, len(rows) + 1))
    return rows


def _read_json(path: str, split: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except RecursionError as exc:  # one document: no row to name; JSONL names it
            raise DataError(f"dataset {path!r}: JSON nested too deep to parse; flatten its rows (or write them as "
                            "JSONL to find the row)") from exc
    if isinstance(data, dict):
        if split not in data:
            raise ValueError(f"dataset {path!r} is a dict without split {split!r}; its keys are {sorted(data)}")
        data = data[split]
    if not isinstance(data, list):
        raise ValueError(f"dataset {path!r} must hold a list of rows (or {{split: [rows]}}), got {type(data).__name__}")
    return [_as_row(row, path, i + 1) for i, row in enumerate(data)]


CSV_FIELD_LIMIT = 2**31 - 1  # csv refuses fields over 131,072 chars by default; long prompts are rlvr.prompt_limit's


def _read_csv(path: str, split: str) -> list[dict[str, Any]]:
    default = csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return [dict(row) for row in csv.DictReader(f)]
    finally:
        csv.field_size_limit(default)


def _read_parquet(path: str, split: str) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def _load_saved_dataset(path: str, split: str):
    try:
        import datasets
    except ImportError as exc:
        raise ImportError("reading a save_to_disk folder needs the 'datasets' package: pip install datasets") from exc
    try:
        data = datasets.load_from_disk(path)
    except FileNotFoundError as exc:
        raise ValueError(f"dataset folder {path!r} was not written by datasets' save_to_disk: {exc}") from exc
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise ValueError(f"dataset folder {path!r} has no split {split!r}; splits: {sorted(data)}")
        data = data[split]
    return data


def _in_memory(rows: Any):
    """A list of dict rows or a `datasets.Dataset`, as given from Python."""
    if isinstance(rows, (list, tuple)):
        return [_as_row(row, "<rows>", i + 1) for i, row in enumerate(rows)]
    if hasattr(rows, "column_names") and hasattr(rows, "__getitem__"):  # a datasets.Dataset
        return rows
    raise ValueError(f"dataset: rows must be a list of dicts or a datasets.Dataset, got {type(rows).__name__}")


def _utf8_len(value: Any) -> int:
    return len(str(value).encode("utf-8", "surrogatepass"))


def _as_row(row: Any, path: str, row_no: int) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise ValueError(f"dataset {path!r}, row {row_no}: expected a JSON object, got {type(row).__name__}")
    return row
