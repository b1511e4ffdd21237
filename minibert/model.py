"""The BERT encoder and its heads, as forward/backward pairs composed from layers.py and attention.py.

Shape legend
    B batch, T tokens (T <= P), H hidden, nh heads, hs head size (H = nh*hs), I intermediate (FFN)
    size, V vocab, P max positions, C classes, L layers.

The model is a flat dict of parameters (names in `param_shapes`) plus a `BertConfig`:

    ids (B,T) ─ embeddings_forward ─> h0 (B,T,H) ─ encoder layer 0 ─> h1 ─ ... ─> hL = last (B,T,H)
    last ─ classifier_forward ─> logits (B,C)        last ─ mlm_forward ─> logits (B,T,V)

An encoder layer is BERT's post-LayerNorm block:
    x = LN(x + Dropout(Attention(x)))
    x = LN(x + Dropout(Linear(GELU(Linear(x)))))

Every backward returns FRESH gradient dicts keyed like the parameters; `add_grads` sums two of them
(the masked-LM decoder shares `embeddings.word`, so that weight gets two gradients to add).
`rng=None` means eval mode (no dropout); with a Generator, dropout masks are drawn from it in a
fixed order, so the same seed gives bit-identical results.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .attention import (
    MASK_NEG,
    AttentionCache,
    attention_backward,
    attention_forward,
    attention_packed,
    mask_to_bias,
)
from .layers import (
    DropoutCache,
    EmbeddingCache,
    GeluCache,
    LayerNormCache,
    LinearCache,
    _skip_finite_checks,
    check_finite,
    dropout_backward,
    dropout_forward,
    embedding_backward,
    embedding_forward,
    gelu,
    gelu_backward,
    gelu_forward,
    layernorm_backward,
    layernorm_forward,
    linear_backward,
    linear_forward,
)

# ----------------------------------------------------------------------------------------------
# Configuration and parameters


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

    def __post_init__(self) -> None:
        if self.labels is not None and isinstance(self.labels, tuple):
            self.labels = list(self.labels)
        self.validate()

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

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
        shapes.update({
            p + "attn.qkv.W": (H, 3 * H), p + "attn.qkv.b": (3 * H,),
            p + "attn.out.W": (H, H), p + "attn.out.b": (H,),
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


# ----------------------------------------------------------------------------------------------
# Embeddings: word + position + token type, LayerNorm, dropout


class EmbeddingsCache(NamedTuple):
    word: EmbeddingCache
    token_type: EmbeddingCache
    n_positions: int         # P: rows of the position table (its gradient has this many rows)
    ln: LayerNormCache
    drop: DropoutCache


def embeddings_forward(params, config, ids, token_type_ids, rng=None):
    """Inputs: params, config, ids int (B,T), token_type_ids int (B,T), rng (None = no dropout).
    Position ids are 0..T-1, so the position rows are a slice of the table, not a gather.
    Returns: h (B,T,H), cache."""
    T = ids.shape[1]
    word, word_cache = embedding_forward(ids, params["embeddings.word"])  # (B,T) -> (B,T,H)
    tt, tt_cache = embedding_forward(token_type_ids, params["embeddings.token_type"])  # (B,T) -> (B,T,H)
    x = word + tt                                       # (B,T,H)
    x += params["embeddings.position"][:T]              # (B,T,H) += (T,H), broadcast over B
    y, ln_cache = layernorm_forward(x, params["embeddings.ln.gamma"], params["embeddings.ln.beta"],
                                    config.layer_norm_eps)  # (B,T,H)
    h, drop_cache = dropout_forward(y, config.hidden_dropout, rng, copy=False)  # (B,T,H)
    n_positions = params["embeddings.position"].shape[0]
    return h, EmbeddingsCache(word_cache, tt_cache, n_positions, ln_cache, drop_cache)


def embeddings_backward(dh, cache):
    """Inputs: dh (B,T,H), cache from embeddings_forward.
    Returns: fresh grads dict for the embeddings.* parameters."""
    dy = dropout_backward(dh, cache.drop)                           # (B,T,H)
    dx, dgamma, dbeta = layernorm_backward(dy, cache.ln)            # (B,T,H), (H,), (H,)
    dpos = np.zeros((cache.n_positions, dx.shape[2]), dtype=dx.dtype)  # (P,H)
    dpos[:dx.shape[1]] = dx.sum(axis=0)                             # (B,T,H) -> (T,H) into rows 0..T-1
    return {
        "embeddings.word": embedding_backward(dx, cache.word),        # (V,H)
        "embeddings.position": dpos,
        "embeddings.token_type": embedding_backward(dx, cache.token_type),  # (type_vocab,H)
        "embeddings.ln.gamma": dgamma,
        "embeddings.ln.beta": dbeta,
    }


# ----------------------------------------------------------------------------------------------
# One encoder layer (post-LayerNorm)


class EncoderLayerCache(NamedTuple):
    index: int
    attn: AttentionCache     # attn.scores / attn.probs are what attention distillation reads
    attn_drop: DropoutCache
    attn_ln: LayerNormCache
    ffn_in: LinearCache
    gelu: GeluCache
    ffn_out: LinearCache
    ffn_drop: DropoutCache
    ffn_ln: LayerNormCache


def encoder_layer_forward(params, config, i, x, bias, rng=None):
    """Inputs: params, config, i (layer index), x (B,T,H), bias (B,1,1,T) additive padding bias,
    rng (None = no dropout). Returns: y (B,T,H), cache."""
    p = f"encoder.{i}."
    a, attn_cache = attention_forward(
        x, params[p + "attn.qkv.W"], params[p + "attn.qkv.b"], params[p + "attn.out.W"],
        params[p + "attn.out.b"], bias, config.num_heads, config.attention_dropout, rng)  # (B,T,H)
    a, attn_drop = dropout_forward(a, config.hidden_dropout, rng, copy=False)  # (B,T,H)
    a += x                                    # residual, in place: a is a fresh array nobody keeps
    x1, attn_ln = layernorm_forward(a, params[p + "attn.ln.gamma"], params[p + "attn.ln.beta"],
                                    config.layer_norm_eps)                      # (B,T,H)
    f, ffn_in = linear_forward(x1, params[p + "ffn.in.W"], params[p + "ffn.in.b"])  # (B,T,H) -> (B,T,I)
    f, gelu = gelu_forward(f)                                                   # (B,T,I)
    f, ffn_out = linear_forward(f, params[p + "ffn.out.W"], params[p + "ffn.out.b"])  # (B,T,I) -> (B,T,H)
    f, ffn_drop = dropout_forward(f, config.hidden_dropout, rng, copy=False)  # (B,T,H)
    f += x1                                   # residual, in place (f is fresh too)
    y, ffn_ln = layernorm_forward(f, params[p + "ffn.ln.gamma"], params[p + "ffn.ln.beta"],
                                  config.layer_norm_eps)                        # (B,T,H)
    return y, EncoderLayerCache(i, attn_cache, attn_drop, attn_ln, ffn_in, gelu, ffn_out,
                                ffn_drop, ffn_ln)


def encoder_layer_backward(dy, cache, dscores=None, dprobs=None):
    """Inputs: dy (B,T,H), cache from encoder_layer_forward, optional extra upstream gradients
    dscores / dprobs (B,nh,T,T) on the layer's attention scores / probabilities.
    Returns: dx (B,T,H), fresh grads dict for the encoder.{i}.* parameters.

    Run the forward in reverse. Each residual sum `x + branch(x)` sends its gradient both
    through the branch and straight to x, so the two contributions are added."""
    # BEGIN EXERCISE encoder_layer_backward
    p = f"encoder.{cache.index}."                                   # keys like the parameters
    # 1. FFN LayerNorm: its input was the residual sum s2 = x1 + f
    ds2, dgamma2, dbeta2 = layernorm_backward(dy, cache.ffn_ln)     # (B,T,H)
    # 2. the FFN branch backwards: dropout, out linear, GELU, in linear
    df = dropout_backward(ds2, cache.ffn_drop)                      # (B,T,H)
    df, dW_out, db_out = linear_backward(df, cache.ffn_out)         # (B,T,H) -> (B,T,I)
    df = gelu_backward(df, cache.gelu)                              # (B,T,I)
    dx1, dW_in, db_in = linear_backward(df, cache.ffn_in)           # (B,T,I) -> (B,T,H)
    # 3. x1 fed both the FFN and the sum s2: add the two gradients
    dx1 += ds2                                                      # (B,T,H)
    # 4. attention LayerNorm: its input was s1 = x + a
    ds1, dgamma1, dbeta1 = layernorm_backward(dx1, cache.attn_ln)   # (B,T,H)
    # 5. the attention branch backwards: dropout, then attention (extra dscores/dprobs go in here)
    da = dropout_backward(ds1, cache.attn_drop)                     # (B,T,H)
    dx, dW_qkv, db_qkv, dW_o, db_o = attention_backward(da, cache.attn, dscores, dprobs)  # (B,T,H)
    # 6. x fed both the attention and the sum s1: add the two gradients
    dx += ds1                                                       # (B,T,H)
    # 7. one fresh gradient per parameter of this layer
    grads = {
        p + "attn.qkv.W": dW_qkv, p + "attn.qkv.b": db_qkv,
        p + "attn.out.W": dW_o, p + "attn.out.b": db_o,
        p + "attn.ln.gamma": dgamma1, p + "attn.ln.beta": dbeta1,
        p + "ffn.in.W": dW_in, p + "ffn.in.b": db_in,
        p + "ffn.out.W": dW_out, p + "ffn.out.b": db_out,
        p + "ffn.ln.gamma": dgamma2, p + "ffn.ln.beta": dbeta2,
    }
    return dx, grads
    # END EXERCISE encoder_layer_backward


# ----------------------------------------------------------------------------------------------
# The whole encoder


class BertOutput(NamedTuple):
    last: np.ndarray                        # (B,T,H) output of the last layer
    hidden_states: list | None              # L+1 arrays (B,T,H); index 0 = embedding output
    attentions: list | None                 # L arrays (B,nh,T,T): softmax probs (before dropout)
    scores: list | None                     # L arrays (B,nh,T,T): pre-softmax scores incl. mask bias


class BertCache(NamedTuple):
    embeddings: EmbeddingsCache
    layers: list                            # L EncoderLayerCache
    shape: tuple                            # (B,T,H)
    dtype: np.dtype


def _check_int_array(name, a, shape=None):
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name}: expected an integer array, got dtype {a.dtype}")
    if shape is not None and a.shape != shape:
        raise ValueError(f"{name}: expected shape {shape} (B, T) like ids, got {a.shape}")
    return a


def check_inputs(config, ids, mask=None, token_type_ids=None):
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


def bert_forward(params, config, ids, mask=None, token_type_ids=None, rng=None,
                 output_hidden=False, output_attentions=False, keep_cache=True):
    """Run the embeddings and the L encoder layers.

    Inputs: params (dict), config (BertConfig), ids int (B,T), mask (B,T) 1 = real / 0 = padding
    (None = all real), token_type_ids int (B,T) (None = all 0), rng (np.random.Generator for
    dropout; None = eval mode), output_hidden / output_attentions: also return every layer's
    hidden states / attention probs and scores, keep_cache: False drops every cache as soon
    as it is used (cheap teacher inference; bert_backward is then impossible). keep_cache=False
    in eval mode also skips the padding (see _bert_forward_unpadded): last / hidden_states are
    then exactly 0 at padded positions.
    Returns: BertOutput, cache (None when keep_cache is False)."""
    dtype = check_params(params, config)
    ids, mask, token_type_ids = check_inputs(config, ids, mask, token_type_ids)
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a np.random.Generator or None, got {type(rng).__name__}")
    if not keep_cache and rng is None and not mask.all():
        # inference with padding: the real tokens only, packed (padded outputs are 0)
        return _bert_forward_unpadded(params, config, ids, mask, token_type_ids,
                                      output_hidden, output_attentions), None
    bias = mask_to_bias(mask, dtype)                               # (B,T) -> (B,1,1,T) in dtype
    with _skip_finite_checks():          # no NaN/inf scan of every layer input; one of h at the end
        h, emb_cache = embeddings_forward(params, config, ids, token_type_ids, rng)  # (B,T) -> (B,T,H)
        hidden = [h] if output_hidden else None
        attentions = [] if output_attentions else None
        scores = [] if output_attentions else None
        layer_caches = []
        for i in range(config.num_layers):
            h, layer_cache = encoder_layer_forward(params, config, i, h, bias, rng)  # (B,T,H) -> (B,T,H)
            if output_hidden:
                hidden.append(h)
            if output_attentions:
                attentions.append(layer_cache.attn.probs)          # (B,nh,T,T)
                scores.append(layer_cache.attn.scores)             # (B,nh,T,T)
            if keep_cache:
                layer_caches.append(layer_cache)
    # NaN/inf anywhere inside (a parameter, an overflow) spreads to every later position, through
    # attention (0 * NaN is NaN) and LayerNorm (inf - inf), so this one scan catches it.
    check_finite("last hidden state (NaN/inf in params or overflow)", h)
    out = BertOutput(h, hidden, attentions, scores)
    if not keep_cache:
        return out, None
    return out, BertCache(emb_cache, layer_caches, h.shape, dtype)


def _scatter(rows, idx, B, T):
    """Put packed rows back on the (B,T) grid. Inputs: rows (N,D), idx (N,) flat positions.
    Returns: (B,T,D), zero at every position not in idx."""
    out = np.zeros((B * T, rows.shape[1]), dtype=rows.dtype)       # (B*T,D)
    out[idx] = rows
    return out.reshape(B, T, -1)                                   # (B*T,D) -> (B,T,D)


def _attention_grid(blocks, idx, starts, B, T, fill):
    """Per-sequence (nh,n_b,n_b) attention blocks back on the padded (B,nh,T,T) grid, `fill`
    wherever the query or the key is padding."""
    nh = blocks[0].shape[0]
    grid = np.full((B, nh, T, T), fill, dtype=blocks[0].dtype)     # (B,nh,T,T)
    for b, block in enumerate(blocks):
        pos = idx[starts[b]:starts[b + 1]] - b * T                 # (n_b,) real positions of sequence b
        grid[b][:, pos[:, None], pos[None, :]] = block             # (nh,n_b,n_b) -> real (query, key) pairs
    return grid


def _bert_forward_unpadded(params, config, ids, mask, token_type_ids, output_hidden,
                           output_attentions):
    """bert_forward for inference (eval mode, no caches) that never touches the padding.

    Everything except the attention core works token by token, so it runs on the N real tokens
    packed into rows (N,H), sequence after sequence; the attention core runs per sequence on its
    own rows (attention_packed). The same arithmetic as the padded path for every real token (up
    to matmul rounding), without the padding's work; the outputs are ZERO at padded positions.
    attentions / scores, if asked for, are put back on the (B,nh,T,T) grid: probs 0 and scores
    MASK_NEG wherever the query or the key is padding.
    Inputs: as bert_forward (checked).
    Returns: BertOutput with last / hidden_states (B,T,H) and attentions / scores (B,nh,T,T)."""
    B, T = ids.shape
    H, nh, eps = config.hidden_size, config.num_heads, config.layer_norm_eps
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
            qkv, _ = linear_forward(h, params[p + "attn.qkv.W"], params[p + "attn.qkv.b"])  # (N,H) -> (N,3H)
            ctx, scores, probs = attention_packed(qkv, starts, nh, keep_probs=output_attentions)  # (N,H)
            a, _ = linear_forward(ctx, params[p + "attn.out.W"], params[p + "attn.out.b"])  # (N,H)
            a += h                                                 # residual
            x1, _ = layernorm_forward(a, params[p + "attn.ln.gamma"], params[p + "attn.ln.beta"], eps)
            f, _ = linear_forward(x1, params[p + "ffn.in.W"], params[p + "ffn.in.b"])   # (N,H) -> (N,I)
            f = gelu(f)                                            # (N,I)
            f, _ = linear_forward(f, params[p + "ffn.out.W"], params[p + "ffn.out.b"])  # (N,I) -> (N,H)
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


def _check_grad_list(name, grads, n, shape, dtype):
    """Validate an optional list of extra upstream gradients; returns a list of n (entries may be None)."""
    if grads is None:
        return [None] * n
    if len(grads) != n:
        raise ValueError(f"{name}: expected a list of {n} arrays (or None entries), got {len(grads)}")
    out = []
    for k, g in enumerate(grads):
        if g is not None:
            g = np.asarray(g)
            if g.shape != shape:
                raise ValueError(f"{name}[{k}]: expected shape {shape}, got {g.shape}")
            g = g.astype(dtype, copy=False)
        out.append(g)
    return out


def bert_backward(dlast, cache, dhidden=None, dscores=None, dprobs=None):
    """Backward through the encoder layers and the embeddings.

    Inputs: dlast (B,T,H) gradient on the last hidden state (None = zero), cache from bert_forward,
    dhidden: optional list of L+1 extra gradients on hidden_states (None entries allowed; entry L
    is the same tensor as `last`), dscores / dprobs: optional lists of L extra gradients
    (B,nh,T,T) on each layer's attention scores / probs (from distillation losses).
    Returns: fresh grads dict for every encoder and embedding parameter, in param_shapes order."""
    if cache is None:
        raise ValueError("cache: None; run bert_forward with keep_cache=True to backpropagate")
    B, T, H = cache.shape
    L = len(cache.layers)
    nh = cache.layers[0].attn.probs.shape[1] if L else 0
    dhidden = _check_grad_list("dhidden", dhidden, L + 1, (B, T, H), cache.dtype)
    dscores = _check_grad_list("dscores", dscores, L, (B, nh, T, T), cache.dtype)
    dprobs = _check_grad_list("dprobs", dprobs, L, (B, nh, T, T), cache.dtype)
    if dlast is None:
        g = np.zeros((B, T, H), dtype=cache.dtype)                 # (B,T,H)
    else:
        g = np.asarray(dlast)
        if g.shape != (B, T, H):
            raise ValueError(f"dlast: expected shape {(B, T, H)}, got {g.shape}")
        g = g.astype(cache.dtype, copy=False)
    if dhidden[L] is not None:
        g = g + dhidden[L]                                         # (B,T,H); never mutate the caller's
    layer_grads = [None] * L
    for i in reversed(range(L)):
        g, layer_grads[i] = encoder_layer_backward(g, cache.layers[i], dscores[i], dprobs[i])  # (B,T,H)
        if dhidden[i] is not None:
            g = g + dhidden[i]                                     # (B,T,H)
    grads = embeddings_backward(g, cache.embeddings)
    for lg in layer_grads:
        grads.update(lg)
    return grads


# ----------------------------------------------------------------------------------------------
# Heads


class ClassifierCache(NamedTuple):
    last_shape: tuple           # (B,T,H)
    pooler: LinearCache | None  # None when config.pooler is False
    pooled: np.ndarray | None   # (B,H) tanh output, kept for its derivative 1 - pooled^2
    drop: DropoutCache
    classifier: LinearCache


def classifier_forward(params, config, last, rng=None):
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


def classifier_backward(dlogits, cache):
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


def mlm_forward(params, config, last):
    """Masked-LM head: linear -> GELU -> LayerNorm -> decoder tied to embeddings.word, + mlm.bias.
    Inputs: last (B,T,H). Returns: logits (B,T,V), cache."""
    if not config.mlm_head:
        raise ValueError("mlm_forward: config.mlm_head is false (this model has no MLM head)")
    t, tr_cache = linear_forward(last, params["mlm.transform.W"], params["mlm.transform.b"])  # (B,T,H)
    t, gelu_cache = gelu_forward(t)                                                   # (B,T,H)
    t, ln_cache = layernorm_forward(t, params["mlm.ln.gamma"], params["mlm.ln.beta"],
                                    config.layer_norm_eps)                            # (B,T,H)
    logits, dec_cache = linear_forward(t, params["embeddings.word"].T, params["mlm.bias"])  # (B,T,H) @ (H,V) -> (B,T,V)
    return logits, MLMCache(tr_cache, gelu_cache, ln_cache, dec_cache)


def mlm_backward(dlogits, cache):
    """Inputs: dlogits (B,T,V), cache from mlm_forward.
    Returns: dlast (B,T,H), fresh grads dict (mlm.* and embeddings.word for the tied decoder;
    add it to the encoder's embeddings.word gradient with add_grads)."""
    dt, dW_dec, db_dec = linear_backward(dlogits, cache.decoder)      # (B,T,V) -> (B,T,H), (H,V), (V,)
    dt, dgamma, dbeta = layernorm_backward(dt, cache.ln)              # (B,T,H)
    dt = gelu_backward(dt, cache.gelu)                                # (B,T,H)
    dlast, dW_tr, db_tr = linear_backward(dt, cache.transform)        # (B,T,H)
    grads = {
        "embeddings.word": dW_dec.T,                                  # (H,V) -> (V,H)
        "mlm.transform.W": dW_tr, "mlm.transform.b": db_tr,
        "mlm.ln.gamma": dgamma, "mlm.ln.beta": dbeta,
        "mlm.bias": db_dec,
    }
    return dlast, grads


def mean_pool(last, mask):
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


def l2_normalize(x, eps=1e-12):
    """x / ||x|| along the last axis (a zero vector stays zero). Keeps x's dtype."""
    x = np.asarray(x)
    norm = np.sqrt((x * x).sum(axis=-1, keepdims=True))                # (..., 1)
    return x / np.maximum(norm, x.dtype.type(eps))


# ----------------------------------------------------------------------------------------------
# Helpers for trainers


class ClassifyCache(NamedTuple):
    bert: BertCache
    head: ClassifierCache


def classify_forward(params, config, ids, mask, token_type_ids=None, rng=None,
                     output_hidden=False, output_attentions=False, keep_cache=True):
    """bert_forward then classifier_forward (the encoder draws its dropout masks first, then the head).
    Returns: logits (B,C), BertOutput, cache (None when keep_cache is False)."""
    out, bert_cache = bert_forward(params, config, ids, mask, token_type_ids, rng,
                                   output_hidden, output_attentions, keep_cache)
    logits, head_cache = classifier_forward(params, config, out.last, rng)   # (B,T,H) -> (B,C)
    if not keep_cache:
        return logits, out, None
    return logits, out, ClassifyCache(bert_cache, head_cache)


def classify_backward(dlogits, cache, dhidden=None, dscores=None, dprobs=None):
    """Inputs: dlogits (B,C), cache from classify_forward, optional extra gradients as in bert_backward.
    Returns: fresh grads dict with every parameter of a classification model."""
    if cache is None:
        raise ValueError("cache: None; run classify_forward with keep_cache=True to backpropagate")
    dlast, head_grads = classifier_backward(dlogits, cache.head)      # (B,C) -> (B,T,H)
    grads = bert_backward(dlast, cache.bert, dhidden, dscores, dprobs)
    grads.update(head_grads)
    return grads


def add_grads(into, more):
    """Sum gradient dicts (e.g. the tied embeddings.word gets one gradient from the encoder and
    one from the MLM decoder). Inputs: into, more: dicts name -> array.
    Returns: `into`, modified: shared keys hold a new array into[k] + more[k]; keys only in
    `more` are inserted as they are (not copied)."""
    for k, v in more.items():
        if k in into:
            if into[k].shape != v.shape:
                raise ValueError(f"add_grads: {k!r} has shapes {into[k].shape} and {v.shape}")
            into[k] = into[k] + v
        else:
            into[k] = v
    return into
