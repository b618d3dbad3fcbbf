"""Rewards: each built-in reward on hand-made samples; combine_rewards weighting, None handling and error
reporting; user rewards loaded from a file; keyword validation at build time; verifiers stay bounded in time
on hostile model output (huge numbers, deep LaTeX nesting, megabyte strings), in and outside the main thread."""

import math
import threading
import time

import pytest
import torch

from rlvr.batch import Sample
from rlvr.rewards import REWARDS, RewardError, combine_rewards
from rlvr.rewards import verifiers as V
from rlvr.tasks import TASKS


def samples(*answers, task="t"):
    return [Sample(prompt="q", answer=a, task=task, index=i) for i, a in enumerate(answers)]


def test_registered_names_and_build_errors():
    names = REWARDS.names()
    assert {"task", "exact", "numeric", "math", "format", "overlong", "length_penalty", "python"} <= set(names)
    with pytest.raises(ValueError, match=r"unknown reward 'maths'.*did you mean 'math'.*choose from"):
        REWARDS.build("maths")
    with pytest.raises(ValueError, match=r"has no option 'tag'.*did you mean 'tags'"):
        REWARDS.build("format", tag=["answer"])
    with pytest.raises(ValueError, match="extract mode"):
        REWARDS.build("exact", extract="last_line")
    with pytest.raises(ValueError, match="cache"):
        REWARDS.build("overlong", max_len=10, cache=20)
    with pytest.raises(ValueError, match="timeout_s"):
        REWARDS.build("math", timeout_s=0.5)


def test_task_reward_routes_by_sample_task():
    arith, count = TASKS.build("arithmetic"), TASKS.build("countdown")
    fn = REWARDS.build("task", tasks={"arithmetic": arith, "countdown": count})
    batch = [arith[0], arith[1], count[0]]
    texts = [arith.reference(arith[0]), "nonsense", count.reference(count[0])]
    assert fn(batch, texts) == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="'other'"):
        fn(samples("1", task="other"), ["1"])


@pytest.mark.parametrize(
    "kwargs,text,expected",
    [
        ({}, "The Answer. ", 1.0),  # whole text, case- and space-insensitive, trailing period dropped
        ({}, "<think>hm</think><answer> the answer </answer>", 1.0),
        ({}, "blah \\boxed{The Answer}", 1.0),
        ({}, "<answer>\\boxed{the answer}</answer>", 1.0),
        ({}, "the answer is wrong", 0.0),
        ({"case_sensitive": True}, "the answer", 0.0),
        ({"extract": "answer_tag"}, "the answer", 0.0),  # no tag: not extracted
        ({"extract": "boxed"}, "\\boxed{the answer", 0.0),  # unbalanced braces
        ({"extract": "none"}, "<answer>The Answer</answer>", 0.0),
    ],
)
def test_exact(kwargs, text, expected):
    assert REWARDS.build("exact", **kwargs)(samples("The Answer"), [text]) == [expected]


def test_exact_and_numeric_skip_samples_without_answer():
    for name in ("exact", "numeric", "math"):
        assert REWARDS.build(name)(samples(None), ["5"]) == [None]


@pytest.mark.parametrize(
    "answer,text,expected",
    [
        ("42", "so the total is 42.", 1.0),
        ("42", "first 41 then 42", 1.0),  # the last number counts
        ("42", "42 then 41", 0.0),
        ("1234", "<answer>1,234</answer>", 1.0),
        ("0.75", "\\boxed{3/4}", 1.0),
        ("-3", "x = -3", 1.0),
        (1e6, "1000000.0000001", 1.0),  # within rel_tol 1e-6
        ("0.5", "0.51", 0.0),
        ("5", "no number here", 0.0),
        ("5", "1e999999", 0.0),  # overflows to inf: wrong, not an error
    ],
)
def test_numeric(answer, text, expected):
    assert REWARDS.build("numeric")(samples(answer), [text]) == [expected]


def test_numeric_tolerances_and_bad_reference():
    assert REWARDS.build("numeric", abs_tol=0.1)(samples("0.5"), ["0.55"]) == [1.0]
    with pytest.raises(ValueError, match="not a number"):
        REWARDS.build("numeric")(samples("\\frac{1}{2}"), ["0.5"])


@pytest.mark.parametrize(
    "answer,text,expected",
    [
        ("\\frac{1}{2}", "so \\boxed{0.5}", 1.0),
        ("\\frac{1}{2}", "<answer>\\frac{2}{4}</answer>", 1.0),
        ("0.5", "The answer is $\\frac{1}{2}$.", 1.0),
        ("x^2+1", "<answer>1+x^2</answer>", 1.0),
        ("\\{1,2\\}", "\\boxed{\\{2, 1\\}}", 1.0),
        ("\\frac{1}{2}", "\\boxed{\\frac{1}{3}}", 0.0),
        ("7", "no answer at all", 0.0),
    ],
)
def test_math(answer, text, expected):
    assert REWARDS.build("math")(samples(answer), [text]) == [expected]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("<think>a</think><answer>b</answer>", 1.0),
        ("  <think>\na\n</think>\n\n<answer>b</answer>\n", 1.0),
        ("<think>a</think>", 0.0),
        ("<answer>b</answer><think>a</think>", 0.0),
        ("<think>a</think><answer>b</answer> trailing", 0.0),
        ("prefix <think>a</think><answer>b</answer>", 0.0),
        ("<think>a<think>b</think><answer>c</answer>", 0.0),
        ("<think>a</think>b</think><answer>c</answer>", 0.0),
    ],
)
def test_format(text, expected):
    assert REWARDS.build("format")(samples(None), [text]) == [expected]


def test_format_custom_tags():
    fn = REWARDS.build("format", tags=["answer"])
    assert fn(samples(None, None), ["<answer>1</answer>", "<think>x</think><answer>1</answer>"]) == [1.0, 0.0]


def test_overlong_matches_dapo_eq13():
    # L_max = 10, L_cache = 4: no penalty up to 6 tokens, linear to -1 at 10, -1 beyond
    fn = REWARDS.build("overlong", max_len=10, cache=4)
    out = fn(samples(*[None] * 5), [""] * 5, lengths=[3, 6, 8, 10, 11])
    assert out == pytest.approx([0.0, 0.0, -0.5, -1.0, -1.0])
    assert REWARDS.build("overlong", max_len=10, cache=4, penalty=0.5)(samples(None), [""], lengths=[8]) == [-0.25]
    with pytest.raises(ValueError, match="lengths="):
        fn(samples(None), [""])


def test_length_penalty():
    fn = REWARDS.build("length_penalty", target=5, per_token=0.1, max_penalty=0.3)
    assert fn(samples(*[None] * 4), [""] * 4, lengths=[2, 5, 7, 50]) == pytest.approx([0.0, 0.0, -0.2, -0.3])


def test_python_reward_from_file(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(
        "def brevity(samples, completions, scale=1.0, **kw):\n"
        "    return [scale / (1 + len(c)) if s.answer is not None else None for s, c in zip(samples, completions)]\n"
        "def plain(samples, completions):\n"
        "    return [1.0 for _ in completions]\n"
    )
    fn = REWARDS.build("python", function=f"{path}:brevity", options={"scale": 2.0})
    assert fn(samples("a", None), ["abc", "x"]) == [0.5, None]
    plain = REWARDS.build("python", function=f"{path}:plain")
    rewards, _, _ = combine_rewards([("plain", 1.0, plain)], samples("a"), ["x"], lengths=[3])  # no lengths kw
    assert rewards.tolist() == [1.0]
    with pytest.raises(ValueError, match=r"no function 'nope'.*brevity"):
        REWARDS.build("python", function=f"{path}:nope")
    with pytest.raises(ValueError, match="not found"):
        REWARDS.build("python", function=f"{tmp_path}/missing.py:fn")
    with pytest.raises(ValueError, match="function_name"):
        REWARDS.build("python", function=str(path))


def const(values):
    return lambda samples, completions, **kw: list(values)


def test_combine_weights_and_none():
    fns = [("a", 1.0, const([1.0, None, None, 0.5])), ("b", 0.5, const([2.0, 4.0, None, None]))]
    rewards, per_fn, metrics = combine_rewards(fns, samples(1, 2, 3, 4), ["w", "x", "y", "z"])
    # row 0: 1*1 + 0.5*2 = 2; row 1: only b, 0.5*4 = 2; row 2: nothing applies -> NaN; row 3: only a -> 0.5
    assert rewards.dtype == torch.float32 and rewards.shape == (4,)
    assert rewards[[0, 1, 3]].tolist() == [2.0, 2.0, 0.5] and math.isnan(rewards[2])
    assert per_fn == {"a": [1.0, None, None, 0.5], "b": [2.0, 4.0, None, None]}
    assert metrics["rewards/a/mean"] == 0.75 and metrics["rewards/b/mean"] == 3.0
    assert metrics["rewards/a/none_frac"] == 0.5 and metrics["rewards/a/errors"] == 0
    assert metrics["rewards/total/mean"] == pytest.approx(1.5)


def test_combine_passes_lengths():
    fns = [("len", 1.0, REWARDS.build("length_penalty", target=1, per_token=1.0))]
    rewards, _, _ = combine_rewards(fns, samples(1, 2), ["a", "b"], lengths=torch.tensor([1, 3]))
    assert rewards.tolist() == [0.0, -2.0]


def crash_on_bad(samples, completions, **kw):
    return [1 / 0 if c == "bad" else 1.0 for c in completions]


def test_crash_is_reported_with_sample():
    texts = ["ok", "ok", "bad", "ok"]
    with pytest.raises(RewardError) as info:
        combine_rewards([("crashy", 1.0, crash_on_bad)], samples(1, 2, 3, 4), texts, step=7)
    msg = str(info.value)
    assert "'crashy'" in msg and "sample 2" in msg and "'bad'" in msg and "step 7" in msg and "\n" not in msg
    assert isinstance(info.value.__cause__, ZeroDivisionError)  # original traceback chained


def test_crash_message_truncates_long_completion():
    long_text = "bad" + "x" * 5000
    crash = lambda samples, completions, **kw: [1 / 0 for _ in completions]  # noqa: E731
    with pytest.raises(RewardError) as info:
        combine_rewards([("crashy", 1.0, crash)], samples(1), [long_text])
    assert repr(long_text[:200]) in str(info.value) and len(str(info.value)) < 600


def test_crash_with_on_error_zero_is_counted():
    texts = ["ok", "bad", "bad", "ok"]
    rewards, per_fn, metrics = combine_rewards(
        [("crashy", 1.0, crash_on_bad)], samples(1, 2, 3, 4), texts, on_error="zero"
    )
    assert rewards.tolist() == [1.0, 0.0, 0.0, 1.0] and per_fn["crashy"] == [1.0, 0.0, 0.0, 1.0]
    assert metrics["rewards/crashy/errors"] == 2


@pytest.mark.parametrize(
    "out,match", [([1.0], "list of 2"), (None, "list of 2"), ([1.0, float("nan")], "sample 1"), ([1.0, "x"], "x")]
)
def test_bad_return_values_are_errors(out, match):
    with pytest.raises(RewardError, match=match):
        combine_rewards(
            [("bad", 1.0, const(out) if out is not None else lambda s, c, **k: None)], samples(1, 2), ["a", "b"]
        )


def test_numpy_and_torch_scalars_are_accepted():
    fn = const([torch.tensor(0.5), True is False or 1])
    rewards, _, _ = combine_rewards([("t", 2.0, fn)], samples(1, 2), ["a", "b"])
    assert rewards.tolist() == [1.0, 2.0]


HOSTILE = {
    "nines": "9" * 100_000,
    "power_tower_text": "10**10**10",
    "latex_tower": "\\boxed{10^{10^{10}}}",
    "tetration": "<answer>9^9^9^9</answer>",
    "factorials": "\\boxed{(10^{100})!}",
    "nested_factorial": "\\boxed{10!!!!}",
    "exp_overflow": "1e999999",
    "deep_frac": "\\frac{" * 5000,
    "deep_boxed": "\\boxed{" * 5000 + "1" + "}" * 5000,
    "deep_parens": "(" * 10_000 + "1" + ")" * 10_000,
    "megabyte": "<think>" + "a</think>" * 120_000 + "<answer>" * 1000,
    "many_numbers": "1, " * 300_000,
    "tags": "<answer>" * 100_000 + "</answer>",
}
VERIFIERS = ["exact", "numeric", "math", "format"]


def timed_call(fn, text):
    start = time.perf_counter()
    out = fn(samples("5"), [text])
    return out, time.perf_counter() - start


@pytest.mark.parametrize("name", VERIFIERS)
def test_verifiers_are_bounded_on_hostile_strings(name):
    fn = REWARDS.build(name)
    for label, text in HOSTILE.items():
        out, seconds = timed_call(fn, text)
        assert out == [0.0], label
        assert seconds < 2.0, f"{name} took {seconds:.1f}s on {label}"


def test_task_scorers_are_bounded_on_hostile_strings():
    for task in (TASKS.build("arithmetic"), TASKS.build("countdown")):
        sample = task[0]
        for label, text in HOSTILE.items():
            start = time.perf_counter()
            assert task.score(sample, text) == 0.0, label
            assert time.perf_counter() - start < 2.0, label


def test_math_is_bounded_outside_the_main_thread():
    # no SIGALRM off the main thread: the pre-check must reject costly expressions by itself
    fn, results = REWARDS.build("math"), {}
    texts = [HOSTILE[k] for k in ("latex_tower", "tetration", "factorials", "nested_factorial", "power_tower_text")]
    worker = threading.Thread(target=lambda: results.update(out=fn(samples(*["5"] * len(texts)), texts)))
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "math reward hung in a worker thread"
    assert results["out"] == [0.0] * len(texts)
    ok = threading.Thread(target=lambda: results.update(ok=fn(samples("\\frac{1}{2}"), ["\\boxed{0.5}"])))
    ok.start()
    ok.join(timeout=10)
    assert results["ok"] == [1.0]


def test_extraction_helpers():
    assert V.last_boxed("a \\boxed{x} b \\boxed{\\frac{1}{2}} c") == "\\frac{1}{2}"
    assert V.answer_tag("<answer>1</answer> <answer>2</answer>") == "2"
    assert V.last_number("x 1,234.5 and then -7") == -7.0
    assert V.extract("<answer>so \\boxed{4}</answer>") == "4"
    assert V.extract("x" * 10_000 + "<answer>3</answer>", "answer_tag") == "3"


def test_costly_expression_guard():
    from math_verify import parse

    assert V._is_costly(parse("$10^{10^{10}}$")[0])
    assert V._is_costly(parse("$(10^{100})!$")[0])
    assert not V._is_costly(parse("$2^{10} + 3! + \\frac{x^2}{7}$")[0])


class Stage:
    """A reward stage that returns fixed values per completion and records which completions it scored."""

    def __init__(self, table):
        self.table, self.seen = table, []

    def __call__(self, samples, completions, lengths=None):
        self.seen.append((list(completions), lengths))
        return [self.table[c] for c in completions]


def test_cascade_keeps_the_first_confident_verdict_and_spares_later_stages():
    rule = Stage({"a": 1.0, "b": 0.0, "c": None, "d": 0.0})
    judge = Stage({"b": 1.0, "c": -1.0, "d": None})
    fn = REWARDS.build("cascade", stages=[("rule", 1.0, rule), ("judge", 1.0, judge)])
    assert fn(samples(1, 2, 3, 4), ["a", "b", "c", "d"], lengths=[5, 6, 7, 8]) == [1.0, 1.0, -1.0, None]
    # the judge saw only what the rule did not confirm, with those rows' lengths
    assert judge.seen == [(["b", "c", "d"], [6, 7, 8])]
    assert fn(samples(1), ["a"]) == [1.0] and len(judge.seen) == 1  # all confirmed: the judge is not called


def test_cascade_weights_and_accept_threshold():
    rule = Stage({"x": 0.6, "y": 0.4})
    judge = Stage({"y": 0.5})
    fn = REWARDS.build("cascade", stages=[("rule", 2.0, rule), ("judge", 0.5, judge)], accept=1.0)
    assert fn(samples(1, 2), ["x", "y"]) == [1.2, 0.25]  # 2 * 0.6 >= 1 accepted; 2 * 0.4 < 1 -> 0.5 * 0.5
    with pytest.raises(ValueError, match="at least one source"):
        REWARDS.build("cascade", stages=[])


def test_cascade_stage_crash_names_the_sample():
    fn = REWARDS.build("cascade", stages=[("rule", 1.0, Stage({"ok": 0.0, "bad": 0.0})),
                                          ("judge", 1.0, crash_on_bad)])
    with pytest.raises(RewardError, match=r"'cascade'.*sample 1.*'bad'"):
        combine_rewards([("cascade", 1.0, fn)], samples(1, 2), ["ok", "bad"])


def test_cascade_in_a_config_builds_its_sources_like_rewards(tiny_cfg, tmp_path):
    from rlvr.config import ConfigError
    from rlvr.run import build_rewards, build_task

    judge = tmp_path / "judge.py"
    judge.write_text("def judge(samples, completions):\n    return [0.5 for _ in completions]\n")
    src = f"[{{name: task}}, {{name: python, kwargs: {{function: '{judge}:judge'}}}}]"
    cfg = tiny_cfg(f"rewards=[{{name: cascade, kwargs: {{sources: {src}}}}}]")
    task = build_task(cfg, eval_split=False)
    ((name, weight, fn),) = build_rewards(cfg, task)["arithmetic"]
    s = [task[0], task[1]]
    assert name == "cascade" and fn(s, [task.reference(s[0]), "wrong"]) == [1.0, 0.5]
    bad = tiny_cfg("rewards=[{name: cascade, kwargs: {sources: [{name: task}, {name: maths}]}}]")
    with pytest.raises(ConfigError, match=r"rewards\[0\]\.kwargs\.sources\[1\] \(maths\).*did you mean 'math'"):
        build_rewards(bad, task)
    with pytest.raises(ConfigError, match=r"rewards\[0\] \(cascade\): kwargs.sources must be a non-empty list"):
        build_rewards(tiny_cfg("rewards=[{name: cascade}]"), task)
