"""Post-training int8 quantization: symmetric, per output channel or per tensor, stored as int8.

Shape legend: D input features, M output features (a linear weight W is stored (D, M): y = x @ W + b),
V vocab, H hidden, N rows of activations.

One number format: symmetric b-bit integers, no zero point. A float tensor w becomes
    scale = max|w| / qmax          qmax = 2^(b-1) - 1   (127 for int8)
    q     = clip(round(w / scale), -qmax, qmax)          an int8 array
    w_hat = q * scale                                   (dequantize)
The round-off error of one entry is at most scale / 2. `axis` chooses how many scales: None =
one for the whole tensor ("per tensor"); 1 = one per column of a (D, M) weight, i.e. per OUTPUT
channel ("per channel"); 0 = one per row (an embedding table: one scale per token). Scales are
kept with their broadcast shape ((1, M), (V, 1) or (1, 1)), so `q * scale` needs no axis to undo.

Why per channel wins: a weight matrix's columns differ in size (some output units have 10x the
range of others). One scale for the whole tensor spends the 255 levels on the largest column, and
a small column is rounded to a handful of levels; per column, every column gets all 255.

What this module stores and computes
- `quantize_params` turns every linear weight (encoder, pooler, classifier) and the word/position
  embedding tables into int8 + float32 scales; biases and LayerNorm stay float32 (they are 0.1%
  of the numbers). `save_quantized` writes them to model.safetensors as real int8 tensors, so the
  file is ~4x smaller; `dequantize_tensors` is the load path: every command reads a quantized
  model with no extra option, as float32 weights.
- NumPy has no fast int8 matrix multiply (integer np.matmul does not use BLAS; it is ~50x slower
  than float32), so matmuls always run in float32 on dequantized values. Weight-only int8 is
  therefore a storage format: same speed, same memory once loaded. Dynamic activation
  quantization (`fake_quantize_rows`: each row of a linear's input rounded to int8 with its own
  scale) and static quantization (`fake_quantize_static`: one scale per linear input, measured on
  calibration data by `calibrate`) compute exactly what an int8 kernel with int32 accumulation
  would (up to float32 rounding), so they measure the accuracy an int8 deployment would have,
  not its speed.
"""

from __future__ import annotations

import json

import numpy as np

from minibert.errors import CheckpointError, MinibertError

SCALE_SUFFIX = ".scale"          # "encoder.0.attn.qkv.W" (int8) + "encoder.0.attn.qkv.W.scale" (float32)
ACTIVATION_MODES = ("none", "dynamic", "static")


def qmax(bits: int) -> int:
    """The largest level of a symmetric `bits`-bit integer: 127 for 8 bits, 7 for 4."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 8:
        raise ValueError(f"bits: expected an int in [2, 8] (stored in int8), got {bits!r}")
    return 2 ** (int(bits) - 1) - 1


def quantize(w, bits: int = 8, axis: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric quantization of a float tensor.

    Inputs: w, float array (2-D for axis 0/1); bits in [2, 8]; axis: None = one scale for the
            tensor, 1 = one per column (a linear weight's output channel), 0 = one per row.
    Returns a tuple of: q, int8 array of w's shape with values in [-qmax, qmax];
            scale, float32 array of w's rank with size 1 on the reduced axes ((1, M), (D, 1) or
            (1, 1)), so that dequantize(q, scale) = q * scale. An all-zero slice gets scale 1.
    """
    w = np.asarray(w)
    if w.dtype.kind != "f":
        raise ValueError(f"w: expected a float array, got dtype {w.dtype} (shape {w.shape})")
    if not np.isfinite(w).all():
        raise ValueError(f"w: contains NaN or inf (shape {w.shape}); cannot quantize it")
    if axis is not None and (w.ndim != 2 or axis not in (0, 1)):
        raise ValueError(f"axis: expected None, 0 or 1 for a 2-D tensor, got axis={axis} for shape {w.shape}")
    top = np.float32(qmax(bits))
    reduce = tuple(range(w.ndim)) if axis is None else (1 - axis,)     # the axes one scale covers
    w32 = w.astype(np.float32, copy=False)
    # BEGIN EXERCISE quantize
    # the range of each slice: max |w| over the reduced axes, kept as size-1 axes
    amax = np.abs(w32).max(axis=reduce, keepdims=True)                 # (1,M) / (D,1) / (1,1)
    # one step of the grid, so that amax lands exactly on the top level (1 for an all-zero slice)
    scale = np.where(amax > 0, amax / top, np.float32(1)).astype(np.float32)
    # the nearest level (ties to even), clipped to the symmetric range [-qmax, qmax]
    q = np.clip(np.rint(w32 / scale), -top, top)
    # END EXERCISE quantize
    return q.astype(np.int8), scale


def dequantize(q, scale, dtype=np.float32) -> np.ndarray:
    """Inputs: q, int8 array; scale, float array broadcastable to q (as returned by quantize).
    Returns: q * scale in `dtype` (float32 by default)."""
    q, scale = np.asarray(q), np.asarray(scale)
    if q.dtype != np.int8:
        raise ValueError(f"q: expected an int8 array, got dtype {q.dtype}")
    if scale.ndim != q.ndim or any(s not in (1, n) for s, n in zip(scale.shape, q.shape)):
        raise ValueError(f"scale: expected shape broadcastable to q {q.shape} with q's rank, got {scale.shape}")
    # BEGIN EXERCISE dequantize
    return q.astype(dtype) * scale.astype(dtype)                       # (D,M) * (1,M) -> (D,M)
    # END EXERCISE dequantize


def quantization_error(w, bits: int = 8, axis: int | None = None) -> float:
    """Relative round-trip error ||w - dequantize(quantize(w))|| / ||w|| (Frobenius norms), in float64."""
    q, s = quantize(w, bits, axis)
    w = np.asarray(w, dtype=np.float64)
    err = w - dequantize(q, s, np.float64)
    return float(np.linalg.norm(err) / max(np.linalg.norm(w), 1e-30))


# ----------------------------------------------------------------------------------------------
# Activations: what an int8 kernel would see, computed in float


def fake_quantize_rows(x, bits: int = 8) -> np.ndarray:
    """Dynamic per-row activation quantization: each row of x (N..., D) gets its own scale
    max|row| / qmax, computed at run time. Returns the dequantized x, same shape and dtype."""
    x = np.asarray(x)
    top = x.dtype.type(qmax(bits))
    amax = np.abs(x).max(axis=-1, keepdims=True)                       # (N...,1)
    scale = np.where(amax > 0, amax / top, x.dtype.type(1))            # (N...,1)
    q = np.rint(x / scale)
    np.clip(q, -top, top, out=q)
    q *= scale                                                         # (N...,D) back on x's scale
    return q


def fake_quantize_static(x, scale, bits: int = 8) -> np.ndarray:
    """Static activation quantization with a fixed (calibrated) scale: values beyond
    scale * qmax are clipped. Inputs: x (N..., D); scale, a positive float.
    Returns the dequantized x, same shape and dtype."""
    x = np.asarray(x)
    s, top = x.dtype.type(scale), x.dtype.type(qmax(bits))
    q = np.rint(x / s)
    np.clip(q, -top, top, out=q)
    q *= s
    return q


def linear_inputs(config) -> list[str]:
    """Names of the encoder linears whose inputs activation quantization rounds, in forward order:
    encoder.{i}.attn.qkv, .attn.out, .ffn.in, .ffn.out. (The pooler and the classifier read one
    vector per example; their inputs stay float.)"""
    return [f"encoder.{i}.{n}" for i in range(config.num_layers)
            for n in ("attn.qkv", "attn.out", "ffn.in", "ffn.out")]


def quantize_activation(x, config, name: str) -> np.ndarray:
    """The input of linear `name` as the model's activation mode sees it: x itself ("none"),
    per-row int8 ("dynamic"), or int8 with the calibrated scale config.activation_scales[name]
    ("static"). Inputs: x (N..., D), a BertConfig-like object with activation_quant /
    activation_scales. Returns: an array like x (x itself for "none")."""
    mode = getattr(config, "activation_quant", "none")
    if mode == "none":
        return x
    if mode == "dynamic":
        return fake_quantize_rows(x)
    return fake_quantize_static(x, config.activation_scales[name])


# ----------------------------------------------------------------------------------------------
# Whole models


def quantized_names(params: dict) -> list[str]:
    """The tensors int8 storage applies to: every 2-D weight (linear weights end in '.W'; the word
    and position tables); not the tiny token-type table, biases or LayerNorm."""
    return [k for k, v in params.items()
            if np.ndim(v) == 2 and (k.endswith(".W") or k in ("embeddings.word", "embeddings.position"))]


def channel_axis(name: str) -> int:
    """Which axis gets its own scales: a linear weight (D, M) per output column (1); an embedding
    table (V, H) per row, i.e. per token (0): a lookup returns rows, so rows are its 'outputs'."""
    return 0 if name.startswith("embeddings.") else 1


def quantize_params(params: dict, per_channel: bool = True, bits: int = 8) -> dict[str, np.ndarray]:
    """Inputs: params (float dict of a model); per_channel (False = one scale per tensor); bits.
    Returns: the tensors to store: each quantized weight as int8 under its own name plus its
    float32 scale under name + '.scale'; every other tensor as float32."""
    names = set(quantized_names(params))
    out = {}
    for k, v in params.items():
        if k in names:
            out[k], out[k + SCALE_SUFFIX] = quantize(v, bits, channel_axis(k) if per_channel else None)
        else:
            out[k] = np.ascontiguousarray(v, dtype=np.float32)
    return out


def is_quantized(tensors: dict) -> bool:
    """True when a model file's tensors hold int8 weights (or scales)."""
    return any(np.asarray(v).dtype == np.int8 or k.endswith(SCALE_SUFFIX) for k, v in tensors.items())


def dequantize_tensors(tensors: dict, where: str = "model.safetensors") -> dict[str, np.ndarray]:
    """The load path of a quantized model file: int8 tensors times their scales, float32.

    Inputs: tensors as read from safetensors (int8 + '.scale' pairs and float tensors); where
            (named in errors). Returns: a dict of float32 arrays without the '.scale' entries.
    CheckpointError when an int8 tensor has no scale, a scale has no int8 tensor, a scale's shape
    does not fit, or a scale is not positive and finite."""
    out = {}
    for k, v in tensors.items():
        v = np.asarray(v)
        if k.endswith(SCALE_SUFFIX):
            base = k[:-len(SCALE_SUFFIX)]
            if base not in tensors or np.asarray(tensors[base]).dtype != np.int8:
                raise CheckpointError(f"{where}: '{k}' is a quantization scale but '{base}' is "
                                      f"not an int8 tensor in the file")
            continue
        if v.dtype == np.int8:
            scale = tensors.get(k + SCALE_SUFFIX)
            if scale is None:
                raise CheckpointError(f"{where}: int8 tensor '{k}' has no scale '{k}{SCALE_SUFFIX}'")
            scale = np.asarray(scale)
            if scale.dtype.kind != "f" or not (np.isfinite(scale).all() and (scale > 0).all()):
                raise CheckpointError(f"{where}: scale '{k}{SCALE_SUFFIX}' must be positive finite floats")
            try:
                out[k] = dequantize(v, scale)
            except ValueError as err:
                raise CheckpointError(f"{where}: '{k}{SCALE_SUFFIX}': {err}") from None
        else:
            out[k] = v
    return out


def quantization_record(per_channel: bool, activations: str, bits: int = 8) -> dict:
    """What a quantized model file says about itself (its safetensors metadata, also quantization.json)."""
    if activations not in ACTIVATION_MODES:
        raise MinibertError(f"activations: expected one of {ACTIVATION_MODES}, got {activations!r}")
    return {"scheme": f"int{bits} symmetric", "bits": bits,
            "weights": "per output channel (embeddings: per row)" if per_channel else "per tensor",
            "activations": activations,
            "compute": "float32 matmuls on dequantized values (NumPy has no fast int8 GEMM)"}


def metadata_for(record: dict) -> dict[str, str]:
    """safetensors metadata (string values) carrying a quantization record."""
    return {"format": "minibert", "quantization": json.dumps(record, sort_keys=True)}


# ----------------------------------------------------------------------------------------------
# Static calibration


def calibrate(params: dict, config, batches, percentile: float = 100.0) -> dict[str, float]:
    """Measure one scale per encoder linear input on calibration data (static quantization).

    Runs the reference forward (eval mode, float activations) and reads each linear's input from
    the caches: attention's qkv and output projections, the FFN's two linears. Only real tokens
    count (a padded position's row is never read by the model's outputs).
    Inputs: params, config, batches: an iterable of objects with .ids .mask .token_type_ids (B,T);
            percentile of |x| taken as the clipping point (100 = the max).
    Returns: {linear name: scale = clip point / 127}, names as linear_inputs(config).
    MinibertError when there is no batch (calibration data with no rows)."""
    from minibert.model import bert_forward      # (fast_model imports this module: no cycle)

    names = linear_inputs(config)
    seen: dict[str, list] = {n: [] for n in names}
    n_rows = 0
    for b in batches:
        _, cache = bert_forward(params, config, b.ids, b.mask, b.token_type_ids, fast=True)
        n_rows += int(b.ids.shape[0])
        for i, layer in enumerate(cache.layers):
            real = np.asarray(b.mask, dtype=bool)                           # (B,T)
            for n, x in ((f"encoder.{i}.attn.qkv", layer.attn.qkv.x), (f"encoder.{i}.attn.out", layer.attn.out.x),
                         (f"encoder.{i}.ffn.in", layer.ffn_in.x), (f"encoder.{i}.ffn.out", layer.ffn_out.x)):
                seen[n].append(np.abs(x[real]).ravel())                     # real tokens' entries
    if n_rows == 0:
        raise MinibertError("calibration data has no rows: give a data spec whose training split "
                            "is not empty (e.g. --calibrate default)")
    top = qmax(8)
    scales = {}
    for n in names:
        a = np.concatenate(seen[n])
        clip = float(np.percentile(a, percentile)) if percentile < 100 else float(a.max())
        scales[n] = clip / top if clip > 0 else 1.0
    return scales
