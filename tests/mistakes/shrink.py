"""Wrong implementations of quantize, dequantize and head_gate_backward (lesson 11)."""

import numpy as np


def _quantize(w, bits=8, axis=None, *, trunc=False, top_off=0, scale_255=False, no_clip=False,
              wrong_axis=False):
    top = np.float32(2 ** (bits - 1) - 1 - top_off)
    reduce = tuple(range(w.ndim)) if axis is None else ((axis,) if wrong_axis else (1 - axis,))
    w32 = w.astype(np.float32)
    amax = np.abs(w32).max(axis=reduce, keepdims=True)
    scale = np.where(amax > 0, amax / (np.float32(255) if scale_255 else top), np.float32(1)).astype(np.float32)
    q = np.trunc(w32 / scale) if trunc else np.rint(w32 / scale)
    if not no_clip:
        q = np.clip(q, -top, top)
    return q.astype(np.int8), scale


def quantize_truncates(w, bits=8, axis=None):
    return _quantize(w, bits, axis, trunc=True)


def quantize_reduces_the_channel_axis(w, bits=8, axis=None):
    return _quantize(w, bits, axis, wrong_axis=True)


def quantize_uses_255_levels_on_a_symmetric_range(w, bits=8, axis=None):
    return _quantize(w, bits, axis, scale_255=True)


def quantize_ignores_bits(w, bits=8, axis=None):
    return _quantize(w, 8, axis)


def quantize_divides_by_zero(w, bits=8, axis=None):
    top = np.float32(2 ** (bits - 1) - 1)
    reduce = tuple(range(w.ndim)) if axis is None else (1 - axis,)
    scale = (np.abs(w).max(axis=reduce, keepdims=True) / top).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(np.nan_to_num(np.rint(w / scale)), -top, top)
    return q.astype(np.int8), scale


def dequantize_in_int8(q, scale, dtype=np.float32):
    return (q * scale.astype(np.int8)).astype(dtype)             # the scale rounds to 0 or 1


def dequantize_divides(q, scale, dtype=np.float32):
    return (q.astype(dtype) / scale.astype(dtype)).astype(dtype)


def dequantize_ignores_dtype(q, scale, dtype=np.float32):
    return q.astype(np.float32) * scale.astype(np.float32)


def dequantize_one_scale_for_all(q, scale, dtype=np.float32):
    return q.astype(dtype) * dtype(np.ravel(scale)[0])


def head_gate_backward_sums_over_heads(dout, cache):
    ctx, gates = cache
    B, T, A = ctx.shape
    nh = gates.shape[0]
    d4, c4 = dout.reshape(B, T, nh, A // nh), ctx.reshape(B, T, nh, A // nh)
    return (d4 * gates[:, None]).reshape(B, T, A), np.full(nh, (d4 * c4).sum())


def head_gate_backward_forgets_the_gate_in_dctx(dout, cache):
    ctx, gates = cache
    B, T, A = ctx.shape
    nh = gates.shape[0]
    d4, c4 = dout.reshape(B, T, nh, A // nh), ctx.reshape(B, T, nh, A // nh)
    return dout.copy(), np.einsum("btnd,btnd->n", d4, c4)


def head_gate_backward_uses_the_gate_not_ctx(dout, cache):
    ctx, gates = cache
    B, T, A = ctx.shape
    nh = gates.shape[0]
    d4 = dout.reshape(B, T, nh, A // nh)
    return (d4 * gates[:, None]).reshape(B, T, A), d4.sum(axis=(0, 1, 3)) * gates


def head_gate_backward_heads_interleaved(dout, cache):
    ctx, gates = cache
    B, T, A = ctx.shape
    nh = gates.shape[0]
    d4, c4 = dout.reshape(B, T, A // nh, nh), ctx.reshape(B, T, A // nh, nh)   # wrong split of A
    return (d4 * gates).reshape(B, T, A), np.einsum("btdn,btdn->n", d4, c4)


MISTAKES = {
    "quantize": [(quantize_truncates, "NEAREST"), (quantize_reduces_the_channel_axis, "keepdims"),
                 (quantize_uses_255_levels_on_a_symmetric_range, None), (quantize_ignores_bits, "bits"),
                 (quantize_divides_by_zero, None)],
    "dequantize": [(dequantize_in_int8, None), (dequantize_divides, None),
                   (dequantize_ignores_dtype, "float64"), (dequantize_one_scale_for_all, None)],
    "head_gate_backward": [(head_gate_backward_sums_over_heads, None),
                           (head_gate_backward_forgets_the_gate_in_dctx, None),
                           (head_gate_backward_uses_the_gate_not_ctx, None),
                           (head_gate_backward_heads_interleaved, None)],
}
