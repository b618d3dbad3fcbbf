"""Prompts that fit the model: at setup, before the model is loaded, a dataset row whose prompt is longer than the run's
limit is refused with one line naming its task, file and row, or cut from the left (issue 20 item 7: a
200,000-character prompt used to reach the model and ask for ~40 GB).

1. The limit is rollout.max_prompt_tokens, else the model's context (max_position_embeddings of the tiny config, the
   checkpoint's config.json or the GGUF file) less rollout.max_new_tokens; with neither known nothing is checked.
2. A prompt is counted as the policy will encode it: with the tokenizer the policy loads, through its chat template
   when it applies (a plain-text prompt as a user turn, as HFCausalLM.encode does).
3. A cheap bound picks the rows to tokenize: every token of a byte-level BPE, SentencePiece or character tokenizer
   covers at least one UTF-8 byte, so a prompt's bytes plus its template's bound its tokens (an Arrow string column
   is measured without reading its rows). Only a row whose bound exceeds the limit is tokenized.
4. rollout.truncate_prompts=left cuts a prompt at a token boundary to keep its last tokens (a chat prompt: its
   longest message's content), until the whole prompt fits; setup prints how many rows of each task were cut.
Only dataset tasks are checked (procedural tasks write short prompts); rows whose messages hold non-text content
(image parts) are skipped, and image or video tokens are never counted.

    notices = fit_prompts(cfg, [task, eval_task])  # rlvr.run.setup; raises PromptTooLong, else returns notices
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rlvr.config import ConfigError
from rlvr.errors import DataError

SLACK = 3  # tokens a tokenizer may add per text beyond one per byte: BOS, EOS and SentencePiece's leading "▁"
CUT_TRIES = 4  # a suffix re-tokenized may merge differently at its new start: cut again by the excess


class PromptTooLong(DataError):
    """A row whose prompt does not fit the model, found at setup before anything ran (the CLI exits 2)."""


@dataclass
class PromptFit:
    """How prompts are counted (the tokenizer, whether the chat template applies) and how many tokens they may have."""

    tokenizer: Any
    templated: bool
    limit: int
    why: str  # where the limit comes from, for the messages
    cut: bool  # rollout.truncate_prompts == "left"
    _skeletons: dict[tuple, int] = field(default_factory=dict, repr=False)

    def tokens(self, prompt: str | list[dict[str, Any]]) -> int:
        """The prompt's length in tokens as the policy encodes it."""
        from rlvr.policies.hf import encode_prompts

        as_sent = [{"role": "user", "content": prompt}] if self.templated and isinstance(prompt, str) else prompt
        ids, _ = encode_prompts(self.tokenizer, [as_sent], template=self.templated)  # (1, P)
        return ids.shape[1]

    def bound(self, prompt: str | list[dict[str, Any]]) -> int | None:
        """An upper bound on tokens(prompt) from its bytes, without tokenizing it; None for non-text content."""
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        if not all(isinstance(m.get("content"), str) for m in messages):
            return None
        roles = tuple(m.get("role") for m in messages)
        if roles not in self._skeletons:
            self._skeletons[roles] = self._template_bytes(roles) + SLACK * len(roles)
        return self._skeletons[roles] + sum(utf8_len(m["content"]) for m in messages)

    def _template_bytes(self, roles: tuple) -> int:
        """Bytes the template adds around messages with these roles (newlines between them without a template)."""
        if not self.templated:
            return max(len(roles) - 1, 0)
        # a one-character content: a template may leave out the frame of an empty message
        text = self.tokenizer.apply_chat_template([{"role": r, "content": "x"} for r in roles], tokenize=False,
                                                  add_generation_prompt=True)
        return utf8_len(text) - len(roles)


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def fit_prompts(cfg, tasks, *, policy=None) -> list[str]:
    """Check the prompts of the dataset tasks among `tasks` (mixtures looked into) against the run's limit, cutting
    them with truncate_prompts=left; returns one notice per task with rows cut. `policy`: a policy the caller loaded
    (rlvr.api), whose tokenizer and context count instead of the config's model."""
    from rlvr.tasks.dataset import DatasetTask
    from rlvr.tasks.mixture import MixtureTask

    found = []
    for task in tasks:
        parts = task.tasks.values() if isinstance(task, MixtureTask) else [task]
        found += [t for t in parts if isinstance(t, DatasetTask) and all(t is not f for f in found)]
    fit = prompt_fit(cfg, policy) if found else None
    if fit is None:
        return []
    notices = [fit_task(fit, task) for task in found]
    return list(dict.fromkeys(n for n in notices if n))  # a held-out copy of the same file says the same


def prompt_fit(cfg, policy=None) -> PromptFit | None:
    """The run's PromptFit, from the config's model without loading it (or from `policy`); None when no limit is
    known."""
    r = cfg.rollout
    if r.max_prompt_tokens is not None:
        limit, why = r.max_prompt_tokens, f"rollout.max_prompt_tokens ({r.max_prompt_tokens})"
    else:
        context = model_context(cfg, policy)
        if context is None:
            return None
        limit = context - r.max_new_tokens
        why = f"the model's context ({context}) less rollout.max_new_tokens ({r.max_new_tokens}): {limit}"
        if limit < 1:
            raise ConfigError(f"rollout.max_new_tokens ({r.max_new_tokens}) leaves no room for a prompt in the model's "
                              f"context ({context} tokens); lower it, or set rollout.max_prompt_tokens")
    counted = prompt_tokenizer(cfg, policy)
    return None if counted is None else PromptFit(*counted, limit, why, cut=r.truncate_prompts == "left")


def model_context(cfg, policy=None) -> int | None:
    """max_position_embeddings of the model's text config, read without loading weights (None when unknown)."""
    if policy is not None:
        return _positions(policy.model.config)
    m = cfg.model
    if m.config is not None:
        from rlvr.policies.hf import TINY_CONFIGS
        from rlvr.policies.vlm_models import VLM_CONFIGS

        spec = VLM_CONFIGS[m.config]["text_config"] if m.config in VLM_CONFIGS else TINY_CONFIGS.get(m.config, {})
        return {**spec, **m.config_overrides}.get("max_position_embeddings")
    from transformers import AutoConfig

    try:
        if m.path is not None:
            return _positions(AutoConfig.from_pretrained(m.path, local_files_only=True))
        file = _gguf(m.gguf_file)
        return _positions(AutoConfig.from_pretrained(file.parent, gguf_file=file.name, local_files_only=True))
    except (OSError, ValueError, ImportError):  # loading the model reports it, with its own fix
        return None


def _positions(config) -> int | None:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text, "max_position_embeddings", None)


def _gguf(spec):
    from rlvr.policies.hf import resolve_gguf

    return resolve_gguf(spec)


def prompt_tokenizer(cfg, policy=None) -> tuple[Any, bool] | None:
    """(tokenizer, templated) as the policy will have them: the tokenizer build_policy loads and whether plain-text
    prompts go through a chat template; None when the tokenizer comes only with the model (a GGUF file's, without
    the gguf package)."""
    if policy is not None:
        return policy.tokenizer, bool(getattr(policy, "templated", False))
    from rlvr.policies.hf import load_tokenizer

    m = cfg.model
    if m.gguf_file is not None and m.tokenizer is None:
        from transformers import AutoTokenizer

        try:
            file = _gguf(m.gguf_file)
            tok = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name, local_files_only=True)
        except (OSError, ValueError, ImportError):
            return None
    else:
        tok = load_tokenizer(m.tokenizer or m.path, None)
    if m.chat_template not in ("auto", "none"):  # a Jinja template replaces the tokenizer's (HFCausalLM)
        tok.chat_template = m.chat_template
    return tok, m.chat_template != "none" and bool(getattr(tok, "chat_template", None))


def fit_task(fit: PromptFit, task) -> str | None:
    """Refuse (or cut, into task.cut_prompts) each row of a DatasetTask over the limit; a notice when rows were cut."""
    cut = 0
    for i in over_bound(fit, task):
        prompt = task.prompt(i)
        n = fit.tokens(prompt)
        if n <= fit.limit:
            continue
        where = f"task {task.name!r} {task.path} row {i + 1}"
        if not fit.cut:
            raise PromptTooLong(f"{where}: prompt is {n} tokens, longer than {fit.why}; shorten or drop the row, or "
                                "set rollout.truncate_prompts: left to keep its last tokens")
        task.cut_prompts[i] = cut_left(fit, prompt, n, where)
        cut += 1
    if not cut:
        return None
    return (f"rlvr: task {task.name!r} {task.path}: {cut} of {len(task)} prompts longer than {fit.why} cut to their "
            "last tokens (rollout.truncate_prompts: left)")


def over_bound(fit: PromptFit, task):
    """Rows whose byte bound exceeds the limit: the only ones worth tokenizing."""
    base = fit.bound(task.as_prompt(""))  # the template and system prompt around a text prompt
    for i, size in enumerate(task.prompt_bytes()):
        if size is None or base is None:  # chat messages (or a null): bound from the row itself
            bound = fit.bound(task.prompt(i))
            if bound is not None and bound > fit.limit:
                yield i
        elif base + size > fit.limit:
            yield i


def cut_left(fit: PromptFit, prompt, n: int, where: str):
    """`prompt` cut at a token boundary of its text (a chat prompt: of its longest message's content) so that its n
    tokens fit the limit."""
    for _ in range(CUT_TRIES):
        messages = None if isinstance(prompt, str) else [dict(m) for m in prompt]
        longest = prompt if messages is None else max(messages, key=lambda m: len(m["content"]))
        text = prompt if messages is None else longest["content"]
        tail = drop_tokens(fit.tokenizer, text, n - fit.limit)
        if tail is None:
            raise PromptTooLong(f"{where}: prompt is {n} tokens and stays longer than {fit.why} with its text cut "
                                "away (template, other messages); raise the limit or shorten the system prompt")
        if messages is None:
            prompt = tail
        else:
            longest["content"] = tail
            prompt = messages
        n = fit.tokens(prompt)
        if n <= fit.limit:
            return prompt
    raise PromptTooLong(f"{where}: prompt could not be cut to {fit.why} ({n} tokens left); shorten the row")


def drop_tokens(tokenizer, text: str, drop: int) -> str | None:
    """`text` without its first `drop` tokens, cut at a token boundary; None when that leaves nothing."""
    if tokenizer.is_fast:
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        return text[offsets[drop][0]:] if drop < len(offsets) else None
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids[drop:]) if drop < len(ids) else None
