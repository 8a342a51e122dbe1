"""A character-level tokenizer built locally (no download), saved in the Hugging Face format.

One token per printable ASCII character plus ``<pad> <s> </s> <unk>``. With characters as tokens,
the tokens of a prefix are always a prefix of the tokens of any longer text, so search states never
suffer re-tokenisation drift. ``AutoTokenizer.from_pretrained(dir)`` loads it like any other.
"""

from __future__ import annotations

import string

from tokenizers import Tokenizer, decoders, models, processors
from transformers import PreTrainedTokenizerFast

__all__ = ["SPECIAL_TOKENS", "build_char_tokenizer"]

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
CHARACTERS = "\n" + "".join(ch for ch in string.printable if ch not in "\t\n\r\x0b\x0c")


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """The tokenizer of the embedded models: BOS is added in front of every encoded text."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for ch in CHARACTERS:
        vocab[ch] = len(vocab)
    # BPE with no merges splits text into single characters; Fuse joins them back without spaces.
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
