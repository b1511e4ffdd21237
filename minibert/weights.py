"""Model directories on disk: save and load a minibert model (safetensors + config.json).

Shape legend: H hidden, I intermediate (FFN), V vocab, P max positions, C classes, L layers.

A minibert model directory holds
    model.safetensors   float32 tensors named as in `param_shapes(config)` (see INTERFACES.md)
    config.json         `BertConfig.to_dict()`
    tokenizer.json      (+ vocab.txt, tokenizer_config.json, special_tokens_map.json when known)
    manifest.json       sha256 of the files above (only in the fetched teacher: minibert.fetch)

Converting to and from the Hugging Face layout is `minibert.hf_convert`; downloading the
default teacher is `minibert.fetch`. No pickle file is ever opened: only safetensors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import safetensors.numpy

from minibert.errors import CheckpointError
from minibert.files import atomic_write, atomic_write_bytes, atomic_write_json
from minibert.model import BertConfig, check_param_shapes, param_shapes
from minibert.quantize import dequantize_tensors, is_quantized

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


def atomic_copy(src, dst) -> None:
    """Copy a (small) file atomically: dst is either the old file or the whole new one."""
    atomic_write_bytes(dst, Path(src).read_bytes())


def _check_params(params: dict, config: BertConfig, where: str) -> None:
    """Every name of param_shapes(config) present with its shape, and nothing else."""
    try:
        check_param_shapes(params, config)
    except ValueError as err:
        raise CheckpointError(f"{where}: tensors do not match config.json: {err}") from None


def save_model(out_dir, params: dict, config: BertConfig, tokenizer_dir=None) -> Path:
    """Write model.safetensors (float32) + config.json (+ tokenizer files copied from
    tokenizer_dir), each atomically. Returns the output directory."""
    out_dir = Path(out_dir)
    _check_params(params, config, "save_model")
    tensors = {k: np.ascontiguousarray(params[k], dtype=np.float32) for k in param_shapes(config)}
    atomic_write(out_dir / MODEL_FILE,      # streamed to disk: no second in-memory copy of the model
                 lambda tmp: safetensors.numpy.save_file(tensors, str(tmp), metadata={"format": "minibert"}))
    atomic_write_json(out_dir / CONFIG_FILE, config.to_dict())
    if tokenizer_dir is not None and Path(tokenizer_dir).resolve() != out_dir.resolve():
        for name in TOKENIZER_FILES:
            if (Path(tokenizer_dir) / name).is_file():
                atomic_copy(Path(tokenizer_dir) / name, out_dir / name)
    return out_dir


def read_json(path, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{what}: {path} not found") from None
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{what}: {path} is not readable JSON ({err})") from None


def read_safetensors(path) -> dict:
    """All tensors of one .safetensors file as numpy arrays; CheckpointError if it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} not found")
    try:
        return safetensors.numpy.load_file(str(path))
    except TypeError as err:                  # e.g. bfloat16, which numpy has no type for
        raise CheckpointError(f"{path} stores a dtype numpy cannot hold ({err}); re-save it as "
                              f"float32 (e.g. model.float().save_pretrained(...))") from None
    except Exception as err:  # safetensors raises its own error type for truncated/corrupt files
        raise CheckpointError(f"{path} is truncated or corrupt (safetensors could not read it: "
                              f"{err}); convert or fetch it again") from None


def load_model(model_dir) -> tuple[dict, BertConfig]:
    """Inputs: a directory written by save_model / convert / fetch-teacher, or by `minibert
    quantize` (int8 weights are dequantized here, so every command reads such a model as is).
    Returns (params: dict of float32 arrays, config). CheckpointError when a file is missing,
    corrupt or the tensors disagree with config.json."""
    model_dir = Path(model_dir)
    if model_dir.is_file():
        raise CheckpointError(f"{model_dir} is a file; give the model's folder (the one holding "
                              f"{CONFIG_FILE} and {MODEL_FILE})")
    if not model_dir.is_dir():
        raise CheckpointError(f"model directory {model_dir} does not exist "
                              f"(run `minibert fetch-teacher` or `minibert convert`)")
    raw = read_json(model_dir / CONFIG_FILE, "load_model")
    if "num_hidden_layers" in raw or "model_type" in raw:
        raise CheckpointError(f"{model_dir} is a Hugging Face checkpoint, not a minibert one: "
                              f"run `minibert convert {model_dir} OUT_DIR` first")
    try:
        config = BertConfig.from_dict(raw)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{model_dir / CONFIG_FILE} is not a valid minibert config: {err}") from None
    tensors = read_safetensors(model_dir / MODEL_FILE)
    if is_quantized(tensors):            # `minibert quantize` output: int8 weights * float32 scales
        tensors = dequantize_tensors(tensors, str(model_dir / MODEL_FILE))
    _check_params(tensors, config, str(model_dir / MODEL_FILE))
    params = {}
    for name in param_shapes(config):
        arr = np.asarray(tensors[name], dtype=np.float32)
        if not np.isfinite(arr).all():
            raise CheckpointError(f"{model_dir / MODEL_FILE}: tensor '{name}' contains NaN or inf")
        params[name] = arr
    return params, config


def load_model_and_tokenizer(model_dir):
    """load_model + Tokenizer.from_dir, and check they fit together.
    Returns (params, config, tokenizer). TokenizerError if the tokenizer is missing, unreadable,
    or can produce ids beyond the embedding table."""
    from minibert.tokenizer import Tokenizer, check_tokenizer_fits

    params, config = load_model(model_dir)
    tokenizer = Tokenizer.from_dir(model_dir)
    check_tokenizer_fits(tokenizer, config)
    return params, config, tokenizer


