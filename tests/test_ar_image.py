"""rlvr.images.ar: a class-conditional AR image policy over VQ codes served by the core's HFCausalLM: it samples
exactly T codes, its training log-probs equal the HF forward's and the sampler's, it saves and reloads, and its
codes decode to images through the VQ tokenizer."""

import torch

from rlvr.batch import Sample
from rlvr.images.ar import ar_model, code_ids, code_tokenizer, image_policy, load_image_policy
from rlvr.images.vq import VQTokenizer
from rlvr.policies.base import SamplingParams


def policy_and_batch(steps=16):
    tok = code_tokenizer(codes=32, classes=4)
    policy = image_policy(ar_model(tok, hidden=32, layers=2, heads=2, seed=0), tok)
    samples = [Sample(prompt=f"<class_{k % 4}>") for k in range(6)]
    batch = policy.generate(samples, group_ids=torch.arange(6), seeds=torch.arange(6),
                            params=SamplingParams(max_new_tokens=steps, temperature=1.0))
    return policy, batch


def test_the_vocabulary_round_trips():
    tok = code_tokenizer(codes=32, classes=4)
    assert tok("<class_3>")["input_ids"] == [3 + 3] and len(tok) == 3 + 4 + 32
    ids = tok("<code_0><code_31><code_7>")["input_ids"]
    assert ids == [7, 38, 14] and tok.decode(ids) == "<code_0><code_31><code_7>"


def test_it_samples_exactly_t_codes_and_its_log_probs_are_the_trainers():
    policy, batch = policy_and_batch()
    codes = code_ids(policy, batch.completion_ids)
    assert codes.shape == (6, 16) and (codes >= 0).all() and (codes < 32).all() and batch.completion_mask.all()
    logp, _ = policy.logp(batch)  # the lean forward
    torch.testing.assert_close(logp, batch.rollout_logp, rtol=0, atol=1e-5)  # sampler == trainer
    with torch.no_grad():  # and the plain HF forward
        out = policy.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        P = batch.prompt_ids.shape[1]
        ref = out[:, P - 1 : -1].log_softmax(-1).gather(-1, batch.completion_ids[..., None])[..., 0]
    torch.testing.assert_close(logp, ref, rtol=0, atol=1e-5)
    vq = VQTokenizer(size=16, codes=32)
    assert vq.decode(codes).shape == (6, 3, 16, 16)


def test_it_saves_and_reloads_as_an_image_policy(tmp_path):
    policy, batch = policy_and_batch(steps=4)
    policy.save(tmp_path / "ar")
    again = load_image_policy(str(tmp_path / "ar"))
    assert again.banned == policy.banned
    torch.testing.assert_close(again.logp(batch)[0], policy.logp(batch)[0], rtol=0, atol=1e-6)
