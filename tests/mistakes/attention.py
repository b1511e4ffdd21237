"""Wrong implementations of attention_backward and encoder_layer_backward."""

import numpy as np

from minibert.attention import attention_backward
from minibert.layers import (SoftmaxCache, dropout_backward, gelu_backward, layernorm_backward,
                             linear_backward, softmax_backward)


def _attention(dy, cache, dscores=None, dprobs=None, *, use_mask=True, scale_dq=True,
               dprobs_after_mask=True, use_dscores=True, dk_transposed=True, dropped_for_dv=True):
    """The attention backward with switches for the slips below (all True = correct)."""
    qkv_cache, q, k, v, scores, probs, drop, out_cache, scale = cache
    B, nh, T, hs = q.shape
    H = nh * hs
    dctx, dW_o, db_o = linear_backward(dy, out_cache)
    dctx = dctx.reshape(B, T, nh, hs).transpose(0, 2, 1, 3)
    mask = drop.mask if use_mask else None
    dropped = probs if (mask is None or not dropped_for_dv) else probs * mask
    dv = dropped.swapaxes(-1, -2) @ dctx
    dp = dctx @ v.swapaxes(-1, -2)
    if dprobs is not None and not dprobs_after_mask:
        dp = dp + dprobs
    if mask is not None:
        dp = dp * mask
    if dprobs is not None and dprobs_after_mask:
        dp = dp + dprobs
    ds = softmax_backward(dp, SoftmaxCache(probs))
    if dscores is not None and use_dscores:
        ds = ds + dscores
    dq = ds @ k
    if scale_dq:
        dq = dq * scale
    dk = (ds.swapaxes(-1, -2) if dk_transposed else ds) @ q
    dqkv = np.stack([dq, dk, dv]).transpose(1, 3, 0, 2, 4).reshape(B, T, 3 * H)
    dx, dW_qkv, db_qkv = linear_backward(dqkv, qkv_cache)
    return dx, dW_qkv, db_qkv, dW_o, db_o


def attention_dropout_ignored(dy, cache, dscores=None, dprobs=None):
    return _attention(dy, cache, dscores, dprobs, use_mask=False)


def attention_missing_scale(dy, cache, dscores=None, dprobs=None):
    return _attention(dy, cache, dscores, dprobs, scale_dq=False)


def attention_dprobs_through_dropout(dy, cache, dscores=None, dprobs=None):
    return _attention(dy, cache, dscores, dprobs, dprobs_after_mask=False)


def attention_dscores_ignored(dy, cache, dscores=None, dprobs=None):
    return _attention(dy, cache, dscores, dprobs, use_dscores=False)


def attention_dk_not_transposed(dy, cache, dscores=None, dprobs=None):
    return _attention(dy, cache, dscores, dprobs, dk_transposed=False)


def attention_dv_from_undropped_probs(dy, cache, dscores=None, dprobs=None):
    return _attention(dy, cache, dscores, dprobs, dropped_for_dv=False)


def _layer(dy, cache, dscores=None, dprobs=None, *, res1=True, res2=True, ffn_dropout=True,
           pass_extra=True, keys_ok=True):
    p = f"encoder.{cache.index}."
    ds2, dgamma2, dbeta2 = layernorm_backward(dy, cache.ffn_ln)
    df = dropout_backward(ds2, cache.ffn_drop) if ffn_dropout else ds2
    df, dW_out, db_out = linear_backward(df, cache.ffn_out)
    df = gelu_backward(df, cache.gelu)
    dx1, dW_in, db_in = linear_backward(df, cache.ffn_in)
    if res2:
        dx1 = dx1 + ds2
    ds1, dgamma1, dbeta1 = layernorm_backward(dx1, cache.attn_ln)
    da = dropout_backward(ds1, cache.attn_drop)
    extra = (dscores, dprobs) if pass_extra else (None, None)
    dx, dW_qkv, db_qkv, dW_o, db_o = attention_backward(da, cache.attn, *extra)
    if res1:
        dx = dx + ds1
    grads = {p + "attn.qkv.W": dW_qkv, p + "attn.qkv.b": db_qkv, p + "attn.out.W": dW_o,
             p + "attn.out.b": db_o, p + "attn.ln.gamma": dgamma1, p + "attn.ln.beta": dbeta1,
             p + "ffn.in.W": dW_in, p + "ffn.in.b": db_in, p + "ffn.out.W": dW_out,
             p + "ffn.out.b": db_out, p + "ffn.ln.gamma": dgamma2, p + "ffn.ln.beta": dbeta2}
    if not keys_ok:
        grads["encoder.0.attn.qkv.weight"] = grads.pop(p + "attn.qkv.W")
    return dx, grads


def layer_forgot_attention_residual(dy, cache, dscores=None, dprobs=None):
    return _layer(dy, cache, dscores, dprobs, res1=False)


def layer_forgot_ffn_residual(dy, cache, dscores=None, dprobs=None):
    return _layer(dy, cache, dscores, dprobs, res2=False)


def layer_ffn_dropout_ignored(dy, cache, dscores=None, dprobs=None):
    return _layer(dy, cache, dscores, dprobs, ffn_dropout=False)


def layer_drops_dscores_dprobs(dy, cache, dscores=None, dprobs=None):
    return _layer(dy, cache, dscores, dprobs, pass_extra=False)


def layer_wrong_key(dy, cache, dscores=None, dprobs=None):
    return _layer(dy, cache, dscores, dprobs, keys_ok=False)


MISTAKES = {
    "attention_backward": [
        (attention_dropout_ignored, "with attention dropout p=0.3"),
        (attention_missing_scale, "q rel error"),
        (attention_dprobs_through_dropout, "with extra dscores and dprobs"),
        (attention_dscores_ignored, "with extra dscores and dprobs"),
        (attention_dk_not_transposed, "k rel error"),
        (attention_dv_from_undropped_probs, "with attention dropout p=0.3"),
    ],
    "encoder_layer_backward": [
        (layer_forgot_attention_residual, "dx (with a padding mask)"),
        (layer_forgot_ffn_residual, None),
        (layer_ffn_dropout_ignored, "with hidden and attention dropout p=0.2"),
        (layer_drops_dscores_dprobs, "with extra dscores and dprobs"),
        (layer_wrong_key, "parameter names"),
    ],
}
