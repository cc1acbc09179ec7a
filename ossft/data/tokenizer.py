"""The gpt-oss tokenizer as harmony needs it: the ids of the control tokens, and plain text that can
never turn into one (a data row or a prompt cannot forge message structure)."""

from __future__ import annotations

from ossft.errors import UserError
from ossft.harmony import render as harmony


def plain_text_tokenizer(tokenizer):
    """The Rust tokenizer behind `tokenizer`, told to read special-token look-alikes as text.

    Same ids as `tokenizer(texts, split_special_tokens=True)`, without transformers' per-text
    Python wrapping, which was most of the data preparation time (BENCHMARKS.md)."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.encode_special_tokens = True
    return backend


def special_token_ids(tokenizer) -> dict[str, int]:
    special_ids = {token: tokenizer.convert_tokens_to_ids(token) for token in harmony.SPECIAL_TOKENS}
    missing = [t for t, i in special_ids.items() if i is None or i == tokenizer.unk_token_id]
    if missing:
        raise UserError(f"the tokenizer lacks harmony's special tokens {missing}; use a gpt-oss tokenizer.")
    return special_ids


def text_encoder(tokenizer):
    """Plain text -> ids, never producing a control token (see Encoder)."""

    def encode_text(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)

    return encode_text
