"""rlvr.policies.vllm_engine on a CPU: the one-line refusals of rollout.engine vllm, that nothing imports vllm until an
engine starts, the request / engine arguments, and `to_batch` (vLLM's outputs -> Batch) against the Batch the HF
sampler builds for the same tokens. The engine's sleep / wake / weight-sync order runs against a fake `vllm` module
that records its calls. vLLM itself never runs here (tests/gpu/check_scale.py runs it on a GPU)."""

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from dataclasses import replace as dataclasses_replace

import pytest
import torch

from rlvr.batch import Sample
from rlvr.config import ConfigError, load_config, validate
from rlvr.policies import SamplingParams
from rlvr.policies.causal_lm import HFCausalLM
from rlvr.policies.vllm_engine import (
    LOGPROBS_MODE,
    VLLMSampler,
    completion_of,
    engine_kwargs,
    eos_ids,
    prompt_lists,
    sampling_kwargs,
    to_batch,
)
from rlvr.seeding import row_seeds

# ---- fakes with the attributes of vLLM's RequestOutput / CompletionOutput / Logprob -----------------------------


@dataclass
class Logprob:
    logprob: float


@dataclass
class Completion:
    token_ids: list
    logprobs: list  # one {token_id: Logprob} per token
    finish_reason: str


@dataclass
class Request:
    outputs: list


def fake_output(tokens: list[int], logps: list[float], finish: str) -> Request:
    return Request([Completion(tokens, [{t: Logprob(lp), t + 1: Logprob(-99.0)} for t, lp in zip(tokens, logps)],
                               finish)])


@pytest.fixture(scope="module")
def policy():
    return HFCausalLM.load(config="qwen2-tiny", seed=0)


# ---- the config's refusals ----------------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_vllm_is_refused_in_one_line_without_cuda():
    with pytest.raises(ConfigError, match=r"^rollout.engine 'vllm' needs a CUDA GPU .*use rollout.engine: hf$"):
        validate(load_config(None, ["model.config=qwen2-micro", "rollout.engine=vllm"]))


@pytest.mark.parametrize("over, message", [
    (["env.name=guess_number", "task.name=guess_number"], "env.name: not with rollout.engine 'vllm' yet"),
    (["rollout.max_staleness=1"], "rollout.max_staleness: not with rollout.engine 'vllm' yet"),
    (["distributed.backend=ray"], "distributed.rollout_workers: not with rollout.engine 'vllm' yet"),
    (["distributed.backend=ray", "distributed.rollout_workers=0", "distributed.trainers=2"],
     "distributed.trainers: not with rollout.engine 'vllm' yet"),
    (["rollout.vllm.sleep_level=3"], "rollout.vllm.sleep_level must be 1 or 2, got 3"),
])
def test_what_vllm_cannot_run_is_refused_before_the_machine_is_asked(over, message):
    with pytest.raises(ConfigError, match=f"^{message}"):
        validate(load_config(None, ["model.config=qwen2-micro", "rollout.engine=vllm", *over]))


def test_unknown_engine_is_refused():
    with pytest.raises(ConfigError, match=r"rollout.engine must be 'hf' or 'vllm', got 'foo'"):
        validate(load_config(None, ["model.config=qwen2-micro", "rollout.engine=foo"]))


def test_importing_the_engine_and_the_run_never_imports_vllm():
    # with sys.modules["vllm"] = None any `import vllm` raises: the import below fails if either module imports it
    code = ("import sys; sys.modules['vllm'] = None; import rlvr.policies.vllm_engine, rlvr.run; "
            "assert sys.modules['vllm'] is None")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_build_sampler_starts_the_vllm_engine_and_says_which_extra(policy, monkeypatch):
    from rlvr.run import build_sampler

    monkeypatch.setitem(sys.modules, "vllm", None)  # not installed (or hidden where it is)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")  # start sets it; restored after the test
    cfg = load_config(None, ["rollout.engine=vllm"])  # not validated: this machine has no CUDA
    with pytest.raises(ImportError, match=r"pip install 'rlvr\[vllm\]'"):
        build_sampler(cfg, policy)


def test_start_refuses_what_vllm_cannot_sample(policy, monkeypatch):
    settings = load_config(None).rollout.vllm
    banned = HFCausalLM(policy.model, policy.tokenizer, banned=(5,))
    with pytest.raises(ValueError, match="banned tokens"):
        VLLMSampler.start(banned, SamplingParams(max_new_tokens=4), 2, settings=settings)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="torchrun"):
        VLLMSampler.start(policy, SamplingParams(max_new_tokens=4), 2, settings=settings)


# ---- the requests and the engine ----------------------------------------------------------------------------------


def test_sampling_kwargs():
    p = SamplingParams(max_new_tokens=7, temperature=0.7, top_p=0.9, top_k=0, stop=("\n",))
    kw = sampling_kwargs(p, -3)
    assert kw["top_k"] == -1  # rlvr's 0 (off) is vLLM's -1
    assert kw["seed"] == (-3) & ((1 << 63) - 1) and kw["seed"] >= 0  # a torch.Generator seed
    assert (kw["n"], kw["logprobs"], kw["max_tokens"], kw["temperature"], kw["top_p"]) == (1, 0, 7, 0.7, 0.9)
    assert kw["stop"] == ["\n"] and kw["detokenize"]  # vLLM finds stop strings in its own text
    greedy = sampling_kwargs(SamplingParams(max_new_tokens=3, top_k=5, greedy=True), 11)
    assert greedy["temperature"] == 0.0 and greedy["top_k"] == 5 and not greedy["detokenize"]


def test_engine_kwargs():
    colocated = engine_kwargs("/m", colocate=True, device="cuda:1", gpu_memory_utilization=0.4, enforce_eager=False,
                              max_model_len=None, dtype=torch.bfloat16, seed=3)
    assert colocated["enable_sleep_mode"] and "device" not in colocated
    assert (colocated["dtype"], colocated["logprobs_mode"]) == ("bfloat16", LOGPROBS_MODE) == ("bfloat16",
                                                                                                "processed_logprobs")
    apart = engine_kwargs("/m", colocate=False, device="cuda:1", gpu_memory_utilization=0.8, enforce_eager=True,
                          max_model_len=512, dtype=torch.float32, seed=3)
    assert not apart["enable_sleep_mode"] and apart["device_ids"] == [1] and "device" not in apart  # no LLM(device=)
    assert (apart["dtype"], apart["max_model_len"], apart["gpu_memory_utilization"]) == ("float32", 512, 0.8)
    big = engine_kwargs("/m", colocate=True, device="cuda:1", gpu_memory_utilization=0.4, enforce_eager=False,
                        max_model_len=None, dtype=torch.bfloat16, seed=(1 << 32) + 7)
    assert big["seed"] == 7  # vLLM's engine seed lies in [0, 2**32 - 1]


def test_prompt_lists_drop_left_padding():
    ids = torch.tensor([[0, 0, 5, 6], [7, 8, 9, 4]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert prompt_lists(ids, mask) == [[5, 6], [7, 8, 9, 4]]


def test_completion_of_reads_the_sampled_tokens_logprobs():
    tokens, logps, finish = completion_of(fake_output([4, 9], [-0.5, -2.0], "length"))
    assert (tokens, logps, finish) == ([4, 9], [-0.5, -2.0], "length")
    broken = Request([Completion([4, 9], [{4: Logprob(-0.5)}], "length")])
    with pytest.raises(RuntimeError, match="1 log-probs for 2 tokens"):
        completion_of(broken)


# ---- vLLM's outputs -> the HF sampler's Batch ---------------------------------------------------------------------


def hf_batch(policy, params):
    samples = [Sample(prompt=f"{i}+{i * 7}=") for i in range(4) for _ in range(4)]  # prompts of 4 and 5 characters
    group_ids = torch.arange(4).repeat_interleave(4)
    seeds = row_seeds(0, "rollout", group_ids, torch.arange(4).repeat(4))
    return policy.generate(samples, group_ids=group_ids, seeds=seeds, params=params), samples, group_ids


def test_to_batch_equals_the_hf_samplers_batch(policy):
    params = SamplingParams(max_new_tokens=12, stop=("a", "b", "c"))
    hf, samples, group_ids = hf_batch(policy, params)
    eos = eos_ids(policy)
    ended_by_eos = [bool(row[m.bool()][-1].item() in eos) for row, m in zip(hf.completion_ids, hf.completion_mask)]
    # the seeded tiny model gives every kind of row: EOS-ended, stop-string-ended and truncated
    assert any(ended_by_eos) and hf.truncated.any() and (~hf.truncated & ~torch.tensor(ended_by_eos)).any()
    outputs = []
    for row, m, lp, cut in zip(hf.completion_ids, hf.completion_mask, hf.rollout_logp, hf.truncated):
        keep = m.bool()
        outputs.append(fake_output(row[keep].tolist(), lp[keep].tolist(), "length" if cut else "stop"))
    ids, mask, _ = policy.encode_inputs(samples)
    got = to_batch([completion_of(o) for o in outputs], prompt_ids=ids, prompt_mask=mask, group_ids=group_ids,
                   samples=samples, tokenizer=policy.tokenizer, eos=eos, stop=params.stop, pad_id=policy.pad_id)
    for name in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "loss_mask", "truncated",
                 "group_ids"):
        a, b = getattr(got, name), getattr(hf, name)
        assert a.dtype == b.dtype and torch.equal(a, b), name
    torch.testing.assert_close(got.rollout_logp, hf.rollout_logp, rtol=0, atol=1e-6)
    assert got.rollout_logp.dtype == hf.rollout_logp.dtype
    assert got.texts == hf.texts and got.samples == hf.samples


def test_to_batch_by_hand(policy):
    tok = policy.tokenizer
    a, b, c, x = (tok.convert_tokens_to_ids(ch) for ch in "abcx")
    eos, pad = 1, policy.pad_id
    rows = [([a, b, eos], [-1.0, -2.0, -3.0], "stop"),  # ended by EOS: its EOS is trained on, not in the text
            ([x, a, b], [-0.1, -0.2, -0.3], "stop"),  # ended by the stop string "ab": text cut before it
            ([c, c], [-0.5, -0.6], "length"),  # max_tokens reached
            ([x, eos], [-0.7, -0.8], "length")]  # EOS on the last allowed token: ended, not truncated
    ids = torch.ones(4, 2, dtype=torch.long)
    got = to_batch(rows, prompt_ids=ids, prompt_mask=torch.ones_like(ids), group_ids=torch.tensor([0, 0, 1, 1]),
                   samples=[Sample(prompt="p")] * 4, tokenizer=tok, eos=[eos], stop=("ab",), pad_id=pad)
    assert got.completion_ids.tolist() == [[a, b, eos], [x, a, b], [c, c, pad], [x, eos, pad]]
    assert got.completion_mask.tolist() == [[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 1, 0]]
    assert got.rollout_logp[2].tolist() == pytest.approx([-0.5, -0.6, 0.0])
    assert got.truncated.tolist() == [False, False, True, False]
    assert got.texts == ["", "x", "cc", "x"]  # "ab" cut (row 0's text is "ab" before the cut), EOS never shown
    masked = got.mask_truncated()
    assert masked.loss_mask.sum(1).tolist() == [3.0, 3.0, 0.0, 2.0]


# ---- the engine's sleep / wake / weight-sync order, against a fake vllm module ------------------------------------


class FakeLLM:
    """Records the calls VLLMSampler makes; each request samples [7, 8, EOS] with log-probs -1, -2, -3."""

    def __init__(self, **kwargs):
        self.kwargs, self.calls, self.loaded = kwargs, [], []

    def sleep(self, level):
        self.calls.append(f"sleep{level}")

    def wake_up(self, tags):
        self.calls.append("wake:" + ",".join(tags))

    def apply_model(self, fn):
        self.calls.append("load")
        return [fn(self)]

    def load_weights(self, weights):  # the "model" apply_model hands over
        self.loaded.append([name for name, _ in weights])

    def reset_prefix_cache(self):
        self.calls.append("reset_prefix_cache")

    def generate(self, requests, params, use_tqdm):
        self.calls.append(f"generate{len(requests)}")
        self.params = params
        return [fake_output([7, 8, 1], [-1.0, -2.0, -3.0], "stop") for _ in requests]


@pytest.fixture
def fake_vllm(monkeypatch):
    module = type(sys)("vllm")
    module.LLM = FakeLLM
    module.SamplingParams = lambda **kw: kw
    module.__version__, module.__version_tuple__ = "0.34.0", (0, 34, 0)
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")  # start must turn it off; restored after the test
    return module


@pytest.mark.parametrize("level", [1, 2])
def test_colocated_engine_sleeps_wakes_and_loads_the_weights_after_sync(policy, fake_vllm, level):
    settings = dataclasses_replace(load_config(None).rollout.vllm, sleep_level=level)
    params = SamplingParams(max_new_tokens=3, temperature=0.8)
    sampler = VLLMSampler.start(policy, params, 2, settings=settings, seed=5)
    llm = sampler.engine.llm
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert llm.kwargs["enable_sleep_mode"] and llm.kwargs["logprobs_mode"] == "processed_logprobs"
    assert llm.kwargs["seed"] == 5 and llm.kwargs["dtype"] == "float32"
    samples = [Sample(prompt="1+1="), Sample(prompt="2+2=")]
    seeds = torch.tensor([3, -4])
    batch = sampler.generate(samples, torch.tensor([0, 0]), seeds)
    first = ["wake:weights", "load", "reset_prefix_cache"] if level == 2 else ["wake:weights"]  # level 2 drops them
    assert llm.calls == [f"sleep{level}", *first, "wake:kv_cache", "generate2", f"sleep{level}"]
    assert [p["seed"] for p in llm.params] == [3, (-4) & ((1 << 63) - 1)] and llm.params[0]["temperature"] == 0.8
    assert batch.completion_ids.tolist() == [[7, 8, 1]] * 2 and not batch.truncated.any()
    assert batch.rollout_logp.tolist() == [[-1.0, -2.0, -3.0]] * 2
    llm.calls.clear()
    sampler.sync(policy)  # after an update: nothing moves until the engine samples again
    assert llm.calls == []
    sampler.with_params(dataclasses_replace(params, greedy=True)).generate(samples, torch.tensor([0, 0]), seeds)
    assert llm.calls == ["wake:weights", "load", "reset_prefix_cache", "wake:kv_cache", "generate2", f"sleep{level}"]
    assert llm.params[0]["temperature"] == 0.0
    assert llm.loaded[-1] == [name for name, _ in policy.model.named_parameters()]  # HF names, every parameter
    folder = sampler.engine.folder.name
    assert os.path.exists(os.path.join(folder, "config.json"))  # the engine loaded the policy's export
    sampler.close()
    assert not os.path.exists(folder)


def test_engine_on_its_own_gpu_never_sleeps(policy, fake_vllm, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())  # no GPU here
    settings = dataclasses_replace(load_config(None).rollout.vllm, colocate=False, device="cuda:1")
    sampler = VLLMSampler.start(policy, SamplingParams(max_new_tokens=3), 2, settings=settings)
    llm = sampler.engine.llm
    assert llm.kwargs["device_ids"] == [1] and not llm.kwargs["enable_sleep_mode"]
    sampler.generate([Sample(prompt="1+1=")], torch.tensor([0]), torch.tensor([1]))
    sampler.sync(policy)
    sampler.generate([Sample(prompt="1+1=")], torch.tensor([0]), torch.tensor([1]))
    assert llm.calls == ["generate1", "load", "reset_prefix_cache", "generate1"]
    sampler.close()


def test_engine_on_its_own_gpu_is_refused_before_vllm_has_device_ids(policy, fake_vllm):
    fake_vllm.__version__, fake_vllm.__version_tuple__ = "0.23.0", (0, 23, 0)
    settings = dataclasses_replace(load_config(None).rollout.vllm, colocate=False, device="cuda:1")
    with pytest.raises(ValueError, match=r"colocate false needs vLLM >= 0.24 .*this is 0.23.0"):
        VLLMSampler.start(policy, SamplingParams(max_new_tokens=3), 2, settings=settings)
    colocated = VLLMSampler.start(policy, SamplingParams(max_new_tokens=3), 2, settings=load_config(None).rollout.vllm)
    assert "device_ids" not in colocated.engine.llm.kwargs  # colocated: any vLLM
    colocated.close()
