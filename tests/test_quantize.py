"""Tests for minibert/quantize.py: the int8 number format, its error bounds, storage and loading.

Closed forms checked here (nothing to trust but arithmetic): symmetric quantization puts max|w| on
level +-qmax exactly, every round-trip error is at most scale/2, and a tensor that already lies
on the grid comes back bit-identical.
"""

from __future__ import annotations

import numpy as np
import pytest

from minibert.errors import CheckpointError, MinibertError
from minibert.quantize import (
    SCALE_SUFFIX,
    calibrate,
    channel_axis,
    dequantize,
    dequantize_tensors,
    fake_quantize_rows,
    fake_quantize_static,
    is_quantized,
    qmax,
    quantization_error,
    quantize,
    quantize_params,
    quantized_names,
)


def _weights(rng, D=48, M=40):
    """A weight matrix whose columns differ in range by 30x, like real ones do."""
    return (rng.normal(size=(D, M)) * np.geomspace(0.01, 0.3, M)).astype(np.float32)


@pytest.mark.exercise("quantize", "dequantize")
@pytest.mark.parametrize("axis", [None, 0, 1])
@pytest.mark.parametrize("bits", [8, 6, 4])
def test_roundtrip_error_is_at_most_half_a_step_and_the_max_hits_qmax(axis, bits):
    w = _weights(np.random.default_rng(0))
    q, s = quantize(w, bits, axis)
    assert q.dtype == np.int8 and s.dtype == np.float32 and q.shape == w.shape
    assert s.shape == {None: (1, 1), 0: (w.shape[0], 1), 1: (1, w.shape[1])}[axis]
    top = qmax(bits)
    assert np.abs(q).max() == top and np.abs(q.astype(int)).max() <= top
    err = np.abs(dequantize(q, s).astype(np.float64) - w)
    assert np.all(err <= s.astype(np.float64) / 2 * (1 + 1e-6)), "round-off larger than scale/2"
    # the largest |w| of each slice is exactly +-qmax levels
    reduce = (0, 1) if axis is None else (1 - axis,)
    assert np.all(np.abs(q).max(axis=reduce) == top)


@pytest.mark.exercise("quantize", "dequantize")
def test_values_on_the_grid_come_back_exactly():
    rng = np.random.default_rng(1)
    scale = np.float32(0.0625)                                          # a power of two: exact
    q0 = rng.integers(-127, 128, size=(16, 8)).astype(np.int8)
    q0[0, 0] = 127                                                      # fixes max|w| = 127 * scale
    w = q0.astype(np.float32) * scale
    q, s = quantize(w, 8, None)
    assert s.item() == scale and np.array_equal(q, q0)
    assert np.array_equal(dequantize(q, s), w)


@pytest.mark.exercise("quantize")
def test_per_channel_beats_per_tensor_when_columns_differ_in_range():
    w = _weights(np.random.default_rng(2))
    per_tensor, per_channel = quantization_error(w, 8, None), quantization_error(w, 8, 1)
    print(f"relative error int8: per tensor {per_tensor:.2e}, per channel {per_channel:.2e}")
    # the Frobenius norm is dominated by the large columns, which both treat alike: ~2.6x here
    assert per_channel < per_tensor / 2
    # the smallest column (30x below the largest) is where one scale for all hurts: ~30x here
    small = w[:, :1]
    col_tensor = np.linalg.norm(small - dequantize(*quantize(w, 8, None))[:, :1]) / np.linalg.norm(small)
    col_channel = np.linalg.norm(small - dequantize(*quantize(w, 8, 1))[:, :1]) / np.linalg.norm(small)
    print(f"smallest column: per tensor {col_tensor:.2e}, per channel {col_channel:.2e}")
    assert col_channel < col_tensor / 10


def test_error_grows_about_2x_per_bit_removed():
    w = np.random.default_rng(3).normal(size=(256, 256)).astype(np.float32)
    errs = {b: quantization_error(w, b, 1) for b in (8, 6, 4)}
    print("relative error per channel:", {b: f"{e:.2e}" for b, e in errs.items()})
    # uniform rounding error ~ step/sqrt(12), step = 2 max / (2^b - 2): ratio per 2 bits ~ 4
    assert 3.0 < errs[6] / errs[8] < 5.0 and 3.0 < errs[4] / errs[6] < 5.5


@pytest.mark.exercise("quantize", "dequantize")
def test_all_zero_column_gets_scale_one_and_zeros():
    w = _weights(np.random.default_rng(4))
    w[:, 3] = 0
    q, s = quantize(w, 8, 1)
    assert s[0, 3] == 1.0 and not q[:, 3].any()
    assert np.isfinite(dequantize(q, s)).all()


def test_bad_inputs_are_value_errors():
    with pytest.raises(ValueError, match="bits"):
        quantize(np.ones((2, 2), np.float32), 9)
    with pytest.raises(ValueError, match="float"):
        quantize(np.ones((2, 2), np.int32))
    with pytest.raises(ValueError, match="NaN"):
        quantize(np.array([[np.nan, 1.0]], np.float32))
    with pytest.raises(ValueError, match="axis"):
        quantize(np.ones(3, np.float32), 8, 1)
    with pytest.raises(ValueError, match="int8"):
        dequantize(np.ones((2, 2), np.int32), np.ones((1, 1), np.float32))
    with pytest.raises(ValueError, match="broadcastable"):
        dequantize(np.ones((2, 3), np.int8), np.ones((1, 2), np.float32))


def test_dynamic_row_quantization_is_per_row_and_keeps_dtype():
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(4, 6, 32)) * np.array([1e-3, 1.0, 50.0, 7.0])[:, None, None]).astype(np.float32)
    y = fake_quantize_rows(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    step = np.abs(x).max(axis=-1, keepdims=True) / 127
    assert np.all(np.abs(y - x) <= step / 2 * (1 + 1e-5))              # each row on its own grid
    assert np.allclose(np.abs(y).max(axis=-1), np.abs(x).max(axis=-1), rtol=1e-6)


def test_static_quantization_clips_beyond_the_calibrated_range():
    x = np.array([[-3.0, -0.5, 0.0, 0.26, 2.0]], np.float32)
    y = fake_quantize_static(x, 1.0 / 127)                              # range [-1, 1]
    assert y.dtype == np.float32
    assert y[0, 0] == -1.0 and y[0, 4] == 1.0                           # clipped
    assert abs(y[0, 1] + 0.5) <= 0.5 / 127 and abs(y[0, 3] - 0.26) <= 0.5 / 127


def _tiny_params():
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from tiny import tiny_config

    from minibert.model import init_params
    config = tiny_config(num_labels=2)
    return init_params(config, np.random.default_rng(0)), config


def test_quantize_params_stores_int8_weights_with_scales_and_the_rest_as_float32():
    params, config = _tiny_params()
    stored = quantize_params(params)
    names = quantized_names(params)
    assert "embeddings.word" in names and "encoder.0.attn.qkv.W" in names and "classifier.W" in names
    assert "embeddings.token_type" not in names and "encoder.0.attn.qkv.b" not in names
    for k in params:
        if k in names:
            assert stored[k].dtype == np.int8
            ax = channel_axis(k)
            assert stored[k + SCALE_SUFFIX].shape[ax] == params[k].shape[ax]
        else:
            assert stored[k].dtype == np.float32 and np.array_equal(stored[k], params[k])
    assert is_quantized(stored) and not is_quantized(params)
    back = dequantize_tensors(stored)
    assert sorted(back) == sorted(params)
    for k in names:
        s = stored[k + SCALE_SUFFIX]
        assert np.all(np.abs(back[k] - params[k]) <= s / 2 * (1 + 1e-6)), k


def test_dequantize_tensors_names_what_is_broken():
    params, _ = _tiny_params()
    stored = quantize_params(params)
    missing = dict(stored)
    del missing["encoder.0.ffn.in.W" + SCALE_SUFFIX]
    with pytest.raises(CheckpointError, match="encoder.0.ffn.in.W.*has no scale"):
        dequantize_tensors(missing)
    orphan = dict(stored)
    orphan["encoder.0.ffn.in.b" + SCALE_SUFFIX] = np.ones(1, np.float32)
    with pytest.raises(CheckpointError, match="not an int8 tensor"):
        dequantize_tensors(orphan)
    bad = dict(stored)
    bad["classifier.W" + SCALE_SUFFIX] = -bad["classifier.W" + SCALE_SUFFIX]
    with pytest.raises(CheckpointError, match="positive"):
        dequantize_tensors(bad)
    wrong = dict(stored)
    wrong["classifier.W" + SCALE_SUFFIX] = np.ones((1, 7), np.float32)
    with pytest.raises(CheckpointError, match="classifier.W"):
        dequantize_tensors(wrong)


def test_calibrate_gives_one_positive_scale_per_linear_and_refuses_no_rows():
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from tiny import VOCAB  # noqa: F401  (the tiny sizes)

    from minibert.batches import LabeledBatch
    params, config = _tiny_params()
    rng = np.random.default_rng(0)
    ids = rng.integers(5, config.vocab_size, size=(3, 7))
    mask = np.ones((3, 7), np.int64)
    mask[0, 4:] = 0
    b = LabeledBatch(ids, mask, np.zeros_like(ids), np.zeros(3, np.int64), np.arange(3))
    scales = calibrate(params, config, [b])
    assert sorted(scales) == sorted(f"encoder.{i}.{n}" for i in range(config.num_layers)
                                    for n in ("attn.qkv", "attn.out", "ffn.in", "ffn.out"))
    assert all(s > 0 for s in scales.values())
    # the scale is max|input| over the real tokens / 127: the embedding output feeds layer 0's qkv
    from minibert.model import bert_forward
    out, _ = bert_forward(params, config, ids, mask, output_hidden=True)
    h0 = out.hidden_states[0][mask.astype(bool)]
    assert scales["encoder.0.attn.qkv"] == pytest.approx(np.abs(h0).max() / 127, rel=1e-6)
    with pytest.raises(MinibertError, match="no rows"):
        calibrate(params, config, [])


# ----------------------------------------------------------------------------------------------
# The command, the load path, and the model running quantized activations


def _tiny_dirs(tmp_path, hidden_size=64, num_heads=4):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from tiny import make_tiny_model_dir, write_tiny_dataset
    model = make_tiny_model_dir(tmp_path / "m", num_labels=2, hidden_size=hidden_size,
                                num_heads=num_heads, intermediate_size=2 * hidden_size, finetuned=True)
    return model, write_tiny_dataset(tmp_path / "d.csv", n=80)


def test_quantize_command_writes_int8_that_every_command_loads(tmp_path, capsys):
    import safetensors.numpy

    from minibert.cli import main
    from minibert.evaluate import predict_texts
    from minibert.tokenizer import Tokenizer
    from minibert.weights import load_model
    model, data = _tiny_dirs(tmp_path)
    out = tmp_path / "q"
    assert main(["quantize", "--model", str(model), "--out", str(out)]) == 0
    raw = safetensors.numpy.load_file(str(out / "model.safetensors"))
    assert raw["encoder.0.attn.qkv.W"].dtype == np.int8 and raw["embeddings.word"].dtype == np.int8
    enc = lambda d: sum(v.nbytes for k, v in d.items() if k.startswith("encoder."))  # noqa: E731
    floats = safetensors.numpy.load_file(str(model / "model.safetensors"))
    print(f"encoder bytes int8/float32: {enc(raw) / enc(floats):.3f}")
    assert enc(raw) / enc(floats) < 0.30
    params, config = load_model(out)                                   # no option: dequantized
    ref, _ = load_model(model)
    assert all(params[k].dtype == np.float32 for k in params)
    assert max(float(np.abs(params[k] - ref[k]).max()) for k in ref) < 0.01
    texts = ["a good movie", "it was awful and sad", "the plot"]
    tok = Tokenizer.from_dir(model)
    np.testing.assert_allclose(predict_texts(params, config, tok, texts),
                               predict_texts(ref, config, tok, texts), atol=0.02)
    capsys.readouterr()
    for argv in (["evaluate", "--model", str(out), "--data", f"csv:{data}"],
                 ["predict", "--model", str(out), "a good movie"]):
        assert main(argv) == 0, argv
    (tmp_path / "t.txt").write_text("a good movie\nthe plot\n")
    assert main(["embed", "--model", str(out), "--text-file", str(tmp_path / "t.txt"),
                 "--out", str(tmp_path / "e.npy")]) == 0
    assert np.load(tmp_path / "e.npy").shape == (2, 64)


def test_quantizing_a_quantized_model_is_a_clear_error(tmp_path, capsys):
    from minibert.cli import main
    model, _ = _tiny_dirs(tmp_path)
    assert main(["quantize", "--model", str(model), "--out", str(tmp_path / "q")]) == 0
    capsys.readouterr()
    assert main(["quantize", "--model", str(tmp_path / "q"), "--out", str(tmp_path / "qq")]) == 2
    err = capsys.readouterr().err
    assert "already quantized" in err and "Traceback" not in err


def test_calibration_data_with_no_rows_is_a_clear_error(tmp_path, capsys):
    from minibert.cli import main
    model, _ = _tiny_dirs(tmp_path)
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    assert main(["quantize", "--model", str(model), "--out", str(tmp_path / "q"),
                 "--calibrate", f"csv:{empty}"]) == 2
    err = capsys.readouterr().err
    assert "rows" in err or "empty" in err, err
    assert not (tmp_path / "q" / "model.safetensors").exists()


def _manual_forward(params, config, ids, act):
    """An independent 1-sequence forward (no padding) that rounds every encoder linear's input
    with `act(name, x)`: plain NumPy on the reference layers, heads by a loop."""
    from minibert.layers import gelu_forward, layernorm_forward
    eps = config.layer_norm_eps
    x = params["embeddings.word"][ids] + params["embeddings.token_type"][0] + params["embeddings.position"][:len(ids)]
    h, _ = layernorm_forward(x, params["embeddings.ln.gamma"], params["embeddings.ln.beta"], eps)
    nh, hs, H = config.num_heads, config.head_size, config.hidden_size
    for i in range(config.num_layers):
        p = f"encoder.{i}."
        qkv = act(p + "attn.qkv", h) @ params[p + "attn.qkv.W"] + params[p + "attn.qkv.b"]
        ctx = np.zeros((len(ids), H), h.dtype)
        for j in range(nh):
            c = slice(j * hs, (j + 1) * hs)
            s = qkv[:, c] @ qkv[:, H:2 * H][:, c].T / np.sqrt(hs)
            pr = np.exp(s - s.max(1, keepdims=True))
            ctx[:, c] = (pr / pr.sum(1, keepdims=True)) @ qkv[:, 2 * H:][:, c]
        a = act(p + "attn.out", ctx) @ params[p + "attn.out.W"] + params[p + "attn.out.b"]
        x1, _ = layernorm_forward(a + h, params[p + "attn.ln.gamma"], params[p + "attn.ln.beta"], eps)
        f, _ = gelu_forward(act(p + "ffn.in", x1) @ params[p + "ffn.in.W"] + params[p + "ffn.in.b"])
        f = act(p + "ffn.out", f) @ params[p + "ffn.out.W"] + params[p + "ffn.out.b"]
        h, _ = layernorm_forward(f + x1, params[p + "ffn.ln.gamma"], params[p + "ffn.ln.beta"], eps)
    return h


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_the_model_rounds_every_encoder_linear_input_like_an_independent_forward(mode):
    import dataclasses

    from minibert.fast_model import bert_forward
    params, config = _tiny_params()
    params = {k: v.astype(np.float64) for k, v in params.items()}
    ids = np.random.default_rng(0).integers(5, config.vocab_size, size=9)
    scales = {n: 0.02 + 0.001 * k for k, n in enumerate(
        f"encoder.{i}.{m}" for i in range(config.num_layers) for m in ("attn.qkv", "attn.out", "ffn.in", "ffn.out"))}
    qconfig = dataclasses.replace(config, activation_quant=mode,
                                  activation_scales=scales if mode == "static" else None)
    if mode == "dynamic":
        act = lambda name, x: fake_quantize_rows(x)                          # noqa: E731
    else:
        act = lambda name, x: fake_quantize_static(x, scales[name])          # noqa: E731
    want = _manual_forward(params, config, ids, act)
    plain = _manual_forward(params, config, ids, lambda name, x: x)
    mask = np.ones((2, 9), np.int64)
    mask[1, 5:] = 0                                                          # a padded row too
    out, _ = bert_forward(params, qconfig, np.stack([ids, ids]), mask, keep_cache=False)
    assert np.abs(out.last[0] - want).max() < 1e-9
    assert np.abs(want - plain).max() > 1e-4                                 # the rounding did something
    with pytest.raises(ValueError, match="inference"):
        bert_forward(params, qconfig, ids[None], keep_cache=True)


@pytest.mark.torch
def test_quantized_model_exports_dequantized_and_transformers_gives_the_same_logits(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import safetensors.numpy

    from minibert.cli import main
    from minibert.fast_model import classify_forward
    from minibert.weights import load_model
    model, _ = _tiny_dirs(tmp_path)
    assert main(["quantize", "--model", str(model), "--out", str(tmp_path / "q")]) == 0
    assert main(["export", str(tmp_path / "q"), str(tmp_path / "hf")]) == 0
    hf = safetensors.numpy.load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert all(v.dtype == np.float32 for v in hf.values())
    params, config = load_model(tmp_path / "q")
    rng = np.random.default_rng(1)
    ids = rng.integers(5, config.vocab_size, size=(3, 9))
    mask = np.ones_like(ids)
    mask[2, 5:] = 0
    ours, _, _ = classify_forward(params, config, ids, mask, keep_cache=False)
    m = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
    with torch.no_grad():
        theirs = m(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
    assert np.abs(ours - theirs).max() <= 1e-4
