"""TinyBERT-style data augmentation: new training sentences by word replacement, labelled once
by the teacher.

Shape legend: N source examples, M augmented sentences, T tokens, H hidden, V vocab,
Vw whole-word vocabulary entries, U distinct words, W words of one sentence, K candidates, C classes.

TinyBERT (Jiao et al. 2020, Alg. 1) walks over the words of each training sentence and, with
probability p (0.4), replaces a word by one of its K candidates; it does that N times per sentence
(N = 20 on SST-2) and lets the teacher label every new sentence. Here:

- A *word* is a run of word pieces: one piece without "##" and the "##" pieces after it
  ("un ##bel ##ie ##va ##bly"). Only alphabetic words are replaced; [CLS]/[SEP], punctuation,
  digits and symbols always stay. Replacements are single vocabulary words.
- *Candidates* (the K best, drawn uniformly):
  * with a masked-LM head (`config.mlm_head`), a single-piece word is masked in its sentence and
    the head's top K predictions at that position are its candidates (context dependent);
  * otherwise, and for words of several pieces (TinyBERT used GloVe for those), the K nearest
    neighbours by cosine in the model's OWN word-embedding table, among single-piece alphabetic
    entries. A word of several pieces is represented by the MEAN of its pieces' embeddings
    (our choice: we have no GloVe, and skipping them would never touch rare words). The mean
    leans towards the first piece ("un ##bel ##ie ##va ##bly" -> "un", "und", ...), so
    `multi_piece="skip"` (`--multi-piece skip`) leaves such words alone instead.
    Neighbour lists depend only on the word, so they are computed once per distinct word for the
    whole corpus: one (U,H) @ (H,Vw) product (in row chunks), not one search per occurrence.
- *Variants*: variant r of example i is drawn from np.random.default_rng([seed, i]) only, so the
  same seed gives the same file, whatever else runs. A variant identical to the original or to an
  earlier variant is dropped, so an example gets AT MOST `per_example` new sentences.
- *Labels*: the teacher's logits for every variant are computed once, in length-sorted batches,
  and stored in the file with a fingerprint of the teacher and of its tokenizer;
  `minibert distill --transfer FILE` trains on them and refuses a file made by another teacher.

The file is a safetensors file (no pickle): ids / token_type_ids (M,T), lengths, source (M,)
(index of the example a sentence came from) and logits (M,C), with a JSON record in its metadata.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from minibert.errors import MinibertError
from minibert.fast_model import bert_forward, mlm_forward
from minibert.model import BertConfig
from minibert.transfer_set import Augmented, teacher_logits

NEIGHBOUR_CHUNK = 512     # query rows per similarity product: (512, Vw) float32 ~ 60 MB for MiniLM


# ----------------------------------------------------------------------------- settings and words

class AugmentSettings(NamedTuple):
    per_example: int = 20     # N: variants tried per sentence (duplicates dropped)
    p: float = 0.4            # probability that a replaceable word is replaced
    candidates: int = 15      # K: candidates per word
    seed: int = 0
    multi_piece: str = "mean" # words of several pieces: "mean" of their piece embeddings, or "skip"


def check_augment_settings(s: AugmentSettings) -> None:
    """MinibertError naming the flag when a setting cannot work."""
    if isinstance(s.per_example, bool) or not isinstance(s.per_example, (int, np.integer)) \
            or s.per_example < 1:
        raise MinibertError(f"--per-example: expected a positive number of new sentences per "
                            f"example, got {s.per_example!r} (0 would augment nothing)")
    if not (isinstance(s.p, (int, float)) and 0.0 < s.p <= 1.0):
        raise MinibertError(f"--p: expected a replacement probability in (0, 1], got {s.p!r}")
    if isinstance(s.candidates, bool) or not isinstance(s.candidates, (int, np.integer)) \
            or s.candidates < 1:
        raise MinibertError(f"--candidates: expected a positive count, got {s.candidates!r}")
    if s.multi_piece not in ("mean", "skip"):
        raise MinibertError(f"--multi-piece: expected 'mean' or 'skip', got {s.multi_piece!r}")


class Vocabulary(NamedTuple):
    """Per-id facts about the tokenizer's vocabulary (all (V,) arrays)."""
    continues: np.ndarray     # bool: a "##" piece (continues the word before it)
    alpha_start: np.ndarray   # bool: an alphabetic piece that starts a word ("good", "un")
    alpha_piece: np.ndarray   # bool: an alphabetic "##" piece ("##ing")
    special: np.ndarray       # bool: [CLS], [SEP], [PAD], [MASK], [UNK]


def vocabulary(tokenizer, vocab_size: int) -> Vocabulary:
    """Inputs: a minibert Tokenizer, the model's vocab_size (ids past the tokenizer's are inert).
    Returns: Vocabulary."""
    cont = np.zeros(vocab_size, bool)
    start = np.zeros(vocab_size, bool)
    piece = np.zeros(vocab_size, bool)
    special = np.zeros(vocab_size, bool)
    for i in range(min(vocab_size, tokenizer.vocab_size)):
        tok = tokenizer.id_to_token(i) or ""
        if tok.startswith("##"):
            cont[i] = True
            piece[i] = tok[2:].isalpha()
        else:
            start[i] = tok.isalpha()
    for sid in (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id,
                tokenizer.mask_id):
        if sid is not None and sid < vocab_size:
            special[sid], start[sid], cont[sid] = True, False, False
    return Vocabulary(cont, start, piece, special)


class Words(NamedTuple):
    """The words of one sentence: token t belongs to word word_of[t] (-1 = never replaced)."""
    word_of: np.ndarray       # (L,) int64, -1 for special tokens, punctuation, digits
    is_start: np.ndarray      # (L,) bool: first piece of its word
    keys: list                # W tuples of piece ids, one per replaceable word, in order
    positions: np.ndarray     # (W,) int64 position of each word's first piece


def sentence_words(ids: np.ndarray, vocab: Vocabulary) -> Words:
    """Group the pieces of one sentence (ids (L,), no padding) into replaceable words."""
    starts = ~vocab.continues[ids] | vocab.special[ids]                  # (L,)
    group = np.cumsum(starts) - 1                                        # (L,) 0-based word index
    n_groups = int(group[-1]) + 1 if len(ids) else 0
    # a group is replaceable iff its first piece is alphabetic and every other piece too
    bad = np.zeros(n_groups, bool)
    np.logical_or.at(bad, group, ~np.where(starts, vocab.alpha_start[ids], vocab.alpha_piece[ids]))
    good = ~bad                                                          # (n_groups,)
    new_index = np.cumsum(good) - 1                                      # group -> word index
    word_of = np.where(good[group], new_index[group], -1)                # (L,)
    positions = np.flatnonzero(starts & (word_of >= 0))                  # (W,)
    keys = []
    for w, pos in enumerate(positions):
        end = pos + 1
        while end < len(ids) and word_of[end] == w and not starts[end]:
            end += 1
        keys.append(tuple(int(i) for i in ids[pos:end]))
    return Words(word_of.astype(np.int64), starts, keys, positions.astype(np.int64))


# ----------------------------------------------------------------------------- candidates

def top_k_columns(S: np.ndarray, k: int, block: int = 64) -> np.ndarray:
    """Column indices of the k largest entries of each row of S (u,n), in no particular order.

    A full argpartition of every row is the slow part of a neighbour search (about as slow as the
    product itself). Instead: the k largest entries of a row all lie in the k column blocks with
    the largest block maxima (an entry among the top k has at most k-1 larger ones, so at most
    k-1 other blocks can have a larger maximum), so only those k blocks are searched: one max
    over (u, n/block, block), then argpartitions over (u, n/block) and (u, k*block).
    """
    u, n = S.shape
    if n <= 4 * k * block:
        return np.argpartition(S, n - k, axis=1)[:, n - k:]
    nf = n // block                                                      # full blocks; the rest is one short block
    maxima = np.empty((u, nf + 1), S.dtype)                              # (u,nb)
    maxima[:, :nf] = S[:, :nf * block].reshape(u, nf, block).max(axis=2)  # a view, no copy of S
    maxima[:, nf] = S[:, nf * block:].max(axis=1) if n > nf * block else -np.inf
    best = np.argpartition(maxima, nf + 1 - k, axis=1)[:, nf + 1 - k:]   # (u,k) block numbers
    cols = (best[:, :, None] * block + np.arange(block)).reshape(u, -1)  # (u,k*block) candidate columns
    vals = np.take_along_axis(S, np.minimum(cols, n - 1), axis=1)        # (u,k*block)
    vals[cols >= n] = -np.inf                                            # past the end of the short block
    pick = np.argpartition(vals, vals.shape[1] - k, axis=1)[:, vals.shape[1] - k:]   # (u,k)
    return np.take_along_axis(cols, pick, axis=1)


def embedding_neighbours(table: np.ndarray, keys, allowed: np.ndarray, k: int,
                         chunk: int = NEIGHBOUR_CHUNK) -> dict:
    """The k nearest whole words (cosine) of every word in `keys`, in the embedding table.

    Inputs: table (V,H) word embeddings; keys, distinct tuples of piece ids (a word of several
    pieces is the mean of its pieces' rows); allowed (V,) bool, the ids that may be candidates;
    k; chunk (query rows per product). Returns: dict key -> (k',) int64 ids, best first, with
    k' = min(k, allowed count minus the word itself); ties broken by the smaller id.
    """
    keys = list(dict.fromkeys(keys))
    vocab_ids = np.flatnonzero(allowed)                                  # (Vw,)
    if len(keys) == 0 or len(vocab_ids) == 0:
        return {key: np.zeros(0, np.int64) for key in keys}
    E = table[vocab_ids].astype(np.float32)                              # (Vw,H)
    E /= np.maximum(np.linalg.norm(E, axis=1, keepdims=True), np.float32(1e-12))
    slot = np.full(table.shape[0], -1, np.int64)
    slot[vocab_ids] = np.arange(len(vocab_ids))                          # id -> column of E
    out = {}
    kk = min(k, len(vocab_ids) - 1) if len(vocab_ids) > 1 else 0
    for c0 in range(0, len(keys), chunk):
        part = keys[c0:c0 + chunk]
        Q = np.stack([table[list(key)].mean(axis=0) for key in part]).astype(np.float32)  # (u,H)
        Q /= np.maximum(np.linalg.norm(Q, axis=1, keepdims=True), np.float32(1e-12))
        S = Q @ E.T                                                      # (u,H) @ (H,Vw) -> (u,Vw)
        for r, key in enumerate(part):                                   # never propose the word itself
            if len(key) == 1 and slot[key[0]] >= 0:
                S[r, slot[key[0]]] = -np.inf
        if kk == 0:
            out.update({key: np.zeros(0, np.int64) for key in part})
            continue
        top = top_k_columns(S, kk)                                       # (u,kk) unordered
        for r, key in enumerate(part):
            cols = top[r]
            order = np.lexsort((vocab_ids[cols], -S[r, cols]))           # best first, then smaller id
            out[key] = vocab_ids[cols[order]].astype(np.int64)
    return out


def mlm_candidates(params: dict, config: BertConfig, sentences, targets, mask_id: int,
                   allowed: np.ndarray, k: int, batch_size: int = 64, progress: bool = False):
    """Masked-LM candidates: for each (sentence, position), mask that token and take the head's
    top k allowed predictions there (the original token excluded).

    Inputs: params/config of a model with an MLM head; sentences, a list of (L_i,) id arrays
    (no padding); targets, a list of (sentence index, position) pairs; mask_id; allowed (V,) bool;
    k; batch_size. Returns: (len(targets), k) int64 ids, best first.
    """
    if not config.mlm_head:
        raise MinibertError("mlm_candidates: the model has no masked-LM head")
    from minibert.progress import progress_bar
    n = len(targets)
    out = np.zeros((n, k), np.int64)
    lengths = np.array([len(sentences[s]) for s, _ in targets], np.int64)
    order = np.argsort(lengths, kind="stable")
    blocked = ~allowed                                                   # (V,)
    bar = progress_bar(-(-n // batch_size), "masked-LM candidates", progress)
    for b0 in range(0, n, batch_size):
        idx = order[b0:b0 + batch_size]
        T = int(lengths[idx].max())
        ids = np.zeros((len(idx), T), np.int64)                          # (B,T)
        mask = np.zeros((len(idx), T), np.int64)
        pos = np.zeros(len(idx), np.int64)
        for r, t in enumerate(idx):
            s, p = targets[t]
            row = sentences[s]
            ids[r, :len(row)], mask[r, :len(row)], pos[r] = row, 1, p
        original = ids[np.arange(len(idx)), pos].copy()                  # (B,)
        ids[np.arange(len(idx)), pos] = mask_id
        out_b, _ = bert_forward(params, config, ids, mask, rng=None, keep_cache=False)
        at = out_b.last[np.arange(len(idx)), pos][:, None, :]            # (B,T,H) -> (B,1,H)
        logits, _ = mlm_forward(params, config, at)                      # (B,1,V)
        logits = logits[:, 0].copy()                                     # (B,V)
        logits[:, blocked] = -np.inf
        logits[np.arange(len(idx)), original] = -np.inf
        top = np.argpartition(-logits, k - 1, axis=1)[:, :k]             # (B,k) unordered
        rows = np.arange(len(idx))[:, None]
        order_k = np.argsort(-logits[rows, top], axis=1, kind="stable")
        out[idx] = top[rows, order_k]
        bar.update(1)
    bar.close()
    return out


# ----------------------------------------------------------------------------- variants

def sentence_variants(ids: np.ndarray, types: np.ndarray, words: Words, cand: np.ndarray,
                      n_cand: np.ndarray, settings: AugmentSettings,
                      rng: np.random.Generator) -> list:
    """Up to settings.per_example new versions of one sentence.

    Inputs: ids / types (L,) of the sentence, its Words, cand (W,K) candidate ids per word and
    n_cand (W,) how many of them are real (0 = never replaced), settings, rng.
    Returns: a list of (ids (L',), types (L',)) pairs, L' <= L, none equal to the original or to
    each other. Each word is replaced with probability p by a uniform pick among its candidates;
    a replaced word of several pieces becomes one token (its later pieces are dropped).
    """
    n, W = settings.per_example, len(words.keys)
    u = rng.random((n, W))                                               # (n,W) replace draws
    pick = rng.random((n, W))                                            # (n,W) candidate draws
    if W == 0 or not n_cand.any():
        return []
    replace = (u < settings.p) & (n_cand > 0)                            # (n,W)
    choice = np.minimum((pick * n_cand).astype(np.int64), np.maximum(n_cand - 1, 0))  # (n,W)
    in_word = words.word_of >= 0                                         # (L,)
    w_of = np.where(in_word, words.word_of, 0)                           # (L,) safe index
    rep_tok = replace[:, w_of] & in_word                                 # (n,L) token inside a replaced word
    new_tok = cand[w_of[None, :], choice[:, w_of]]                       # (n,L) the word's pick
    new_ids = np.where(rep_tok & words.is_start, new_tok, ids[None, :])  # (n,L)
    keep = ~rep_tok | words.is_start                                     # (n,L) later pieces dropped
    seen = {ids.tobytes()}
    out = []
    for r in range(n):
        if not replace[r].any():
            continue
        row = new_ids[r][keep[r]]
        key = row.tobytes()
        if key in seen:
            continue
        seen.add(key)
        out.append((row, types[keep[r]]))
    return out


def augment_sentences(params: dict, config: BertConfig, tokenizer, ids: np.ndarray,
                      mask: np.ndarray, token_type_ids: np.ndarray,
                      settings: AugmentSettings, batch_size: int = 64,
                      progress: bool = False) -> Augmented:
    """Generate the variants of N tokenised sentences (no teacher labels yet).

    Inputs: the model whose embedding table (and MLM head, if any) proposes candidates, its
    tokenizer, ids / mask / token_type_ids (N,T) int (a padded, encoded split), settings,
    batch_size (MLM forwards). Returns: Augmented with logits None and meta["timings"] holding
    "candidates_s" and "variants_s".
    """
    check_augment_settings(settings)
    vocab = vocabulary(tokenizer, config.vocab_size)
    k = settings.candidates
    lengths = np.asarray(mask).sum(axis=1).astype(np.int64)              # (N,)
    rows = [np.asarray(ids[i, :lengths[i]], np.int64) for i in range(len(lengths))]
    types = [np.asarray(token_type_ids[i, :lengths[i]], np.int64) for i in range(len(lengths))]
    words = [sentence_words(r, vocab) for r in rows]
    t0 = time.perf_counter()
    use_mlm = bool(config.mlm_head) and tokenizer.mask_id is not None
    mlm_targets = [(i, int(pos)) for i, w in enumerate(words) for pos, key in
                   zip(w.positions, w.keys) if use_mlm and len(key) == 1]
    mlm_top = (mlm_candidates(params, config, rows, mlm_targets, tokenizer.mask_id,
                              vocab.alpha_start, k, batch_size, progress)
               if mlm_targets else np.zeros((0, k), np.int64))
    mlm_of = {t: mlm_top[j] for j, t in enumerate(mlm_targets)}
    skip = settings.multi_piece == "skip"
    need = [key for i, w in enumerate(words) for pos, key in zip(w.positions, w.keys)
            if (i, int(pos)) not in mlm_of and not (skip and len(key) > 1)]
    neighbours = embedding_neighbours(params["embeddings.word"], need, vocab.alpha_start, k)
    t1 = time.perf_counter()
    out_ids, out_types, out_src = [], [], []
    for i, w in enumerate(words):
        W = len(w.keys)
        cand = np.zeros((W, k), np.int64)                                # (W,K)
        n_cand = np.zeros(W, np.int64)                                   # (W,)
        for j, (pos, key) in enumerate(zip(w.positions, w.keys)):
            c = mlm_of.get((i, int(pos)))
            if c is None:
                c = neighbours.get(key, ())                              # () = skipped: never replaced
            cand[j, :len(c)], n_cand[j] = c, len(c)
        rng = np.random.default_rng([settings.seed, i])
        for new_ids, new_types in sentence_variants(rows[i], types[i], w, cand, n_cand,
                                                    settings, rng):
            out_ids.append(new_ids)
            out_types.append(new_types)
            out_src.append(i)
    t2 = time.perf_counter()
    M = len(out_ids)
    T = max((len(r) for r in out_ids), default=1)
    pad = tokenizer.pad_id
    A = np.full((M, T), pad, np.int64)                                   # (M,T)
    B = np.zeros((M, T), np.int64)
    lens = np.zeros(M, np.int64)
    for m, (r, t) in enumerate(zip(out_ids, out_types)):
        A[m, :len(r)], B[m, :len(r)], lens[m] = r, t, len(r)
    method = "masked-LM head (single-piece words) + embedding neighbours" if use_mlm \
        else "embedding neighbours (cosine, word-embedding table)"
    meta = {"method": method, "settings": settings._asdict(), "n_source": len(rows),
            "n_augmented": M, "words": int(sum(len(w.keys) for w in words)),
            "distinct_words": len(neighbours),
            "timings": {"candidates_s": t1 - t0, "variants_s": t2 - t1}}
    return Augmented(A, B, lens, np.asarray(out_src, np.int64), None, meta)


# ----------------------------------------------------------------------------- minibert augment

def sample_pairs(tokenizer, source_ids, source_lengths, aug, n: int = 5) -> list[dict]:
    """The first augmented sentence of the first n examples that have one, as decoded text:
    [{"original": ..., "augmented": ...}]."""
    pairs, seen = [], set()
    for m, i in enumerate(aug.source.tolist()):
        if i in seen:
            continue
        seen.add(i)
        pairs.append({"original": tokenizer.decode(source_ids[i, :source_lengths[i]]),
                      "augmented": tokenizer.decode(aug.ids[m, :aug.lengths[m]])})
        if len(pairs) == n:
            break
    return pairs


def augment_examples(tparams: dict, tconfig: BertConfig, tokenizer, examples, settings,
                     max_length: int = 64, batch_size: int = 64, candidates_model=None,
                     progress: bool = False):
    """Augment a list of data.Example and label every new sentence with the teacher.

    Inputs: the teacher (params, config with a classifier head) and its tokenizer, examples,
    AugmentSettings, max_length (as distill's), batch_size, candidates_model: (params, config)
    of a model with a masked-LM head and the same tokenizer (None: the teacher proposes).
    Returns: Augmented with logits, and meta holding counts, timings (candidates, variants,
    labelling, in seconds) and throughputs (sentences/s).
    """
    texts = [e.text for e in examples]
    pairs = [e.text_pair for e in examples] if examples and examples[0].text_pair is not None else None
    enc = tokenizer.encode(texts, pairs=pairs, max_length=max_length)
    cparams, cconfig = candidates_model or (tparams, tconfig)
    aug = augment_sentences(cparams, cconfig, tokenizer, enc.ids, enc.mask, enc.token_type_ids,
                            settings, batch_size, progress)
    t0 = time.perf_counter()
    logits = teacher_logits(tparams, tconfig, aug.ids, aug.lengths, aug.token_type_ids,
                            batch_size, progress)
    timings = {**aug.meta["timings"], "labelling_s": time.perf_counter() - t0}
    n, m = len(examples), len(aug.lengths)
    gen_s = timings["candidates_s"] + timings["variants_s"]
    rates = {"generated_per_s": m / max(gen_s, 1e-9),
             "labelled_per_s": m / max(timings["labelling_s"], 1e-9),
             "overall_per_s": m / max(gen_s + timings["labelling_s"], 1e-9)}
    lengths = enc.mask.sum(axis=1)
    meta = {**aug.meta, "max_length": max_length, "timings": timings, "throughput": rates,
            "samples": sample_pairs(tokenizer, enc.ids, lengths, aug)}
    print(f"augmented {n} examples -> {m} new sentences ({m / max(n, 1):.1f} per example); "
          f"{aug.meta['method']}")
    print(f"time: candidates {timings['candidates_s']:.1f} s, variants {timings['variants_s']:.1f} s "
          f"({rates['generated_per_s']:.0f} sentences/s), teacher labels "
          f"{timings['labelling_s']:.1f} s ({rates['labelled_per_s']:.0f} sentences/s)")
    return aug._replace(logits=logits, meta=meta)


def cli_augment(args) -> int:
    """minibert augment: TinyBERT-style augmentation of the training examples that
    `distill --data SPEC --limit N --seed S` uses, labelled by the teacher, into one file."""
    from minibert.data import load_dataset
    from minibert.distill import check_teacher, label_map
    from minibert.outdir import claim_file
    from minibert.transfer_set import examples_fingerprint, fingerprint, save_augmented
    from minibert.weights import load_model_and_tokenizer
    settings = AugmentSettings(args.per_example, args.p, args.candidates, args.seed,
                               args.multi_piece)
    check_augment_settings(settings)
    tparams, tconfig, tokenizer = load_model_and_tokenizer(args.teacher)
    check_teacher(args.teacher, tconfig)
    candidates_model = None
    if args.mlm_model:
        cparams, cconfig, _ = load_model_and_tokenizer(args.mlm_model)
        if not cconfig.mlm_head:
            raise MinibertError(f"--mlm-model {args.mlm_model} has no masked-LM head (config "
                                f"mlm_head false); convert a BertForMaskedLM checkpoint")
        if fingerprint(args.mlm_model)["tokenizer"] != fingerprint(args.teacher)["tokenizer"]:
            raise MinibertError(f"--mlm-model {args.mlm_model} has another tokenizer than "
                                f"--teacher {args.teacher}; its candidates would be other words")
        candidates_model = (cparams, cconfig)
    data = load_dataset(args.data, text_column=args.text_column, label_column=args.label_column,
                        text_pair_column=args.text_pair_column, limit=args.limit, seed=args.seed)
    label_map(data.labels, tconfig)                  # the teacher must know these labels
    if not data.train:
        raise MinibertError(f"--data {args.data}: no training examples to augment")
    with claim_file(args.out, "augment", overwrite=args.overwrite) as out:
        aug = augment_examples(tparams, tconfig, tokenizer, data.train, settings, args.max_length,
                               args.batch_size, candidates_model, progress=True)
        meta = {**aug.meta, "teacher": str(args.teacher), "fingerprint": fingerprint(args.teacher),
                "mlm_model": args.mlm_model, "data": args.data, "limit": args.limit,
                "seed": args.seed, "labels": list(tconfig.labels or []),
                "source_fingerprint": examples_fingerprint(data.train)}
        save_augmented(Path(out), aug._replace(meta=meta))
    for pair in meta["samples"][:3]:
        print(f"  {pair['original']}\n  -> {pair['augmented']}")
    print(f"{meta['n_augmented']} sentences with teacher logits written to {args.out} "
          f"(minibert distill --transfer {args.out} --data {args.data}"
          f"{f' --limit {args.limit}' if args.limit else ''}{f' --seed {args.seed}' if args.seed else ''})")
    return 0
