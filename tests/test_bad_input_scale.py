"""Bad input at scale (issue 20 item 7): a prompt longer than the model's context or rollout.max_prompt_tokens is one
line naming the task, file and row, exit 2, before any model is loaded (rlvr.prompt_limit), or is cut to its last
tokens with rollout.truncate_prompts=left; only rows over the byte bound are tokenized; JSON nested 5,000 deep is one
line naming file and row; `rlvr train CFG --overwrite key=value` takes the override."""

import csv
import json
import re

import pytest

from rlvr.cli import main
from rlvr.config import config_from
from rlvr.errors import DataError
from rlvr.prompt_limit import PromptFit, PromptTooLong, fit_prompts
from rlvr.tasks import TASKS

LONG = "1+" * 99_968 + "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789()"  # 200,000 characters
ROWS = [{"prompt": "1+1=", "answer": "2"}, {"prompt": LONG, "answer": "3"}, {"prompt": "2+2=", "answer": "4"}]
SMALL = {"model.config": "qwen2-micro", "task.eval_size": 2, "rollout.prompts_per_step": 2, "rollout.group_size": 2,
         "rollout.max_new_tokens": 4, "train.steps": 1, "train.eval_every": 0, "train.progress": False,
         "train.threads": 1}
CONTEXT_LIMIT = "the model's context (256) less rollout.max_new_tokens (4): 252"  # qwen2-micro: 256 positions


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["prompt", "answer"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def run_config(tmp_path, data, **kwargs):
    """A YAML config training qwen2-micro on `data`; kwargs: task kwargs besides the path."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({"output_dir": str(tmp_path / "runs"), "task": {"name": "dataset", "kwargs": {
        "path": str(data), **kwargs}}}))
    return [str(cfg), *(f"{k}={v}" for k, v in SMALL.items())]


@pytest.fixture
def no_model(monkeypatch):
    import rlvr.run

    monkeypatch.setattr(rlvr.run, "build_policy", lambda *a, **kw: pytest.fail("a model was loaded"))


def config(**rollout):
    return config_from({"model": {"config": "qwen2-micro"}, "rollout": {"max_new_tokens": 4, **rollout}})


def dataset(tmp_path, rows, **kwargs):
    return TASKS.build("dataset", path=str(write_jsonl(tmp_path / "d.jsonl", rows)), **kwargs)


# ------------------------------------------------------------------ too long: refused


@pytest.mark.parametrize("fmt,limit,why", [
    ("jsonl", None, CONTEXT_LIMIT),
    ("jsonl", 2048, "rollout.max_prompt_tokens (2048)"),
    ("csv", 2048, "rollout.max_prompt_tokens (2048)"),  # a 200,000-char field: over csv's default 131,072 limit
])
def test_a_too_long_prompt_exits_2_naming_task_file_and_row_before_any_model(tmp_path, capsys, no_model, fmt, limit,
                                                                             why):
    data = (write_jsonl if fmt == "jsonl" else write_csv)(tmp_path / f"d.{fmt}", ROWS)
    extra = [] if limit is None else [f"rollout.max_prompt_tokens={limit}"]
    code = main(["train", *run_config(tmp_path, data), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    # the char tokenizer: one token per character, no special tokens around plain text
    assert err[0].startswith(f"rlvr: error: task 'dataset' {data} row 2: prompt is 200000 tokens, longer than {why}; ")
    assert "rollout.truncate_prompts: left" in err[0]


def test_rows_given_from_python_are_checked_against_the_given_model(tmp_path, monkeypatch):
    import rlvr.run
    from rlvr.policies import load_policy

    monkeypatch.setattr(rlvr.run, "prepare_policy", lambda *a, **kw: pytest.fail("the run went on past the check"))

    model, tokenizer = load_policy(config="qwen2-micro")
    with pytest.raises(PromptTooLong, match=re.escape(f"task 'dataset' <rows> row 2: prompt is 200000 tokens, longer "
                                                      f"than {CONTEXT_LIMIT}")):
        rlvr.train({"output_dir": str(tmp_path)}, SMALL, dataset=ROWS, model=model, tokenizer=tokenizer)


def test_a_saved_dataset_is_measured_from_its_arrow_column(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS[:1] * 3 + ROWS[1:2]).save_to_disk(str(tmp_path / "saved"))
    task = TASKS.build("dataset", path=str(tmp_path / "saved"))
    with pytest.raises(PromptTooLong, match=r"row 4: prompt is 200000 tokens, longer than rollout.max_prompt_tokens"):
        fit_prompts(config(max_prompt_tokens=64), [task])


def test_the_dataset_tasks_of_a_mixture_are_checked(tmp_path):
    from rlvr.tasks.mixture import MixtureTask

    mixture = MixtureTask({"sums": TASKS.build("arithmetic"), "data": dataset(tmp_path, ROWS)}, {"sums": 1, "data": 1})
    with pytest.raises(PromptTooLong, match="task 'dataset' .*d.jsonl row 2: prompt is 200000 tokens"):
        fit_prompts(config(max_prompt_tokens=64), [mixture])


def test_the_chat_template_counts(tmp_path):
    """A 60-character prompt, under the limit of 64 by its bytes alone, is over it once the template's "<user>"
    (6 tokens) frames it."""
    template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
    cfg = config_from({"model": {"config": "qwen2-micro", "chat_template": template},
                       "rollout": {"max_prompt_tokens": 64}})
    text = "".join(chr(ord("a") + i % 26) for i in range(60))
    with pytest.raises(PromptTooLong, match="row 1: prompt is 66 tokens"):
        fit_prompts(cfg, [dataset(tmp_path, [{"prompt": text, "answer": "1"}])])
    cfg.rollout.truncate_prompts = "left"
    task = dataset(tmp_path, [{"prompt": text, "answer": "1"}])
    fit_prompts(cfg, [task])
    assert task[0].prompt == text[2:]  # 6 + 58 = 64 tokens


def test_chat_message_rows_are_counted_and_cut_in_their_longest_message(tmp_path):
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": LONG}]
    rows = [{"prompt": [{"role": "user", "content": "1+1="}], "answer": "2"}, {"prompt": chat, "answer": "3"}]
    with pytest.raises(PromptTooLong, match="row 2: prompt is 200010 tokens"):  # 9 + "\n" + 200,000: no template
        fit_prompts(config(max_prompt_tokens=64), [dataset(tmp_path, rows)])
    task = dataset(tmp_path, rows)
    fit_prompts(config(max_prompt_tokens=64, truncate_prompts="left"), [task])
    assert task[1].prompt == [chat[0], {"role": "user", "content": LONG[-54:]}]  # 9 + 1 + 54 = 64
    assert task[0].prompt == rows[0]["prompt"]


# ------------------------------------------------------------------ too long: cut


def test_truncate_left_keeps_the_last_tokens_of_the_long_rows_only(tmp_path):
    task = dataset(tmp_path, ROWS)
    notices = fit_prompts(config(max_prompt_tokens=64, truncate_prompts="left"), [task, task])
    assert [s.prompt for s in task] == ["1+1=", LONG[-64:], "2+2="]
    assert notices == [f"rlvr: task 'dataset' {task.path}: 1 of 3 prompts longer than rollout.max_prompt_tokens (64) "
                       "cut to their last tokens (rollout.truncate_prompts: left)"]
    with_system = dataset(tmp_path, ROWS, system_prompt="Be brief.")
    fit_prompts(config(max_prompt_tokens=64, truncate_prompts="left"), [with_system])
    assert with_system[1].prompt == [{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": LONG[-54:]}]  # 9 + "\n" + 54 = 64


def test_truncate_left_trains_and_says_how_many_were_cut(tmp_path, capsys, monkeypatch):
    from rlvr.policies import HFCausalLM

    widths, encode = [], HFCausalLM.encode

    def checked(self, samples):  # refuse an uncut prompt here, before the model would be asked for ~40 GB
        ids, mask = encode(self, samples)
        widths.append(ids.shape[1])
        assert ids.shape[1] <= 252, f"a {ids.shape[1]}-token prompt reached the model"
        return ids, mask

    monkeypatch.setattr(HFCausalLM, "encode", checked)
    data = write_jsonl(tmp_path / "d.jsonl", ROWS)
    code = main(["train", *run_config(tmp_path, data), "rollout.truncate_prompts=left"])
    err = capsys.readouterr().err
    assert code == 0, err[-2000:]
    assert f"rlvr: task 'dataset' {data}: 1 of 3 prompts longer than {CONTEXT_LIMIT} cut" in err
    assert 252 in widths  # the held-out pass (rows 1 and 2) encodes the cut row at the limit


def test_only_rows_over_the_byte_bound_are_tokenized(tmp_path, monkeypatch):
    counted = []
    exact = PromptFit.tokens
    monkeypatch.setattr(PromptFit, "tokens", lambda self, prompt: counted.append(prompt) or exact(self, prompt))
    short = [{"prompt": f"{i}+{i}=", "answer": str(2 * i)} for i in range(500)]
    fit_prompts(config(max_prompt_tokens=64), [dataset(tmp_path, short)])
    assert counted == []
    with pytest.raises(PromptTooLong, match="row 501"):
        fit_prompts(config(max_prompt_tokens=64), [dataset(tmp_path, short + ROWS[1:2])])
    assert counted == [LONG]


# ------------------------------------------------------------------ hostile rows


def nested(depth):
    return "[" * depth + "]" * depth


def test_json_nested_5000_deep_is_one_line_naming_file_and_row(tmp_path, capsys, no_model):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "1+1=", "answer": "2"}\n\n{"prompt": ' + nested(5000) + ', "answer": "3"}\n')
    code = main(["train", *run_config(tmp_path, data)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"dataset '{data}', row 2 (line 3): JSON nested too deep to parse" in err[0]
    whole = tmp_path / "d.json"
    whole.write_text('[{"prompt": ' + nested(5000) + ', "answer": "3"}]')
    with pytest.raises(DataError, match=f"dataset '{whole}': JSON nested too deep"):
        TASKS.build("dataset", path=str(whole))


def test_a_list_prompt_that_is_not_chat_messages_names_its_row(tmp_path):
    rows = [ROWS[0], {"prompt": json.loads(nested(200)), "answer": "3"}]
    with pytest.raises(DataError, match="row 2, field 'prompt': a list prompt must be chat messages"):
        dataset(tmp_path, rows)


# ------------------------------------------------------------------ the command line


def test_overrides_after_a_flag_apply_in_order(tmp_path, capsys, no_model):
    data = write_jsonl(tmp_path / "d.jsonl", [ROWS[0], {"prompt": "1+1+1+1+1=", "answer": "5"}])
    argv = ["train", *run_config(tmp_path, data), "rollout.max_prompt_tokens=100", "--overwrite",
            "rollout.max_prompt_tokens=8"]
    assert main(argv) == 2  # the later override wins: 10 tokens > 8
    assert "row 2: prompt is 10 tokens, longer than rollout.max_prompt_tokens (8)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--bogus"])
    assert stop.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err
