"""Multi-turn environments (rlvr.envs): the calculator and the guessing game with their tasks; the rollout loop keeps
each row token in / token out, loss-masks observations, sums per-turn rewards, ends rows at done / EOS / the turn and
token budgets, continues each row's sampling stream across turns; SFT batches mask the scripted observations."""

import pytest
import torch

from rlvr.batch import Sample
from rlvr.envs import ENVS, EnvSampler
from rlvr.envs.calculator import calculate, final_answer
from rlvr.policies import HFCausalLM, SamplingParams, char_tokenizer, encode_prompts
from rlvr.seeding import row_seeds
from rlvr.tasks import TASKS
from rlvr.warm_start import sft_batch


def test_calculator_values_and_bounds():
    assert calculate("123*456") == "56088" and calculate(" 2+3*4 ") == "14" and calculate("12-20") == "-8"
    for bad in ("1/2", "", "2**8", "1" * 13, "1+" * 20 + "1", "abc"):
        assert calculate(bad) == "error", bad
    env = ENVS.build("calculator")
    assert env.reset(Sample("1*2=")) is None and env.stop == ("</c>",)
    assert env.step("let me see <c>12*3</c>") == ("<r>36</r>", 0.0, False)
    assert env.step("<c>12*") == ("<r>error</r>", 0.0, False)
    assert env.step("36") == (None, 0.0, True)  # no call: the final answer


def test_tool_arithmetic_scores_the_answer_after_the_last_result():
    task = TASKS.build("tool_arithmetic", seed=0)
    s = task[0]
    a, b = map(int, s.meta["expr"].split("*"))
    assert 100 <= a <= 999 and 100 <= b <= 999 and s.prompt == f"{a}*{b}="
    turns = task.reference_turns(s)
    assert [t for _, t in turns] == [True, False, True]
    assert turns[1][0] == ENVS.build("calculator").step(turns[0][0])[0]  # the script's reply is the environment's
    transcript = "".join(text for text, _ in turns)
    assert task.score(s, transcript) == 1.0 and task.score(s, str(a * b)) == 1.0
    assert task.score(s, f"<c>{a}*{b}</c><r>{a * b}</r>{a * b + 1}") == 0.0
    assert final_answer("x<r>1</r>2<r>3</r>4") == "4"


def test_guess_number_replies_and_reference_search():
    task = TASKS.build("guess_number", seed=0, hi=16)
    assert TASKS.needs("guess_number") == ("seed",)  # every prompt reads the same: no held-out split by prompt
    for i in range(20):
        s = task[i]
        env = ENVS.build("guess_number")
        env.reset(s)
        turns = task.reference_turns(s)
        model_turns = [t for t, trained in turns if trained]
        assert len(model_turns) <= 5  # binary search over 16
        for text, trained in turns:
            if trained:
                reply, reward, done = env.step(text)
        assert done and reward == 1.0
        assert task.score(s, "".join(t for t, _ in turns)) == 1.0
    env = ENVS.build("guess_number")
    env.reset(Sample("guess 1-16:", answer="9"))
    assert env.step("5\n") == ("higher\n", 0.0, False) and env.step("12\n") == ("lower\n", 0.0, False)
    assert env.step("hmm\n") == ("a number please\n", 0.0, False)
    assert task.score(Sample("", answer="9"), "5\nhigher\n9\n") == 1.0
    assert task.score(Sample("", answer="9"), "5\n9\n") == 0.0  # a "9" on an environment line is not a guess


class ScriptedPolicy:
    """A Policy whose turns are scripted per row: row r's k-th turn is script[r][k] (char tokens, fake log-probs)."""

    prompt_inputs = ()

    def __init__(self, script: list[list[str]]):
        self.tokenizer, self.script, self.calls = char_tokenizer(), script, []
        self.device, self.pad_id = torch.device("cpu"), self.tokenizer.pad_token_id

    def encode(self, samples):
        return encode_prompts(self.tokenizer, [s.prompt for s in samples])

    def encode_inputs(self, samples):
        return (*self.encode(samples), {})

    def sample(self, prompt_ids, prompt_mask, *, seeds, params, offsets=None):
        self.calls.append((prompt_ids.clone(), prompt_mask.clone(), offsets.clone(), params))
        texts = [self.script[int(s)].pop(0) for s in seeds]  # the test's seeds are row numbers
        eos = self.tokenizer.eos_token_id
        rows = [self.tokenizer(t.removesuffix("<eos>"), add_special_tokens=False)["input_ids"][: params.max_new_tokens]
                + ([eos] if t.endswith("<eos>") else []) for t in texts]
        T = max(len(r) for r in rows)
        ids = torch.full((len(rows), T), self.pad_id)
        mask = torch.zeros(len(rows), T, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
        return {"completion_ids": ids, "completion_mask": mask, "logp": -0.5 * mask.float(),
                "truncated": torch.zeros(len(rows), dtype=torch.bool),
                "eos_ended": torch.tensor([t.endswith("<eos>") for t in texts]), "texts": texts}


class Echo:
    """Says hello first, answers every turn with 'ok;' and reward 0.25, done when the turn says 'bye'."""

    stop = (";",)

    def reset(self, sample):
        return "hi:"

    def step(self, turn):
        return ("ok;", 0.25, "bye" in turn)


def test_loop_builds_token_in_token_out_rows_with_masked_observations():
    policy = ScriptedPolicy([["ab;", "bye;"], ["x;", "y;", "z;"], ["stop<eos>", "never"]])
    sampler = EnvSampler(policy, SamplingParams(max_new_tokens=8, stop=("#",)), 1, make_env=Echo, max_turns=3,
                         max_tokens=20)
    batch = sampler.generate([Sample("P1"), Sample("Q2"), Sample("R3")], torch.tensor([5, 6, 7]), torch.arange(3))
    assert batch.texts == ["hi:ab;ok;bye;", "hi:x;ok;y;ok;z;", "hi:stop"]
    tok = policy.tokenizer
    row0 = tok.decode(batch.completion_ids[0][batch.completion_mask[0].bool()])
    assert row0 == "hi:ab;ok;bye;"
    trained = "".join(c for c, m in zip(row0, batch.loss_mask[0].tolist()) if m)
    assert trained == "ab;bye;"  # observations (the reset text and the replies) are attended to, never trained on
    assert torch.equal(batch.rollout_logp[0] != 0, batch.loss_mask[0].bool())
    assert batch.extras["turns"].tolist() == [2, 3, 1] and batch.extras["env_rewards"].tolist() == [0.5, 0.75, 0.25]
    assert batch.truncated.tolist() == [False, True, False]  # row 1 ran out of turns; row 2 ended with EOS
    assert batch.completion_mask[2].sum() == len("hi:stop") + 1  # EOS kept as the row's last token
    # turn 2 of row 0 saw exactly its tokens so far: prompt + "hi:ab;ok;", and continued its stream at draw 9
    ids, mask, offsets, params = policy.calls[1]
    assert tok.decode(ids[0][mask[0].bool()]) == "P1hi:ab;ok;" and offsets.tolist() == [9, 8]
    assert params.stop == ("#", ";")


def test_loop_token_budget_truncates():
    policy = ScriptedPolicy([["abcdef;", "never;"]])
    sampler = EnvSampler(policy, SamplingParams(max_new_tokens=8), 1, make_env=Echo, max_turns=4, max_tokens=10)
    batch = sampler.generate([Sample("P")], torch.tensor([0]), torch.arange(1))
    assert batch.texts == ["hi:abcdef;"] and bool(batch.truncated[0])  # no room left for the reply
    masked = EnvSampler(policy, SamplingParams(max_new_tokens=8), 1, make_env=Echo, max_turns=1, max_tokens=10,
                        mask_truncated=True)
    policy.script = [["ab;"]]
    assert masked.generate([Sample("P")], torch.tensor([0]), torch.arange(1)).loss_mask.sum() == 0


def test_loop_with_a_real_policy_samples_each_turn_from_the_whole_context():
    policy = HFCausalLM.load(config="qwen2-micro", seed=0)
    sampler = EnvSampler(policy, SamplingParams(max_new_tokens=3), 4, make_env=lambda: ENVS.build("guess_number"),
                         max_turns=3, max_tokens=20)
    task = TASKS.build("guess_number", seed=0, hi=8)
    samples = [task[i] for i in range(4)]
    seeds = row_seeds(0, "test", torch.arange(4))
    batch = sampler.generate(samples, torch.arange(4), seeds)
    turns = batch.extras["turns"]
    assert (turns > 1).sum() >= 2  # a random model rarely guesses right or ends early: most turns are answered
    first = policy.sample(*policy.encode(samples), seeds=seeds, params=SamplingParams(max_new_tokens=3, stop=("\n",)))
    for r in range(4):  # the first turn is exactly what the policy samples from the prompt alone
        n = int(first["completion_mask"][r].sum())
        assert torch.equal(batch.completion_ids[r, :n], first["completion_ids"][r, :n]) and batch.loss_mask[r, :n].all()
        if turns[r] > 1:  # then the environment's reply: attended to, not trained on
            assert batch.completion_mask[r, n].item() == 1 and batch.loss_mask[r, n].item() == 0
    again = sampler.generate(samples, torch.arange(4), seeds)
    assert again.texts == batch.texts  # counter-based streams: the same episodes


def test_sft_batch_masks_scripted_observations():
    policy = HFCausalLM.load(config="qwen2-micro", seed=0)
    task = TASKS.build("tool_arithmetic", seed=0)
    s = task[0]
    batch = sft_batch(policy, [s], [task.reference_turns(s)])
    tok = policy.tokenizer
    L = int(batch.completion_mask[0].sum())
    text = tok.decode(batch.completion_ids[0, :L])
    trained = "".join(tok.decode([i]) for i, m in zip(batch.completion_ids[0, :L].tolist(), batch.loss_mask[0]) if m)
    call, reply, answer = (t for t, _ in task.reference_turns(s))
    assert text == call + reply + answer + "<eos>" and trained == call + answer + "<eos>"


@pytest.mark.parametrize("name,kwargs", [("calculator", {"x": 1}), ("nope", {})])
def test_bad_environment_config_fails_before_any_model(tiny_cfg, name, kwargs):
    from rlvr.config import ConfigError, validate

    with pytest.raises(ConfigError, match="env"):
        validate(tiny_cfg(f"env.name={name}", f"env.kwargs={kwargs}"))
