"""Dataset-backed tasks: rows load from .jsonl, .json, .csv, .parquet and save_to_disk folders with custom field
names and an optional system prompt; bad data fails with the file, the 1-based row and the field."""

import json

import pytest

from rlvr.tasks import TASKS

ROWS = [
    {"question": "What is 1/2 + 1/4?", "solution": "\\frac{3}{4}", "level": 1},
    {"question": "What is 2+2?", "solution": "4", "level": 2},
    {"question": "Solve x+1=3.", "solution": "2", "level": 1},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_file(tmp_path, fmt):
    if fmt == "jsonl":
        return write_jsonl(tmp_path / "d.jsonl", ROWS)
    if fmt == "json":
        path = tmp_path / "d.json"
        path.write_text(json.dumps({"train": ROWS, "test": ROWS[:1]}))
        return path
    if fmt == "csv":
        path = tmp_path / "d.csv"
        lines = ["question,solution,level"] + [f'"{r["question"]}","{r["solution"]}",{r["level"]}' for r in ROWS]
        path.write_text("\n".join(lines) + "\n")
        return path
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = tmp_path / "d.parquet"
        pq.write_table(pa.Table.from_pylist(ROWS), path)
        return path
    import datasets

    path = tmp_path / "hf"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet", "hf"])
def test_load_formats_with_custom_fields(tmp_path, fmt):
    path = write_file(tmp_path, fmt)
    task = TASKS.build("dataset", path=str(path), prompt_field="question", answer_field="solution")
    assert len(task) == 3 and task.name == "dataset"
    s = task[1]
    assert s.prompt == "What is 2+2?" and str(s.answer) == "4" and s.index == 1 and s.task == "dataset"
    assert str(s.meta["level"]) == "2" and "question" not in s.meta
    assert task.score(task[0], "so \\boxed{0.75}") == 1.0  # math equivalence by default
    assert task.score(task[0], "\\boxed{0.7}") == 0.0
    for sample in task:
        assert task.score(sample, task.reference(sample)) == 1.0


def test_system_prompt_makes_chat_messages(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    task = TASKS.build(
        "dataset", path=str(path), prompt_field="question", answer_field="solution", system_prompt="Think first."
    )
    assert task[2].prompt == [
        {"role": "system", "content": "Think first."},
        {"role": "user", "content": "Solve x+1=3."},
    ]


def test_chat_prompts_are_kept(tmp_path):
    chat = [{"role": "user", "content": "2+2?"}]
    path = write_jsonl(tmp_path / "chat.jsonl", [{"prompt": chat, "answer": "4"}])
    assert TASKS.build("dataset", path=str(path))[0].prompt == chat
    with_system = TASKS.build("dataset", path=str(path), system_prompt="Be brief.")[0].prompt
    assert with_system == [{"role": "system", "content": "Be brief."}, *chat]


def test_size_split_scorer_and_name(tmp_path):
    path = write_file(tmp_path, "json")
    task = TASKS.build("dataset", path=str(path), prompt_field="question", answer_field="solution", size=2)
    assert len(task) == 2
    with pytest.raises(IndexError):
        task[2]
    test = TASKS.build(
        "dataset", path=str(path), prompt_field="question", answer_field="solution", split="test", task_name="mini"
    )
    assert len(test) == 1 and test[0].task == "mini"
    exact = TASKS.build("dataset", path=str(path), prompt_field="question", answer_field="solution", scorer="exact")
    assert exact.score(exact[1], "4") == 1.0 and exact.score(exact[0], "0.75") == 0.0
    with pytest.raises(ValueError, match=r"size must be an integer in \[1, 3\]"):
        TASKS.build("dataset", path=str(path), prompt_field="question", answer_field="solution", size=5)
    with pytest.raises(ValueError, match=r"no split 'validation'|without split 'validation'"):
        TASKS.build("dataset", path=str(path), split="validation")
    with pytest.raises(ValueError, match="unknown reward"):
        TASKS.build("dataset", path=str(path), prompt_field="question", answer_field="solution", scorer="mathh")


def test_missing_field_names_file_row_and_fields(tmp_path):
    rows = [{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": "2"}, {"prompt": "c", "solution": "3"}]
    path = write_jsonl(tmp_path / "broken.jsonl", rows)
    with pytest.raises(ValueError) as info:
        TASKS.build("dataset", path=str(path))
    msg = str(info.value)
    assert "broken.jsonl" in msg and "row 3" in msg and "'answer'" in msg and "['prompt', 'solution']" in msg


@pytest.mark.parametrize("fmt", ["parquet", "hf"])
def test_missing_column_in_columnar_formats(tmp_path, fmt):
    path = write_file(tmp_path, fmt)
    with pytest.raises(ValueError, match=r"row 1: missing field 'prompt'.*question"):
        TASKS.build("dataset", path=str(path))


def test_missing_file_and_bad_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        TASKS.build("dataset", path=str(tmp_path / "nowhere.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "answer": "1"}\n{"prompt": \n')
    with pytest.raises(ValueError, match=r"bad.jsonl.*line 2.*invalid JSON"):
        TASKS.build("dataset", path=str(bad))
    with pytest.raises(ValueError, match="unsupported extension '.txt'"):
        (tmp_path / "d.txt").write_text("x")
        TASKS.build("dataset", path=str(tmp_path / "d.txt"))


def test_null_answer_in_saved_dataset_is_found_at_build(tmp_path):
    import datasets

    rows = [{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": "2"}, {"prompt": "c", "answer": None}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    with pytest.raises(ValueError, match=r"hf'?, row 3: missing field 'answer'"):
        TASKS.build("dataset", path=str(tmp_path / "hf"))


def test_dataset_reference_plain_or_boxed(tmp_path):
    from rlvr.tasks import TASKS

    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "p", "answer": "1.5-3.0"}\n')
    plain = TASKS.build("dataset", path=str(path), scorer="exact", reference="plain")
    boxed = TASKS.build("dataset", path=str(path), scorer="exact")
    assert plain.reference(plain[0]) == "1.5-3.0" and boxed.reference(boxed[0]) == r"\boxed{1.5-3.0}"
    with pytest.raises(ValueError, match="reference must be 'boxed' or 'plain'"):
        TASKS.build("dataset", path=str(path), reference="latex")
