"""Attention-head pruning by gradient importance (Michel, Levy & Neubig 2019, "Are Sixteen Heads
Really Better than One?").

Shape legend: B batch, T tokens, H hidden, nh heads of a layer, hs head size, A = nh*hs the width
of a layer's attention (A = H before pruning), L layers.

The idea: give every head h a gate g_h that multiplies its context before the output projection,

    ctx (B,T,A) = [ctx_0 | ctx_1 | ... ]   ->   y = [g_0 ctx_0 | g_1 ctx_1 | ...] @ W_o + b_o

and, at g = 1 (the unchanged model), ask how much the loss depends on each gate:

    dL/dg_h = sum over (B,T,hs) of dctx_h * ctx_h                     (head_gate_backward)

where dctx is the gradient at the output projection's input. A head whose gate barely moves the
loss can go. Importance I_h = sum over data batches of |dL/dg_h| (the absolute value per batch,
as Michel et al.'s code does), normalised per layer by the layer's L2 norm so layers compare.

The backward we already have gives this for free. Gating head h scales its rows of W_o, because
(g ctx_h) @ W_o[h rows] = ctx_h @ (g W_o[h rows]). So dL/dg_h = sum over head h's rows of
W_o * dW_o, and dW_o is what the hand-written attention backward returns anyway
(`gate_grads`); no new backward pass, one multiply and a sum per layer.

Removing heads for real (`remove_heads`): head j of a layer owns hs columns in each of the q, k
and v blocks of W_qkv (H, 3A) and hs rows of W_o (A, H); dropping them leaves a layer with
A' = nh'*hs that computes exactly what the full layer computes with those heads' gates at 0.
The config records which heads are gone as `pruned_heads` {layer: [original head indices]}, the
name and convention Hugging Face's BertConfig used; the heads of layer i are then
num_heads - len(pruned_heads[i]).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from minibert.errors import MinibertError

# ----------------------------------------------------------------------------------------------
# The gate: a forward/backward pair (what lesson 11 and the exercise teach)


class HeadGateCache(NamedTuple):
    ctx: np.ndarray       # (B,T,A) the heads' contexts, side by side
    gates: np.ndarray     # (nh,)


def head_gate_forward(ctx, gates):
    """Multiply each head's context by its gate.

    Inputs: ctx (B,T,A) with A = nh*hs (heads side by side, as attention builds it);
            gates (nh,) in ctx's dtype.
    Returns a tuple of: out (B,T,A), a fresh array; cache (HeadGateCache).
    """
    ctx, gates = np.asarray(ctx), np.asarray(gates)
    if ctx.ndim != 3 or gates.ndim != 1 or gates.shape[0] == 0 or ctx.shape[2] % gates.shape[0]:
        raise ValueError(f"head_gate_forward: expected ctx (B, T, nh*hs) and gates (nh,), got "
                         f"{ctx.shape} and {gates.shape}")
    if gates.dtype != ctx.dtype:
        raise ValueError(f"gates: dtype {gates.dtype} does not match ctx dtype {ctx.dtype}")
    B, T, A = ctx.shape
    nh = gates.shape[0]
    out = ctx.reshape(B, T, nh, A // nh) * gates[:, None]             # (B,T,nh,hs) * (nh,1)
    return out.reshape(B, T, A), HeadGateCache(ctx, gates)


def head_gate_backward(dout, cache):
    """Backward of head_gate_forward.

    Inputs: dout (B,T,A), upstream gradient; cache from head_gate_forward.
    Returns a tuple of fresh arrays: dctx (B,T,A); dgates (nh,).
    """
    ctx, gates = cache
    if dout.shape != ctx.shape:
        raise ValueError(f"dout: expected shape {ctx.shape} (the forward output), got {dout.shape}")
    B, T, A = ctx.shape
    nh = gates.shape[0]
    # BEGIN EXERCISE head_gate_backward
    # view both as heads: (B,T,A) -> (B,T,nh,hs)
    d4 = dout.reshape(B, T, nh, A // nh)
    c4 = ctx.reshape(B, T, nh, A // nh)
    # out_h = g_h * ctx_h, so dctx_h = g_h * dout_h
    dctx = (d4 * gates[:, None]).reshape(B, T, A)
    # dL/dg_h adds up dout_h * ctx_h over every (b, t, d) of head h
    dgates = np.einsum("btnd,btnd->n", d4, c4)
    # END EXERCISE head_gate_backward
    return dctx, dgates


# ----------------------------------------------------------------------------------------------
# Heads per layer


def heads_per_layer(config) -> list[int]:
    """The number of attention heads of each layer: num_heads minus that layer's pruned heads."""
    return [config.heads_in_layer(i) for i in range(config.num_layers)]


def remaining_heads(config, layer: int) -> list[int]:
    """Original indices (0..num_heads-1) of the heads layer `layer` still has, in order."""
    gone = set((config.pruned_heads or {}).get(str(layer), ()))
    return [h for h in range(config.num_heads) if h not in gone]


# ----------------------------------------------------------------------------------------------
# Importance


def gate_grads(params: dict, grads: dict, config) -> list[np.ndarray]:
    """dL/dg_h for every head, at g = 1, from the output projections' weight gradients.

    Inputs: params and grads (as classify_backward returns them) of a model; config.
    Returns: a list of L float64 arrays (nh_i,): sum over head h's hs rows of W_o * dW_o.
    """
    out = []
    hs = config.head_size
    for i, nh in enumerate(heads_per_layer(config)):
        W = params[f"encoder.{i}.attn.out.W"]                          # (A,H), A = nh*hs
        dW = grads[f"encoder.{i}.attn.out.W"]                          # (A,H)
        out.append((W.astype(np.float64) * dW).reshape(nh, hs, -1).sum(axis=(1, 2)))   # (nh,)
    return out


def head_importance(params: dict, config, batches, normalize: bool = True,
                    progress: bool = False) -> list[np.ndarray]:
    """Michel et al.'s head importance: sum over batches of |dL/dg_h|, L = cross-entropy of the
    model's classifier on the batch's gold labels (eval mode: no dropout).

    Inputs: params, config (a classifier), batches: a sequence of LabeledBatch (.ids .mask
            .token_type_ids .labels); normalize: divide each layer's scores by their L2 norm.
    Returns: a list of L float64 arrays (nh_i,), one score per head.
    MinibertError when there are no batches or the model has no classifier."""
    from minibert.losses import cross_entropy
    from minibert.fast_model import classify_backward, classify_forward

    if config.num_labels < 1:
        raise MinibertError("head importance needs a classifier (config.num_labels is 0): "
                            "fine-tune or distil the model first")
    scores = [np.zeros(n) for n in heads_per_layer(config)]
    n = 0
    it = batches
    if progress:
        from tqdm import tqdm
        it = tqdm(batches, desc="head importance", unit="batch")
    for b in it:
        logits, _, cache = classify_forward(params, config, b.ids, b.mask, b.token_type_ids)  # (B,C)
        _, dlogits = cross_entropy(logits, b.labels)
        grads = classify_backward(dlogits, cache)
        for s, g in zip(scores, gate_grads(params, grads, config)):
            s += np.abs(g)
        n += 1
    if n == 0:
        raise MinibertError("head importance: the data sample has no rows (no batches to score)")
    if normalize:
        scores = [s / max(np.linalg.norm(s), 1e-20) for s in scores]
    return scores


# ----------------------------------------------------------------------------------------------
# Choosing and removing heads


def choose_heads(importance: list, keep: int | None = None, fraction: float | None = None) -> dict[int, list[int]]:
    """Which heads to remove: the least important ones over the whole model, never a layer's last.

    Inputs: importance, list of L arrays (nh_i,); exactly one of keep (heads kept in total) and
            fraction (share of all heads removed, rounded to the nearest head).
    Returns: {layer: sorted local head indices to remove} (layers with nothing to remove omitted).
    MinibertError: both or neither given, keep < L (every layer keeps one head) or > the heads
    that exist, fraction outside [0, 1)."""
    counts = [len(s) for s in importance]
    total, L = sum(counts), len(counts)
    if (keep is None) == (fraction is None):
        raise MinibertError("give exactly one of --keep K (heads kept) and --fraction F (share removed)")
    if keep is not None:
        if isinstance(keep, bool) or not isinstance(keep, (int, np.integer)):
            raise MinibertError(f"--keep: expected a whole number of heads, got {keep!r}")
        if keep > total:
            raise MinibertError(f"--keep {keep}: the model has only {total} heads ({counts} per layer)")
        if keep < L:
            raise MinibertError(f"--keep {keep}: every layer keeps at least one head, so keep >= {L} "
                                f"(the number of layers); the model has {total} heads")
        n_remove = total - int(keep)
    else:
        if not (isinstance(fraction, (int, float)) and 0 <= fraction < 1):
            raise MinibertError(f"--fraction: expected a share of heads to remove in [0, 1), got {fraction!r}")
        n_remove = min(int(round(fraction * total)), total - L)
    order = sorted((float(s[h]), i, h) for i, s in enumerate(importance) for h in range(len(s)))
    left = list(counts)
    remove: dict[int, list[int]] = {}
    for _, i, h in order:
        if n_remove == 0:
            break
        if left[i] == 1:
            continue                                   # the layer's last head stays
        remove.setdefault(i, []).append(h)
        left[i] -= 1
        n_remove -= 1
    return {i: sorted(hs) for i, hs in sorted(remove.items())}


def remove_heads(params: dict, config, remove: dict[int, list[int]]):
    """Cut heads out of the attention matrices.

    Inputs: params, config; remove {layer: local head indices (0..nh_i-1, as choose_heads gives)}.
    Returns: (new params: fresh dict, the pruned layers' attn.qkv.W (H,3A'), attn.qkv.b (3A',),
             attn.out.W (A',H) smaller, every other array shared with params;
             new config: a copy whose pruned_heads adds the removed heads' ORIGINAL indices).
    MinibertError for a layer or head that does not exist, or a layer left with no head."""
    import dataclasses

    hs, counts = config.head_size, heads_per_layer(config)
    pruned = {k: list(v) for k, v in (config.pruned_heads or {}).items()}
    new = dict(params)
    for i, local in remove.items():
        if not 0 <= int(i) < config.num_layers:
            raise MinibertError(f"remove_heads: layer {i} does not exist (the model has {config.num_layers})")
        nh = counts[i]
        local = sorted(set(int(h) for h in local))
        if not local:
            continue
        if local[0] < 0 or local[-1] >= nh:
            raise MinibertError(f"remove_heads: layer {i} has heads 0..{nh - 1}, asked to remove {local}")
        if len(local) == nh:
            raise MinibertError(f"remove_heads: removing all {nh} heads of layer {i}; a layer keeps at least one")
        keep = [h for h in range(nh) if h not in local]
        cols = np.concatenate([np.arange(h * hs, (h + 1) * hs) for h in keep])   # (A',) within one block
        A = nh * hs
        qkv_cols = np.concatenate([cols, cols + A, cols + 2 * A])              # (3A',) in [q | k | v]
        p = f"encoder.{i}.attn."
        new[p + "qkv.W"] = np.ascontiguousarray(params[p + "qkv.W"][:, qkv_cols])   # (H,3A) -> (H,3A')
        new[p + "qkv.b"] = np.ascontiguousarray(params[p + "qkv.b"][qkv_cols])      # (3A,) -> (3A',)
        new[p + "out.W"] = np.ascontiguousarray(params[p + "out.W"][cols])          # (A,H) -> (A',H)
        original = remaining_heads(config, i)
        pruned[str(i)] = sorted(set(pruned.get(str(i), [])) | {original[h] for h in local})
    return new, dataclasses.replace(config, pruned_heads=pruned or None)


def pad_pruned_heads(params: dict, config):
    """The inverse of remove_heads up to zeros: every removed head back in its original place with
    zero weights (q, k, v columns and W_o rows 0, so its context never reaches the output).
    The result is an unpruned model that computes exactly what the pruned one computes; it is
    how a pruned model exports to a layout (Hugging Face transformers >= 5) that has no
    per-layer head counts.
    Returns: (new params, the config without pruned_heads); params itself if nothing is pruned."""
    import dataclasses

    if not config.pruned_heads:
        return params, config
    H, hs, nh = config.hidden_size, config.head_size, config.num_heads
    new = dict(params)
    for i in range(config.num_layers):
        kept = remaining_heads(config, i)
        if len(kept) == nh:
            continue
        cols = np.concatenate([np.arange(h * hs, (h + 1) * hs) for h in kept])   # (A',) in the full block
        full_cols = np.concatenate([cols, cols + H, cols + 2 * H])              # (3A',) in [q | k | v]
        p = f"encoder.{i}.attn."
        W = np.zeros((H, 3 * H), params[p + "qkv.W"].dtype)
        W[:, full_cols] = params[p + "qkv.W"]                                    # (H,3A') -> (H,3H)
        b = np.zeros(3 * H, params[p + "qkv.b"].dtype)
        b[full_cols] = params[p + "qkv.b"]
        Wo = np.zeros((H, H), params[p + "out.W"].dtype)
        Wo[cols] = params[p + "out.W"]                                           # (A',H) -> (H,H)
        new[p + "qkv.W"], new[p + "qkv.b"], new[p + "out.W"] = W, b, Wo
    return new, dataclasses.replace(config, pruned_heads=None)
