"""Text -> ids: the checkpoint's own tokenizer.json, run by the `tokenizers` library.

Shape legend: B batch (number of texts), T tokens (the longest sequence in the batch).

BERT's WordPiece tokenizer lower-cases, splits on whitespace and punctuation, then splits each word
into the longest pieces found in the vocabulary ("playing" -> "play", "##ing"). A single text
becomes `[CLS] a [SEP]`; a pair becomes `[CLS] a [SEP] b [SEP]` with token-type ids 0 for the
first segment and 1 for the second. A batch is padded to its longest sequence; `mask` says
which positions are real (1) and which are padding (0), so attention and pooling can ignore them.

Truncation is never silent: sequences longer than max_length are cut (the longer segment of a
pair first) and a `TruncationWarning` says how many; `Tokenizer.last_truncated` holds the count.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from minibert.errors import TokenizerError


class TruncationWarning(UserWarning):
    """Some sequences were longer than max_length and were cut."""


class Batch(NamedTuple):
    ids: np.ndarray             # int64 (B,T) token ids, padded with pad_id
    mask: np.ndarray            # int64 (B,T) 1 = real token, 0 = padding
    token_type_ids: np.ndarray  # int64 (B,T) 0 = first segment, 1 = second segment of a pair


def _special(spec: dict, tk, role: str, default: str) -> int:
    """Id of a special token as declared in tokenizer.json, falling back to BERT's usual name."""
    token = default
    named = [t["content"] for t in spec.get("added_tokens", []) if role in t["content"].lower()]
    if role == "pad" and spec.get("padding"):
        token = spec["padding"].get("pad_token", default)
    elif role in ("pad", "mask") and named:
        token = named[0]
    elif role == "unk":
        token = (spec.get("model") or {}).get("unk_token", default)
    elif role in ("cls", "sep"):
        tmpl = (spec.get("post_processor") or {}).get("single") or []
        marks = [t["SpecialToken"]["id"] for t in tmpl if "SpecialToken" in t]
        if marks:
            token = marks[0] if role == "cls" else marks[-1]
    tid = tk.token_to_id(token)
    if tid is None:
        raise TokenizerError(f"tokenizer.json has no {role} token {token!r}")
    return int(tid)


class Tokenizer:
    """BERT tokenizer over a checkpoint's tokenizer.json. Build it with Tokenizer.from_dir(dir)."""

    def __init__(self, tk, path: str = "<memory>"):
        self._tk = tk
        self.path = str(path)
        spec = json.loads(tk.to_str())
        tk.no_padding()                      # the file may carry its own fixed padding/truncation
        tk.no_truncation()                   # (all-MiniLM's pads everything to 128): we do our own
        self.vocab_size = int(tk.get_vocab_size(with_added_tokens=True))
        self.pad_id = _special(spec, tk, "pad", "[PAD]")
        self.unk_id = _special(spec, tk, "unk", "[UNK]")
        self.cls_id = _special(spec, tk, "cls", "[CLS]")
        self.sep_id = _special(spec, tk, "sep", "[SEP]")
        try:
            self.mask_id = _special(spec, tk, "mask", "[MASK]")
        except TokenizerError:
            self.mask_id = None              # fine for classification; fill-mask needs it
        self.pad_token = tk.id_to_token(self.pad_id)
        self.mask_token = None if self.mask_id is None else tk.id_to_token(self.mask_id)
        self.last_truncated = 0

    @classmethod
    def from_dir(cls, model_dir) -> "Tokenizer":
        """Inputs: a model directory containing tokenizer.json. TokenizerError if it is missing
        or cannot be read."""
        from tokenizers import Tokenizer as HFTokenizer

        path = Path(model_dir) / "tokenizer.json"
        if not path.is_file():
            raise TokenizerError(f"no tokenizer.json in {model_dir} (copy the checkpoint's "
                                 f"tokenizer.json there, or re-run convert/fetch-teacher)")
        try:
            tk = HFTokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises a bare Exception on bad JSON
            raise TokenizerError(f"{path} is not a readable tokenizer ({err})") from None
        return cls(tk, path)

    def encode(self, texts, pairs=None, max_length: int = 512) -> Batch:
        """Inputs: texts, a list of B strings (or one string); pairs, None or B second segments;
        max_length, the longest allowed sequence including [CLS]/[SEP].
        Returns: Batch of int64 (B,T) arrays, T = longest (truncated) sequence in the batch."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ValueError("texts: expected at least one string, got an empty list")
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise ValueError(f"texts: expected strings, item {bad[0]} is {type(texts[bad[0]]).__name__}")
        if pairs is not None:
            pairs = [pairs] if isinstance(pairs, str) else list(pairs)
            if len(pairs) != len(texts) or not all(isinstance(p, str) for p in pairs):
                raise ValueError(f"pairs: expected {len(texts)} strings (one per text), got {len(pairs)} items")
        min_len = 3 if pairs is None else 5
        if not isinstance(max_length, (int, np.integer)) or max_length < min_len:
            raise TokenizerError(f"max_length: expected an int >= {min_len} (room for [CLS], "
                                 f"[SEP] and the text), got {max_length!r}")

        self._tk.enable_truncation(int(max_length))        # longest-first for pairs
        self._tk.enable_padding(pad_id=self.pad_id, pad_token=self.pad_token)  # to the longest
        try:
            enc = self._tk.encode_batch(list(zip(texts, pairs)) if pairs is not None else texts)
        finally:
            self._tk.no_truncation()
            self._tk.no_padding()
        self.last_truncated = sum(1 for e in enc if e.overflowing)
        if self.last_truncated:
            warnings.warn(f"{self.last_truncated} of {len(texts)} sequence(s) were longer "
                          f"than max_length={max_length} tokens and were truncated",
                          TruncationWarning, stacklevel=2)
        ids = np.array([e.ids for e in enc], dtype=np.int64)                 # (B,T)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)     # (B,T)
        types = np.array([e.type_ids for e in enc], dtype=np.int64)          # (B,T)
        return Batch(ids, mask, types)

    def tokenize(self, text: str) -> list[str]:
        """The WordPiece tokens of one text, without [CLS]/[SEP]."""
        return list(self._tk.encode(text, add_special_tokens=False).tokens)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """ids (a sequence of ints) -> text, joining '##' pieces back into words."""
        return self._tk.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def id_to_token(self, i: int) -> str:
        return self._tk.id_to_token(int(i))


def check_tokenizer_fits(tokenizer: Tokenizer, config) -> None:
    """TokenizerError if the tokenizer can emit ids the model's embedding table does not have."""
    if tokenizer.vocab_size > config.vocab_size:
        raise TokenizerError(f"{tokenizer.path} has {tokenizer.vocab_size} tokens but the model's "
                             f"embedding table has vocab_size={config.vocab_size} rows; ids >= "
                             f"{config.vocab_size} would be out of range (wrong tokenizer for this model?)")


def check_length_fits(max_length: int, config, option: str = "--max-length") -> None:
    """TokenizerError, before any work, if sequences of max_length tokens would not fit the
    model's position table (config.max_position rows): every split is truncated to max_length,
    so this one check covers the longest row of train, dev and test alike."""
    if max_length > config.max_position:
        raise TokenizerError(f"{option} {max_length} is longer than the model's position table "
                             f"({config.max_position} positions, max_position in its config.json); "
                             f"use {option} {config.max_position} or less")
