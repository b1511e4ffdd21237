"""Tests for minibert/prune.py: the head gate's gradient, head importance, choosing heads.

Gradient tolerance: rel_error <= 1e-7, float64, centred differences with h = 1e-5 (as in
test_layers.py: truncation ~1e-10, roundoff ~1e-11; a wrong term shows as 1e-3 .. 1).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from tiny import tiny_config  # noqa: E402

from minibert.attention import attention_forward, mask_to_bias  # noqa: E402
from minibert.errors import MinibertError  # noqa: E402
from minibert.gradcheck import check_gradients, rel_error  # noqa: E402
from minibert.losses import cross_entropy  # noqa: E402
from minibert.model import classify_backward, classify_forward, init_params  # noqa: E402
from minibert.prune import (  # noqa: E402
    choose_heads,
    gate_grads,
    head_gate_backward,
    head_gate_forward,
    head_importance,
    heads_per_layer,
)
from minibert.batches import LabeledBatch  # noqa: E402

GRAD_TOL = 1e-7


@pytest.mark.exercise("head_gate_backward")
def test_head_gate_backward_matches_finite_differences():
    rng = np.random.default_rng(0)
    ctx = rng.normal(size=(2, 5, 12))                                   # 3 heads of size 4
    gates = rng.normal(size=3)
    errors = check_gradients(head_gate_forward, head_gate_backward, {"ctx": ctx, "gates": gates}, rng)
    print("head gate:", errors)
    assert max(errors.values()) <= GRAD_TOL


@pytest.mark.exercise("head_gate_backward")
def test_gate_on_a_real_attention_context_matches_finite_differences():
    """The gate between attention and its output projection, fed by attention_forward's context
    (attention with W_o = I and b_o = 0 returns ctx itself)."""
    rng = np.random.default_rng(1)
    B, T, H, nh = 2, 6, 12, 3
    x = rng.normal(size=(B, T, H))
    W_qkv, b_qkv = rng.normal(size=(H, 3 * H)) * 0.3, rng.normal(size=3 * H) * 0.1
    W_o, dout = rng.normal(size=(H, H)), rng.normal(size=(B, T, H))
    mask = np.ones((B, T), np.int64)
    mask[1, 4:] = 0
    ctx, _ = attention_forward(x, W_qkv, b_qkv, np.eye(H), np.zeros(H), mask_to_bias(mask, np.float64), nh)

    def loss(g):
        out, _ = head_gate_forward(ctx, g)
        return float(((out @ W_o) * dout).sum())

    g = np.ones(nh)
    _, cache = head_gate_forward(ctx, g)
    _, dg = head_gate_backward(dout @ W_o.T, cache)                      # dctx at the gate's output
    h = 1e-5
    num = np.array([(loss(g + h * e) - loss(g - h * e)) / (2 * h) for e in np.eye(nh)])
    print("dL/dg analytic", dg, "numeric", num)
    assert rel_error(dg, num) <= GRAD_TOL


def _model(num_layers=2, num_heads=4, hidden_size=16, seed=0, dtype=np.float64):
    config = tiny_config(num_labels=3, num_layers=num_layers, num_heads=num_heads,
                         hidden_size=hidden_size, intermediate_size=24, hidden_dropout=0.0,
                         attention_dropout=0.0)
    params = init_params(config, np.random.default_rng(seed), dtype)
    params = {k: (v * 10 if k.endswith(".W") else v) for k, v in params.items()}   # not near-linear
    return params, config


def _batch(config, seed=0, B=4, T=7):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, config.vocab_size, size=(B, T))
    mask = np.ones((B, T), np.int64)
    mask[0, 5:] = 0
    mask[2, 3:] = 0
    return LabeledBatch(ids, mask, np.zeros_like(ids), rng.integers(0, config.num_labels, B), np.arange(B))


def test_gate_grads_from_the_output_projection_match_finite_differences_on_the_model():
    """dL/dg_h of the classifier's loss, where gate g_h multiplies head h's context in every layer:
    gate_grads (from dW_o) vs centred differences of the real loss. Gating head h is done by
    scaling its rows of W_o, which is the same product (g ctx_h) W_o = ctx_h (g W_o)."""
    params, config = _model()
    b = _batch(config)
    logits, _, cache = classify_forward(params, config, b.ids, b.mask, b.token_type_ids)
    _, dlogits = cross_entropy(logits, b.labels)
    analytic = gate_grads(params, classify_backward(dlogits, cache), config)
    hs = config.head_size

    def loss(i, head, g):
        p = dict(params)
        W = p[f"encoder.{i}.attn.out.W"].copy()
        W[head * hs:(head + 1) * hs] *= g
        p[f"encoder.{i}.attn.out.W"] = W
        lg, _, _ = classify_forward(p, config, b.ids, b.mask, b.token_type_ids, keep_cache=False)
        return float(cross_entropy(lg, b.labels)[0])

    h = 1e-5
    for i in range(config.num_layers):
        num = np.array([(loss(i, k, 1 + h) - loss(i, k, 1 - h)) / (2 * h) for k in range(config.num_heads)])
        print(f"layer {i}: analytic {analytic[i]}, numeric {num}")
        assert rel_error(analytic[i], num) <= 1e-6   # the loss is ~1, dL/dg ~1e-2: roundoff ~1e-9


def test_head_importance_sums_absolute_gate_grads_per_batch_and_normalises_by_layer():
    params, config = _model()
    batches = [_batch(config, s) for s in range(3)]
    raw = head_importance(params, config, batches, normalize=False)
    expected = [np.zeros(config.num_heads) for _ in range(config.num_layers)]
    for b in batches:
        logits, _, cache = classify_forward(params, config, b.ids, b.mask, b.token_type_ids)
        _, dl = cross_entropy(logits, b.labels)
        for e, g in zip(expected, gate_grads(params, classify_backward(dl, cache), config)):
            e += np.abs(g)
    for r, e in zip(raw, expected):
        assert np.allclose(r, e, rtol=1e-12)
    norm = head_importance(params, config, batches)
    for n, r in zip(norm, raw):
        assert np.isclose(np.linalg.norm(n), 1.0) and np.allclose(n * np.linalg.norm(r), r)
    with pytest.raises(MinibertError, match="no rows"):
        head_importance(params, config, [])


def test_choose_heads_removes_the_least_important_and_keeps_one_per_layer():
    imp = [np.array([0.9, 0.1, 0.5]), np.array([0.05, 0.06, 0.07])]
    assert choose_heads(imp, keep=4) == {1: [0, 1]}                      # the two lowest scores
    # 3 of 6: layer 1's heads are the three lowest, but a layer keeps its best head
    assert choose_heads(imp, fraction=0.5) == {0: [1], 1: [0, 1]}
    assert choose_heads(imp, keep=2) == {0: [1, 2], 1: [0, 1]}
    assert choose_heads(imp, fraction=0.0) == {}
    assert choose_heads(imp, keep=6) == {}


@pytest.mark.parametrize("kw, match", [
    (dict(keep=0), "at least one head"),
    (dict(keep=1), "keep >= 2"),
    (dict(keep=7), "only 6 heads"),
    (dict(fraction=1.0), r"\[0, 1\)"),
    (dict(fraction=-0.1), r"\[0, 1\)"),
    (dict(), "exactly one"),
    (dict(keep=3, fraction=0.5), "exactly one"),
])
def test_choose_heads_bad_requests_are_clear_errors(kw, match):
    imp = [np.ones(3), np.ones(3)]
    with pytest.raises(MinibertError, match=match):
        choose_heads(imp, **kw)


def test_heads_per_layer_of_an_unpruned_model():
    _, config = _model(num_layers=3, num_heads=4)
    assert heads_per_layer(config) == [4, 4, 4]


# ----------------------------------------------------------------------------------------------
# Removing heads for real: the config, the model, the files, the command


def _zero_heads(params, config, remove):
    """The unpruned model with the removed heads' gates at 0 (their rows of W_o zeroed)."""
    hs = config.head_size
    p = dict(params)
    for i, heads in remove.items():
        W = p[f"encoder.{i}.attn.out.W"].copy()
        for h in heads:
            W[h * hs:(h + 1) * hs] = 0
        p[f"encoder.{i}.attn.out.W"] = W
    return p


def test_removed_heads_compute_what_zero_gates_compute_on_both_paths():
    from minibert import fast_model
    from minibert.model import bert_backward, bert_forward, param_shapes
    from minibert.prune import remove_heads
    params, config = _model(num_layers=2, num_heads=4)
    remove = {0: [1, 3], 1: [0]}
    pp, pc = remove_heads(params, config, remove)
    assert heads_per_layer(pc) == [2, 3] and pc.pruned_heads == {"0": [1, 3], "1": [0]}
    assert param_shapes(pc)["encoder.0.attn.qkv.W"] == (16, 3 * 2 * 4) == pp["encoder.0.attn.qkv.W"].shape
    assert pp["encoder.1.attn.out.W"].shape == (3 * 4, 16)
    b = _batch(config)
    ref, _ = bert_forward(_zero_heads(params, config, remove), config, b.ids, b.mask, b.token_type_ids)
    real = b.mask.astype(bool)
    for fwd, kw in ((bert_forward, {}), (fast_model.bert_forward, {}),
                    (fast_model.bert_forward, {"keep_cache": False})):   # reference, fast, packed
        out, _ = fwd(pp, pc, b.ids, b.mask, b.token_type_ids, **kw)
        assert np.abs(out.last[real] - ref.last[real]).max() < 1e-12
    # and the backward of the pruned model against finite differences (float64, tolerance 1e-7)
    def forward(**p):
        out, cache = bert_forward({**pp, **p}, pc, b.ids, b.mask, b.token_type_ids)
        return out.last, cache
    def backward(dout, cache):
        return bert_backward(dout, cache)
    wrt = {k: pp[k] for k in ("encoder.0.attn.qkv.W", "encoder.0.attn.out.W", "encoder.1.attn.qkv.b")}
    errors = check_gradients(forward, backward, wrt, np.random.default_rng(0), max_checks=40)
    print("pruned model gradients:", errors)
    assert max(errors.values()) <= GRAD_TOL


def test_pruning_twice_records_original_head_indices():
    from minibert.prune import remaining_heads, remove_heads
    params, config = _model(num_layers=1, num_heads=4)
    p1, c1 = remove_heads(params, config, {0: [1]})                      # heads left: 0 2 3
    p2, c2 = remove_heads(p1, c1, {0: [1]})                              # local 1 = original 2
    assert c2.pruned_heads == {"0": [1, 2]} and remaining_heads(c2, 0) == [0, 3]
    b = _batch(config)
    from minibert.model import bert_forward
    ref, _ = bert_forward(_zero_heads(params, config, {0: [1, 2]}), config, b.ids, b.mask)
    out, _ = bert_forward(p2, c2, b.ids, b.mask)
    real = b.mask.astype(bool)
    assert np.abs(out.last[real] - ref.last[real]).max() < 1e-12


@pytest.mark.parametrize("pruned, match", [
    ({"2": [0]}, "layer"), ({"0": [4]}, "head"), ({"0": [0, 1, 2, 3]}, "all"), ({"0": [1, 1]}, "twice"),
])
def test_config_refuses_impossible_pruned_heads(pruned, match):
    import dataclasses
    _, config = _model(num_layers=2, num_heads=4)
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(config, pruned_heads=pruned)


def test_pruned_model_saves_loads_and_a_config_that_disagrees_is_refused(tmp_path):
    import json

    from minibert.errors import CheckpointError
    from minibert.prune import remove_heads
    from minibert.weights import load_model, save_model
    params, config = _model()
    pp, pc = remove_heads({k: v.astype(np.float32) for k, v in params.items()}, config, {1: [2]})
    save_model(tmp_path / "m", pp, pc)
    back, bc = load_model(tmp_path / "m")
    assert bc == pc and back["encoder.1.attn.qkv.W"].shape == (16, 36)
    raw = json.loads((tmp_path / "m" / "config.json").read_text())
    raw["pruned_heads"] = {"1": [2, 3]}                                    # one head more than the tensors
    (tmp_path / "m" / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="encoder.1.attn"):
        load_model(tmp_path / "m")


def _tiny_task(tmp_path):
    from tiny import make_tiny_model_dir, write_tiny_dataset
    model = make_tiny_model_dir(tmp_path / "m", num_labels=2, num_heads=4, hidden_size=32,
                                finetuned=True)
    return model, write_tiny_dataset(tmp_path / "d.csv", n=80)


def test_prune_heads_command_removes_heads_and_every_command_runs_the_result(tmp_path, capsys):
    import json

    from minibert.cli import main
    from minibert.weights import load_model
    model, data = _tiny_task(tmp_path)
    out = tmp_path / "p"
    assert main(["prune-heads", "--model", str(model), "--data", f"csv:{data}", "--fraction", "0.5",
                 "--out", str(out)]) == 0
    params, config = load_model(out)
    assert sum(heads_per_layer(config)) == 4 and min(heads_per_layer(config)) >= 1
    record = json.loads((out / "prune.json").read_text())
    assert record["heads_per_layer"] == heads_per_layer(config)
    assert sum(len(v) for v in record["removed"].values()) == 4
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out), "--data", f"csv:{data}"]) == 0
    assert main(["predict", "--model", str(out), "a good movie"]) == 0
    assert main(["quantize", "--model", str(out), "--out", str(tmp_path / "pq")]) == 0
    assert main(["evaluate", "--model", str(tmp_path / "pq"), "--data", f"csv:{data}"]) == 0


@pytest.mark.parametrize("flags, match", [
    (["--keep", "0"], "at least one head"), (["--keep", "9"], "only 8 heads"),
    (["--fraction", "1.5"], r"\[0, 1\)"), ([], "--keep K"),
])
def test_prune_heads_bad_requests_exit_2_with_a_clear_message(tmp_path, capsys, flags, match):
    import re

    from minibert.cli import main
    model, data = _tiny_task(tmp_path)
    rc = main(["prune-heads", "--model", str(model), "--data", f"csv:{data}", "--out",
               str(tmp_path / "p"), *flags])
    err = capsys.readouterr().err
    assert rc == 2 and re.search(match, err) and "Traceback" not in err, err


@pytest.mark.slow
def test_prune_heads_with_redistillation_trains_from_the_pruned_weights(tmp_path, capsys):
    import json

    from minibert.cli import main
    model, data = _tiny_task(tmp_path)
    out = tmp_path / "p"
    assert main(["prune-heads", "--model", str(model), "--data", f"csv:{data}", "--keep", "3",
                 "--out", str(out), "--teacher", str(model), "--epochs", "1"]) == 0
    record = json.loads((out / "prune.json").read_text())
    assert record["redistill"]["epochs"] == 1 and 0 <= record["redistill"]["dev_accuracy"] <= 1
    assert (out / "redistill" / "metrics.json").is_file()
    assert not (out / "redistill" / "checkpoint.safetensors").exists()     # no --resume: not kept


def _transformers_logits(hf_dir, ids, mask):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = transformers.BertForSequenceClassification.from_pretrained(hf_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()


@pytest.mark.torch
def test_pruned_model_exports_with_zero_heads_and_transformers_gives_the_same_logits(tmp_path):
    """Default export: removed heads written back as zero heads (transformers >= 5 has no head
    pruning); live against transformers, skipped without it."""
    import safetensors.numpy

    from minibert.fast_model import classify_forward
    from minibert.prune import remove_heads
    from minibert.hf_convert import export_hf
    from minibert.weights import save_model
    params, config = _model(dtype=np.float32)
    pp, pc = remove_heads(params, config, {0: [0, 2], 1: [3]})
    save_model(tmp_path / "m", pp, pc)
    export_hf(tmp_path / "m", tmp_path / "hf")
    hf = safetensors.numpy.load_file(str(tmp_path / "hf" / "model.safetensors"))
    q0 = hf["bert.encoder.layer.0.attention.self.query.weight"]              # (out, in) = (H, H)
    assert q0.shape == (16, 16) and not q0[0:4].any() and not q0[8:12].any() and q0[4:8].any()
    b = _batch(config)
    ours, _, _ = classify_forward(pp, pc, b.ids, b.mask, keep_cache=False)
    theirs = _transformers_logits(tmp_path / "hf", b.ids, b.mask)
    assert np.abs(ours - theirs).max() <= 1e-4                               # float32 vs float32


def test_pruned_heads_config_export_converts_back_to_the_same_model(tmp_path):
    """--pruned-heads-config: the smaller tensors + pruned_heads (transformers < 5's layout);
    minibert convert reads it back exactly."""
    import json

    from minibert.prune import remove_heads
    from minibert.hf_convert import convert_checkpoint, export_hf
    from minibert.weights import load_model, save_model
    from tiny import write_tiny_tokenizer
    params, config = _model(dtype=np.float32)
    pp, pc = remove_heads(params, config, {1: [1, 2]})
    save_model(tmp_path / "m", pp, pc, tokenizer_dir=write_tiny_tokenizer(tmp_path / "tok"))
    export_hf(tmp_path / "m", tmp_path / "hf", pruned_heads_config=True)
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["pruned_heads"] == {"1": [1, 2]}
    convert_checkpoint(tmp_path / "hf", tmp_path / "back", verbose=False)
    back, bc = load_model(tmp_path / "back")
    assert bc.pruned_heads == {"1": [1, 2]}
    for k in pp:
        np.testing.assert_array_equal(back[k], pp[k], err_msg=k)


def test_attention_distillation_with_a_pruned_model_is_a_clear_error():
    from minibert.objective import DistillSettings, check_settings
    from minibert.prune import remove_heads
    params, config = _model()
    _, pc = remove_heads(params, config, {0: [1]})
    settings = DistillSettings(attention_weight=1.0, layer_map=(0, 1, 2))
    with pytest.raises(MinibertError, match="pruned heads"):
        check_settings(settings, pc, config)
    with pytest.raises(MinibertError, match="teacher has pruned heads"):
        check_settings(settings, config, pc)
    check_settings(settings._replace(attention_weight=0.0), pc, config)      # logits only: fine
