"""The packed TRAINING path: model.bert_forward (dropout, caches) and model.bert_backward on the real
tokens only.

Shape legend: B batch, T tokens, H hidden, nh heads (per layer: pruning), hs head size, A = nh*hs
the attention width, I intermediate, P max positions, N real (unpadded) tokens of a batch.

The N real tokens of a batch are rows (N,H), sequence after sequence (`idx`: their flat positions
on the (B,T) grid; sequence b is rows starts[b]:starts[b+1]). Everything except the attention core
works token by token, so it runs on these rows; the attention core runs per sequence on its own
rows (fast_attention.attention_packed / attention_packed_backward). For every real token this is
the padded path's arithmetic up to matmul rounding, without the padding's work (the bench batch
is 35% padding). tests/test_fast.py and tests/test_fast_packed.py hold it equal to model.py.

The same dropout masks as the reference: every mask is drawn with exactly the rng calls
layers.dropout_forward makes on the padded grid, in the same order and shapes (embeddings (B,T,H);
per layer: attention probs (B,nh,T,T), attention output (B,T,H), FFN output (B,T,H)), and only the
real rows / real (query, key) blocks of the draw are used. So a seed gives the same masks, and the
same training run, on either path. (Drawing numbers nobody uses costs ~2-3 ns each: see
docs/BENCHMARKS.md.)

What the padded path does that this one cannot: send gradient through padded positions. With
upstream gradients that are 0 at padded positions (every loss here masks them; the classifier
reads [CLS] = position 0, real), the padded backward's gradient is exactly 0 there too, so the two
agree. Extra gradients given at padded entries are ignored here (documented, not checked: a scan
would cost a pass over every grid). fast_model.bert_forward takes this path only when every row's
position 0 is real.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from minibert.attention import MASK_NEG
from minibert.config import BertConfig
from minibert.fast_attention import attention_packed, attention_packed_backward
from minibert.fast_layers import gelu_backward, gelu_forward
from minibert.layers import (
    EmbeddingCache,
    LayerNormCache,
    LinearCache,
    GeluCache,
    _skip_finite_checks,
    check_finite,
    embedding_backward,
    layernorm_backward,
    layernorm_forward,
    linear_backward,
    linear_forward,
)
from minibert.model import BertOutput, _check_grad_list

__all__ = ["bert_forward", "bert_backward", "PackedCache"]


class Drop(NamedTuple):
    """A dropout mask kept small: keep (bool) and scale 1/(1-p); x * mask = (x * scale) * keep, the
    reference's x * (keep * scale) exactly (a quarter of a float32 mask's memory)."""
    keep: np.ndarray             # (N,H) bool
    scale: np.floating           # 1/(1-p) in the model's dtype


class PackedEmbeddingsCache(NamedTuple):
    word: EmbeddingCache         # ids (N,) of the real tokens
    token_type: EmbeddingCache   # token types (N,)
    n_positions: int             # P: rows of the position table (its gradient has this many rows)
    ln: LayerNormCache           # (N,H)
    drop: Drop | None            # (N,H) dropout mask; None = no dropout


class PackedLayerCache(NamedTuple):
    index: int
    n_heads: int
    qkv: LinearCache             # x (N,H), W_qkv (H,3A)
    qkv_out: np.ndarray          # (N,3A) q (scaled by 1/sqrt(hs)) | k | v of the real tokens
    probs: list                  # B arrays (nh,n_b,n_b): softmax, before dropout
    attn_drop: list | None       # B dropout masks (nh,n_b,n_b) on the probs, or None
    out: LinearCache             # ctx (N,A), W_o (A,H)
    out_drop: Drop | None        # (N,H) dropout mask on the attention output
    attn_ln: LayerNormCache
    ffn_in: LinearCache          # x1 (N,H), W (H,I)
    gelu: GeluCache              # (N,I)
    ffn_out: LinearCache         # x None (it is gelu.x * gelu.cdf, recomputed: one (N,I) less), W (I,H)
    ffn_drop: Drop | None        # (N,H) dropout mask on the FFN output
    ffn_ln: LayerNormCache


class PackedCache(NamedTuple):
    """What bert_backward needs: the packing (idx, starts, positions) and each layer's cache."""
    idx: np.ndarray              # (N,) flat positions of the real tokens on the (B,T) grid
    starts: np.ndarray           # (B+1,) sequence b = rows starts[b]:starts[b+1]
    positions: list              # B arrays (n_b,): the real positions of sequence b
    embeddings: PackedEmbeddingsCache
    layers: list                 # L PackedLayerCache
    shape: tuple                 # (B,T,H)
    dtype: np.dtype


# ----------------------------------------------------------------------------------------------
# Packing: grid <-> rows, and the reference's dropout draws


def _pack(mask: np.ndarray):
    """Inputs: mask (B,T) 0/1. Returns: idx (N,) flat positions of the real tokens, starts (B+1,),
    positions: B arrays (n_b,) of each sequence's real positions."""
    B, T = mask.shape
    idx = np.flatnonzero(mask.reshape(-1))                         # (N,)
    starts = np.searchsorted(idx, np.arange(B + 1) * T)            # (B+1,)
    positions = [idx[starts[b]:starts[b + 1]] - b * T for b in range(B)]
    return idx, starts, positions


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


def _block(grid_b, pos):
    """grid_b (nh,T,T') at the real (query, key) pairs of one sequence -> (nh,n,n): a view when
    the positions are one run (right padding), else a gather."""
    n = len(pos)
    if n and pos[-1] - pos[0] == n - 1:
        return grid_b[:, pos[0]:pos[0] + n, pos[0]:pos[0] + n]
    return grid_b[:, pos[:, None], pos[None, :]]


def _rows(grid, idx):
    """(B,T,D) grid -> (N,D) rows at the flat positions idx (a copy)."""
    return grid.reshape(-1, grid.shape[-1])[idx]


def _draw(rng, p, shape, dt):
    """The uniforms layers.dropout_forward draws for a tensor of `shape`: the same rng call, or
    None when that dropout is off (no rng, or p = 0: the reference draws nothing then either)."""
    if rng is None or p == 0:
        return None
    return rng.random(shape, dtype=dt)


def _keep(u, p, dt):
    """The dropout mask from uniforms u, as layers.dropout_forward: 0 or 1/(1-p), in dt."""
    return ((u >= dt(p)) * dt(1.0 / (1.0 - p))).astype(dt, copy=False)


def _drop_rows(rng, p, shape, idx, dt):
    """The reference's dropout draw for a (B,T,H) tensor, kept at the real rows: Drop or None."""
    u = _draw(rng, p, shape, dt)                                   # (B,T,H)
    return None if u is None else Drop(_rows(u, idx) >= dt(p), dt(1.0 / (1.0 - p)))   # (N,H)


def _dropped(x, drop):
    """x * mask in place (x is ours); x itself without dropout."""
    if drop is not None:
        x *= drop.scale
        x *= drop.keep
    return x


def _dropped_copy(dy, drop):
    """dy * mask, fresh (dy is the caller's); dy itself without dropout (callers only read it)."""
    if drop is None:
        return dy
    dx = dy * drop.scale
    dx *= drop.keep
    return dx


# ----------------------------------------------------------------------------------------------
# Forward


def _embeddings_forward(params, config, ids, token_type_ids, idx, rng, dt):
    """model.embeddings_forward on the real rows. Returns: h (N,H), PackedEmbeddingsCache."""
    T, H = ids.shape[1], config.hidden_size
    word_ids = ids.reshape(-1)[idx]                                # (N,)
    type_ids = token_type_ids.reshape(-1)[idx]                     # (N,)
    x = params["embeddings.word"][word_ids]                        # (N,H)
    x += params["embeddings.token_type"][type_ids]                 # (N,H)
    x += params["embeddings.position"][idx % T]                    # (N,H): position = column
    y, ln = layernorm_forward(x, params["embeddings.ln.gamma"], params["embeddings.ln.beta"],
                              config.layer_norm_eps)               # (N,H)
    drop = _drop_rows(rng, config.hidden_dropout, (ids.shape[0], T, H), idx, dt)   # (N,H), as the reference
    y = _dropped(y, drop)
    cache = PackedEmbeddingsCache(EmbeddingCache(word_ids, params["embeddings.word"].shape[0]),
                                  EmbeddingCache(type_ids, params["embeddings.token_type"].shape[0]),
                                  params["embeddings.position"].shape[0], ln, drop)
    return y, cache


def _layer_forward(params, config, i, h, idx, starts, positions, shape, rng, keep_scores):
    """model.encoder_layer_forward on the real rows. Inputs: h (N,H); shape (B,T,H).
    Returns: y (N,H), PackedLayerCache, scores (B arrays (nh,n_b,n_b)) when keep_scores."""
    p = f"encoder.{i}."
    B, T, H = shape
    dt = h.dtype.type
    nh = config.heads_in_layer(i)
    qkv, qkv_cache = linear_forward(h, params[p + "attn.qkv.W"], params[p + "attn.qkv.b"])  # (N,3A)
    u = _draw(rng, config.attention_dropout, (B, nh, T, T), dt)   # (B,nh,T,T), as the reference
    attn_drop = None if u is None else [_keep(_block(u[b], pos), config.attention_dropout, dt)
                                        for b, pos in enumerate(positions)]   # B x (nh,n_b,n_b)
    del u
    ctx, scores, probs = attention_packed(qkv, starts, nh, keep_probs=True, drop=attn_drop)  # (N,A)
    a, out_cache = linear_forward(ctx, params[p + "attn.out.W"], params[p + "attn.out.b"])  # (N,H)
    out_drop = _drop_rows(rng, config.hidden_dropout, shape, idx, dt)              # (N,H)
    a = _dropped(a, out_drop)
    a += h                                                         # residual
    x1, attn_ln = layernorm_forward(a, params[p + "attn.ln.gamma"], params[p + "attn.ln.beta"],
                                    config.layer_norm_eps)         # (N,H)
    f, ffn_in = linear_forward(x1, params[p + "ffn.in.W"], params[p + "ffn.in.b"])      # (N,I)
    f, gelu = gelu_forward(f)                                      # (N,I)
    f, ffn_out = linear_forward(f, params[p + "ffn.out.W"], params[p + "ffn.out.b"])    # (N,H)
    ffn_out = LinearCache(None, ffn_out.W)                         # its x: recomputed from gelu's cache
    ffn_drop = _drop_rows(rng, config.hidden_dropout, shape, idx, dt)              # (N,H)
    f = _dropped(f, ffn_drop)
    f += x1                                                        # residual
    y, ffn_ln = layernorm_forward(f, params[p + "ffn.ln.gamma"], params[p + "ffn.ln.beta"],
                                  config.layer_norm_eps)           # (N,H)
    cache = PackedLayerCache(i, nh, qkv_cache, qkv, probs, attn_drop, out_cache, out_drop, attn_ln,
                             ffn_in, gelu, ffn_out, ffn_drop, ffn_ln)
    return y, cache, scores if keep_scores else None


def bert_forward(params: dict, config: BertConfig, ids: np.ndarray, mask: np.ndarray,
                 token_type_ids: np.ndarray, rng: np.random.Generator | None = None,
                 output_hidden: bool = False, output_attentions: bool = False,
                 keep_cache: bool = True) -> tuple[BertOutput, PackedCache | None]:
    """model.bert_forward (dropout, caches) on the real tokens only.

    Inputs: as model.bert_forward, ALREADY CHECKED (fast_model.bert_forward checks them and calls
    this): ids / mask / token_type_ids int (B,T), rng a Generator or None (eval mode).
    Returns: BertOutput with last / hidden_states (B,T,H), exactly 0 at padded positions, and
    attentions / scores (B,nh,T,T) with probs 0 and scores MASK_NEG wherever the query or the key
    is padding; the PackedCache for bert_backward (None when keep_cache is False)."""
    B, T = ids.shape
    dt = params["embeddings.word"].dtype.type
    idx, starts, positions = _pack(mask)
    shape = (B, T, config.hidden_size)
    with _skip_finite_checks():          # as model.bert_forward: one scan, of the output
        h, emb_cache = _embeddings_forward(params, config, ids, token_type_ids, idx, rng, dt)  # (N,H)
        hidden = [h] if output_hidden else None
        attentions = [] if output_attentions else None
        scores_all = [] if output_attentions else None
        layer_caches = []
        for i in range(config.num_layers):
            h, cache, scores = _layer_forward(params, config, i, h, idx, starts, positions, shape,
                                              rng, output_attentions)            # (N,H)
            if output_hidden:
                hidden.append(h)
            if output_attentions:
                attentions.append(_attention_grid(cache.probs, idx, starts, B, T, 0))
                scores_all.append(_attention_grid(scores, idx, starts, B, T, MASK_NEG))
            if keep_cache:
                layer_caches.append(cache)
    check_finite("last hidden state (NaN/inf in params or overflow)", h)
    last = _scatter(h, idx, B, T)                                   # (N,H) -> (B,T,H), zero at padding
    if output_hidden:
        hidden = [_scatter(hj, idx, B, T) for hj in hidden[:-1]] + [last]   # L+1 arrays (B,T,H)
    out = BertOutput(last, hidden, attentions, scores_all)
    if not keep_cache:
        return out, None
    return out, PackedCache(idx, starts, positions, emb_cache, layer_caches, shape, np.dtype(dt))


# ----------------------------------------------------------------------------------------------
# Backward


def _layer_backward(dy, c: PackedLayerCache, starts, dscores, dprobs, dvalues):
    """model.encoder_layer_backward on the real rows. Inputs: dy (N,H), the layer's cache, extra
    gradients already cut into per-sequence blocks (or None). Returns: dx (N,H), grads dict."""
    p = f"encoder.{c.index}."
    ds2, dgamma2, dbeta2 = layernorm_backward(dy, c.ffn_ln)        # (N,H)
    df = _dropped_copy(ds2, c.ffn_drop)                            # (N,H)
    g = c.gelu.x * c.gelu.cdf                                      # (N,I) the GELU's output, as it was
    df, dW_out, db_out = linear_backward(df, LinearCache(g, c.ffn_out.W))   # (N,H) -> (N,I)
    del g
    df = gelu_backward(df, c.gelu)                                 # (N,I)
    dx1, dW_in, db_in = linear_backward(df, c.ffn_in)              # (N,I) -> (N,H)
    dx1 += ds2                                                     # x1 fed the FFN and the sum
    ds1, dgamma1, dbeta1 = layernorm_backward(dx1, c.attn_ln)      # (N,H)
    da = _dropped_copy(ds1, c.out_drop)                            # (N,H)
    dctx, dW_o, db_o = linear_backward(da, c.out)                  # (N,H) -> (N,A)
    dqkv = attention_packed_backward(dctx, c.qkv_out, starts, c.n_heads, c.probs, c.attn_drop,
                                     dscores, dprobs, dvalues)     # (N,3A)
    dx, dW_qkv, db_qkv = linear_backward(dqkv, c.qkv)              # (N,3A) -> (N,H)
    dx += ds1                                                      # x fed attention and the sum
    return dx, {
        p + "attn.qkv.W": dW_qkv, p + "attn.qkv.b": db_qkv,
        p + "attn.out.W": dW_o, p + "attn.out.b": db_o,
        p + "attn.ln.gamma": dgamma1, p + "attn.ln.beta": dbeta1,
        p + "ffn.in.W": dW_in, p + "ffn.in.b": db_in,
        p + "ffn.out.W": dW_out, p + "ffn.out.b": db_out,
        p + "ffn.ln.gamma": dgamma2, p + "ffn.ln.beta": dbeta2,
    }


def _embeddings_backward(dh, c: PackedEmbeddingsCache, idx, B, T):
    """model.embeddings_backward on the real rows. Inputs: dh (N,H). Returns: grads dict."""
    dy = _dropped_copy(dh, c.drop)                                 # (N,H)
    dx, dgamma, dbeta = layernorm_backward(dy, c.ln)               # (N,H)
    dpos = np.zeros((c.n_positions, dx.shape[1]), dtype=dx.dtype)  # (P,H)
    dpos[:T] = _scatter(dx, idx, B, T).sum(axis=0)                  # (B,T,H) -> (T,H), rows 0..T-1
    return {
        "embeddings.word": embedding_backward(dx, c.word),        # (V,H); repeated ids accumulate
        "embeddings.position": dpos,
        "embeddings.token_type": embedding_backward(dx, c.token_type),
        "embeddings.ln.gamma": dgamma,
        "embeddings.ln.beta": dbeta,
    }


def _blocks(grid, positions):
    """(B,nh,T,T) grid, or None -> B blocks (nh,n_b,n_b) at the real (query, key) pairs."""
    return None if grid is None else [_block(grid[b], pos) for b, pos in enumerate(positions)]


def bert_backward(dlast: np.ndarray | None, cache: PackedCache, dhidden: list | None = None,
                  dscores: list | None = None, dprobs: list | None = None,
                  dvalues: list | None = None) -> dict:
    """model.bert_backward for a PackedCache (from bert_forward above).

    Inputs: as model.bert_backward, on the padded grid: dlast (B,T,H) or None, dhidden L+1 entries
    (B,T,H) or None, dscores / dprobs L entries (B,nh,T,T), dvalues L entries (B,nh,T,hs); only
    their real rows / real (query, key) pairs are read (see the module docstring).
    Returns: fresh grads dict for every encoder and embedding parameter, in param_shapes order."""
    if not isinstance(cache, PackedCache):
        raise ValueError(f"cache: expected the PackedCache of fast_packed.bert_forward, got "
                         f"{type(cache).__name__} (a padded BertCache backpropagates with "
                         f"model.bert_backward; fast_model.bert_backward takes either)")
    B, T, H = cache.shape
    L = len(cache.layers)
    grids = [(B, c.n_heads, T, T) for c in cache.layers]
    values = [(B, c.n_heads, T, c.qkv_out.shape[1] // 3 // c.n_heads) for c in cache.layers]
    dhidden = _check_grad_list("dhidden", dhidden, L + 1, (B, T, H), cache.dtype)
    dscores = _check_grad_list("dscores", dscores, L, grids, cache.dtype)
    dprobs = _check_grad_list("dprobs", dprobs, L, grids, cache.dtype)
    dvalues = _check_grad_list("dvalues", dvalues, L, values, cache.dtype)
    idx = cache.idx
    if dlast is None:
        g = np.zeros((len(idx), H), dtype=cache.dtype)             # (N,H)
    else:
        dlast = np.asarray(dlast)
        if dlast.shape != (B, T, H):
            raise ValueError(f"dlast: expected shape {(B, T, H)}, got {dlast.shape}")
        g = _rows(dlast.astype(cache.dtype, copy=False), idx)      # (N,H), a copy
    if dhidden[L] is not None:
        g += _rows(dhidden[L], idx)
    layer_grads = [None] * L
    for i in reversed(range(L)):
        dv = None
        if dvalues[i] is not None:                                 # (B,nh,T,hs) -> B x (nh,n_b,hs)
            dv = [dvalues[i][b][:, pos] for b, pos in enumerate(cache.positions)]
        g, layer_grads[i] = _layer_backward(g, cache.layers[i], cache.starts,
                                            _blocks(dscores[i], cache.positions),
                                            _blocks(dprobs[i], cache.positions), dv)   # (N,H)
        if dhidden[i] is not None:
            g += _rows(dhidden[i], idx)
    grads = _embeddings_backward(g, cache.embeddings, idx, B, T)
    for lg in layer_grads:
        grads.update(lg)
    return grads


def _values_grid(cache: PackedCache, i: int) -> np.ndarray:
    """Layer i's attention values on the padded grid (B,nh,T,hs), zero at padded tokens (the
    padded cache's cache.layers[i].attn.v; MiniLM's value relation reads them)."""
    B, T, _ = cache.shape
    c = cache.layers[i]
    A = c.qkv_out.shape[1] // 3
    v = _scatter(np.ascontiguousarray(c.qkv_out[:, 2 * A:]), cache.idx, B, T)   # (B,T,A)
    return v.reshape(B, T, c.n_heads, A // c.n_heads).transpose(0, 2, 1, 3)    # (B,nh,T,hs)
