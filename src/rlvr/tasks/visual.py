"""visual: seeded image tasks with verifiers, for vision-language RL: counting, colour and position, relative size,
reading digits, bar charts and the odd one out.

Every task is a ProceduralTask (base.py): item i comes from `random.Random(seed + i)`.

1. `generate` draws a scene spec (grid cells, shapes, colour names, sizes in pixels) and keeps it in sample.meta with
   the `evidence` phrase; the image is a pure function of that spec and `image_size`, so a seed fixes its bytes.
2. `__getitem__` renders the spec with PIL: RGB, white background, `image_size` px square (56 by default: a 4x4 grid
   of 14-px patches, and every object spans about one patch or more). sample.images = [image] and
   sample.image_names = ["{task}/{holdout or 'all'}/{index}#0"].
3. Prompts are short ASCII text ("how many shapes?") for character-level tokenizers.
4. reference = "{evidence}. answer: {answer}", the evidence read off the image first ("2 red 1 blue. answer: 3").
   score = 1.0 when the text after the last "answer:" on the first line (first 200 characters), stripped and
   lowercased, equals sample.answer; anything else, garbage included, is 0.0.
5. Prompts repeat across items, so `holdout_key` hashes the scene spec instead (the fields that draw the image,
   not the question): train and eval items never share an image.

Options of every task: seed, size, holdout, difficulty (1..3: more objects, more colours, smaller gaps),
image_size (>= 28 px) and scratch (default 0, off): with scratch = n the reference starts with n random lowercase
letters and ". " ("qhxk.... 2 red 1 blue. answer: 3"), image-independent high-entropy text drawn per item from the
named stream "scratch" (rlvr.seeding), so that most completion tokens do not read the image (issue 21, the VPPO
experiment: benchmarks/vppo_snr.py). The scene, the answer, the score and the train / eval split do not change.
"""

from __future__ import annotations

import json
import random
import string
from typing import Any

from rlvr.batch import Sample
from rlvr.seeding import stream_seed
from rlvr.tasks.base import TASKS, ProceduralTask, first_line
from rlvr.tasks.gym.common import check_int

MAX_DIFFICULTY = 3
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 28, 1024  # 28 px = two 14-px patches a side; smaller objects vanish
MAX_SCRATCH = 500  # scratch letters before the evidence; the verifier reads SCORE_LIMIT characters
SCORE_LIMIT = 200  # bounded: the verifier reads at most this many characters of a completion
ANSWER_TAG = "answer:"
BACKGROUND, INK = (255, 255, 255), (20, 20, 20)
# ordered: a difficulty takes a prefix of the palette, and evidence lists colours in this order
PALETTE = {
    "red": (220, 40, 40),
    "blue": (40, 80, 220),
    "green": (30, 150, 50),
    "yellow": (230, 190, 0),
    "purple": (140, 50, 170),
    "orange": (245, 130, 20),
}
SHAPES = ("circle", "square", "triangle")
# a hand-made 3x5 pixel font (rows top to bottom): the same bytes under every Pillow version, legible at scale 2
GLYPHS = {
    char: rows.split()
    for char, rows in {
        "0": "111 101 101 101 111", "1": "010 110 010 010 111", "2": "111 001 111 100 111",
        "3": "111 001 111 001 111", "4": "101 101 111 001 001", "5": "111 100 111 001 111",
        "6": "111 100 111 101 111", "7": "111 001 001 001 001", "8": "111 101 111 101 111",
        "9": "111 101 111 001 111", "a": "010 101 111 101 101", "b": "110 101 110 101 110",
        "c": "011 100 100 100 011", "d": "110 101 101 101 110", "e": "111 100 110 100 111",
    }.items()
}


class VisualTask(ProceduralTask):
    """A ProceduralTask whose items ask one question about one rendered scene; subclasses define
    `generate` (the scene spec, via `make`) and `draw` (the spec onto a canvas)."""

    question_fields: tuple[str, ...] = ()  # meta keys that choose the question rather than the picture

    def __init__(
        self, *, seed: int = 0, size: int = 10_000, holdout: str | None = None, difficulty: int = 1,
        image_size: int = 56, scratch: int = 0,
    ):
        super().__init__(seed=seed, size=size, holdout=holdout)
        self.difficulty = check_int(self.name, "difficulty", difficulty, 1, MAX_DIFFICULTY)
        self.image_size = check_int(self.name, "image_size", image_size, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
        self.scratch = check_int(self.name, "scratch", scratch, 0, MAX_SCRATCH)

    def __getitem__(self, i: int) -> Sample:
        sample = super().__getitem__(i)  # the holdout loop draws specs only; render the one kept
        image, canvas = new_canvas(self.image_size)
        self.draw(canvas, sample.meta)
        sample.images = [image]
        sample.image_names = [f"{self.name}/{self.holdout or 'all'}/{sample.index}#0"]
        return sample

    def holdout_key(self, sample: Sample) -> str:
        """The spec that draws the image, without the question asked of it: train and eval share no image."""
        scene = {k: v for k, v in sample.meta.items() if k not in ("evidence", *self.question_fields)}
        return json.dumps(scene, sort_keys=True)

    def make(self, index: int, prompt: str, answer: Any, evidence: str, **scene) -> Sample:
        meta = {**scene, "evidence": evidence}
        return Sample(prompt=prompt, answer=str(answer), task=self.name, index=index, meta=meta)

    def score(self, sample: Sample, text: str) -> float:
        return score_answer(text, sample.answer)

    def reference(self, sample: Sample) -> str:
        body = f"{sample.meta['evidence']}. {ANSWER_TAG} {sample.answer}"
        return f"{self.scratch_text(sample.index)}. {body}" if self.scratch else body

    def scratch_text(self, index: int) -> str:
        """`scratch` random lowercase letters for item `index`: a pure function of (seed, index), never of the image."""
        rng = random.Random(stream_seed(self.seed, "scratch", index))
        return "".join(rng.choice(string.ascii_lowercase) for _ in range(self.scratch))

    def draw(self, canvas, scene: dict[str, Any]) -> None:
        raise NotImplementedError


@TASKS.register("count_shapes")
class CountShapes(VisualTask):
    """"how many shapes?": 1..max shapes in distinct cells of a grid; evidence counts them per colour."""

    name = "count_shapes"
    levels = {1: (3, 3, 2), 2: (3, 5, 3), 3: (4, 8, 4)}  # difficulty -> (grid side, max count, colours)

    def generate(self, rng: random.Random, index: int) -> Sample:
        side, most, n_colours = self.levels[self.difficulty]
        colours = list(PALETTE)[:n_colours]
        cells = sorted(rng.sample(range(side * side), rng.randint(1, most)))
        objects = [[cell // side, cell % side, rng.choice(SHAPES), rng.choice(colours)] for cell in cells]
        counts = [(sum(obj[3] == colour for obj in objects), colour) for colour in colours]
        evidence = " ".join(f"{n} {colour}" for n, colour in counts if n)
        return self.make(index, "how many shapes?", len(objects), evidence, grid=side, objects=objects)

    def draw(self, canvas, scene: dict[str, Any]) -> None:
        side = scene["grid"]
        for row, col, shape, colour in scene["objects"]:
            centre = cell_centre(self.image_size, side, row, col)
            draw_shape(canvas, shape, colour, *centre, round(0.7 * self.image_size / side))


@TASKS.register("object_attribute")
class ObjectAttribute(VisualTask):
    """"what colour is the shape?" / "where is the shape?" (left, right, top, bottom) about one object.
    `ask="both"` mixes the two questions (drawn per item); the scene is the same whichever is asked."""

    name = "object_attribute"
    levels = {1: (3, 0.3, 0.4), 2: (4, 0.25, 0.35), 3: (6, 0.2, 0.3)}  # -> (colours, min, max diameter / size)
    positions = ("left", "right", "top", "bottom")

    def __init__(
        self, *, seed: int = 0, size: int = 10_000, holdout: str | None = None, difficulty: int = 1,
        image_size: int = 56, scratch: int = 0, ask: str = "both",
    ):
        super().__init__(seed=seed, size=size, holdout=holdout, difficulty=difficulty, image_size=image_size,
                         scratch=scratch)
        self.ask = check_option(self.name, "ask", ask, ("colour", "position", "both"))

    def generate(self, rng: random.Random, index: int) -> Sample:
        n_colours, low, high = self.levels[self.difficulty]
        s = self.image_size
        question = rng.choice(("colour", "position")) if self.ask == "both" else self.ask
        colour, shape = rng.choice(list(PALETTE)[:n_colours]), rng.choice(SHAPES)
        position = rng.choice(self.positions)
        d = rng.randint(round(low * s), round(high * s))
        near = rng.randint(d // 2 + 1, int(0.3 * s))  # centre's distance from its edge
        along = rng.randint(round(0.4 * s), round(0.6 * s))  # and along that edge, near the middle
        x, y = {"left": (near, along), "right": (s - 1 - near, along), "top": (along, near),
                "bottom": (along, s - 1 - near)}[position]
        prompt = "what colour is the shape?" if question == "colour" else "where is the shape?"
        answer = colour if question == "colour" else position
        return self.make(index, prompt, answer, f"{colour} {shape}", shape=shape, colour=colour, position=position,
                         x=x, y=y, d=d)

    def draw(self, canvas, scene: dict[str, Any]) -> None:
        draw_shape(canvas, scene["shape"], scene["colour"], scene["x"], scene["y"], scene["d"])


@TASKS.register("larger_shape")
class LargerShape(VisualTask):
    """"which shape is larger?" (left or right): two shapes of one kind; evidence gives both diameters in px."""

    name = "larger_shape"
    levels = {1: (1.6, 2.0), 2: (1.3, 1.6), 3: (1.12, 1.3)}  # difficulty -> range of larger / smaller diameter

    def generate(self, rng: random.Random, index: int) -> Sample:
        s, half = self.image_size, self.image_size // 2
        big = rng.randint(round(0.7 * half), round(0.95 * half))
        small = min(big - 1, round(big / rng.uniform(*self.levels[self.difficulty])))
        larger = rng.choice(("left", "right"))
        sizes = [big, small] if larger == "left" else [small, big]
        shape = rng.choice(("circle", "square"))  # not triangles: their extent and area disagree
        colours = [rng.choice(list(PALETTE)) for _ in sizes]
        ys = [rng.randint(d // 2, s - d + d // 2) for d in sizes]
        evidence = f"{sizes[0]} vs {sizes[1]}"
        return self.make(index, "which shape is larger?", larger, evidence, shape=shape, sizes=sizes, ys=ys,
                         colours=colours)

    def draw(self, canvas, scene: dict[str, Any]) -> None:
        half = self.image_size // 2
        for k, (d, y, colour) in enumerate(zip(scene["sizes"], scene["ys"], scene["colours"])):
            draw_shape(canvas, scene["shape"], colour, k * half + half // 2, y, d)


@TASKS.register("digit_grid")
class DigitGrid(VisualTask):
    """"digit at row r col c?" (1-based) in a grid of pixel-font digits; evidence reads that row."""

    name = "digit_grid"
    levels = {1: 2, 2: 3, 3: 4}  # difficulty -> grid side
    question_fields = ("row", "col")

    def generate(self, rng: random.Random, index: int) -> Sample:
        side = self.levels[self.difficulty]
        grid = [[rng.randint(0, 9) for _ in range(side)] for _ in range(side)]
        row, col = rng.randint(1, side), rng.randint(1, side)
        evidence = f"row {row}: " + " ".join(map(str, grid[row - 1]))
        return self.make(index, f"digit at row {row} col {col}?", grid[row - 1][col - 1], evidence,
                         grid=grid, row=row, col=col)

    def draw(self, canvas, scene: dict[str, Any]) -> None:
        side = len(scene["grid"])
        scale = max(1, int(0.75 * self.image_size / side) // 5)  # glyph 5 rows tall, ~3/4 of a cell
        for row, digits in enumerate(scene["grid"]):
            for col, digit in enumerate(digits):
                draw_glyph(canvas, str(digit), *cell_centre(self.image_size, side, row, col), scale)


@TASKS.register("bar_chart")
class BarChart(VisualTask):
    """"which bar is largest?": bars labelled 1..n (labels="number") or a..e (labels="letter") under the axis;
    evidence lists the heights in ninths of the chart height."""

    name = "bar_chart"
    levels = {1: (3, 3), 2: (4, 2), 3: (5, 1)}  # difficulty -> (bars, least gap of the largest over the next)

    def __init__(
        self, *, seed: int = 0, size: int = 10_000, holdout: str | None = None, difficulty: int = 1,
        image_size: int = 56, scratch: int = 0, labels: str = "number",
    ):
        super().__init__(seed=seed, size=size, holdout=holdout, difficulty=difficulty, image_size=image_size,
                         scratch=scratch)
        self.labels = check_option(self.name, "labels", labels, ("number", "letter"))

    def generate(self, rng: random.Random, index: int) -> Sample:
        n, gap = self.levels[self.difficulty]
        top = rng.randint(1 + gap, 9)
        heights = [rng.randint(1, top - gap) for _ in range(n - 1)]
        largest = rng.randrange(n)
        heights.insert(largest, top)
        colour = rng.choice(list(PALETTE))
        return self.make(index, "which bar is largest?", self.label(largest), " ".join(map(str, heights)),
                         heights=heights, colour=colour, labels=self.labels)

    def label(self, k: int) -> str:
        return str(k + 1) if self.labels == "number" else "abcde"[k]

    def draw(self, canvas, scene: dict[str, Any]) -> None:
        s, heights = self.image_size, scene["heights"]
        scale = max(1, s // 28)
        base = s - (5 * scale + 4)  # bars stand on this row; the labels sit in the strip below it
        unit, slot = (base - 2) / 9, s / len(heights)
        for k, h in enumerate(heights):
            x0, x1 = round((k + 0.2) * slot), round((k + 0.8) * slot) - 1
            canvas.rectangle([x0, base - round(h * unit), x1, base - 1], fill=PALETTE[scene["colour"]])
            draw_glyph(canvas, self.label(k), round((k + 0.5) * slot), base + 2 + (5 * scale) // 2, scale)
        canvas.line([0, base, s - 1, base], fill=INK)


@TASKS.register("odd_one_out")
class OddOneOut(VisualTask):
    """"odd one out, 1-n?": a grid of identical shapes but one, which differs in colour or in shape; the answer is
    its cell number in reading order (1 = top left); evidence names the odd object."""

    name = "odd_one_out"
    levels = {1: 2, 2: 3, 3: 4}  # difficulty -> grid side

    def generate(self, rng: random.Random, index: int) -> Sample:
        side = self.levels[self.difficulty]
        shape, colour = rng.choice(SHAPES), rng.choice(list(PALETTE))
        odd_shape, odd_colour = shape, colour
        if rng.choice(("colour", "shape")) == "colour":
            odd_colour = rng.choice([c for c in PALETTE if c != colour])
        else:
            odd_shape = rng.choice([k for k in SHAPES if k != shape])
        odd = rng.randint(1, side * side)
        cell = self.image_size / side
        d = rng.randint(round(0.55 * cell), round(0.75 * cell))  # one size for all: only colour or shape tells
        return self.make(index, f"odd one out, 1-{side * side}?", odd, f"{odd_colour} {odd_shape}", grid=side,
                         shape=shape, colour=colour, odd=odd, odd_shape=odd_shape, odd_colour=odd_colour, d=d)

    def draw(self, canvas, scene: dict[str, Any]) -> None:
        side = scene["grid"]
        for cell in range(side * side):
            odd = cell + 1 == scene["odd"]
            shape = scene["odd_shape"] if odd else scene["shape"]
            colour = scene["odd_colour"] if odd else scene["colour"]
            centre = cell_centre(self.image_size, side, cell // side, cell % side)
            draw_shape(canvas, shape, colour, *centre, scene["d"])


def score_answer(text: str, answer: str) -> float:
    """1.0 when the text after the last "answer:" on the first line, stripped and lowercased, is `answer`."""
    line = first_line(text, limit=SCORE_LIMIT).lower()
    cut = line.rfind(ANSWER_TAG)
    if cut < 0:
        return 0.0
    return float(line[cut + len(ANSWER_TAG):].strip() == str(answer).lower())


def check_option(task: str, option: str, value: Any, allowed: tuple[str, ...]) -> str:
    """`value` when it is one of `allowed`; else a ValueError naming `task` and `option`."""
    if value not in allowed:
        raise ValueError(f"{task}: {option} must be one of {list(allowed)}, got {value!r}")
    return value


def new_canvas(size: int):
    """A white RGB image `size` px square and a drawing handle on it."""
    from PIL import Image, ImageDraw  # lazy: text-only runs never load PIL

    image = Image.new("RGB", (size, size), BACKGROUND)
    return image, ImageDraw.Draw(image)


def cell_centre(size: int, side: int, row: int, col: int) -> tuple[int, int]:
    """The pixel centre (x, y) of cell (row, col) in a `side` x `side` grid over a `size` px square."""
    return round((col + 0.5) * size / side), round((row + 0.5) * size / side)


def draw_shape(canvas, shape: str, colour: str, cx: int, cy: int, d: int) -> None:
    """A filled `shape` of extent `d` px (width and height) centred on (cx, cy)."""
    x0, y0 = cx - d // 2, cy - d // 2
    x1, y1 = x0 + d - 1, y0 + d - 1
    fill = PALETTE[colour]
    if shape == "circle":
        canvas.ellipse([x0, y0, x1, y1], fill=fill)
    elif shape == "square":
        canvas.rectangle([x0, y0, x1, y1], fill=fill)
    elif shape == "triangle":
        canvas.polygon([(cx, y0), (x0, y1), (x1, y1)], fill=fill)
    else:
        raise ValueError(f"visual: unknown shape {shape!r}; choose from {list(SHAPES)}")


def draw_glyph(canvas, char: str, cx: int, cy: int, scale: int, fill: tuple[int, int, int] = INK) -> None:
    """`char` in the 3x5 pixel font, each font pixel a `scale` x `scale` block, centred on (cx, cy)."""
    x0, y0 = cx - (3 * scale) // 2, cy - (5 * scale) // 2
    for r, bits in enumerate(GLYPHS[char]):
        for c, bit in enumerate(bits):
            if bit == "1":
                x, y = x0 + c * scale, y0 + r * scale
                canvas.rectangle([x, y, x + scale - 1, y + scale - 1], fill=fill)
