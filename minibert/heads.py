"""The heads on top of the encoder: sequence classification on [CLS] (pooler, dropout, linear), the
masked-LM head tied to the word embeddings, and sentence-transformers' mean pooling.

Shape legend: B batch, T tokens, H hidden, V vocab, C classes.
Each head is a forward/backward pair like the layers; backward returns FRESH gradient dicts keyed
like the parameters. `fast=True` runs the MLM head's GELU with fast_layers' kernels (the pipeline's
choice, see model.py and fast.py); the cache remembers which, so mlm_backward follows it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from minibert import fast_layers
from minibert.config import BertConfig
from minibert.layers import (
    DropoutCache,
    GeluCache,
    LayerNormCache,
    LinearCache,
    dropout_backward,
    dropout_forward,
    gelu_backward,
    gelu_forward,
    layernorm_backward,
    layernorm_forward,
    linear_backward,
    linear_forward,
)

class ClassifierCache(NamedTuple):
    last_shape: tuple           # (B,T,H)
    pooler: LinearCache | None  # None when config.pooler is False
    pooled: np.ndarray | None   # (B,H) tanh output, kept for its derivative 1 - pooled^2
    drop: DropoutCache
    classifier: LinearCache


def classifier_forward(params: dict, config: BertConfig, last: np.ndarray,
                       rng: np.random.Generator | None = None) -> tuple[np.ndarray, ClassifierCache]:
    """Sequence classification on the [CLS] token.
    Inputs: last (B,T,H), rng (None = no dropout). Returns: logits (B,C), cache."""
    if config.num_labels <= 0:
        raise ValueError("classifier_forward: config.num_labels is 0 (this model has no classifier head)")
    cls = last[:, 0]                                                   # (B,T,H) -> (B,H)
    pool_cache = pooled = None
    x = cls
    if config.pooler:
        z, pool_cache = linear_forward(cls, params["pooler.W"], params["pooler.b"])  # (B,H) -> (B,H)
        pooled = x = np.tanh(z)                                        # (B,H)
    x, drop_cache = dropout_forward(x, config.hidden_dropout, rng, copy=False)  # (B,H)
    logits, clf_cache = linear_forward(x, params["classifier.W"], params["classifier.b"])  # (B,H) -> (B,C)
    return logits, ClassifierCache(last.shape, pool_cache, pooled, drop_cache, clf_cache)


def classifier_backward(dlogits: np.ndarray, cache: ClassifierCache) -> tuple[np.ndarray, dict]:
    """Inputs: dlogits (B,C), cache from classifier_forward.
    Returns: dlast (B,T,H) (zero except at [CLS]), fresh grads dict (pooler.*, classifier.*)."""
    dx, dWc, dbc = linear_backward(dlogits, cache.classifier)          # (B,C) -> (B,H)
    dx = dropout_backward(dx, cache.drop)                              # (B,H)
    grads = {}
    if cache.pooler is not None:
        one = cache.pooled.dtype.type(1)
        dz = dx * (one - cache.pooled * cache.pooled)                  # (B,H): tanh' = 1 - tanh^2
        dx, dWp, dbp = linear_backward(dz, cache.pooler)               # (B,H) -> (B,H)
        grads.update({"pooler.W": dWp, "pooler.b": dbp})
    grads.update({"classifier.W": dWc, "classifier.b": dbc})
    dlast = np.zeros(cache.last_shape, dtype=dx.dtype)                 # (B,T,H)
    dlast[:, 0] = dx                                                   # only [CLS] feeds the head
    return dlast, grads


class MLMCache(NamedTuple):
    transform: LinearCache
    gelu: GeluCache
    ln: LayerNormCache
    decoder: LinearCache        # W = embeddings.word^T (H,V), a view: the weight is tied
    fast: bool                  # the GELU ran with fast_layers' kernels (mlm_backward follows)


def mlm_forward(params: dict, config: BertConfig, last: np.ndarray,
                fast: bool = False) -> tuple[np.ndarray, MLMCache]:
    """Masked-LM head: linear -> GELU -> LayerNorm -> decoder tied to embeddings.word, + mlm.bias.
    Inputs: last (B,T,H); fast: the GELU from fast_layers. Returns: logits (B,T,V), cache."""
    if not config.mlm_head:
        raise ValueError("mlm_forward: config.mlm_head is false (this model has no MLM head)")
    gelu_fwd = fast_layers.gelu_forward if fast else gelu_forward
    t, tr_cache = linear_forward(last, params["mlm.transform.W"], params["mlm.transform.b"])  # (B,T,H)
    t, gelu_cache = gelu_fwd(t)                                                       # (B,T,H)
    t, ln_cache = layernorm_forward(t, params["mlm.ln.gamma"], params["mlm.ln.beta"],
                                    config.layer_norm_eps)                            # (B,T,H)
    logits, dec_cache = linear_forward(t, params["embeddings.word"].T, params["mlm.bias"])  # (B,T,H) @ (H,V) -> (B,T,V)
    return logits, MLMCache(tr_cache, gelu_cache, ln_cache, dec_cache, fast)


def mlm_backward(dlogits: np.ndarray, cache: MLMCache) -> tuple[np.ndarray, dict]:
    """Inputs: dlogits (B,T,V), cache from mlm_forward.
    Returns: dlast (B,T,H), fresh grads dict (mlm.* and embeddings.word for the tied decoder;
    add it to the encoder's embeddings.word gradient with add_grads)."""
    dt, dW_dec, db_dec = linear_backward(dlogits, cache.decoder)      # (B,T,V) -> (B,T,H), (H,V), (V,)
    dt, dgamma, dbeta = layernorm_backward(dt, cache.ln)              # (B,T,H)
    gelu_bwd = fast_layers.gelu_backward if cache.fast else gelu_backward
    dt = gelu_bwd(dt, cache.gelu)                                     # (B,T,H)
    dlast, dW_tr, db_tr = linear_backward(dt, cache.transform)        # (B,T,H)
    grads = {
        "embeddings.word": dW_dec.T,                                  # (H,V) -> (V,H)
        "mlm.transform.W": dW_tr, "mlm.transform.b": db_tr,
        "mlm.ln.gamma": dgamma, "mlm.ln.beta": dbeta,
        "mlm.bias": db_dec,
    }
    return dlast, grads


def mean_pool(last: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over real tokens (sentence-transformers pooling).
    Inputs: last (B,T,H), mask (B,T) 1 = real. Returns: (B,H) in last's dtype."""
    last = np.asarray(last)
    mask = np.asarray(mask)
    if last.ndim != 3 or mask.shape != last.shape[:2]:
        raise ValueError(f"mean_pool: expected last (B, T, H) and mask (B, T), got {last.shape} and {mask.shape}")
    m = mask.astype(last.dtype)[:, :, None]                            # (B,T,1)
    total = (last * m).sum(axis=1)                                     # (B,T,H) -> (B,H)
    count = np.maximum(m.sum(axis=1), last.dtype.type(1e-9))           # (B,1); an all-pad row -> 0, not NaN
    return total / count                                               # (B,H)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """x / ||x|| along the last axis (a zero vector stays zero). Keeps x's dtype."""
    x = np.asarray(x)
    norm = np.sqrt((x * x).sum(axis=-1, keepdims=True))                # (..., 1)
    return x / np.maximum(norm, x.dtype.type(eps))
