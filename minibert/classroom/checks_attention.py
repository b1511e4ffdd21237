"""Checks for attention_backward (lesson 4) and encoder_layer_backward (lesson 5).

Every branch that training and distillation use is reached: no padding, padding, attention
dropout (the mask is in the cache: the backward must replay it), and the extra dscores /
dprobs gradients that attention distillation sends back. Fused tensors (dW_qkv, db_qkv) are
diagnosed per q / k / v block.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from minibert.attention import attention_backward as ref_attention_backward
from minibert.attention import attention_forward, mask_to_bias
from minibert.classroom.report import CLOSED_TOL, SEED, CheckResult, Report, run
from minibert.model import BertConfig, encoder_layer_forward, param_shapes
from minibert.model import encoder_layer_backward as ref_encoder_layer_backward

GRADS = ("dx", "dW_qkv", "db_qkv", "dW_o", "db_o")
# Outputs are compared in the order the backward computes them (output projection first, dx
# last), so the first failure is the one nearest to the mistake.
BACKWARD_ORDER = (4, 3, 2, 1, 0)
LAYER_ORDER = ("ffn.ln.beta", "ffn.ln.gamma", "ffn.out.b", "ffn.out.W", "ffn.in.b", "ffn.in.W",
               "attn.ln.beta", "attn.ln.gamma", "attn.out.b", "attn.out.W", "attn.qkv.b",
               "attn.qkv.W")


def qkv_blocks(H: int) -> list:
    """The q | k | v thirds of the last axis of a fused (..., 3H) tensor."""
    return [(n, np.s_[..., i * H:(i + 1) * H]) for i, n in enumerate("qkv")]


def _attention_inputs(rng: np.random.Generator, B=2, T=4, H=8):
    x = rng.standard_normal((B, T, H))
    W_qkv, b_qkv = 0.5 * rng.standard_normal((H, 3 * H)), 0.1 * rng.standard_normal(3 * H)
    W_o, b_o = 0.5 * rng.standard_normal((H, H)), 0.1 * rng.standard_normal(H)
    mask = np.ones((B, T), dtype=np.int64)
    mask[1, T // 2:] = 0                      # the second sequence is half padding
    return {"x": x, "W_qkv": W_qkv, "b_qkv": b_qkv, "W_o": W_o, "b_o": b_o}, mask


def check_attention_backward(impl: Callable) -> list[CheckResult]:
    """impl(dy, cache, dscores=None, dprobs=None) -> dx, dW_qkv, db_qkv, dW_o, db_o."""

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        inputs, mask = _attention_inputs(rng)
        nh, H = 2, inputs["x"].shape[-1]
        bias = mask_to_bias(mask, np.float64)
        keys = mask.astype(bool)[:, None, None, :]                       # (B,1,1,T)
        blocks = {"dW_qkv": {"blocks": qkv_blocks(H)}, "db_qkv": {"blocks": qkv_blocks(H)}}

        def fwd(name=None, value=None, bias=bias, p=0.0):
            a = dict(inputs, **({name: value} if name else {}))
            rng_ = np.random.default_rng(5) if p else None               # the same mask each call
            return attention_forward(a["x"], a["W_qkv"], a["b_qkv"], a["W_o"], a["b_o"], bias,
                                     nh, dropout_p=p, rng=rng_)

        cases = [("no padding", None, 0.0, False), ("with a padding mask", bias, 0.0, False),
                 ("with attention dropout p=0.3 and padding", bias, 0.3, False),
                 ("with extra dscores and dprobs, dropout p=0.3 and padding", bias, 0.3, True)]
        for case, b, p, extra in cases:
            y, cache = fwd(bias=b, p=p)
            dy = rng.standard_normal(y.shape)
            kw = {}
            if extra:
                kw = {"dscores": rng.standard_normal(cache.scores.shape) * keys,
                      "dprobs": rng.standard_normal(cache.probs.shape) * keys}
            got = rep.call(f"attention_backward ({case})", impl, dy, cache, n_out=5, pure=True, **kw)
            want = ref_attention_backward(dy, cache, **kw)
            for i in BACKWARD_ORDER:
                rep.match(f"{GRADS[i]} ({case})", got[i], want[i], **blocks.get(GRADS[i], {}))
            if case == "with a padding mask":
                for name, g in zip(inputs, got):
                    rep.grad(f"d{name} vs finite differences ({case})", g,
                             lambda v, n=name: fwd(n, v)[0], inputs[name], dy)
            if p and not extra:
                rep.grad(f"dx vs finite differences ({case}, the same mask each call)", got[0],
                         lambda v: fwd("x", v, p=p)[0], inputs["x"], dy)
            if extra:
                def objective(v, name):
                    out, c = fwd(name, v, p=p)
                    return np.array([np.sum(out * dy) + np.sum(c.scores * kw["dscores"])
                                     + np.sum(c.probs * kw["dprobs"])])
                for i, name in ((0, "x"), (1, "W_qkv")):
                    rep.grad(f"d{name} vs finite differences ({case})", got[i],
                             lambda v, n=name: objective(v, n), inputs[name], np.ones(1))
        # padded tokens are only ever (masked) keys: with no gradient on their query rows they
        # get none at all, and the real tokens get what the unpadded sequence gives
        real = mask.astype(bool)
        y, cache = fwd()
        dy = rng.standard_normal(y.shape) * real[:, :, None]
        g_pad = rep.call("attention_backward on a padded batch", impl, dy, cache, n_out=5)
        n_real = int(real[1].sum())
        a = inputs
        _, c1 = attention_forward(a["x"][1:, :n_real], a["W_qkv"], a["b_qkv"], a["W_o"], a["b_o"],
                                  None, nh)
        g_one = rep.call("attention_backward on the unpadded sequence", impl, dy[1:, :n_real], c1,
                         n_out=5)
        rep.small("padded tokens receive no gradient", np.abs(np.asarray(g_pad[0])[~real]).max(),
                  1e-12, "max |dx|", "does the mask reach every path to a padded token?")
        rep.match("real tokens' dx equals the unpadded sequence's", np.asarray(g_pad[0])[1:, :n_real],
                  g_one[0], tol=CLOSED_TOL)
        args32 = [a[k].astype(np.float32) for k in inputs]
        y32, c32 = attention_forward(*args32, mask_to_bias(mask, np.float32), nh, 0.1,
                                     np.random.default_rng(0))
        g32 = rep.call("attention_backward in float32", impl, dy.astype(np.float32), c32, n_out=5)
        rep.dtypes("float32 in, float32 out", dict(zip(GRADS, g32)))

    return run(body)


# ---------------------------------------------------------------------------------------------
# model.py
# ---------------------------------------------------------------------------------------------

def tiny_layer(rng: np.random.Generator, dropout: float = 0.0, dtype=np.float64):
    """A one-layer BertConfig (H=8, 2 heads, I=16) with O(1) random weights (so every term of
    the gradient is visible to finite differences) and a padded batch x, bias."""
    config = BertConfig(vocab_size=20, hidden_size=8, num_layers=1, num_heads=2,
                        intermediate_size=16, max_position=16, hidden_dropout=dropout,
                        attention_dropout=dropout, layer_norm_eps=1e-5)
    params = {}
    for name, shape in param_shapes(config).items():
        if name.endswith("gamma"):
            params[name] = (1.0 + 0.3 * rng.standard_normal(shape)).astype(dtype)
        else:
            params[name] = (0.4 * rng.standard_normal(shape)).astype(dtype)
    x = rng.standard_normal((2, 4, config.hidden_size)).astype(dtype)
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]])
    return config, params, x, mask, mask_to_bias(mask, dtype)


def check_encoder_layer_backward(impl: Callable) -> list[CheckResult]:
    """impl(dy, cache, dscores=None, dprobs=None) -> dx, grads dict (encoder.0.*)."""

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        config, params, x, mask, bias = tiny_layer(rng)
        H = config.hidden_size
        layer_keys = sorted(k for k in params if k.startswith("encoder.0."))
        keys = mask.astype(bool)[:, None, None, :]

        def fwd(name=None, value=None, p=0.0):
            cfg = config if not p else BertConfig(**{**config.to_dict(), "hidden_dropout": p,
                                                     "attention_dropout": p})
            prm = dict(params, **({name: value} if name and name != "x" else {}))
            rng_ = np.random.default_rng(7) if p else None                # the same masks each call
            return encoder_layer_forward(prm, cfg, 0, value if name == "x" else x, bias, rng_)

        cases = [("with a padding mask", 0.0, False),
                 ("with hidden and attention dropout p=0.2", 0.2, False),
                 ("with extra dscores and dprobs, and dropout p=0.2", 0.2, True)]
        for case, p, extra in cases:
            y, cache = fwd(p=p)
            dy = rng.standard_normal(y.shape)
            kw = {}
            if extra:
                kw = {"dscores": rng.standard_normal(cache.attn.scores.shape) * keys,
                      "dprobs": rng.standard_normal(cache.attn.probs.shape) * keys}
            dx, grads = rep.call(f"encoder_layer_backward ({case})", impl, dy, cache, n_out=2,
                                 pure=True, **kw)
            want_dx, want = ref_encoder_layer_backward(dy, cache, **kw)
            ok_keys = isinstance(grads, dict) and sorted(grads) == layer_keys
            rep.true(f"grads has exactly the layer's parameter names ({case})", ok_keys,
                     f"missing {sorted(set(layer_keys) - set(grads or {}))}, "
                     f"unexpected {sorted(set(grads or {}) - set(layer_keys))}")
            for name in sorted(layer_keys, key=lambda k: (LAYER_ORDER + (k,)).index(k.split(".", 2)[2])
                               if k.split(".", 2)[2] in LAYER_ORDER else len(LAYER_ORDER)):
                if isinstance(grads, dict) and name in grads:
                    blocks = qkv_blocks(H) if name.endswith("qkv.W") or name.endswith("qkv.b") else None
                    rep.match(f"{name} ({case})", grads[name], want[name], blocks=blocks)
            rep.match(f"dx ({case})", dx, want_dx)
            if not p:
                rep.grad(f"dx vs finite differences ({case})", dx, lambda v: fwd("x", v)[0], x, dy)
                for name in ("encoder.0.attn.qkv.W", "encoder.0.ffn.in.W", "encoder.0.attn.ln.gamma"):
                    if isinstance(grads, dict) and name in grads:
                        rep.grad(f"{name} vs finite differences ({case})", grads[name],
                                 lambda v, n=name: fwd(n, v)[0], params[name], dy)
            elif not extra:
                rep.grad(f"dx vs finite differences ({case}, the same masks each call)", dx,
                         lambda v: fwd("x", v, p=p)[0], x, dy)
        p32 = {k: v.astype(np.float32) for k, v in params.items()}
        _, c32 = encoder_layer_forward(p32, config, 0, x.astype(np.float32), bias.astype(np.float32))
        dx32, g32 = rep.call("encoder_layer_backward in float32", impl,
                             rng.standard_normal(x.shape).astype(np.float32), c32, n_out=2)
        rep.dtypes("float32 in, float32 out", {"dx": dx32, **(g32 if isinstance(g32, dict) else {})})

    return run(body)
