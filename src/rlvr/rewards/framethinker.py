"""FrameThinker's protocol (arXiv 2509.24304): the frame-selection actions, the environment's transition on each, and
the reward with its consistency gates (the reference code's `v11`).

    step = transition("<think>..</think><action>choose frames between 10 and 90</action>", frames=1000, fps=10, n=8)
    # Step(kind="choose", frames=[11, 22, ...], observation="frame 11: <image>\\n...", done=False)
    REWARDS.build("framethinker")(samples, completions)     # 0, 1, 1.02, 1.5 or 1.52

Each model turn is `<think>...</think><action>...</action>`; the environment reads the last <action>:
1. `choose frames between A and B`: A > N ends the episode; B is clamped to N; A >= B − n ends it; otherwise the
   n frames sorted(set(int(linspace(A + 1, B − 1, n)))) come back, one line `frame {i}: <image>` each.
2. `get frame number at time M:SS`: "Frame number at time M:SS is: {⌊(60 M + S) · fps⌋}." (the time must be
   `\\d{1,3}:\\d{2}`, the reward's own pattern: the reference environment accepted any token, which the reward then
   zeroed; rlvr ends the episode at once instead).
3. `output answer: X` ends the episode; anything else (or no action) ends it with no answer.
An action is read as the reference code's reward reads it: stripped, then matched at its start, case-sensitive
(`re.match`: `output answer: B (red)` answers B, and `choose frames between 10 and 90 please` is a choose); the
reference environment looked for a choose anywhere in the block, which its reward then zeroed, so rlvr's environment
reads it as the reward does. `strict=True` requires the whole stripped action to match instead.
The reward reads the whole multi-turn text (observations included) and returns 0 on any gate: as many <think> as
<action> blocks, the last action an answer, no repeated frame pair (A, B) nor its inner pair (A + 1, B − 1), a span
wider than n frames, the last two numbers of the turn's think block equal (A, B), no repeated time query, a time
query answered and followed by a choose that contains the frame it returned, and not the last tool call. Correct
answers get 1, + 0.5 when a time query returned a frame and the question holds a timestamp, + 0.02 when a choose was
used; wrong answers 0. The reference code checks spans against 8 frames even for 12-frame videos; rlvr uses the
video's own n (`span_n`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rlvr.batch import Sample
from rlvr.rewards.core import REWARDS, RewardFn

CHOOSE = re.compile(r"choose frames between (\d{1,9}) and (\d{1,9})(?!\d)")  # bounded: a longer number never matches
TIME = re.compile(r"get frame number at time\s+(\d{1,3}):(\d{2})")
ANSWER = re.compile(r"output answer:\s*(\S+)")
ACTION_BLOCK = re.compile(r"<action>(.*?)</action>", re.S)
THINK_BLOCK = re.compile(r"<think>(.*?)</think>", re.S)
THINK_NUMBERS = re.compile(r"(?<!:)\b(\d{1,9})\b(?!:)")  # integers not next to ':' (so not a M:SS time)
TIMESTAMP = re.compile(r"\d+:\d+(:\d+)?")
READ_LIMIT = 50_000


@dataclass
class Step:
    """What the environment does with one model turn."""

    kind: str  # choose | time | answer | invalid
    done: bool
    observation: str = ""  # the text appended (with loss mask 0)
    frames: list[int] = field(default_factory=list)  # frame indices whose images the observation shows
    answer: str | None = None
    reason: str = ""  # why an invalid turn ended the episode


def linspace_int(start: int, stop: int, num: int) -> list[int]:
    """np.linspace(start, stop, num).astype(int) as numpy computes it (start + i · step, the last exactly stop, then
    truncated): the reference code's frame indices, so they floor where a fraction would round."""
    if num < 2:
        return [start][:num]
    step = (stop - start) / (num - 1)
    return [int(start + i * step) for i in range(num - 1)] + [stop]


def choose_frames(a: int, b: int, n: int) -> list[int]:
    """sorted(set(int(linspace(a + 1, b − 1, n)))): the frames a choose action returns."""
    return sorted(set(linspace_int(a + 1, b - 1, n)))


def read_action(pattern: re.Pattern, action: str, *, strict: bool = False) -> re.Match | None:
    """The reference code's re.match on the stripped action (a prefix: trailing text allowed); strict: the whole."""
    return pattern.fullmatch(action) if strict else pattern.match(action)


def escape(text: str) -> str:
    """An observation may not open a block the reward would parse (the reference code let it)."""
    return re.sub(r"</?(think|action)>", lambda m: m.group(0).replace("<", "&lt;"), text)


def transition(turn: str, *, frames: int, fps: float, n: int, strict: bool = False) -> Step:
    """The environment's answer to one model turn (module docstring)."""
    actions = ACTION_BLOCK.findall(turn[:READ_LIMIT])
    if not actions:
        return Step("invalid", True, reason="no <action> block")
    action = actions[-1].strip()
    if m := read_action(ANSWER, action, strict=strict):
        return Step("answer", True, answer=m.group(1))
    if m := read_action(CHOOSE, action, strict=strict):
        a, b = int(m.group(1)), int(m.group(2))
        if a > frames:
            return Step("invalid", True, reason=f"start frame {a} beyond the video's {frames} frames")
        b = min(b, frames)
        if a >= b - n:
            return Step("invalid", True, reason=f"span {a}-{b} narrower than the {n} frames a request returns")
        chosen = choose_frames(a, b, n)
        return Step("choose", False, "\n".join(f"frame {i}: <image>" for i in chosen), chosen)
    if m := read_action(TIME, action, strict=strict):
        frame = int((60 * int(m.group(1)) + int(m.group(2))) * fps)
        return Step("time", False, f"Frame number at time {m.group(1)}:{m.group(2)} is: {frame}.")
    return Step("invalid", True, reason=f"unknown action {action[:80]!r}")


# ------------------------------------------------------------------ the reward


GATES = {  # the reward's consistency gates, in the order it checks them -> the metric key of each (`gate_<key>`)
    "think/action count": "count", "no final answer": "no_answer", "choose misses the frame of the time query": "flow",
    "repeated frame request": "repeat_frames", "span too narrow": "span",
    "think does not state the requested frames": "fidelity", "repeated time query": "repeat_time",
    "time query without an answer": "time_unanswered", "unknown action": "unknown_action",
    "time query as the last tool call": "time_last",
}


@dataclass
class Verdict:
    total: float
    correct: bool = False
    gate: str = ""  # the first gate that failed ("" when none)


def _segments(text: str) -> tuple[list[str], list[str], list[str]]:
    """Think blocks, action blocks, and the text between each </action> and the next <think> (observations)."""
    thinks, actions = THINK_BLOCK.findall(text), ACTION_BLOCK.findall(text)
    observations = [part.split("<think>")[0] for part in text.split("</action>")[1:]]
    return thinks, actions, observations


def judge(text: str, answer: str, *, question: str = "", frames: int | None = None, span_n: int = 8,
          strict: bool = False) -> Verdict:
    """FrameThinker's reward v11 with its gates (module docstring); `frames`: the video's frame count (the whole-video
    pair (0, frames − 1) counts as already seen); strict: whole actions only (the reference reads prefixes)."""
    thinks, actions, obs = _segments(text[:READ_LIMIT])
    if not actions or len(thinks) != len(actions):
        return Verdict(0.0, gate="think/action count")
    final = read_action(ANSWER, actions[-1].strip(), strict=strict)
    if final is None:
        return Verdict(0.0, gate="no final answer")
    pairs, times, expected, time_bonus = {(0, -1 if frames is None else frames - 1)}, set(), None, False
    for i, action in enumerate(a.strip() for a in actions[:-1]):
        choose = read_action(CHOOSE, action, strict=strict)
        if expected is not None:
            if choose and not int(choose.group(1)) <= expected <= int(choose.group(2)):
                return Verdict(0.0, gate="choose misses the frame of the time query")
            expected = None
        if choose:
            a, b = int(choose.group(1)), int(choose.group(2))
            if (a, b) in pairs:
                return Verdict(0.0, gate="repeated frame request")
            pairs |= {(a, b), (a + 1, b - 1)}
            nums = THINK_NUMBERS.findall(thinks[i])
            if a >= b - span_n:
                return Verdict(0.0, gate="span too narrow")
            if len(nums) < 2 or (int(nums[-2]), int(nums[-1])) != (a, b):
                return Verdict(0.0, gate="think does not state the requested frames")
            continue
        if (time := read_action(TIME, action, strict=strict)) is not None:
            when = f"{time.group(1)}:{time.group(2)}"  # the time itself, as the reference keys it (not the spacing)
            if when in times:
                return Verdict(0.0, gate="repeated time query")
            times.add(when)
            got = re.search(r"is:\s*(\d+)", obs[i]) if i < len(obs) else None
            if got is None:
                return Verdict(0.0, gate="time query without an answer")
            expected = int(got.group(1))
            time_bonus |= expected > 0
            continue
        return Verdict(0.0, gate="unknown action")
    if expected is not None:
        return Verdict(0.0, gate="time query as the last tool call")
    if final.group(1) != str(answer):
        return Verdict(0.0)
    bonus = (0.5 if time_bonus and TIMESTAMP.search(question) else 0.0) + (0.02 if len(pairs) > 1 else 0.0)
    return Verdict(1.0 + bonus, correct=True)


def question_text(sample: Sample) -> str:
    """The question the timestamp bonus reads: the prompt, or the last message of a chat prompt."""
    return sample.prompt if isinstance(sample.prompt, str) else str(sample.prompt[-1]["content"])


@REWARDS.register("framethinker")
def framethinker_reward(*, span_n: int = 8, strict: bool = False) -> RewardFn:
    """FrameThinker (arXiv 2509.24304): the reference code's reward v11, consistency gates included; span_n: the
    frames a request returns (the code checks 8 always); strict: an action must match whole (the code: its start)."""

    def fn(samples: list[Sample], completions: list[str], **kw) -> list[float | None]:
        return [None if s.answer is None else judge(c, s.answer, question=question_text(s), span_n=span_n,
                                                    frames=s.meta.get("total_frames"), strict=strict).total
                for s, c in zip(samples, completions)]

    return fn
