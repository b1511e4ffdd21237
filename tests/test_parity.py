"""Parity with PyTorch / transformers, from reference dumps made once by fixtures/make_reference.py
(llm.c's test_gpt2 approach: logits, loss and every gradient compared BY NAME). No torch needed,
except in the one live test at the end (skipped when torch/transformers are not installed).

Gradients are mapped from HF names to ours with the converter's own table (hf_convert.hf_mapping):
transposes, the q|k|v concatenation and the tied MLM decoder are linear, so gradients map exactly
like weights. A gradient that matched only by position in a list would hide a swapped q and k.

The key bias gets no gradient at all: adding the same number to every key's score leaves the
softmax unchanged, so d loss / d key-bias is exactly 0 in exact arithmetic. Both sides hold
rounding noise there (1e-17 in float64), which a relative error would turn into 100%, so those
entries are checked to be ~0 instead.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import FIXTURES
from minibert import hf_convert, weights
from minibert.gradcheck import rel_error
from minibert.losses import cross_entropy
from minibert.model import (add_grads, bert_backward, bert_forward, classify_backward, classify_forward,
                            l2_normalize, mean_pool, mlm_backward, mlm_forward)
from minibert.tokenizer import Tokenizer


def reference(kind):
    return np.load(FIXTURES / f"{kind}_reference.npz")


# ----------------------------------------------------------------------------- the real teacher

@pytest.mark.teacher
def test_teacher_last_hidden_state_matches_transformers(teacher_dir):
    ref = reference("teacher")
    params, config = weights.load_model(teacher_dir)
    out, _ = bert_forward(params, config, ref["ids"], ref["mask"], ref["token_type_ids"], keep_cache=False)
    assert out.last.dtype == np.float32
    real = ref["mask"].astype(bool)
    err = np.abs(out.last[real] - ref["hidden_real"]).max()           # padded positions are not compared
    print(f"teacher last hidden: max |diff| at {real.sum()} real tokens = {err:.2e}")
    assert err <= 1e-4      # float32 vs float32 through 6 layers: measured ~4e-6


@pytest.mark.teacher
def test_teacher_embeddings_match_sentence_transformers(teacher_dir):
    from minibert.infer import embed

    ref = reference("teacher")
    params, config, tok = weights.load_model_and_tokenizer(teacher_dir)
    out, _ = bert_forward(params, config, ref["ids"], ref["mask"], ref["token_type_ids"], keep_cache=False)
    ours = l2_normalize(mean_pool(out.last, ref["mask"]))              # all 8 rows, incl. the pair
    cos = (ours * ref["embeddings"]).sum(axis=1)
    # and through the tokenizer + embed(), in batches of 3, for the single sentences
    single = [i for i, p in enumerate(ref["pairs"]) if not p]
    vecs = embed(params, config, tok, [str(ref["texts"][i]) for i in single], batch_size=3)
    cos_embed = (vecs * ref["embeddings"][single]).sum(axis=1)
    print(f"teacher embeddings: min cosine {cos.min():.8f}, via embed() {cos_embed.min():.8f}")
    assert vecs.dtype == np.float32 and vecs.shape == (len(single), 384)
    assert cos.min() >= 0.99999 and cos_embed.min() >= 0.99999


# ----------------------------------------------------------------------------- tiny models

def run_tiny(kind, model_dir, dtype):
    """Loss and grads of our model on the reference batch. Returns (logits, loss, grads, config)."""
    ref = reference(f"tiny_{kind}")
    params, config = weights.load_model(model_dir)
    params = {k: v.astype(dtype) for k, v in params.items()}
    ids, mask, types, labels = ref["ids"], ref["mask"], ref["token_type_ids"], ref["labels"]
    if kind == "cls":
        logits, _, cache = classify_forward(params, config, ids, mask, types)        # (B,C)
        loss, dlogits = cross_entropy(logits, labels)
        grads = classify_backward(dlogits, cache)
    else:
        out, cache = bert_forward(params, config, ids, mask, types)
        logits, mlm_cache = mlm_forward(params, config, out.last)                     # (B,T,V)
        picked = labels != -100                      # HF's MLM loss: CE over the masked positions only
        loss, dpicked = cross_entropy(logits[picked], labels[picked])
        dlogits = np.zeros_like(logits)
        dlogits[picked] = dpicked
        dlast, head_grads = mlm_backward(dlogits, mlm_cache)
        grads = add_grads(bert_backward(dlast, cache), head_grads)                    # tied decoder: summed
    return logits, loss, grads, config


def reference_grads(kind, config):
    """PyTorch's gradients, keyed by HF name in the fixture, mapped to minibert names."""
    ref = reference(f"tiny_{kind}")
    by_hf_name = {k[len("grad/"):]: ref[k] for k in ref.files if k.startswith("grad/")}
    state, _, _ = hf_convert.split_hf_state(by_hf_name)
    return hf_convert.hf_to_minibert(state, config)


def split_key_bias(name, g, H):
    """(gradient without the key-bias entries, key-bias entries) for qkv.b; (g, empty) otherwise."""
    if name.endswith("attn.qkv.b"):
        return np.concatenate([g[:H], g[2 * H:]]), g[H:2 * H]
    return g, g[:0]


@pytest.fixture(params=["cls", "mlm"])
def tiny(request, tiny_cls_dir, tiny_mlm_dir):
    return request.param, {"cls": tiny_cls_dir, "mlm": tiny_mlm_dir}[request.param]


def test_tiny_float64_logits_loss_and_every_gradient_match_pytorch(tiny):
    kind, model_dir = tiny
    ref = reference(f"tiny_{kind}")
    logits, loss, grads, config = run_tiny(kind, model_dir, np.float64)
    ref_grads = reference_grads(kind, config)
    assert set(grads) == set(ref_grads)                                # every parameter, by name
    logit_err, loss_err = np.abs(logits - ref["logits"]).max(), abs(float(loss) - float(ref["loss"]))
    errors = {}
    for name, ref_g in ref_grads.items():
        ours, ours_kb = split_key_bias(name, grads[name], config.hidden_size)
        theirs, theirs_kb = split_key_bias(name, ref_g, config.hidden_size)
        errors[name] = rel_error(ours, theirs)
        assert np.abs(ours_kb).max(initial=0) <= 1e-12 and np.abs(theirs_kb).max(initial=0) <= 1e-12
    worst = max(errors, key=errors.get)
    print(f"tiny_{kind} float64: logits {logit_err:.1e}, loss {loss_err:.1e}, "
          f"worst gradient rel error {errors[worst]:.1e} ({worst})")
    assert logit_err <= 1e-10 and loss_err <= 1e-10     # same float64 arithmetic: measured ~1e-15
    bad = {k: v for k, v in errors.items() if v > 1e-7}  # elementwise, floor 1e-8: measured <= 3e-11
    assert not bad, bad


def test_tiny_float32_logits_loss_and_every_gradient_match_pytorch(tiny):
    kind, model_dir = tiny
    ref = reference(f"tiny_{kind}")
    logits, loss, grads, config = run_tiny(kind, model_dir, np.float32)
    assert logits.dtype == np.float32 and all(g.dtype == np.float32 for g in grads.values())
    ref_grads = reference_grads(kind, config)
    assert set(grads) == set(ref_grads)
    logit_err, loss_err = np.abs(logits - ref["logits"]).max(), abs(float(loss) - float(ref["loss"]))
    # float32 rounding is relative to a tensor's scale, so each error is max|diff| / max|reference|
    errors = {}
    for name, ref_g in ref_grads.items():
        ours, ours_kb = split_key_bias(name, grads[name], config.hidden_size)
        theirs, _ = split_key_bias(name, ref_g, config.hidden_size)
        errors[name] = np.abs(ours - theirs).max() / np.abs(theirs).max()
        assert np.abs(ours_kb).max(initial=0) <= 1e-6 * np.abs(theirs).max()     # ~0: float32 noise
    worst = max(errors, key=errors.get)
    print(f"tiny_{kind} float32: logits {logit_err:.1e}, loss {loss_err:.1e}, "
          f"worst gradient scaled error {errors[worst]:.1e} ({worst})")
    assert logit_err <= 1e-5 and loss_err <= 1e-5       # measured ~2e-6 and ~2e-7
    bad = {k: v for k, v in errors.items() if v > 1e-4}  # measured <= 2e-6
    assert not bad, bad


# ----------------------------------------------------------------------------- live, optional

@pytest.mark.torch
def test_live_against_transformers_on_fresh_inputs(tiny_cls_dir):
    """The same checkpoint in transformers and in minibert, on a new padded batch."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = transformers.BertForSequenceClassification.from_pretrained(
        FIXTURES / "tiny_cls", attn_implementation="eager").eval()
    params, config = weights.load_model(tiny_cls_dir)
    rng = np.random.default_rng(7)
    ids = rng.integers(5, config.vocab_size, size=(5, 16))
    mask = (np.arange(16)[None] < rng.integers(2, 17, size=(5, 1))).astype(np.int64)
    types = (np.arange(16)[None] >= 8).astype(np.int64) * mask
    ours, out, _ = classify_forward(params, config, ids, mask, types, keep_cache=False)
    with torch.no_grad():
        res = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                    token_type_ids=torch.from_numpy(types), output_hidden_states=True)
    real = mask.astype(bool)
    assert np.abs(ours - res.logits.numpy()).max() <= 1e-5
    assert np.abs(out.last[real] - res.hidden_states[-1].numpy()[real]).max() <= 1e-5
