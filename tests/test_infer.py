"""Inference helpers: sentence embeddings and fill-mask, on the tiny converted models (the real
teacher's embeddings are compared with sentence-transformers' in test_parity.py)."""

from __future__ import annotations

import numpy as np
import pytest

from minibert.cli import main as cli_main
from minibert.errors import MinibertError
from minibert.infer import embed, fill_mask
from minibert.model import bert_forward, l2_normalize, mean_pool, mlm_forward
from minibert.weights import load_model_and_tokenizer

TEXTS = ["the cat sat on the mat", "a dog", "i loved this movie , it was very good !",
         "paris is the capital of france", "red"]


def test_embeddings_are_unit_float32_mean_pools_in_input_order(tiny_cls_dir):
    params, config, tok = load_model_and_tokenizer(tiny_cls_dir)
    vecs = embed(params, config, tok, TEXTS, batch_size=2)
    assert vecs.dtype == np.float32 and vecs.shape == (len(TEXTS), config.hidden_size)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-6)
    for i, text in enumerate(TEXTS):                       # one at a time, no padding at all
        b = tok.encode([text])
        out, _ = bert_forward(params, config, b.ids, b.mask, keep_cache=False)
        np.testing.assert_allclose(vecs[i], l2_normalize(mean_pool(out.last, b.mask))[0], atol=1e-6)


def test_embeddings_do_not_depend_on_the_batch_size(tiny_cls_dir):
    params, config, tok = load_model_and_tokenizer(tiny_cls_dir)
    a = embed(params, config, tok, TEXTS, batch_size=1)
    b = embed(params, config, tok, TEXTS, batch_size=len(TEXTS))   # padded: the mask must hide padding
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_fill_mask_gives_sorted_probabilities_from_the_mlm_head(tiny_mlm_dir):
    params, config, tok = load_model_and_tokenizer(tiny_mlm_dir)
    texts = ["the [MASK] sat on the mat", "[MASK] is the [MASK] of france"]
    res = fill_mask(params, config, tok, texts, top_k=4)
    assert [len(r) for r in res] == [1, 2] and all(len(c) == 4 for r in res for c in r)
    b = tok.encode(texts)
    out, _ = bert_forward(params, config, b.ids, b.mask, keep_cache=False)
    logits, _ = mlm_forward(params, config, out.last)                          # (B,T,V), every position
    for row, masks in enumerate(res):
        cols = np.nonzero(b.ids[row] == tok.mask_id)[0]
        for col, cands in zip(cols, masks):
            z = logits[row, col].astype(np.float64)
            p = np.exp(z - z.max())
            p /= p.sum()
            best = np.argsort(-p)[:4]
            assert [t for t, _ in cands] == [tok.id_to_token(j) for j in best]
            np.testing.assert_allclose([q for _, q in cands], p[best], rtol=1e-5)


def test_fill_mask_errors(tiny_mlm_dir, tiny_cls_dir):
    params, config, tok = load_model_and_tokenizer(tiny_mlm_dir)
    with pytest.raises(MinibertError, match=r"no \[MASK\] in 'the cat'"):
        fill_mask(params, config, tok, ["the cat"])
    params, config, tok = load_model_and_tokenizer(tiny_cls_dir)
    with pytest.raises(MinibertError, match="no MLM head"):
        fill_mask(params, config, tok, ["the [MASK]"])


def test_cli_embed_writes_an_npy_and_cli_fill_mask_prints(tmp_path, tiny_cls_dir, tiny_mlm_dir, capsys):
    text_file = tmp_path / "texts.txt"
    text_file.write_text("\n".join(TEXTS[:3]) + "\n\n", encoding="utf-8")
    out = tmp_path / "emb.npy"
    assert cli_main(["embed", "--model", str(tiny_cls_dir), "--text-file", str(text_file),
                     "--out", str(out), "--batch-size", "2"]) == 0
    vecs = np.load(out)
    assert vecs.shape == (3, 32) and vecs.dtype == np.float32
    assert cli_main(["fill-mask", "--model", str(tiny_mlm_dir), "--top-k", "2", "the [MASK] sat"]) == 0
    assert "mask 1:" in capsys.readouterr().out
    assert cli_main(["embed", "--model", str(tiny_cls_dir), "--text-file", str(tmp_path / "none.txt"),
                     "--out", str(out)]) == 2
