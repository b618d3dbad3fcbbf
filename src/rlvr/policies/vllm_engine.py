"""A vLLM engine that samples the rollouts of a text policy (rollout.engine: vllm): the same sampler interface as
rlvr.rollout.collect.TextSampler, the trainer's weights pushed into the engine after every update.

    sampler = VLLMSampler.start(policy, params, group_size=8, settings=cfg.rollout.vllm, seed=cfg.seed)
    batch = sampler.generate(samples, group_ids, seeds)    # the Batch policy.generate builds, sampled by vLLM
    ...update the policy...
    sampler.sync(policy)                                   # rlvr.trainer.rl_step does this after each update
    sampler.close()                                        # rlvr.trainer.train does this at the end

1. Start: the policy's model and tokenizer are saved to a temporary folder (Policy.save) and `vllm.LLM` loads it, in
   this process (VLLM_ENABLE_V1_MULTIPROCESSING=0), so the weight sync is a plain tensor copy with no serialisation.
   colocate: the engine shares the trainer's GPU with sleep mode on (vLLM's in-process worker takes the first
   visible GPU: the trainer's current device outside torchrun, which is refused). Otherwise it runs on
   `settings.device`, passed as `LLM(device_ids=[its index])`: vLLM >= 0.24 (`LLM` has no `device` keyword, and older
   in-process engines always take the first visible GPU, so `start` refuses colocate false there). Every engine call
   then runs under `torch.cuda.device(that GPU)`, and the trainer's current device is restored after each.
2. Prompts are encoded by the policy itself (`encode_inputs`: chat template and all), so vLLM receives token ids,
   never text. Row i is one request with its own `seed` (the 63 low bits of rlvr's row seed), n=1 and logprobs=0:
   vLLM returns the sampled token's log-prob only. vLLM's own bounds apply: temperature in [0, 2] (0.34 refuses more),
   and a temperature below 0.01 is raised to 0.01.
3. Log-probs: the engine runs with logprobs_mode="processed_logprobs", i.e. log softmax(logits / temperature), the
   distribution rlvr's own sampler reports (rlvr.policies.sampling) and the trainer recomputes. Exact when top_k=0
   and top_p=1 (the RL default). With top-k / top-p vLLM reports the truncated, renormalised distribution (the one
   it sampled from), rlvr the untruncated one: log-probs of kept tokens then differ by log(kept mass), and the
   mismatch correction sees that gap. Greedy rows (evaluation) report the temperature-1 log-probs.
4. The Batch: `to_batch` gives what HFCausalLM.generate gives for the same tokens: completion ids right-padded with
   the pad id, the mask through the token that ended the row (EOS or the one that completed a stop string),
   rollout_logp 0 outside it, truncated = no EOS / stop before max_new_tokens, texts decoded by the policy's
   tokenizer without EOS and cut before the first stop string; prompt ids and mask are the policy's.
5. Colocated: the engine sleeps (settings.sleep_level) after every generate call, so the update has the GPU's memory;
   the next generate wakes the weights, loads the policy's current weights into them when an update happened since
   (`sync`) or level-2 sleep dropped them, then wakes the KV cache. Separate GPU: no sleep; the new weights are
   copied across at the next generate as well. Loading goes through `LLM.apply_model(model.load_weights(...))`
   with the HF parameter names, then `reset_prefix_cache()` (cached prefixes hold the old weights' keys).
Refused with one line: LoRA policies (the merged weights would need their own export), vision-language policies and
policies with banned tokens (vLLM would renormalise over the allowed ones), and torchrun worlds (vLLM's in-process
executor makes its own process group). rlvr.config._check_engine refuses a CPU, a missing vllm, environments,
asynchronous rollouts and Ray rollout workers before any model is loaded.

Sampling is reproducible per row seed within vLLM, but vLLM's random streams are not rlvr's: the same seed samples
other completions than the HF sampler, and batched GPU numerics may still move a draw.

Tested (tests/test_vllm_engine.py, CPU): the config refusals; that importing this module (and rlvr.run) never
imports vllm; the request and engine arguments; `to_batch` against HFCausalLM.generate's Batch for the same tokens
and on hand-made EOS / stop-string / truncated rows; the refusals of `start`. GPU (tests/gpu/check_scale.py): vLLM
throughput and the log-prob gap to the trainer across a sleep / wake round. Untested here: everything that runs vLLM
(start, generate, sync, sleep and wake, close) is checked against vLLM's released source, 0.34.0 and 0.10.2 (LLM and
its EngineArgs keywords, SamplingParams, TokensPrompt, RequestOutput / CompletionOutput / Logprob, sleep(level) /
wake_up(tags), apply_model, reset_prefix_cache, logprobs_mode; device_ids from 0.24.0), not run in CI: no GPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import tempfile
from dataclasses import dataclass
from typing import Any

import torch

from rlvr.batch import Batch, Sample
from rlvr.policies.base import Policy, SamplingParams

LOGPROBS_MODE = "processed_logprobs"  # after temperature (and top-k / top-p): what rlvr's sampler reports
SEED_BITS = (1 << 63) - 1  # a request's seed: an int64 in vLLM 0.34's sampler, a torch.Generator seed in 0.10
ENGINE_SEED_BITS = (1 << 32) - 1  # LLM(seed=...): vLLM 0.34's ModelConfig.seed must lie in [0, 2**32 - 1]
DEVICE_IDS_VERSION = (0, 24)  # the first vLLM whose LLM takes device_ids (its GPU without CUDA_VISIBLE_DEVICES)


def refusal(policy: Policy) -> str | None:
    """Why vLLM cannot sample for `policy` (one line), or None."""
    from rlvr.policies.causal_lm import HFCausalLM

    model = getattr(policy, "model", None)
    if not isinstance(policy, HFCausalLM) or policy.prompt_inputs:
        return f"rollout.engine 'vllm' samples text causal LMs only, not {type(policy).__name__}; use engine hf"
    if hasattr(model, "peft_config"):
        return "rollout.engine 'vllm' with model.lora: not yet (the engine loads merged weights); use engine hf"
    if policy.banned:
        return "rollout.engine 'vllm' with banned tokens: not yet (vLLM renormalises over the rest); use engine hf"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return "rollout.engine 'vllm' with torchrun: not yet (one process only); use engine hf"
    return None


def engine_kwargs(folder: str, *, colocate: bool, device: str, gpu_memory_utilization: float,
                  enforce_eager: bool, max_model_len: int | None, dtype: torch.dtype, seed: int) -> dict[str, Any]:
    """Keywords of `vllm.LLM` for the exported policy folder (all but `model` go to vLLM's EngineArgs)."""
    kwargs = dict(model=folder, tokenizer=folder, dtype=str(dtype).removeprefix("torch."),
                  gpu_memory_utilization=gpu_memory_utilization, enforce_eager=enforce_eager,
                  max_model_len=max_model_len, seed=int(seed) & ENGINE_SEED_BITS, logprobs_mode=LOGPROBS_MODE,
                  enable_sleep_mode=colocate, enable_prefix_caching=True)  # a group's G rows share their prompt
    if not colocate:
        # EngineArgs has no `device` (its DeviceConfig takes only the platform's type); device_ids=[i] puts the
        # in-process worker on the i-th GPU this process sees (an index into CUDA_VISIBLE_DEVICES when that is set)
        kwargs["device_ids"] = [torch.device(device).index or 0]
    return kwargs


def sampling_kwargs(params: SamplingParams, seed: int) -> dict[str, Any]:
    """Keywords of `vllm.SamplingParams` for one row."""
    return dict(n=1, seed=int(seed) & SEED_BITS, temperature=0.0 if params.greedy else params.temperature,
                top_p=params.top_p, top_k=params.top_k or -1, max_tokens=params.max_new_tokens,
                stop=list(params.stop), logprobs=0,  # the sampled token's log-prob only
                detokenize=bool(params.stop))  # texts come from the policy's tokenizer; vLLM's only for stops


def prompt_lists(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> list[list[int]]:
    """Each row's real prompt tokens (left padding dropped)."""
    return [ids[m.bool()].tolist() for ids, m in zip(prompt_ids.cpu(), prompt_mask.cpu())]


def eos_ids(policy: Policy) -> list[int]:
    """The ids that end a row, as rlvr's sampler takes them: the generation config's, else the tokenizer's."""
    eos = getattr(getattr(policy.model, "generation_config", None), "eos_token_id", None)
    eos = policy.tokenizer.eos_token_id if eos is None else eos
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)


def completion_of(output) -> tuple[list[int], list[float], str | None]:
    """(tokens, their log-probs, finish_reason) of a vLLM RequestOutput with one CompletionOutput."""
    out = output.outputs[0]
    tokens = list(out.token_ids)
    if out.logprobs is None or len(out.logprobs) != len(tokens):
        raise RuntimeError(f"vLLM returned {0 if out.logprobs is None else len(out.logprobs)} log-probs for "
                           f"{len(tokens)} tokens; the requests ask logprobs=0 (one per sampled token)")
    return tokens, [float(lp[t].logprob) for lp, t in zip(out.logprobs, tokens)], out.finish_reason


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """`text` up to (not including) the earliest stop string."""
    ends = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return text[: min(ends)] if ends else text


def to_batch(rows: list[tuple[list[int], list[float], str | None]], *, prompt_ids: torch.Tensor,
             prompt_mask: torch.Tensor, group_ids: torch.Tensor, samples: list[Sample], tokenizer, eos: list[int],
             stop: tuple[str, ...], pad_id: int) -> Batch:
    """The Batch HFCausalLM.generate builds, from each row's (tokens, log-probs, finish_reason).

    A row ended (not truncated) when its last token is an EOS or vLLM finished it with "stop" (EOS or a stop
    string); its mask runs through that last token. A row cut by max_tokens finishes with "length".
    """
    device = prompt_ids.device
    T = max(1, max(len(tokens) for tokens, _, _ in rows))
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)  # (N, T) right-padded
    logp = torch.zeros(len(rows), T)  # (N, T) float32, 0 outside the mask
    mask = torch.zeros(len(rows), T, dtype=torch.long)  # (N, T)
    truncated = torch.zeros(len(rows), dtype=torch.bool)  # (N,)
    texts = []
    for r, (tokens, logps, finish) in enumerate(rows):
        n = len(tokens)
        ids[r, :n], logp[r, :n], mask[r, :n] = torch.tensor(tokens, dtype=torch.long), torch.tensor(logps), 1
        truncated[r] = not (n and (tokens[-1] in eos or finish == "stop"))
        text = tokenizer.decode([t for t in tokens if t not in eos], skip_special_tokens=True)
        texts.append(cut_at_stop(text, stop))
    mask = mask.to(device)
    return Batch(prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=ids.to(device),
                 completion_mask=mask, loss_mask=mask.float(), rollout_logp=logp.to(device),
                 truncated=truncated.to(device), texts=texts, group_ids=group_ids.to(device), samples=list(samples))


def on_device(device: str | None):
    """`device` as the current CUDA device for a block (None: leave it)."""
    return torch.cuda.device(device) if device is not None else contextlib.nullcontext()


class Engine:
    """One vllm.LLM, its sleep state and whether its weights are behind the policy's (shared by with_params copies)."""

    def __init__(self, llm, folder: tempfile.TemporaryDirectory, *, colocate: bool, sleep_level: int,
                 device: str | None = None):
        self.llm, self.folder, self.colocate, self.sleep_level = llm, folder, colocate, sleep_level
        self.device = device  # the engine's own GPU (not colocated): current while the engine runs
        self.asleep: set[str] = set()  # memory tags released: {"weights", "kv_cache"} while asleep
        self.stale = False  # the policy was updated since the engine's weights were loaded

    def wake(self, policy: Policy) -> None:
        """Weights back (and replaced by the policy's when stale or dropped), then the KV cache."""
        if "weights" in self.asleep:
            self.llm.wake_up(tags=["weights"])
            self.asleep.discard("weights")
            self.stale |= self.sleep_level == 2  # level 2 dropped them
        if self.stale:
            self.load(policy)
        if self.asleep:
            self.llm.wake_up(tags=sorted(self.asleep))
            self.asleep.clear()

    def sleep(self) -> None:
        if self.colocate and not self.asleep:
            self.llm.sleep(level=self.sleep_level)
            self.asleep = {"weights", "kv_cache"}

    def load(self, policy: Policy) -> None:
        """The policy's parameters copied into the engine's model, by their HF names (vLLM stacks q/k/v itself).
        FSDP shards are gathered one parameter at a time (every rank loads its own engine, in the same order)."""
        weights = [(name, p.detach().full_tensor() if hasattr(p, "full_tensor") else p.detach())
                   for name, p in policy.model.named_parameters()]
        self.llm.apply_model(lambda model: model.load_weights(weights))
        self.llm.reset_prefix_cache()  # cached prompt keys and values came from the old weights
        self.stale = False

    def close(self) -> None:
        self.llm = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.folder.cleanup()


@dataclass
class VLLMSampler:
    """TextSampler's interface, sampled by a vLLM engine; `sync` marks the engine's weights stale after an update."""

    policy: Policy
    params: SamplingParams
    group_size: int
    mask_truncated: bool = False
    engine: Engine | None = None

    @classmethod
    def start(cls, policy: Policy, params: SamplingParams, group_size: int, *, settings, mask_truncated: bool = False,
              seed: int = 0) -> VLLMSampler:
        """An engine holding the policy's current weights; `settings` is the config's rollout.vllm (VLLMConfig)."""
        why = refusal(policy)
        if why:
            raise ValueError(why)
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # engine core in this process: weights copied in place
        try:
            import vllm
        except ImportError as err:
            raise ImportError("rollout.engine 'vllm' needs vLLM: pip install 'rlvr[vllm]'") from err
        if not settings.colocate and tuple(vllm.__version_tuple__[:2]) < DEVICE_IDS_VERSION:
            raise ValueError(f"rollout.vllm.colocate false needs vLLM >= 0.24 (LLM(device_ids=...)), this is "
                             f"{vllm.__version__}; pip install -U vllm, or set rollout.vllm.colocate: true")
        folder = tempfile.TemporaryDirectory(prefix="rlvr-vllm-")
        policy.save(folder.name)
        dtype = params.dtype or next(policy.parameters()).dtype
        device = None if settings.colocate else settings.device
        with on_device(device):  # vLLM's worker calls torch.cuda.set_device; the context puts the trainer's back
            llm = vllm.LLM(**engine_kwargs(folder.name, colocate=settings.colocate, device=settings.device,
                                           gpu_memory_utilization=settings.gpu_memory_utilization,
                                           enforce_eager=settings.enforce_eager, max_model_len=settings.max_model_len,
                                           dtype=dtype, seed=seed))
        engine = Engine(llm, folder, colocate=settings.colocate, sleep_level=settings.sleep_level, device=device)
        engine.sleep()  # the trainer's first use of the GPU may be an update (or evaluation, which wakes it)
        return cls(policy, params, group_size, mask_truncated=mask_truncated, engine=engine)

    def with_params(self, params: SamplingParams) -> VLLMSampler:
        return dataclasses.replace(self, params=params)

    def generate(self, samples: list[Sample], group_ids: torch.Tensor, seeds: torch.Tensor) -> Batch:
        from vllm import SamplingParams as VLLMParams

        ids, mask, _ = self.policy.encode_inputs(samples)
        requests = [{"prompt_token_ids": p} for p in prompt_lists(ids, mask)]
        per_row = [VLLMParams(**sampling_kwargs(self.params, s)) for s in seeds.tolist()]
        with on_device(self.engine.device):  # vLLM's streams and graphs live on the engine's GPU
            self.engine.wake(self.policy)
            try:
                outputs = self.engine.llm.generate(requests, per_row, use_tqdm=False)
            finally:
                self.engine.sleep()
        batch = to_batch([completion_of(o) for o in outputs], prompt_ids=ids, prompt_mask=mask, group_ids=group_ids,
                         samples=samples, tokenizer=self.policy.tokenizer, eos=eos_ids(self.policy),
                         stop=self.params.stop, pad_id=self.policy.pad_id)
        return batch.mask_truncated() if self.mask_truncated else batch

    def sync(self, policy: Policy) -> None:
        """After an update: the engine loads `policy`'s weights before it samples again."""
        self.policy = policy
        self.engine.stale = True

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
