"""rlvr.rewards.framethinker: FrameThinker's protocol (arXiv 2509.24304). The environment's transitions (frames for a
choose, the frame of a timestamp, the answer) and its parser on malformed actions (out-of-range indices, reversed
intervals, an unknown action, no action at all); the reward v11 on hand-written transcripts: 1, 1.02, 1.52 and each
gate that zeroes a trajectory (repeated requests included)."""

import pytest

from rlvr.batch import Sample
from rlvr.rewards import REWARDS
from rlvr.rewards.framethinker import choose_frames, escape, judge, transition


def turn(think: str, action: str) -> str:
    return f"<think>{think}</think><action>{action}</action>"


def test_transitions():
    step = transition(turn("look between 100 and 300", "choose frames between 100 and 300"), frames=1000, fps=10, n=8)
    # linspace(101, 299, 8) = 101, 129.3, 157.6, 185.9, 214.1, 242.4, 270.7, 299 -> int
    assert step.kind == "choose" and not step.done and step.frames == [101, 129, 157, 185, 214, 242, 270, 299]
    assert step.observation.splitlines()[0] == "frame 101: <image>" and len(step.observation.splitlines()) == 8
    step = transition(turn("when?", "get frame number at time 1:23"), frames=1000, fps=10, n=8)
    assert step.kind == "time" and step.observation == "Frame number at time 1:23 is: 830." and not step.done
    step = transition(turn("sure", "output answer: B"), frames=1000, fps=10, n=8)
    assert step.kind == "answer" and step.done and step.answer == "B"
    clamped = transition(turn("", "choose frames between 900 and 5000"), frames=1000, fps=10, n=8)
    assert clamped.frames == choose_frames(900, 1000, 8) and clamped.frames[-1] == 999  # b clamped to N


@pytest.mark.parametrize("action, reason", [
    ("choose frames between 1200 and 1500", "beyond the video"),      # out of range
    ("choose frames between 300 and 100", "narrower than"),          # reversed interval
    ("choose frames between 100 and 105", "narrower than"),          # fewer frames than a request returns
    ("get frame number at time soon", "unknown action"),            # the reward's time pattern, enforced early
    ("zoom in", "unknown action"),
])
def test_malformed_actions_end_the_episode(action, reason):
    step = transition(turn("x", action), frames=1000, fps=10, n=8)
    assert step.kind == "invalid" and step.done and reason in step.reason


def test_no_action_at_all_ends_the_episode():
    step = transition("<think>hmm</think> the answer is B", frames=1000, fps=10, n=8)
    assert step.kind == "invalid" and step.done and step.reason == "no <action> block"


def test_observations_cannot_open_blocks():
    assert escape("caption: <think>x</think> and <action>y</action>") == \
        "caption: &lt;think>x&lt;/think> and &lt;action>y&lt;/action>"


CHOOSE = turn("the change is between 100 and 300", "choose frames between 100 and 300") + "\nframe 101: <image>\n"
TIME = turn("at 1:23", "get frame number at time 1:23") + "Frame number at time 1:23 is: 830.\n"
ANSWER = turn("it turned red", "output answer: B")


@pytest.mark.parametrize("text, question, total", [
    (ANSWER, "what colour?", 1.0),                                      # a direct correct answer
    (CHOOSE + ANSWER, "what colour?", 1.02),                             # after one valid choose
    (TIME + turn("around 800 and 900", "choose frames between 800 and 900") + ANSWER, "what at 01:23?", 1.52),
    (TIME + turn("around 800 and 900", "choose frames between 800 and 900") + ANSWER, "what colour?", 1.02),
    (CHOOSE + turn("wrong", "output answer: C"), "what colour?", 0.0),   # wrong answer, valid format
])
def test_reward_hand_worked(text, question, total):
    assert judge(text, "B", question=question, frames=1000).total == pytest.approx(total)


@pytest.mark.parametrize("text, gate", [
    ("<think>a</think><think>b</think><action>output answer: B</action>", "think/action count"),
    (turn("x", "choose frames between 100 and 300"), "no final answer"),
    (CHOOSE + CHOOSE + ANSWER, "repeated frame request"),
    (CHOOSE + turn("inner 101 and 299", "choose frames between 101 and 299") + ANSWER, "repeated frame request"),
    (turn("whole 0 and 999", "choose frames between 0 and 999") + ANSWER, "repeated frame request"),
    (turn("tight 100 and 105", "choose frames between 100 and 105") + ANSWER, "span too narrow"),
    (turn("between 100 and 200", "choose frames between 100 and 300") + ANSWER, "think does not state"),
    (TIME + ANSWER, "time query as the last tool call"),
    (TIME + turn("200 and 400", "choose frames between 200 and 400") + ANSWER, "misses the frame"),
    (TIME + TIME.replace("1:23 is", "1:23 was") + ANSWER, "repeated time query"),
    (turn("x", "get frame number at time 1:23") + "no reply\n" + ANSWER, "time query without an answer"),
    (turn("x", "zoom in") + ANSWER, "unknown action"),
    (turn("x", "get frame number at time soon") + ANSWER, "unknown action"),  # a bad time format
])
def test_each_gate_zeroes_the_trajectory(text, gate):
    verdict = judge(text, "B", question="what at 01:23?", frames=1000)
    assert verdict.total == 0.0 and gate in verdict.gate


def test_span_n_follows_the_video_and_the_registered_reward():
    wide = turn("from 100 to 110", "choose frames between 100 and 110") + ANSWER  # 10 frames apart
    assert judge(wide, "B", span_n=8).total == pytest.approx(1.02)  # the code's fixed 8
    assert judge(wide, "B", span_n=12).total == 0.0  # a 12-frame video's requests must span more
    rows = [Sample("what colour?", answer="B", meta={"total_frames": 1000}), Sample("q", answer=None)]
    assert REWARDS.build("framethinker")(rows, [CHOOSE + ANSWER, ANSWER]) == [pytest.approx(1.02), None]


@pytest.mark.parametrize("action, kind, answer", [
    ("output answer: B (red)", "answer", "B"),                        # re.match(r"output answer:\s*(\S+)"): "B"
    ("choose frames between 100 and 300 to look closer", "choose", None),
    ("get frame number at time 1:23 please", "time", None),
    ("Output answer: B", "invalid", None),                            # case-sensitive, as the reference
    ("I will output answer: B", "invalid", None),                     # a prefix, not a search
    ("choose frames between 100 and 3000000000", "invalid", None),    # a 10-digit number is never read cut short
])
def test_actions_are_read_at_their_start_as_the_reference_reads_them(action, kind, answer):
    step = transition(turn("x", action), frames=1000, fps=10, n=8)
    assert step.kind == kind and step.answer == answer


def test_strict_reads_whole_actions_only():
    for action in ("output answer: B (red)", "choose frames between 100 and 300 to look closer",
                   "get frame number at time 1:23 please"):
        assert transition(turn("x", action), frames=1000, fps=10, n=8, strict=True).kind == "invalid"
    assert transition(turn("x", " output answer: B "), frames=1000, fps=10, n=8, strict=True).answer == "B"  # stripped


def test_trailing_text_after_an_action_scores_as_the_reference_scores_it():
    """The reference's v11 re.match-es each stripped action: `output answer: B (red)` answers B (1.0); a choose or a
    time query with words after it still counts (1.02, 1.52). strict=True zeroes all three."""
    answer = turn("it turned red", "output answer: B (red)")
    look = turn("the change is between 100 and 300", "choose frames between 100 and 300 to look closer")
    when = turn("at 1:23", "get frame number at time 1:23 please") + "Frame number at time 1:23 is: 830.\n"
    then = turn("around 800 and 900", "choose frames between 800 and 900")
    cases = [(answer, 1.0), (look + "\nframe 101: <image>\n" + ANSWER, 1.02), (when + then + ANSWER, 1.52)]
    for text, total in cases:
        assert judge(text, "B", question="what at 01:23?", frames=1000).total == pytest.approx(total)
        assert judge(text, "B", question="what at 01:23?", frames=1000, strict=True).total == 0.0
    rows = [Sample("what colour?", answer="B", meta={"total_frames": 1000})]
    assert REWARDS.build("framethinker")(rows, [answer]) == [1.0]
    assert REWARDS.build("framethinker", strict=True)(rows, [answer]) == [0.0]


def test_a_repeated_time_query_is_the_same_time_whatever_the_spacing():
    first = turn("at 1:23", "get frame number at time 1:23") + "Frame number at time 1:23 is: 830.\n"
    again = turn("at 1:23", "get frame number at time  1:23") + "Frame number at time 1:23 is: 830.\n"
    then = turn("around 800 and 900", "choose frames between 800 and 900")
    assert judge(first + again + then + ANSWER, "B", frames=1000).gate == "repeated time query"


def test_frame_indices_truncate_as_numpy_linspace_does():
    np = pytest.importorskip("numpy")
    from rlvr.rewards.framethinker import linspace_int

    # np.linspace(0, 30, 23) at i = 11 is 11 * (30 / 22) = 14.999999999999998: numpy gives 14 (exact 15 would not)
    assert linspace_int(0, 30, 23)[11] == 14
    for start, stop, num in [(0, 127, 8), (0, 30, 23), (101, 299, 8), (5, 5, 4), (0, 1999, 12)]:
        assert linspace_int(start, stop, num) == np.linspace(start, stop, num).astype(int).tolist()
