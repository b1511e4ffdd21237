"""Test helpers: a tiny model directory and a tiny separable dataset, usable by every CLI command.

    from tiny import make_tiny_model_dir, write_tiny_dataset
    model_dir = make_tiny_model_dir(tmp_path / "m")                 # no head (like the teacher)
    clf_dir = make_tiny_model_dir(tmp_path / "c", num_labels=2)     # with a random head
    csv = write_tiny_dataset(tmp_path / "d.csv")                    # text,label; --data csv:PATH

The tokenizer is a real WordPiece tokenizer.json (built with the `tokenizers` library) over a
vocabulary of a few dozen lowercase words; the model is model.init_params with small sizes,
saved with weights.save_model. Sentiment words decide the label: "good/great/..." -> positive,
"bad/awful/..." -> negative (and, with 3 classes, neither -> neutral), so a model can learn
the task to ~100% in a few seconds (reliably with pooler=False: through the random tanh
pooler some seeds sit on the 0.69 loss plateau for many epochs, see test_train.py).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]          # [PAD] = 0
POSITIVE = ["good", "great", "excellent", "wonderful", "love", "happy"]
NEGATIVE = ["bad", "awful", "terrible", "horrible", "hate", "sad"]
FILLER = ["the", "a", "movie", "film", "was", "is", "it", "this", "i", "very", "really",
          "plot", "acting", "story", "and", "of", "to", "we", "saw", "today", "with", "friends",
          "music", "ending", "long", "quite"]
PUNCT = [".", ",", "!", "?"]
SUBWORDS = ["##s", "##ing", "##ly", "##ed"]
VOCAB = SPECIALS + POSITIVE + NEGATIVE + FILLER + PUNCT + SUBWORDS


def write_tiny_tokenizer(path) -> Path:
    """Write tokenizer.json (+ vocab.txt) for VOCAB into directory `path`."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab = {tok: i for i, tok in enumerate(VOCAB)}
    tk = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tk.decoder = decoders.WordPiece()
    tk.add_special_tokens(SPECIALS)
    tk.save(str(path / "tokenizer.json"))
    (path / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return path


def tiny_config(num_labels=0, labels=None, hidden_size=32, num_layers=2, num_heads=2,
                intermediate_size=64, max_position=64, pooler=True, **kw):
    from minibert.model import BertConfig
    if num_labels and labels is None:
        labels = {1: ["positive"], 2: ["negative", "positive"],
                  3: ["negative", "neutral", "positive"]}.get(
                      num_labels, [f"class{i}" for i in range(num_labels)])   # sorted, as data.py
    return BertConfig(vocab_size=len(VOCAB), hidden_size=hidden_size, num_layers=num_layers,
                      num_heads=num_heads, intermediate_size=intermediate_size,
                      max_position=max_position, num_labels=num_labels,
                      labels=labels if num_labels else None, pooler=pooler, **kw)


def make_tiny_model_dir(path, num_labels=0, labels=None, seed=0, finetuned=False, **config_kw):
    """A model dir (model.safetensors, config.json, tokenizer.json, vocab.txt) of a tiny BERT.

    Inputs: path (created), num_labels (0 = no head, like a pre-trained teacher), labels
    (class names; default negative/positive, or negative/neutral/positive), seed (init), finetuned (also write
    head.json as `minibert finetune` does, claiming a trained head: for tests that need a
    "fine-tuned" teacher without training one), config_kw (BertConfig sizes: hidden_size=32,
    num_layers=2, num_heads=2, intermediate_size=64, max_position=64, pooler=True, ...).
    Returns: Path of the directory.
    """
    from minibert.model import init_params
    from minibert.weights import save_model
    path = Path(path)
    config = tiny_config(num_labels=num_labels, labels=labels, **config_kw)
    params = init_params(config, np.random.default_rng(seed))
    write_tiny_tokenizer(path)
    save_model(path, params, config)
    if finetuned:
        if not num_labels:
            raise ValueError("finetuned=True needs num_labels > 0")
        (path / "head.json").write_text(json.dumps(
            {"finetuned": True, "data": "tiny", "labels": config.labels, "dev_accuracy": None,
             "epoch": 0}) + "\n")
    return path


def tiny_sentence(rng, label: str) -> str:
    """A few filler words around one sentiment word (none for neutral)."""
    n = int(rng.integers(2, 9))
    words = list(rng.choice(FILLER, size=n))
    if label == "positive":
        words.insert(int(rng.integers(0, n + 1)), str(rng.choice(POSITIVE)))
    elif label == "negative":
        words.insert(int(rng.integers(0, n + 1)), str(rng.choice(NEGATIVE)))
    return " ".join(words) + str(rng.choice(PUNCT))


def write_tiny_dataset(path, n=120, num_classes=2, seed=0, text_column="text",
                       label_column="label") -> Path:
    """A separable CSV (header text,label; labels as names) with n rows, classes balanced.
    Use it as --data csv:PATH. num_classes 2: negative/positive; 3: also neutral."""
    rng = np.random.default_rng(seed)
    names = ["negative", "positive", "neutral"][:num_classes]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([text_column, label_column])
        for i in range(n):
            label = names[i % num_classes]
            w.writerow([tiny_sentence(rng, label), label])
    return path


def count_teacher_forwards(monkeypatch) -> list:
    """Make every teacher_cache.teacher_forward call append its batch size to the returned list
    (undone with the monkeypatch; pytest.MonkeyPatch.context() for module-scoped fixtures)."""
    from minibert import teacher_cache
    calls = []
    real = teacher_cache.teacher_forward
    monkeypatch.setattr(teacher_cache, "teacher_forward",
                        lambda *a: calls.append(a[2].ids.shape[0]) or real(*a))
    return calls
