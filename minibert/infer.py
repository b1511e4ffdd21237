"""Using a model without training it: sentence embeddings and masked-word prediction.

Shape legend: N texts, B batch, T tokens, H hidden, V vocab, M masked positions, k top-k.

embed: text -> tokenizer -> bert_forward -> mean over the real tokens -> divide by the L2 norm.
This is what sentence-transformers computes for all-MiniLM-L6-v2 (its modules are Transformer,
Pooling(mean), Normalize), so cosine similarity of two embeddings is just their dot product.

fill_mask: the MLM head turns the hidden state at each [MASK] into scores over the vocabulary;
softmax gives the probability of each word in that slot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from minibert.batches import sorted_batches
from minibert.errors import MinibertError
from minibert.layers import softmax_forward
from minibert.fast_model import bert_forward, mlm_forward
from minibert.model import l2_normalize, mean_pool
from minibert.progress import progress_bar

EMBED_MAX_LENGTH = 256   # sentence-transformers' max_seq_length for all-MiniLM-L6-v2


def embed(params, config, tokenizer, texts, batch_size: int = 32, max_length: int = EMBED_MAX_LENGTH,
          progress: bool = False) -> np.ndarray:
    """Inputs: params/config of a model, its Tokenizer, texts (list of N strings), batch_size,
    max_length (longer texts are truncated, with a warning).
    Returns: float32 (N, H) mean-pooled, L2-normalised sentence embeddings, in the order of texts."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ValueError("texts: expected at least one string, got none")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    max_length = min(int(max_length), config.max_position)
    # Batch texts of similar length together so little compute goes to padding; the mask makes the
    # result independent of the batching (up to float32 rounding).
    # (Lengths in characters: the texts are tokenised batch by batch, below.)
    out = np.empty((len(texts), config.hidden_size), np.float32)               # (N,H)
    index_lists = sorted_batches(np.array([len(t) for t in texts]), batch_size)
    bar = progress_bar(len(index_lists), "embedding", progress)
    for idx in index_lists:
        batch = tokenizer.encode([texts[i] for i in idx], max_length=max_length)
        res, _ = bert_forward(params, config, batch.ids, batch.mask, batch.token_type_ids,
                              keep_cache=False)
        out[idx] = l2_normalize(mean_pool(res.last, batch.mask))              # (B,T,H) -> (B,H)
        bar.update(1)
    bar.close()
    return out


def fill_mask(params, config, tokenizer, texts, top_k: int = 5) -> list[list[list[tuple[str, float]]]]:
    """Inputs: a model with an MLM head, its Tokenizer, texts containing the mask token ([MASK]).
    Returns: for each text, for each mask in it (left to right), the top_k (token, probability)."""
    if not config.mlm_head:
        raise MinibertError("this model has no MLM head (mlm_head=false in config.json): fill-mask needs "
                            "a checkpoint with cls.predictions.* weights, e.g. a BertForMaskedLM")
    if tokenizer.mask_id is None:
        raise MinibertError(f"{tokenizer.path} defines no mask token")
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k: expected a positive int, got {top_k!r}")
    batch = tokenizer.encode(texts, max_length=config.max_position)
    missing = [t for t, row in zip(texts, batch.ids) if not (row == tokenizer.mask_id).any()]
    if missing:
        raise MinibertError(f"no {tokenizer.mask_token} in {missing[0]!r}")
    res, _ = bert_forward(params, config, batch.ids, batch.mask, batch.token_type_ids, keep_cache=False)
    rows, cols = np.nonzero(batch.ids == tokenizer.mask_id)                     # M masked positions
    logits, _ = mlm_forward(params, config, res.last[rows, cols][None])        # (1,M,H) -> (1,M,V)
    probs, _ = softmax_forward(logits[0])                                      # (M,V)
    top = np.argsort(-probs, axis=-1, kind="stable")[:, :top_k]                # (M,k)
    results = [[] for _ in texts]
    for m, r in enumerate(rows):
        results[r].append([(tokenizer.id_to_token(j), float(probs[m, j])) for j in top[m]])
    return results


# ----------------------------------------------------------------------------- command line

def cli_embed(args) -> int:
    """minibert embed: --out is claimed through minibert.outdir.claim_file (an existing file is
    replaced only with --overwrite) and written under exactly that name."""
    from minibert.outdir import claim_file
    with claim_file(args.out, "embed", overwrite=args.overwrite) as out:
        return _embed(args, out)


def _embed(args, out: Path) -> int:
    from minibert.files import atomic_write_npy
    from minibert.weights import load_model_and_tokenizer

    path = Path(args.text_file)
    try:
        texts = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise MinibertError(f"--text-file {path}: cannot read it as UTF-8 text ({err})") from None
    kept = [t for t in texts if t.strip()]
    if not kept:
        raise MinibertError(f"--text-file {path}: no non-empty lines")
    if len(kept) < len(texts):
        print(f"skipped {len(texts) - len(kept)} empty line(s): row i of the output is the i-th non-empty line")
    texts = kept
    if args.batch_size < 1:
        raise MinibertError(f"--batch-size: expected a positive int, got {args.batch_size}")
    params, config, tokenizer = load_model_and_tokenizer(args.model)
    vectors = embed(params, config, tokenizer, texts, args.batch_size, progress=True)
    atomic_write_npy(out, vectors)
    print(f"wrote {vectors.shape[0]} embeddings of size {vectors.shape[1]} (float32, L2-normalised) to {out}")
    return 0


def cli_fill_mask(args) -> int:
    from minibert.weights import load_model_and_tokenizer

    params, config, tokenizer = load_model_and_tokenizer(args.model)
    for text, masks in zip(args.text, fill_mask(params, config, tokenizer, args.text, args.top_k)):
        print(text)
        for i, cands in enumerate(masks):
            shown = ", ".join(f"{tok} {p:.3f}" for tok, p in cands)
            print(f"  mask {i + 1}: {shown}")
    return 0
