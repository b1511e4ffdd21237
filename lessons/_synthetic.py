"""The --tiny task of lessons 6-9: six colours on a colour wheel, where a teacher's soft labels
carry information that a few hard labels do not.

Every sentence has a hidden hue theta on a wheel of six colours (red, orange, yellow, green,
blue, purple; neighbours on the wheel are similar). Its label is the colour nearest to theta;
its words are a few colour cues ("cherry", "lemon", "sky", ...) drawn from the colours NEAR
theta, plus filler words. So a sentence labelled "orange" often also holds a "cherry" (red)
or a "lemon" (yellow) cue, and a sentence near a border is genuinely ambiguous:

- a hard label says only "orange". A student with a few hard labels must guess which of the
  sentence's cues made it orange, and it learns that "cherry" means orange as often as red;
- a teacher trained on many sentences has learned the wheel: for that sentence it says
  "orange 0.7, red 0.2, yellow 0.1". Its non-argmax probabilities tell the student which cue
  points where, and that the classes have an order (red is next to orange, not to blue).

A tiny BERT (4 layers, H=32, random init) learns the task from 960 sentences in a second or
two; the students of lessons 7-9 then get only a few dozen labelled sentences. Nothing is
downloaded: the vocabulary, the tokenizer, the model and the CSV files are written here.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

COLOURS = ["red", "orange", "yellow", "green", "blue", "purple"]      # the wheel, in order
CUES = {
    "red": ["cherry", "ruby", "tomato", "blood"],
    "orange": ["carrot", "pumpkin", "tangerine", "apricot"],
    "yellow": ["lemon", "banana", "butter", "canary"],
    "green": ["grass", "leaf", "lime", "frog"],
    "blue": ["sky", "ocean", "sapphire", "denim"],
    "purple": ["plum", "violet", "grape", "lavender"],
}
FILLER = ["the", "a", "my", "this", "is", "was", "like", "and", "of", "with", "in", "on",
          "picture", "shirt", "bowl", "wall", "looks", "very", "quite", "today"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]                 # [PAD] = 0
VOCAB = SPECIALS + [w for c in COLOURS for w in CUES[c]] + FILLER + ["."]
SPREAD = 0.25           # std of a cue's hue around theta, in colour steps (1 = one colour)


def cue_probs(theta: float) -> np.ndarray:
    """(C,) probability that one cue word comes from each colour, for hue theta in [0, C)."""
    c = len(COLOURS)
    d = np.abs((np.arange(c) - theta + c / 2) % c - c / 2)          # distance around the wheel
    w = np.exp(-0.5 * (d / SPREAD) ** 2)
    return w / w.sum()


def sentence(rng: np.random.Generator) -> tuple[str, str]:
    """One (text, label): hue theta uniform on the wheel, label its nearest colour, 2-3 cue
    words drawn from cue_probs(theta) and 1-4 filler words, shuffled."""
    theta = rng.uniform(0, len(COLOURS))
    label = COLOURS[int(np.floor(theta + 0.5)) % len(COLOURS)]
    p = cue_probs(theta)
    words = [str(rng.choice(CUES[COLOURS[rng.choice(len(COLOURS), p=p)]]))
             for _ in range(int(rng.integers(2, 4)))]
    words += [str(w) for w in rng.choice(FILLER, size=int(rng.integers(1, 5)))]
    rng.shuffle(words)
    return " ".join(words) + " .", label


def write_split(path: Path, n: int, seed: int) -> Path:
    """A CSV (header text,label) of n sentences, written atomically."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for _ in range(n):
            w.writerow(sentence(rng))
    os.replace(tmp, path)
    return path


def write_tokenizer(model_dir: Path) -> None:
    """tokenizer.json + vocab.txt for VOCAB (a real WordPiece tokenizer, built with `tokenizers`)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    vocab = {tok: i for i, tok in enumerate(VOCAB)}
    tk = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tk.add_special_tokens(SPECIALS)
    tk.save(str(model_dir / "tokenizer.json"))
    (model_dir / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")


def make_task(root: Path, n_train: int = 960, n_dev: int = 300) -> tuple[Path, Path]:
    """Write (once) root/pretrained (a random 4-layer, H=32 BERT without a head, standing in
    for a pre-trained teacher) and root/colours/{train,dev}.csv.
    Returns (model directory, data directory): load the data with load_dataset(f"csv:{dir}")."""
    from minibert.model import BertConfig, init_params
    from minibert.weights import save_model
    root = Path(root)
    model_dir, data_dir = root / "pretrained", root / "colours"
    if not (model_dir / "model.safetensors").exists():
        model_dir.mkdir(parents=True, exist_ok=True)
        config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_layers=4, num_heads=2,
                            intermediate_size=64, max_position=32, pooler=False)
        write_tokenizer(model_dir)
        save_model(model_dir, init_params(config, np.random.default_rng(0)), config)
    if not (data_dir / "dev.csv").exists():
        write_split(data_dir / "train.csv", n_train, seed=1)
        write_split(data_dir / "dev.csv", n_dev, seed=2)
    return model_dir, data_dir
