"""A character-level Hugging Face fast tokenizer for tiny CPU models.

Tiny random-weight policies need a small vocabulary that still spells every prompt exactly. The tokenizer is a real
`transformers.PreTrainedTokenizerFast` built with the `tokenizers` library:

1. vocabulary: <pad> (id 0), <eos> (1), <unk> (2), then one entry per character of the alphabet;
2. pre-tokenizer: split every character into its own piece (spaces and newlines included);
3. model: WordLevel lookup (a character outside the alphabet becomes <unk>);
4. decoder: join pieces with nothing between them, so decode(encode(text)) == text for in-alphabet text.

It saves with `save_pretrained(dir)` and loads back with `AutoTokenizer.from_pretrained(dir)`. No chat template is
set: `rlvr.policies.encode_prompts` joins chat messages with newlines for tokenizers without one.
"""

from __future__ import annotations

import string

SPECIAL_TOKENS = ("<pad>", "<eos>", "<unk>")  # ids 0, 1, 2
DEFAULT_ALPHABET = string.digits + "+-*/=()<>.,:;!? " + string.ascii_letters + "\"#$%&'@[\\]^_`{|}~\n"


def char_tokenizer(alphabet: str | None = None):
    """A `PreTrainedTokenizerFast` with one token per character of `alphabet` (default: DEFAULT_ALPHABET)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = DEFAULT_ALPHABET if alphabet is None else alphabet
    if not alphabet:
        raise ValueError("char_tokenizer: alphabet is empty; pass None for the default alphabet")
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in alphabet:  # duplicates keep their first id
        vocab.setdefault(ch, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every char, "\n" too
    core.decoder = decoders.Fuse()  # concatenate, no spaces added
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",
        clean_up_tokenization_spaces=False,  # " ." must stay " ."
    )
