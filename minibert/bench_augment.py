"""`minibert bench --augment N`: how fast TinyBERT-style augmentation runs, stage by stage.

On the first N training sentences of the default data (or --data), with the teacher's own
word-embedding table, it times the three stages of `minibert augment` (candidate search, drawing
the variants, the teacher's logits for every variant) and reports sentences per second. Next to
them, measured in the same run on a subset, the naive way each stage is often written: one
similarity search (and full sort) per word occurrence instead of one product per distinct word,
and one teacher forward per sentence instead of length-sorted batches. Timings depend on the
machine and its load; the ratios measured in one run are what to quote.
"""

from __future__ import annotations

import time

import numpy as np


def naive_neighbours(table: np.ndarray, keys, allowed: np.ndarray, k: int) -> list:
    """The per-occurrence search: for every key (repeats included) one (H,) @ (H,Vw) product and
    a full argsort. Returns: a list of (k,) id arrays. Only for timing against the batched one."""
    ids = np.flatnonzero(allowed)
    E = table[ids] / np.linalg.norm(table[ids], axis=1, keepdims=True)   # (Vw,H)
    out = []
    for key in keys:
        q = table[list(key)].mean(axis=0)
        s = E @ (q / np.linalg.norm(q))                                   # (Vw,)
        if len(key) == 1:
            s[ids == key[0]] = -np.inf
        out.append(ids[np.argsort(-s)[:k]])
    return out


def run_augment_bench(teacher_dir="weights/minilm-l6", data="default", n: int = 500,
                      per_example: int = 20, naive_n: int = 50, batch_size: int = 64,
                      seed: int = 0) -> dict:
    """Inputs: a model directory (a head is added at random if it has none: labelling speed does
    not depend on what the head learnt), a data spec, n sentences, per_example, naive_n sentences
    for the naive comparisons, batch_size. Returns: a JSON-friendly dict of timings and rates."""
    from minibert.augment import AugmentSettings, augment_sentences, sentence_words, vocabulary
    from minibert.data import load_dataset
    from minibert.fast_model import classify_forward
    from minibert.train import with_fresh_head
    from minibert.transfer_set import teacher_logits
    from minibert.weights import load_model_and_tokenizer
    params, config, tok = load_model_and_tokenizer(teacher_dir)
    if config.num_labels == 0:
        params, config = with_fresh_head(params, config, ["a", "b", "c"], np.random.default_rng(0))
    texts = [e.text for e in load_dataset(data, limit=n, seed=seed).train]
    enc = tok.encode(texts, max_length=64)
    settings = AugmentSettings(per_example=per_example, seed=seed)
    aug = augment_sentences(params, config, tok, enc.ids, enc.mask, enc.token_type_ids, settings,
                            batch_size)
    m = len(aug.lengths)
    t0 = time.perf_counter()
    teacher_logits(params, config, aug.ids, aug.lengths, aug.token_type_ids, batch_size)
    label_s = time.perf_counter() - t0
    t = aug.meta["timings"]
    # the naive stages, on a subset
    vocab = vocabulary(tok, config.vocab_size)
    lengths = enc.mask.sum(axis=1)
    keys = [key for i in range(min(naive_n, len(texts)))
            for key in sentence_words(enc.ids[i, :lengths[i]], vocab).keys]
    t0 = time.perf_counter()
    naive_neighbours(params["embeddings.word"], keys, vocab.alpha_start, settings.candidates)
    naive_words_s = len(keys) / (time.perf_counter() - t0)
    sub = np.arange(min(naive_n, m))
    t0 = time.perf_counter()
    for j in sub:
        L = aug.lengths[j]
        classify_forward(params, config, aug.ids[j:j + 1, :L], np.ones((1, L), np.int64),
                         aug.token_type_ids[j:j + 1, :L], keep_cache=False)
    naive_label_s = len(sub) / max(time.perf_counter() - t0, 1e-9)
    words = aug.meta["words"]
    return {"sentences": len(texts), "augmented": m, "words": words,
            "distinct_words": aug.meta["distinct_words"], "method": aug.meta["method"],
            "candidates_s": t["candidates_s"], "variants_s": t["variants_s"], "labelling_s": label_s,
            "words_per_s": words / max(t["candidates_s"], 1e-9),
            "generated_per_s": m / max(t["candidates_s"] + t["variants_s"], 1e-9),
            "labelled_per_s": m / max(label_s, 1e-9),
            "overall_per_s": m / max(t["candidates_s"] + t["variants_s"] + label_s, 1e-9),
            "naive_words_per_s": naive_words_s, "naive_labelled_per_s": naive_label_s,
            "naive_n": int(len(sub))}


def format_augment_bench(r: dict) -> str:
    """The result as a markdown table."""
    rows = [
        ("candidate search", f"{r['candidates_s']:.2f} s", f"{r['words_per_s']:.0f} words/s",
         f"per occurrence: {r['naive_words_per_s']:.0f} words/s "
         f"({r['words_per_s'] / r['naive_words_per_s']:.0f}x)"),
        ("variants", f"{r['variants_s']:.2f} s", f"{r['augmented'] / max(r['variants_s'], 1e-9):.0f} sentences/s", ""),
        ("teacher logits", f"{r['labelling_s']:.2f} s", f"{r['labelled_per_s']:.0f} sentences/s",
         f"one sentence a forward: {r['naive_labelled_per_s']:.0f} sentences/s "
         f"({r['labelled_per_s'] / r['naive_labelled_per_s']:.1f}x)"),
        ("all", f"{r['candidates_s'] + r['variants_s'] + r['labelling_s']:.2f} s",
         f"{r['overall_per_s']:.0f} sentences/s", ""),
    ]
    lines = [f"augmentation: {r['sentences']} sentences -> {r['augmented']} new ones "
             f"({r['words']} words, {r['distinct_words']} distinct; {r['method']})", "",
             "| stage | time | rate | the naive way (same run) |", "|---|---:|---:|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def cli_bench_augment(args) -> int:
    """minibert bench --augment N [--json]."""
    import json
    r = run_augment_bench(getattr(args, "teacher", None) or "weights/minilm-l6", n=args.augment)
    print(json.dumps(r, indent=2) if args.json else format_augment_bench(r))
    return 0
