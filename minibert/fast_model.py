"""What the pipeline runs: model.py's BERT with the fast kernels, and packed paths that skip the padding.

Shape legend: B batch, T tokens, H hidden, nh heads, N real (unpadded) tokens of a batch.

    bert_forward(...)      = model.bert_forward(..., fast=True), except on a padded batch:
                             inference (keep_cache=False, rng=None): the packed path below;
                             training (dropout and/or caches), every row starting with a real
                             token: fast_packed.bert_forward, the packed training path
    bert_backward(...)     = model.bert_backward for either cache (packed or padded)
    classify_forward(...)  = that, then heads.classifier_forward (as model.classify_forward)
    classify_backward      = model.classify_backward, dispatching as bert_backward
    mlm_forward(...)       = heads.mlm_forward(..., fast=True)

The packed path: everything except the attention core works token by token, so it runs on the N real
tokens packed into rows (N,H), sequence after sequence, and the attention core runs per sequence on
its own rows (fast_attention.attention_packed): the padded path's arithmetic for every real token (up
to matmul rounding) without the padding's work. Its outputs are ZERO at padded positions (the padded
path's are finite and meaningless there). tests/test_fast.py holds both equal on padded batches.

Student and teacher go through the same code: training (fine-tuning the teacher, distilling the
student) runs bert_forward with caches, the packed training path (fast_packed.py: the same dropout
masks as the reference, drawn with its exact rng calls); inference (evaluation, prediction, the
teacher's cached outputs, embeddings) runs it without, the packed inference path below. Unpadded
batches take the padded path (the same work), and so do batches with a row whose position 0 is
padding (an empty row: the classifier would read a padded [CLS], whose gradient the reference
sends through the padding).
"""

from __future__ import annotations

import numpy as np

from minibert import model
from minibert.attention import MASK_NEG
from minibert.config import BertConfig, check_inputs, check_params
from minibert.fast_attention import attention_packed
from minibert.fast_layers import gelu
from minibert.heads import MLMCache, classifier_backward, classifier_forward, mlm_forward as _mlm_forward
from minibert.layers import _skip_finite_checks, check_finite, layernorm_forward, linear_forward
from minibert.quantize import quantize_activation as act
from minibert.model import BertCache, BertOutput, ClassifyCache
from minibert import fast_packed
from minibert.fast_packed import PackedCache, _attention_grid, _scatter

__all__ = ["bert_forward", "bert_backward", "classify_forward", "classify_backward", "mlm_forward",
           "attention_values"]


def bert_forward(params: dict, config: BertConfig, ids: np.ndarray, mask: np.ndarray | None = None,
                 token_type_ids: np.ndarray | None = None, rng: np.random.Generator | None = None,
                 output_hidden: bool = False, output_attentions: bool = False,
                 keep_cache: bool = True) -> tuple[BertOutput, BertCache | None]:
    """model.bert_forward with fast=True; inference on a padded batch takes the packed path.

    Inputs and Returns: as model.bert_forward. With keep_cache=False and rng=None and some padding,
    last / hidden_states are exactly 0 at padded positions, attentions 0 and scores MASK_NEG
    wherever the query or the key is padding."""
    check_params(params, config)                                   # model.bert_forward's checks, in its order
    ids, mask, token_type_ids = check_inputs(config, ids, mask, token_type_ids)
    if not keep_cache and rng is None:
        if not mask.all() or config.activation_quant != "none":   # int8 activations: only here
            return _bert_forward_packed(params, config, ids, mask, token_type_ids,
                                        output_hidden, output_attentions), None
    elif (not mask.all() and mask[:, 0].all() and config.activation_quant == "none"
          and (rng is None or isinstance(rng, np.random.Generator))):
        # training (dropout and/or caches) on a padded batch whose rows all start with a real
        # token ([CLS], which the classifier reads): the packed training path
        return fast_packed.bert_forward(params, config, ids, mask, token_type_ids, rng,
                                        output_hidden, output_attentions, keep_cache)
    return model.bert_forward(params, config, ids, mask, token_type_ids, rng, output_hidden,
                              output_attentions, keep_cache, fast=True)


def bert_backward(dlast: np.ndarray | None, cache, dhidden: list | None = None,
                  dscores: list | None = None, dprobs: list | None = None,
                  dvalues: list | None = None) -> dict:
    """model.bert_backward for a cache from bert_forward above: the packed backward
    (fast_packed.bert_backward) for a PackedCache, model.bert_backward for a padded BertCache.
    Inputs and Returns: as model.bert_backward (extra gradients on the padded grid)."""
    if isinstance(cache, PackedCache):
        return fast_packed.bert_backward(dlast, cache, dhidden, dscores, dprobs, dvalues)
    if not isinstance(cache, BertCache):
        raise ValueError(f"cache: expected the cache of fast_model.bert_forward (PackedCache or "
                         f"BertCache), got {type(cache).__name__}"
                         + ("; run it with keep_cache=True to backpropagate" if cache is None else ""))
    return model.bert_backward(dlast, cache, dhidden, dscores, dprobs, dvalues)


def classify_backward(dlogits: np.ndarray, cache: ClassifyCache, dhidden: list | None = None,
                      dscores: list | None = None, dprobs: list | None = None,
                      dvalues: list | None = None) -> dict:
    """model.classify_backward for a cache from classify_forward below (packed or padded).
    Returns: fresh grads dict with every parameter of a classification model."""
    if not isinstance(cache, ClassifyCache):
        raise ValueError(f"cache: expected the ClassifyCache of classify_forward, got "
                         f"{type(cache).__name__}"
                         + ("; run it with keep_cache=True to backpropagate" if cache is None else ""))
    dlast, head_grads = classifier_backward(dlogits, cache.head)      # (B,C) -> (B,T,H)
    grads = bert_backward(dlast, cache.bert, dhidden, dscores, dprobs, dvalues)
    grads.update(head_grads)
    return grads


def attention_values(cache, i: int) -> np.ndarray:
    """Layer i's attention values (B,nh,T,hs) from a bert_forward cache (MiniLM's value relation):
    cache.layers[i].attn.v of a padded BertCache; from a PackedCache, on the grid, 0 at padding."""
    if isinstance(cache, PackedCache):
        return fast_packed._values_grid(cache, i)
    return cache.layers[i].attn.v


def classify_forward(params: dict, config: BertConfig, ids: np.ndarray, mask: np.ndarray | None,
                     token_type_ids: np.ndarray | None = None, rng: np.random.Generator | None = None,
                     output_hidden: bool = False, output_attentions: bool = False,
                     keep_cache: bool = True):
    """bert_forward (above) then heads.classifier_forward, as model.classify_forward.
    Returns: logits (B,C), BertOutput, cache (None when keep_cache is False)."""
    out, bert_cache = bert_forward(params, config, ids, mask, token_type_ids, rng,
                                   output_hidden, output_attentions, keep_cache)
    logits, head_cache = classifier_forward(params, config, out.last, rng)   # (B,T,H) -> (B,C)
    if not keep_cache:
        return logits, out, None
    return logits, out, ClassifyCache(bert_cache, head_cache)


def mlm_forward(params: dict, config: BertConfig, last: np.ndarray) -> tuple[np.ndarray, MLMCache]:
    """heads.mlm_forward with fast=True. Inputs: last (B,T,H). Returns: logits (B,T,V), cache."""
    return _mlm_forward(params, config, last, fast=True)


def _bert_forward_packed(params, config, ids, mask, token_type_ids, output_hidden, output_attentions):
    """model.bert_forward for inference (eval mode, no caches) that never touches the padding.

    Everything except the attention core works token by token, so it runs on the N real tokens
    packed into rows (N,H), sequence after sequence; the attention core runs per sequence on its
    own rows (fast_attention.attention_packed). The same arithmetic as the padded path for every real token (up
    to matmul rounding), without the padding's work; the outputs are ZERO at padded positions.
    attentions / scores, if asked for, are put back on the (B,nh,T,T) grid: probs 0 and scores
    MASK_NEG wherever the query or the key is padding.
    Inputs: as model.bert_forward (checked).
    Returns: BertOutput with last / hidden_states (B,T,H) and attentions / scores (B,nh,T,T)."""
    B, T = ids.shape
    eps = config.layer_norm_eps
    idx = np.flatnonzero(mask.reshape(-1))                         # (N,) flat positions of real tokens
    starts = np.searchsorted(idx, np.arange(B + 1) * T)            # (B+1,) sequence b = rows starts[b]:starts[b+1]
    x = params["embeddings.word"][ids.reshape(-1)[idx]]            # (N,H)
    x += params["embeddings.token_type"][token_type_ids.reshape(-1)[idx]]   # (N,H)
    x += params["embeddings.position"][idx % T]                    # (N,H): position = column
    with _skip_finite_checks():
        h, _ = layernorm_forward(x, params["embeddings.ln.gamma"], params["embeddings.ln.beta"], eps)
        hidden = [h] if output_hidden else None
        attentions = [] if output_attentions else None
        scores_all = [] if output_attentions else None
        for i in range(config.num_layers):
            p = f"encoder.{i}."
            # act(x, config, name): x itself, or x rounded to int8 (config.activation_quant)
            qkv, _ = linear_forward(act(h, config, p + "attn.qkv"), params[p + "attn.qkv.W"],
                                    params[p + "attn.qkv.b"])     # (N,H) -> (N,3A), A = nh_i*hs (H unpruned)
            ctx, scores, probs = attention_packed(qkv, starts, config.heads_in_layer(i),
                                                  keep_probs=output_attentions)  # (N,A)
            a, _ = linear_forward(act(ctx, config, p + "attn.out"), params[p + "attn.out.W"],
                                  params[p + "attn.out.b"])       # (N,A) -> (N,H)
            a += h                                                 # residual
            x1, _ = layernorm_forward(a, params[p + "attn.ln.gamma"], params[p + "attn.ln.beta"], eps)
            f, _ = linear_forward(act(x1, config, p + "ffn.in"), params[p + "ffn.in.W"],
                                  params[p + "ffn.in.b"])         # (N,H) -> (N,I)
            f = gelu(f)                                            # (N,I)
            f, _ = linear_forward(act(f, config, p + "ffn.out"), params[p + "ffn.out.W"],
                                  params[p + "ffn.out.b"])        # (N,I) -> (N,H)
            f += x1                                                # residual
            h, _ = layernorm_forward(f, params[p + "ffn.ln.gamma"], params[p + "ffn.ln.beta"], eps)  # (N,H)
            if output_hidden:
                hidden.append(h)
            if output_attentions:
                attentions.append(_attention_grid(probs, idx, starts, B, T, 0))
                scores_all.append(_attention_grid(scores, idx, starts, B, T, MASK_NEG))
    check_finite("last hidden state (NaN/inf in params or overflow)", h)
    last = _scatter(h, idx, B, T)                                  # (N,H) -> (B,T,H), zero at padding
    if output_hidden:
        hidden = [_scatter(hj, idx, B, T) for hj in hidden[:-1]] + [last]   # L+1 arrays (B,T,H)
    return BertOutput(last, hidden, attentions, scores_all)
