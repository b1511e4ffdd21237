"""The BERT configuration and its parameters: sizes, THE list of parameter names, random init, and
the checks that parameters and inputs (ids, mask, token types) fit a config.

Shape legend: V vocab, H hidden, I intermediate (FFN) size, P max positions, C classes.
Parameters are a flat dict name -> array, in `param_shapes` order, linear weights stored (in, out).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

@dataclass
class BertConfig:
    """Sizes and switches of a BERT model. Checked on construction (ValueError when inconsistent)."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    max_position: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    num_labels: int = 0            # 0 = no classifier head
    pooler: bool = True            # has pooler.W/pooler.b (the classifier reads the pooled [CLS])
    mlm_head: bool = False         # has mlm.* (decoder tied to embeddings.word)
    pad_token_id: int = 0
    initializer_range: float = 0.02
    labels: list[str] | None = None  # class names, len == num_labels when given
    pruned_heads: dict[str, list[int]] | None = None  # {"layer": [original head indices removed]}
    activation_quant: str = "none"   # "none" | "dynamic" | "static": int8 linear inputs (inference)
    activation_scales: dict[str, float] | None = None  # "encoder.{i}.attn.qkv" ... -> scale (static)

    def __post_init__(self) -> None:
        if self.labels is not None and isinstance(self.labels, tuple):
            self.labels = list(self.labels)
        self.validate()

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    def heads_in_layer(self, i: int) -> int:
        """Attention heads of layer i: num_heads minus the heads pruned from it (prune.py)."""
        return self.num_heads - len((self.pruned_heads or {}).get(str(i), ()))

    def validate(self) -> None:
        """Raise ValueError naming the first field that is missing, mistyped or inconsistent."""
        minimum = {"vocab_size": 1, "hidden_size": 1, "num_layers": 1, "num_heads": 1,
                   "intermediate_size": 1, "max_position": 1, "type_vocab_size": 1,
                   "num_labels": 0, "pad_token_id": 0}
        for name, low in minimum.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"BertConfig.{name}: expected an int, got {v!r}")
            if v < low:
                raise ValueError(f"BertConfig.{name}: expected >= {low}, got {v}")
        for name in ("pooler", "mlm_head"):
            v = getattr(self, name)
            if not isinstance(v, (bool, np.bool_)):
                raise ValueError(f"BertConfig.{name}: expected true/false, got {v!r}")
        for name, low, high in (("hidden_dropout", 0.0, 1.0), ("attention_dropout", 0.0, 1.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not low <= v < high:
                raise ValueError(f"BertConfig.{name}: expected a probability in [0, 1), got {v!r}")
        for name in ("layer_norm_eps", "initializer_range"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and np.isfinite(v)):
                raise ValueError(f"BertConfig.{name}: expected a positive number, got {v!r}")
        if self.hidden_size % self.num_heads != 0:
            raise ValueError(f"BertConfig: hidden_size={self.hidden_size} is not divisible by "
                             f"num_heads={self.num_heads}")
        if self.pad_token_id >= self.vocab_size:
            raise ValueError(f"BertConfig.pad_token_id={self.pad_token_id} is not < "
                             f"vocab_size={self.vocab_size}")
        self.pruned_heads = _checked_pruned_heads(self.pruned_heads, self.num_layers, self.num_heads)
        _check_activation_quant(self.activation_quant, self.activation_scales, self.num_layers)
        if self.labels is not None:
            if not isinstance(self.labels, list) or not all(isinstance(s, str) for s in self.labels):
                raise ValueError(f"BertConfig.labels: expected a list of strings, got {self.labels!r}")
            if len(self.labels) != self.num_labels:
                raise ValueError(f"BertConfig.labels has {len(self.labels)} names but "
                                 f"num_labels={self.num_labels}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (a copy) that `from_dict` turns back into an equal config."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BertConfig":
        """Inputs: d, a dict such as json.load(config.json). Unknown keys are an error (a typo
        would otherwise silently fall back to a default); missing keys take the defaults."""
        if not isinstance(d, dict):
            raise ValueError(f"BertConfig.from_dict: expected a dict, got {type(d).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"BertConfig.from_dict: unknown key(s) {unknown}; known keys: {known}")
        return cls(**d)


def _checked_pruned_heads(pruned, num_layers: int, num_heads: int):
    """pruned_heads normalised ({"layer": sorted heads}, empty lists dropped, None if nothing is
    pruned); ValueError for a layer or head that does not exist, a repeat, or a layer left empty."""
    if pruned is None:
        return None
    if not isinstance(pruned, dict):
        raise ValueError(f"BertConfig.pruned_heads: expected {{layer: [heads]}}, got {pruned!r}")
    clean = {}
    for layer, heads in pruned.items():
        if not str(layer).isdigit() or not int(layer) < num_layers:
            raise ValueError(f"BertConfig.pruned_heads: layer {layer!r} does not exist (num_layers={num_layers})")
        if not isinstance(heads, (list, tuple)) or not all(
                isinstance(h, (int, np.integer)) and not isinstance(h, bool) for h in heads):
            raise ValueError(f"BertConfig.pruned_heads[{layer}]: expected a list of head indices, got {heads!r}")
        if len(set(heads)) != len(heads):
            raise ValueError(f"BertConfig.pruned_heads[{layer}]: a head is listed twice: {list(heads)}")
        if any(not 0 <= h < num_heads for h in heads):
            raise ValueError(f"BertConfig.pruned_heads[{layer}]: head indices must be in [0, {num_heads}), "
                             f"got {list(heads)}")
        if len(heads) == num_heads:
            raise ValueError(f"BertConfig.pruned_heads[{layer}]: all {num_heads} heads removed; a layer "
                             f"keeps at least one")
        if heads:
            clean[str(int(layer))] = sorted(int(h) for h in heads)
    return dict(sorted(clean.items(), key=lambda kv: int(kv[0]))) or None


def _check_activation_quant(mode, scales, num_layers: int) -> None:
    """ValueError unless mode is none/dynamic/static and static has one positive scale per
    encoder linear input (names as quantize.linear_inputs)."""
    modes = ("none", "dynamic", "static")
    if mode not in modes:
        raise ValueError(f"BertConfig.activation_quant: expected one of {modes}, got {mode!r}")
    if mode != "static":
        if scales is not None:
            raise ValueError("BertConfig.activation_scales: only static activation quantization has scales")
        return
    want = [f"encoder.{i}.{n}" for i in range(num_layers) for n in ("attn.qkv", "attn.out", "ffn.in", "ffn.out")]
    got = scales if isinstance(scales, dict) else {}
    missing, unknown = [n for n in want if n not in got], sorted(set(got) - set(want))
    if missing or unknown:
        raise ValueError(f"BertConfig.activation_scales: expected one scale per encoder linear input "
                         f"({want[0]}, ...); missing {missing[:3]}, unknown {unknown[:3]}")
    bad = [n for n, v in got.items() if isinstance(v, bool) or not isinstance(v, (int, float))
           or not (v > 0 and np.isfinite(v))]
    if bad:
        raise ValueError(f"BertConfig.activation_scales: {bad[:3]} must be positive numbers")


def param_shapes(config: BertConfig) -> dict[str, tuple[int, ...]]:
    """THE list of parameter names, in order, with their shapes (linear weights stored (in, out))."""
    V, H, I, P = config.vocab_size, config.hidden_size, config.intermediate_size, config.max_position
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.word": (V, H),
        "embeddings.position": (P, H),
        "embeddings.token_type": (config.type_vocab_size, H),
        "embeddings.ln.gamma": (H,),
        "embeddings.ln.beta": (H,),
    }
    for i in range(config.num_layers):
        p = f"encoder.{i}."
        A = config.heads_in_layer(i) * config.head_size    # attention width: H unless heads were pruned
        shapes.update({
            p + "attn.qkv.W": (H, 3 * A), p + "attn.qkv.b": (3 * A,),
            p + "attn.out.W": (A, H), p + "attn.out.b": (H,),
            p + "attn.ln.gamma": (H,), p + "attn.ln.beta": (H,),
            p + "ffn.in.W": (H, I), p + "ffn.in.b": (I,),
            p + "ffn.out.W": (I, H), p + "ffn.out.b": (H,),
            p + "ffn.ln.gamma": (H,), p + "ffn.ln.beta": (H,),
        })
    if config.pooler:
        shapes.update({"pooler.W": (H, H), "pooler.b": (H,)})
    if config.num_labels > 0:
        shapes.update({"classifier.W": (H, config.num_labels), "classifier.b": (config.num_labels,)})
    if config.mlm_head:
        shapes.update({"mlm.transform.W": (H, H), "mlm.transform.b": (H,),
                       "mlm.ln.gamma": (H,), "mlm.ln.beta": (H,), "mlm.bias": (V,)})
    return shapes


def init_params(config: BertConfig, rng: np.random.Generator, dtype=np.float32) -> dict[str, np.ndarray]:
    """Fresh random parameters like BERT's: weights ~ N(0, initializer_range), biases 0,
    LayerNorm gamma 1 and beta 0. Inputs: config, rng (np.random.Generator), dtype (a float type).
    Returns: dict name -> array of `dtype`, in `param_shapes` order."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a np.random.Generator, got {type(rng).__name__}")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"dtype: expected a floating type such as float32, got {dtype}")
    params = {}
    for name, shape in param_shapes(config).items():
        if name.endswith(".gamma"):
            params[name] = np.ones(shape, dtype)
        elif name.endswith((".beta", ".b", ".bias")):
            params[name] = np.zeros(shape, dtype)
        else:
            params[name] = rng.normal(0.0, config.initializer_range, size=shape).astype(dtype)
    return params


def count_params(params: dict[str, np.ndarray]) -> int:
    """Total number of scalars in a parameter dict (the tied MLM decoder adds none)."""
    return int(sum(np.asarray(v).size for v in params.values()))


def check_param_shapes(params: dict, config: BertConfig) -> None:
    """Raise ValueError on missing or extra keys or wrong shapes (what a checkpoint must match)."""
    if not isinstance(params, dict):
        raise ValueError(f"params: expected a dict of arrays, got {type(params).__name__}")
    shapes = param_shapes(config)
    missing = [k for k in shapes if k not in params]
    extra = [k for k in params if k not in shapes]
    if missing:
        raise ValueError(f"params: missing key(s) {missing[:5]}{' ...' if len(missing) > 5 else ''} "
                         f"({len(missing)} missing) for this config")
    if extra:
        raise ValueError(f"params: unexpected key(s) {extra[:5]}{' ...' if len(extra) > 5 else ''} "
                         f"not in this config's parameters")
    for name, shape in shapes.items():
        if np.shape(params[name]) != shape:
            raise ValueError(f"params[{name!r}]: expected shape {shape}, got {np.shape(params[name])}")


def check_params(params: dict[str, np.ndarray], config: BertConfig) -> np.dtype:
    """Raise ValueError on missing or extra keys, wrong shapes, or mixed/non-float dtypes.
    Returns the common dtype of the parameters."""
    check_param_shapes(params, config)
    dtype = None
    for name in param_shapes(config):
        p = params[name]
        if not isinstance(p, np.ndarray):
            raise ValueError(f"params[{name!r}]: expected a numpy array, got {type(p).__name__}")
        if p.dtype.kind != "f":
            raise ValueError(f"params[{name!r}]: expected a float array, got dtype {p.dtype}")
        if dtype is None:
            dtype = p.dtype
        elif p.dtype != dtype:
            raise ValueError(f"params[{name!r}]: dtype {p.dtype} differs from the other "
                             f"parameters' {dtype} (mixing them would silently promote)")
    return dtype


def _check_int_array(name, a, shape=None):
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name}: expected an integer array, got dtype {a.dtype}")
    if shape is not None and a.shape != shape:
        raise ValueError(f"{name}: expected shape {shape} (B, T) like ids, got {a.shape}")
    return a


def check_inputs(config: BertConfig, ids, mask=None, token_type_ids=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate the model's inputs; returns (ids, mask, token_type_ids) as arrays, with
    mask None -> all ones and token_type_ids None -> all zeros. Raises ValueError naming the
    argument and the shapes/values at fault."""
    ids = _check_int_array("ids", ids)
    if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(f"ids: expected a non-empty shape (B, T), got {ids.shape}")
    B, T = ids.shape
    if T > config.max_position:
        raise ValueError(f"ids: sequence length T={T} exceeds the position table size "
                         f"max_position={config.max_position}; truncate the input")
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= config.vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(f"ids: token id {bad} out of range [0, {config.vocab_size}) "
                         f"(vocab_size={config.vocab_size})")
    if mask is None:
        mask = np.ones((B, T), dtype=np.int64)
    else:
        mask = np.asarray(mask)
        if mask.shape != (B, T):
            raise ValueError(f"mask: expected shape {(B, T)} like ids, got {mask.shape}")
        if not np.all((mask == 0) | (mask == 1)):
            raise ValueError("mask: expected only 0 (padding) and 1 (real token) values")
    if token_type_ids is None:
        token_type_ids = np.zeros((B, T), dtype=np.int64)
    else:
        token_type_ids = _check_int_array("token_type_ids", token_type_ids, (B, T))
        lo, hi = int(token_type_ids.min()), int(token_type_ids.max())
        if lo < 0 or hi >= config.type_vocab_size:
            raise ValueError(f"token_type_ids: value {lo if lo < 0 else hi} out of range "
                             f"[0, {config.type_vocab_size}) (type_vocab_size)")
    return ids, mask, token_type_ids
