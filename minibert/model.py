"""The BERT encoder, as forward/backward pairs composed from layers.py and attention.py.

Shape legend
    B batch, T tokens (T <= P), H hidden, nh heads, hs head size (H = nh*hs), I intermediate (FFN)
    size, V vocab, P max positions, C classes, L layers.

The model is a flat dict of parameters (names in config.param_shapes) plus a `BertConfig`:

    ids (B,T) ─ embeddings_forward ─> h0 (B,T,H) ─ encoder layer 0 ─> h1 ─ ... ─> hL = last (B,T,H)
    last ─ heads.classifier_forward ─> logits (B,C)        last ─ heads.mlm_forward ─> logits (B,T,V)

An encoder layer is BERT's post-LayerNorm block:
    x = LN(x + Dropout(Attention(x)))
    x = LN(x + Dropout(Linear(GELU(Linear(x)))))

Every backward returns FRESH gradient dicts keyed like the parameters; `add_grads` sums two of them
(the masked-LM decoder shares `embeddings.word`, so that weight gets two gradients to add).
`rng=None` means eval mode (no dropout); with a Generator, dropout masks are drawn from it in a
fixed order, so the same seed gives bit-identical results.

Reference and fast: the one switch. Every forward here takes `fast` (default False). With
fast=False the layer runs the reference GELU and attention of layers.py / attention.py, what the
lessons teach; with fast=True it runs fast_layers.py / fast_attention.py (blocked erf, `out=`
buffers), tested equal to them in tests/test_fast.py. The cache remembers the choice, so the backward
follows it. The pipeline (training, distillation, evaluation, inference: student and teacher alike)
calls fast_model.py, which is this code with fast=True plus, for inference on a padded batch, the
packed path that skips the padding; fast.py lists every fast function and the reference it stands in for.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from minibert import attention, fast_attention, fast_layers, layers
from minibert.attention import AttentionCache, mask_to_bias
from minibert.config import (  # noqa: F401  (re-exported: callers import the model's config from here)
    BertConfig,
    check_inputs,
    check_param_shapes,
    check_params,
    count_params,
    init_params,
    param_shapes,
)
from minibert.heads import (  # noqa: F401  (re-exported: the heads are part of the model)
    ClassifierCache,
    MLMCache,
    classifier_backward,
    classifier_forward,
    l2_normalize,
    mean_pool,
    mlm_backward,
    mlm_forward,
)
from minibert.layers import (
    DropoutCache,
    EmbeddingCache,
    GeluCache,
    LayerNormCache,
    LinearCache,
    _skip_finite_checks,
    check_finite,
    dropout_backward,
    dropout_forward,
    embedding_backward,
    embedding_forward,
    layernorm_backward,
    layernorm_forward,
    linear_backward,
    linear_forward,
)


class Kernels(NamedTuple):
    """The computations an encoder layer can run two ways (reference or fast, equal up to rounding)."""
    gelu_forward: Callable
    gelu_backward: Callable
    attention_forward: Callable
    attention_backward: Callable


REFERENCE = Kernels(layers.gelu_forward, layers.gelu_backward,
                    attention.attention_forward, attention.attention_backward)
FAST = Kernels(fast_layers.gelu_forward, fast_layers.gelu_backward,
               fast_attention.attention_forward, fast_attention.attention_backward)


def kernels(fast: bool) -> Kernels:
    """THE switch: FAST (fast_layers, fast_attention) when `fast`, else REFERENCE."""
    return FAST if fast else REFERENCE


# ----------------------------------------------------------------------------------------------
# Embeddings: word + position + token type, LayerNorm, dropout


class EmbeddingsCache(NamedTuple):
    word: EmbeddingCache
    token_type: EmbeddingCache
    n_positions: int         # P: rows of the position table (its gradient has this many rows)
    ln: LayerNormCache
    drop: DropoutCache


def embeddings_forward(params: dict, config: BertConfig, ids: np.ndarray, token_type_ids: np.ndarray,
                       rng: np.random.Generator | None = None) -> tuple[np.ndarray, EmbeddingsCache]:
    """Inputs: params, config, ids int (B,T), token_type_ids int (B,T), rng (None = no dropout).
    Position ids are 0..T-1, so the position rows are a slice of the table, not a gather.
    Returns: h (B,T,H), cache."""
    T = ids.shape[1]
    word, word_cache = embedding_forward(ids, params["embeddings.word"])  # (B,T) -> (B,T,H)
    tt, tt_cache = embedding_forward(token_type_ids, params["embeddings.token_type"])  # (B,T) -> (B,T,H)
    x = word + tt                                       # (B,T,H)
    x += params["embeddings.position"][:T]              # (B,T,H) += (T,H), broadcast over B
    y, ln_cache = layernorm_forward(x, params["embeddings.ln.gamma"], params["embeddings.ln.beta"],
                                    config.layer_norm_eps)  # (B,T,H)
    h, drop_cache = dropout_forward(y, config.hidden_dropout, rng, copy=False)  # (B,T,H)
    n_positions = params["embeddings.position"].shape[0]
    return h, EmbeddingsCache(word_cache, tt_cache, n_positions, ln_cache, drop_cache)


def embeddings_backward(dh: np.ndarray, cache: EmbeddingsCache) -> dict:
    """Inputs: dh (B,T,H), cache from embeddings_forward.
    Returns: fresh grads dict for the embeddings.* parameters."""
    dy = dropout_backward(dh, cache.drop)                           # (B,T,H)
    dx, dgamma, dbeta = layernorm_backward(dy, cache.ln)            # (B,T,H), (H,), (H,)
    dpos = np.zeros((cache.n_positions, dx.shape[2]), dtype=dx.dtype)  # (P,H)
    dpos[:dx.shape[1]] = dx.sum(axis=0)                             # (B,T,H) -> (T,H) into rows 0..T-1
    return {
        "embeddings.word": embedding_backward(dx, cache.word),        # (V,H)
        "embeddings.position": dpos,
        "embeddings.token_type": embedding_backward(dx, cache.token_type),  # (type_vocab,H)
        "embeddings.ln.gamma": dgamma,
        "embeddings.ln.beta": dbeta,
    }


# ----------------------------------------------------------------------------------------------
# One encoder layer (post-LayerNorm)


class EncoderLayerCache(NamedTuple):
    index: int
    fast: bool               # which kernels ran (encoder_layer_backward follows)
    attn: AttentionCache     # attn.scores / attn.probs are what attention distillation reads
    attn_drop: DropoutCache
    attn_ln: LayerNormCache
    ffn_in: LinearCache
    gelu: GeluCache
    ffn_out: LinearCache
    ffn_drop: DropoutCache
    ffn_ln: LayerNormCache


def encoder_layer_forward(params: dict, config: BertConfig, i: int, x: np.ndarray,
                          bias: np.ndarray | None, rng: np.random.Generator | None = None,
                          fast: bool = False) -> tuple[np.ndarray, EncoderLayerCache]:
    """Inputs: params, config, i (layer index), x (B,T,H), bias (B,1,1,T) additive padding bias,
    rng (None = no dropout), fast (the kernels, see kernels()). Returns: y (B,T,H), cache."""
    p = f"encoder.{i}."
    k = kernels(fast)
    a, attn_cache = k.attention_forward(
        x, params[p + "attn.qkv.W"], params[p + "attn.qkv.b"], params[p + "attn.out.W"],
        params[p + "attn.out.b"], bias, config.heads_in_layer(i), config.attention_dropout, rng)  # (B,T,H)
    a, attn_drop = dropout_forward(a, config.hidden_dropout, rng, copy=False)  # (B,T,H)
    a += x                                    # residual, in place: a is a fresh array nobody keeps
    x1, attn_ln = layernorm_forward(a, params[p + "attn.ln.gamma"], params[p + "attn.ln.beta"],
                                    config.layer_norm_eps)                      # (B,T,H)
    f, ffn_in = linear_forward(x1, params[p + "ffn.in.W"], params[p + "ffn.in.b"])  # (B,T,H) -> (B,T,I)
    f, gelu = k.gelu_forward(f)                                                 # (B,T,I)
    f, ffn_out = linear_forward(f, params[p + "ffn.out.W"], params[p + "ffn.out.b"])  # (B,T,I) -> (B,T,H)
    f, ffn_drop = dropout_forward(f, config.hidden_dropout, rng, copy=False)  # (B,T,H)
    f += x1                                   # residual, in place (f is fresh too)
    y, ffn_ln = layernorm_forward(f, params[p + "ffn.ln.gamma"], params[p + "ffn.ln.beta"],
                                  config.layer_norm_eps)                        # (B,T,H)
    return y, EncoderLayerCache(i, fast, attn_cache, attn_drop, attn_ln, ffn_in, gelu, ffn_out,
                                ffn_drop, ffn_ln)


def encoder_layer_backward(dy: np.ndarray, cache: EncoderLayerCache, dscores: np.ndarray | None = None,
                           dprobs: np.ndarray | None = None,
                           dvalues: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Inputs: dy (B,T,H), cache from encoder_layer_forward, optional extra upstream gradients
    dscores / dprobs (B,nh,T,T) on the layer's attention scores / probabilities and dvalues
    (B,nh,T,hs) on its values (cache.attn.v; MiniLM's value relation).
    Returns: dx (B,T,H), fresh grads dict for the encoder.{i}.* parameters.

    Run the forward in reverse. Each residual sum `x + branch(x)` sends its gradient both
    through the branch and straight to x, so the two contributions are added."""
    k = kernels(cache.fast)              # k.gelu_backward, k.attention_backward: as the forward ran
    # BEGIN EXERCISE encoder_layer_backward
    p = f"encoder.{cache.index}."                                   # keys like the parameters
    # 1. FFN LayerNorm: its input was the residual sum s2 = x1 + f
    ds2, dgamma2, dbeta2 = layernorm_backward(dy, cache.ffn_ln)     # (B,T,H)
    # 2. the FFN branch backwards: dropout, out linear, GELU, in linear
    df = dropout_backward(ds2, cache.ffn_drop)                      # (B,T,H)
    df, dW_out, db_out = linear_backward(df, cache.ffn_out)         # (B,T,H) -> (B,T,I)
    df = k.gelu_backward(df, cache.gelu)                            # (B,T,I)
    dx1, dW_in, db_in = linear_backward(df, cache.ffn_in)           # (B,T,I) -> (B,T,H)
    # 3. x1 fed both the FFN and the sum s2: add the two gradients
    dx1 += ds2                                                      # (B,T,H)
    # 4. attention LayerNorm: its input was s1 = x + a
    ds1, dgamma1, dbeta1 = layernorm_backward(dx1, cache.attn_ln)   # (B,T,H)
    # 5. the attention branch backwards: dropout, then attention (extra dscores/dprobs go in here)
    da = dropout_backward(ds1, cache.attn_drop)                     # (B,T,H)
    dx, dW_qkv, db_qkv, dW_o, db_o = k.attention_backward(da, cache.attn, dscores, dprobs,
                                                           dvalues)  # (B,T,H)
    # 6. x fed both the attention and the sum s1: add the two gradients
    dx += ds1                                                       # (B,T,H)
    # 7. one fresh gradient per parameter of this layer
    grads = {
        p + "attn.qkv.W": dW_qkv, p + "attn.qkv.b": db_qkv,
        p + "attn.out.W": dW_o, p + "attn.out.b": db_o,
        p + "attn.ln.gamma": dgamma1, p + "attn.ln.beta": dbeta1,
        p + "ffn.in.W": dW_in, p + "ffn.in.b": db_in,
        p + "ffn.out.W": dW_out, p + "ffn.out.b": db_out,
        p + "ffn.ln.gamma": dgamma2, p + "ffn.ln.beta": dbeta2,
    }
    return dx, grads
    # END EXERCISE encoder_layer_backward


# ----------------------------------------------------------------------------------------------
# The whole encoder


class BertOutput(NamedTuple):
    last: np.ndarray                        # (B,T,H) output of the last layer
    hidden_states: list | None              # L+1 arrays (B,T,H); index 0 = embedding output
    attentions: list | None                 # L arrays (B,nh,T,T): softmax probs (before dropout)
    scores: list | None                     # L arrays (B,nh,T,T): pre-softmax scores incl. mask bias


class BertCache(NamedTuple):
    embeddings: EmbeddingsCache
    layers: list                            # L EncoderLayerCache
    shape: tuple                            # (B,T,H)
    dtype: np.dtype


def bert_forward(params: dict, config: BertConfig, ids: np.ndarray, mask: np.ndarray | None = None,
                 token_type_ids: np.ndarray | None = None, rng: np.random.Generator | None = None,
                 output_hidden: bool = False, output_attentions: bool = False, keep_cache: bool = True,
                 fast: bool = False) -> tuple[BertOutput, BertCache | None]:
    """Run the embeddings and the L encoder layers.

    Inputs: params (dict), config (BertConfig), ids int (B,T), mask (B,T) 1 = real / 0 = padding
    (None = all real), token_type_ids int (B,T) (None = all 0), rng (np.random.Generator for
    dropout; None = eval mode), output_hidden / output_attentions: also return every layer's
    hidden states / attention probs and scores, keep_cache: False drops every cache as soon
    as it is used (cheap teacher inference; bert_backward is then impossible), fast: the kernels
    (see kernels(); fast_model.bert_forward is this with fast=True, plus the packed inference path).
    Returns: BertOutput, cache (None when keep_cache is False)."""
    dtype = check_params(params, config)
    ids, mask, token_type_ids = check_inputs(config, ids, mask, token_type_ids)
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a np.random.Generator or None, got {type(rng).__name__}")
    if config.activation_quant != "none":
        raise ValueError(f"config.activation_quant={config.activation_quant!r}: int8 activations are for "
                         f"inference only, in fast_model.bert_forward(keep_cache=False, rng=None); "
                         f"train or inspect the float model (activation_quant='none')")
    bias = mask_to_bias(mask, dtype)                               # (B,T) -> (B,1,1,T) in dtype
    with _skip_finite_checks():          # no NaN/inf scan of every layer input; one of h at the end
        h, emb_cache = embeddings_forward(params, config, ids, token_type_ids, rng)  # (B,T) -> (B,T,H)
        hidden = [h] if output_hidden else None
        attentions = [] if output_attentions else None
        scores = [] if output_attentions else None
        layer_caches = []
        for i in range(config.num_layers):
            h, layer_cache = encoder_layer_forward(params, config, i, h, bias, rng, fast)  # (B,T,H) -> (B,T,H)
            if output_hidden:
                hidden.append(h)
            if output_attentions:
                attentions.append(layer_cache.attn.probs)          # (B,nh,T,T)
                scores.append(layer_cache.attn.scores)             # (B,nh,T,T)
            if keep_cache:
                layer_caches.append(layer_cache)
    # NaN/inf anywhere inside (a parameter, an overflow) spreads to every later position, through
    # attention (0 * NaN is NaN) and LayerNorm (inf - inf), so this one scan catches it.
    check_finite("last hidden state (NaN/inf in params or overflow)", h)
    out = BertOutput(h, hidden, attentions, scores)
    if not keep_cache:
        return out, None
    return out, BertCache(emb_cache, layer_caches, h.shape, dtype)


def _check_grad_list(name, grads, n, shape, dtype):
    """Validate an optional list of extra upstream gradients; returns a list of n (entries may be None)."""
    if grads is None:
        return [None] * n
    if len(grads) != n:
        raise ValueError(f"{name}: expected a list of {n} arrays (or None entries), got {len(grads)}")
    out = []
    for k, g in enumerate(grads):
        if g is not None:
            g = np.asarray(g)
            want = shape[k] if isinstance(shape, list) else shape      # one shape, or one per entry
            if g.shape != want:
                raise ValueError(f"{name}[{k}]: expected shape {want}, got {g.shape}")
            g = g.astype(dtype, copy=False)
        out.append(g)
    return out


def bert_backward(dlast: np.ndarray | None, cache: BertCache, dhidden: list | None = None,
                  dscores: list | None = None, dprobs: list | None = None,
                  dvalues: list | None = None) -> dict:
    """Backward through the encoder layers and the embeddings.

    Inputs: dlast (B,T,H) gradient on the last hidden state (None = zero), cache from bert_forward,
    dhidden: optional list of L+1 extra gradients on hidden_states (None entries allowed; entry L
    is the same tensor as `last`), dscores / dprobs: optional lists of L extra gradients
    (B,nh,T,T) on each layer's attention scores / probs (from distillation losses), dvalues:
    optional list of L extra gradients (B,nh,T,hs) on each layer's values (cache.attn.v).
    Returns: fresh grads dict for every encoder and embedding parameter, in param_shapes order."""
    if cache is None:
        raise ValueError("cache: None; run bert_forward with keep_cache=True to backpropagate")
    if not isinstance(cache, BertCache):
        raise ValueError(f"cache: expected the BertCache of model.bert_forward, got "
                         f"{type(cache).__name__} (a PackedCache from fast_model.bert_forward "
                         f"backpropagates with fast_model.bert_backward)")
    B, T, H = cache.shape
    L = len(cache.layers)
    grids = [(B, c.attn.probs.shape[1], T, T) for c in cache.layers]   # heads per layer (pruning)
    dhidden = _check_grad_list("dhidden", dhidden, L + 1, (B, T, H), cache.dtype)
    dscores = _check_grad_list("dscores", dscores, L, grids, cache.dtype)
    dprobs = _check_grad_list("dprobs", dprobs, L, grids, cache.dtype)
    dvalues = _check_grad_list("dvalues", dvalues, L, [c.attn.v.shape for c in cache.layers],
                               cache.dtype)
    if dlast is None:
        g = np.zeros((B, T, H), dtype=cache.dtype)                 # (B,T,H)
    else:
        g = np.asarray(dlast)
        if g.shape != (B, T, H):
            raise ValueError(f"dlast: expected shape {(B, T, H)}, got {g.shape}")
        g = g.astype(cache.dtype, copy=False)
    if dhidden[L] is not None:
        g = g + dhidden[L]                                         # (B,T,H); never mutate the caller's
    layer_grads = [None] * L
    for i in reversed(range(L)):
        g, layer_grads[i] = encoder_layer_backward(g, cache.layers[i], dscores[i], dprobs[i],
                                                    dvalues[i])           # (B,T,H)
        if dhidden[i] is not None:
            g = g + dhidden[i]                                     # (B,T,H)
    grads = embeddings_backward(g, cache.embeddings)
    for lg in layer_grads:
        grads.update(lg)
    return grads


# ----------------------------------------------------------------------------------------------
# Helpers for trainers


class ClassifyCache(NamedTuple):
    bert: BertCache
    head: ClassifierCache


def classify_forward(params: dict, config: BertConfig, ids: np.ndarray, mask: np.ndarray | None,
                     token_type_ids: np.ndarray | None = None, rng: np.random.Generator | None = None,
                     output_hidden: bool = False, output_attentions: bool = False,
                     keep_cache: bool = True, fast: bool = False):
    """bert_forward then classifier_forward (the encoder draws its dropout masks first, then the head).
    Returns: logits (B,C), BertOutput, cache (None when keep_cache is False)."""
    out, bert_cache = bert_forward(params, config, ids, mask, token_type_ids, rng,
                                   output_hidden, output_attentions, keep_cache, fast)
    logits, head_cache = classifier_forward(params, config, out.last, rng)   # (B,T,H) -> (B,C)
    if not keep_cache:
        return logits, out, None
    return logits, out, ClassifyCache(bert_cache, head_cache)


def classify_backward(dlogits: np.ndarray, cache: ClassifyCache, dhidden: list | None = None,
                      dscores: list | None = None, dprobs: list | None = None,
                      dvalues: list | None = None) -> dict:
    """Inputs: dlogits (B,C), cache from classify_forward, optional extra gradients as in bert_backward.
    Returns: fresh grads dict with every parameter of a classification model."""
    if cache is None:
        raise ValueError("cache: None; run classify_forward with keep_cache=True to backpropagate")
    dlast, head_grads = classifier_backward(dlogits, cache.head)      # (B,C) -> (B,T,H)
    grads = bert_backward(dlast, cache.bert, dhidden, dscores, dprobs, dvalues)
    grads.update(head_grads)
    return grads


def add_grads(into: dict, more: dict) -> dict:
    """Sum gradient dicts (e.g. the tied embeddings.word gets one gradient from the encoder and
    one from the MLM decoder). Inputs: into, more: dicts name -> array.
    Returns: `into`, modified: shared keys hold a new array into[k] + more[k]; keys only in
    `more` are inserted as they are (not copied)."""
    for k, v in more.items():
        if k in into:
            if into[k].shape != v.shape:
                raise ValueError(f"add_grads: {k!r} has shapes {into[k].shape} and {v.shape}")
            into[k] = into[k] + v
        else:
            into[k] = v
    return into
