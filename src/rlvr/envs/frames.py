"""FrameThinker's frame-selection environment (arXiv 2509.24304) and a procedural long-video question task for it.

    task = TASKS.build("frame_quest", seed=0)   # a square changes colour in a short hidden segment of 128 frames
    env = ENVS.build("frame_select", n=8)        # reset: 8 uniform frames; then choose / time / answer actions

1. `frame_select`: reset shows `initial` frames (the sample's meta["initial"], else n) at int(linspace(0, N − 1)) (the
   reference code's first look, floored) as lines `frame {i}: <image>`; each turn ends at `</action>` and goes
   through rlvr.rewards.framethinker.transition (actions read at their start as the reference does; `strict`: whole): a
   choose shows the n frames between its two indices, a time query answers with a frame number, an answer or an
   invalid action ends the episode. Observations are escaped so they never open a <think> or <action> block. Frames
   used = the frames shown; `budget` caps them (a choose past it is told "no frames left" and shows nothing). Per
   episode it reports frames used, looks, time queries, invalid actions, refused looks, and which of the reward's
   consistency gates the transcript failed (`gate_<key>`, rlvr.rewards.framethinker.GATES) and whether it was right;
   when the sample says which frames show the answer (meta["evidence"], [start, stop)), whether one was shown
   (`saw_evidence`) and whether the episode was right with it shown (`correct_seen`): correct_seen / saw_evidence is
   how well the policy reads a frame it found, saw_evidence how well it searches. `observe="text"` (default
   "image") shows each frame as its caption (meta["captions"]) instead: `frame {i}: red`, no image, so a
   tiny model's search can be studied apart from its colour reading (issue 21).
2. `frame_quest`: N frames (default 128, 8 fps, 28 px) of a black square on a light background; inside one hidden
   segment of a few frames it turns a colour, and from the segment's start on the background stays grey, so any
   frame tells whether the change is still to come. Question: which colour it turned, four lettered options
   (`timed`: the share of questions that also say when, "around M:SS"). Answer: the letter. The first look shows
   the change only when one of its frames falls inside the segment; otherwise the segment lies between the last
   light frame and the first grey one, and one choose between those two shows it (the segment lengths default to
   the longest gap between the frames a choose returns, + 3, so that it always does). The task scores a transcript
   with the FrameThinker reward's gates (`strict` as the reward's). `reference_turns`: a rule-based agent that notes
   what each frame it was shown shows, then answers from the first look when it shows the change, else chooses the
   frames between the bracketing two and answers from those; with `script="answer"` it answers from the first look
   alone (the uniform-frames baseline: give it `initial` frames). `observe="text"`: items carry captions (the
   square's new colour, else the background: `light`, `red`, `grey`) instead of images, and the agent's episodes
   show them.
"""

from __future__ import annotations

import random
from typing import Any

from rlvr.batch import Sample
from rlvr.envs.base import ENVS, Observation
from rlvr.rewards.framethinker import GATES, choose_frames, escape, judge, linspace_int, question_text, transition
from rlvr.tasks.base import TASKS, ProceduralTask

COLOURS = {"red": (220, 40, 40), "blue": (40, 80, 220), "green": (30, 150, 50), "yellow": (230, 190, 0)}
BLACK, LIGHT, GREY = (20, 20, 20), (245, 245, 245), (150, 150, 150)
CODES = {"before": "L", "inside": "C", "after": "D"}  # what the agent writes for a frame: light, changed, dark
LETTERS = "ABCD"
OBSERVE = ("image", "text")  # what a shown frame is: its image, or its caption (issue 21's text observations)


def first_look(frames: int, initial: int) -> list[int]:
    """The frames the environment shows before the first turn: int(linspace(0, N − 1, initial)), distinct; floored as
    the reference code's np.linspace(0, N − 1, n, dtype=int) (128 frames, 8: 72, not 73 for 72.57)."""
    return sorted(set(linspace_int(0, frames - 1, initial)))


@ENVS.register("frame_select")
class FrameSelect:
    """FrameThinker's environment over the frames in sample.meta["frames"] (PIL) at sample.meta["fps"]."""

    stop = ("</action>",)

    def __init__(self, *, n: int = 8, initial: int | None = None, budget: int | None = None, span_n: int | None = None,
                 strict: bool = False, observe: str = "image"):
        if observe not in OBSERVE:
            raise ValueError(f"frame_select: observe must be one of {OBSERVE}, got {observe!r}")
        if n < 2:
            raise ValueError(f"frame_select: n (frames per request) must be >= 2, got {n}")
        if budget is not None and budget < (initial or n):
            raise ValueError(f"frame_select: budget ({budget} frames) is below the first look ({initial or n})")
        self.n, self.initial, self.budget, self.span_n = n, initial, budget, span_n or n
        self.strict = strict  # whole actions only (the reference code matches their start)
        self.observe = observe
        self.frames: list[Any] = []  # PIL images, or captions with observe="text"
        self.shown: set[int] = set()
        self.fps = 1.0
        self.sample: Sample | None = None
        self.transcript: list[str] = []  # the turns and the text of the replies, as the reward reads them
        self.frames_used, self.looks, self.time_queries, self.invalid, self.refused = 0, 0, 0, 0, 0

    def reset(self, sample: Sample) -> Observation:
        key = "frames" if self.observe == "image" else "captions"
        frames = sample.meta.get(key)
        if not frames:
            hint = ""
            if key == "captions":
                hint = " (build the task with observe='text' too)"
            elif "captions" in sample.meta:
                hint = " (its frames are captions: build the environment with observe='text')"
            raise ValueError(f"frame_select: sample {sample.task} item {sample.index} has no meta['{key}']{hint}")
        self.frames, self.fps, self.sample = frames, float(sample.meta.get("fps", 1.0)), sample
        initial = self.initial or int(sample.meta.get("initial", self.n))
        return self.show(first_look(len(frames), initial))

    def show(self, indices: list[int]) -> Observation:
        """The observation that shows frames `indices`: one line each, an image or (observe="text") a caption."""
        self.frames_used += len(indices)
        self.shown.update(indices)
        if self.observe == "text":
            return Observation("".join(f"\nframe {i}: {escape(str(self.frames[i]))}" for i in indices) + "\n")
        text = "".join(f"\nframe {i}: <image>" for i in indices) + "\n"
        return Observation(text, [self.frames[i] for i in indices])

    def step(self, turn: str) -> tuple[str | Observation | None, float, bool]:
        self.transcript.append(turn)
        step = transition(turn, frames=len(self.frames), fps=self.fps, n=self.n, strict=self.strict)
        self.invalid += step.kind == "invalid"
        if step.done:
            return None, 0.0, True
        if step.kind == "choose":
            self.looks += 1
            if self.budget is not None and self.frames_used + len(step.frames) > self.budget:
                self.refused += 1
                reply = f"\nno frames left (budget {self.budget}): answer now\n"
            else:
                obs = self.show(step.frames)
                self.transcript.append(obs.text.replace("<image>", ""))
                return obs, 0.0, False
        else:
            self.time_queries += 1
            reply = "\n" + escape(step.observation) + "\n"
        self.transcript.append(reply)
        return reply, 0.0, False

    def metrics(self) -> dict[str, float]:
        """Per episode (logged as env/<key> means): frames shown, choose and time actions, ended by an invalid one,
        looks refused for the budget; which consistency gate of the FrameThinker reward the transcript failed
        (gate_<key>, 0/1 each, the first failing gate only) and whether it passed them with the right answer; with
        meta["evidence"], whether a frame that shows the answer was shown, and right with one shown."""
        out = {"frames_used": self.frames_used, "looks": self.looks, "time_queries": self.time_queries,
               "invalid_action": self.invalid, "refused_looks": self.refused}
        gate = ""
        correct = False
        if self.sample is not None and self.sample.answer is not None:
            verdict = judge("".join(self.transcript), str(self.sample.answer), frames=len(self.frames),
                            question=question_text(self.sample), span_n=self.span_n, strict=self.strict)
            gate, correct = verdict.gate, verdict.correct
        out.update({f"gate_{key}": float(gate == name) for name, key in GATES.items()})
        out["correct"] = float(correct)
        if self.sample is not None and "evidence" in self.sample.meta:
            start, stop = self.sample.meta["evidence"]
            seen = any(start <= t < stop for t in self.shown)
            out.update({"saw_evidence": float(seen), "correct_seen": float(seen and correct)})
        return out


@TASKS.register("frame_quest")
class FrameQuest(ProceduralTask):
    """Which colour did the square turn? The change hides in a short segment of a long procedural video."""

    name = "frame_quest"

    def __init__(self, *, seed: int = 0, size: int = 10_000, holdout: str | None = None, frames: int = 128,
                 fps: float = 8.0, image_size: int = 28, n: int = 8, initial: int | None = None,
                 segment: tuple[int, int] | list[int] | None = None, timed: float = 0.0, script: str = "search",
                 strict: bool = False, observe: str = "image"):
        super().__init__(seed=seed, size=size, holdout=holdout)
        initial = initial or n
        if n < 2 or initial < 2 or image_size < 28 or initial > frames:
            raise ValueError(f"frame_quest: need n >= 2, initial >= 2 and image_size >= 28, got {n}, {initial}, "
                             f"{image_size}")
        look = first_look(frames, n)  # the geometry the segment lengths come from: the searching agent's first look
        widest, narrowest = (f(b - a for a, b in zip(look, look[1:])) for f in (max, min))
        if narrowest <= n:
            raise ValueError(f"frame_quest: {frames} frames give first-look gaps of {narrowest} frames: a choose "
                             f"between two of them must span more than n = {n} (more frames or a smaller n)")
        gap = max(max(b - a for a, b in zip(c, c[1:])) for c in
                  (choose_frames(p, q, n) for p, q in zip(look, look[1:])))
        lo, hi = segment or (gap, gap + 3)
        if not gap <= lo <= hi < widest:
            raise ValueError(f"frame_quest: segment lengths {lo}-{hi} must lie in [{gap}, {widest}) so that one "
                             f"choose always shows the change")
        if script not in ("search", "answer") or not 0 <= timed <= 1 or observe not in OBSERVE:
            raise ValueError(f"frame_quest: script must be search or answer, timed in [0, 1] and observe one of "
                             f"{OBSERVE}, got {script!r}, {timed}, {observe!r}")
        self.frames, self.fps, self.image_size, self.n, self.initial = frames, fps, image_size, n, initial
        self.segment, self.timed, self.script, self.strict = (lo, hi), timed, script, strict
        self.observe = observe
        self.look = first_look(frames, initial)  # what the environment shows first
        self.side = image_size // 3  # the square: a third of the frame, at mid height

    def generate(self, rng: random.Random, index: int) -> Sample:
        names = list(COLOURS)
        new = rng.choice(names)
        length = rng.randint(*self.segment)
        start = rng.randint(1, self.frames - length - 1)
        timed = rng.random() < self.timed
        when = start / self.fps
        hint = f" around {int(when // 60)}:{int(when % 60):02d}" if timed else ""
        options = " ".join(f"{LETTERS[k]}) {c}" for k, c in enumerate(names))
        prompt = f"What colour did the black square turn{hint}? {options}"
        meta = {"new": new, "start": start, "length": length, "fps": self.fps, "timed": timed,
                "total_frames": self.frames, "initial": self.initial, "evidence": [start, start + length],
                "x": rng.randint(2, self.image_size - self.side - 2)}
        return Sample(prompt=prompt, answer=LETTERS[names.index(new)], task=self.name, index=index, meta=meta)

    def holdout_key(self, sample: Sample) -> str:
        m = sample.meta
        return f"{m['new']}|{m['start']}|{m['length']}|{m['x']}|{m['timed']}"

    def inside(self, sample: Sample, t: int) -> bool:
        return sample.meta["start"] <= t < sample.meta["start"] + sample.meta["length"]

    def code(self, sample: Sample, t: int) -> str:
        """What frame t shows: L (light background: the change is still to come), C (the square has its new colour),
        D (grey background: the change is over)."""
        return "C" if self.inside(sample, t) else "L" if t < sample.meta["start"] else "D"

    def caption(self, sample: Sample, t: int) -> str:
        """Frame t as text (observe="text"): the square's colour while it has changed, else the background's (light
        before the change, grey after; the square is black then). One word keeps a 16-frame look short."""
        return sample.meta["new"] if self.inside(sample, t) else "light" if t < sample.meta["start"] else "grey"

    def __getitem__(self, i: int) -> Sample:
        from PIL import Image, ImageDraw

        sample = super().__getitem__(i)
        m, size = sample.meta, self.image_size
        if self.observe == "text":
            sample.meta = {**m, "captions": [self.caption(sample, t) for t in range(self.frames)]}
            return sample
        frames = []
        for t in range(self.frames):
            image = Image.new("RGB", (size, size), GREY if t >= m["start"] else LIGHT)
            colour = COLOURS[m["new"]] if self.inside(sample, t) else BLACK
            top = (size - self.side) // 2
            ImageDraw.Draw(image).rectangle([m["x"], top, m["x"] + self.side, top + self.side], fill=colour)
            frames.append(image)
        sample.meta = {**m, "frames": frames}
        return sample

    def score(self, sample: Sample, text: str) -> float:
        return 1.0 if judge(text, sample.answer, question=question_text(sample), frames=self.frames,
                            span_n=self.n, strict=self.strict).correct else 0.0

    def reference_turns(self, sample: Sample) -> list[tuple[str | Observation, bool]]:
        """The rule-based agent's episode as the rollout sees it: the environment's first look, then the agent's
        turns (trained) and the replies with their frames (attended, never trained). What `rlvr sft` warm-starts on."""
        env = FrameSelect(n=self.n, observe=self.observe)
        turns: list[tuple[str | Observation, bool]] = [(env.reset(sample), False)]
        for turn, shown in self._script(sample):
            turns.append((turn, True))
            if shown:
                turns.append((env.show(shown), False))
        return turns

    def _script(self, sample: Sample) -> list[tuple[str, list[int]]]:
        """The rule-based agent: (turn, the frames its reply shows) in order. It reads only what it was shown, and
        writes what each frame shows before it acts ("36L 54C ...": light, changed, dark; see `code`): a changed
        frame gives the answer; otherwise the last light frame and the first dark one bracket the change."""
        m = sample.meta
        notes = lambda frames: " ".join(f"{t}{self.code(sample, t)}" for t in frames)  # noqa: E731
        answer = lambda frames: (f"<think>{notes(frames)} so {m['new']}</think>"  # noqa: E731
                                 f"<action>output answer: {sample.answer}</action>")
        if self.script == "answer" or any(self.inside(sample, t) for t in self.look):
            return [(answer(self.look), [])]  # the uniform baseline answers from its look, seen or not
        p = max(t for t in self.look if t < m["start"])
        q = min(t for t in self.look if t >= m["start"])
        look = f"<think>{notes(self.look)} so {p} {q}</think><action>choose frames between {p} and {q}</action>"
        shown = transition(look, frames=self.frames, fps=self.fps, n=self.n).frames
        assert any(self.inside(sample, t) for t in shown), (m, shown)  # the segment lengths guarantee it (__init__)
        return [(look, shown), (answer(shown), [])]

    def reference(self, sample: Sample) -> str:
        """The rule-based agent's transcript as the reward reads it (image tokens are not text)."""
        return "".join(turn + "".join(f"\nframe {i}: " for i in shown) + ("\n" if shown else "")
                       for turn, shown in self._script(sample))
