"""FrameThinker's frame-selection environment (arXiv 2509.24304) and a procedural long-video question task for it.

    task = TASKS.build("frame_quest", seed=0)   # a square changes colour in a short hidden segment of 200 frames
    env = ENVS.build("frame_select", n=8)        # reset: 8 uniform frames; then choose / time / answer actions

1. `frame_select`: reset shows `initial` frames (default n) at linspace(0, N − 1) as lines `frame {i}: <image>`;
   each turn ends at `</action>` and goes through rlvr.rewards.framethinker.transition: a choose shows the n frames
   between its two indices, a time query answers with a frame number, an answer or an invalid action ends the
   episode. Observations are escaped so they never open a <think> or <action> block. Frames used = n per look.
2. `frame_quest`: N frames (default 200, 8 fps) of a square on a plain background; inside one hidden segment of
   10-20 frames it turns another colour. Question: which colour it turned, four lettered options; half the items
   also say when ("around M:SS", which the time query can use). Answer: the letter. The task scores a transcript
   with the FrameThinker reward's gates: 1.0 when it passes them with the right letter; `reference_turns` is a
   scripted search (choose the segment's frames, the reply showing them, then answer) that `rlvr sft` warm-starts on.
"""

from __future__ import annotations

import random
from typing import Any

from rlvr.batch import Sample
from rlvr.envs.base import ENVS, Observation
from rlvr.rewards.framethinker import escape, judge, transition
from rlvr.tasks.base import TASKS, ProceduralTask

COLOURS = {"red": (220, 40, 40), "blue": (40, 80, 220), "green": (30, 150, 50), "yellow": (230, 190, 0)}
LETTERS = "ABCD"


@ENVS.register("frame_select")
class FrameSelect:
    """FrameThinker's environment over the frames in sample.meta["frames"] (PIL) at sample.meta["fps"]."""

    stop = ("</action>",)

    def __init__(self, *, n: int = 8, initial: int | None = None):
        if n < 2:
            raise ValueError(f"frame_select: n (frames per request) must be >= 2, got {n}")
        self.n, self.initial = n, initial or n
        self.frames: list[Any] = []
        self.fps = 1.0
        self.frames_used, self.looks, self.time_queries, self.invalid = 0, 0, 0, 0

    def reset(self, sample: Sample) -> Observation:
        frames = sample.meta.get("frames")
        if not frames:
            raise ValueError(f"frame_select: sample {sample.task} item {sample.index} has no meta['frames']")
        self.frames, self.fps = frames, float(sample.meta.get("fps", 1.0))
        last = len(frames) - 1
        shown = sorted({round(last * i / (self.initial - 1)) for i in range(self.initial)})
        return self._show(shown)

    def _show(self, indices: list[int]) -> Observation:
        self.frames_used += len(indices)
        text = "".join(f"\nframe {i}: <image>" for i in indices) + "\n"
        return Observation(text, [self.frames[i] for i in indices])

    def step(self, turn: str) -> tuple[str | Observation | None, float, bool]:
        step = transition(turn, frames=len(self.frames), fps=self.fps, n=self.n)
        self.invalid += step.kind == "invalid"
        if step.done:
            return None, 0.0, True
        if step.kind == "choose":
            self.looks += 1
            return self._show(step.frames), 0.0, False
        self.time_queries += 1
        return "\n" + escape(step.observation) + "\n", 0.0, False

    def metrics(self) -> dict[str, float]:
        """Per episode (logged as env/<key> means): frames shown, choose and time actions, ended by an invalid one."""
        return {"frames_used": self.frames_used, "looks": self.looks, "time_queries": self.time_queries,
                "invalid_action": self.invalid}


@TASKS.register("frame_quest")
class FrameQuest(ProceduralTask):
    """Which colour did the square turn? The change hides in a short segment of a long procedural video."""

    name = "frame_quest"

    def __init__(self, *, seed: int = 0, size: int = 10_000, holdout: str | None = None, frames: int = 200,
                 fps: float = 8.0, image_size: int = 56, n: int = 8):
        super().__init__(seed=seed, size=size, holdout=holdout)
        if frames < 4 * n or image_size < 28:
            raise ValueError(f"frame_quest: need frames >= 4 n ({4 * n}) and image_size >= 28, got {frames}, "
                             f"{image_size}")
        self.frames, self.fps, self.image_size, self.n = frames, fps, image_size, n
        self.side = image_size // 3  # the square: a third of the frame, at mid height

    def generate(self, rng: random.Random, index: int) -> Sample:
        names = list(COLOURS)
        base, new = rng.sample(names, 2)
        length = rng.randint(10, 20)
        start = rng.randint(1, self.frames - length - 1)
        timed = rng.random() < 0.5
        when = start / self.fps
        hint = f" around {int(when // 60)}:{int(when % 60):02d}" if timed else ""
        options = " ".join(f"{LETTERS[k]}) {c}" for k, c in enumerate(names))
        prompt = f"What colour did the square turn{hint}? {options}"
        meta = {"base": base, "new": new, "start": start, "length": length, "fps": self.fps, "timed": timed,
                "total_frames": self.frames, "x": rng.randint(2, self.image_size - self.side - 2)}
        return Sample(prompt=prompt, answer=LETTERS[names.index(new)], task=self.name, index=index, meta=meta)

    def holdout_key(self, sample: Sample) -> str:
        m = sample.meta
        return f"{m['base']}|{m['new']}|{m['start']}|{m['length']}|{m['x']}|{m['timed']}"

    def __getitem__(self, i: int) -> Sample:
        from PIL import Image, ImageDraw

        sample = super().__getitem__(i)
        m, size = sample.meta, self.image_size
        frames = []
        for t in range(self.frames):
            image = Image.new("RGB", (size, size), (245, 245, 245))
            colour = m["new"] if m["start"] <= t < m["start"] + m["length"] else m["base"]
            top = (size - self.side) // 2
            ImageDraw.Draw(image).rectangle([m["x"], top, m["x"] + self.side, top + self.side], fill=COLOURS[colour])
            frames.append(image)
        sample.meta = {**m, "frames": frames}
        return sample

    def score(self, sample: Sample, text: str) -> float:
        return 1.0 if judge(text, sample.answer, question=str(sample.prompt), frames=self.frames,
                            span_n=self.n).correct else 0.0

    def reference_turns(self, sample: Sample) -> list[tuple[str | Observation, bool]]:
        """The scripted search as the rollout sees it: the environment's first look, the look (trained), the reply
        with its frames, the answer (trained); replies attended, never trained. What `rlvr sft` warm-starts on. The
        script knows where the segment is, which the first look often does not show: a policy can learn the format
        and the answer from the frames it asked for, not yet the search."""
        look, shown, answer = self._script(sample)
        reply = "".join(f"\nframe {i}: <image>" for i in shown) + "\n"
        frames = sample.meta["frames"]
        first = FrameSelect(n=self.n).reset(sample)  # the environment's first look comes before the first turn
        return [(first, False), (look, True),
                (Observation(reply, [frames[i] for i in shown]), False), (answer, True)]

    def _script(self, sample: Sample) -> tuple[str, list[int], str]:
        """(the look turn, the frames it is shown, the answer turn) of the scripted search."""
        m = sample.meta
        a, b = max(0, m["start"] - 2), min(self.frames, m["start"] + m["length"] + 2)
        b = max(b, a + self.n + 1)
        look = f"<think>the change is between {a} and {b}</think><action>choose frames between {a} and {b}</action>"
        shown = transition(look, frames=self.frames, fps=self.fps, n=self.n).frames
        return look, shown, f"<think>it turned {m['new']}</think><action>output answer: {sample.answer}</action>"

    def reference(self, sample: Sample) -> str:
        """The scripted search as its transcript reads (the environment's reply included, as the reward sees it:
        image tokens are not text)."""
        look, shown, answer = self._script(sample)
        return look + "".join(f"\nframe {i}: " for i in shown) + "\n" + answer
