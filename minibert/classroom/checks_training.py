"""Checks for adamw_step (lesson 6), uniform_layer_map and init_student (lessons 7-8) and
param_count (lesson 9)."""

from __future__ import annotations

import copy
from typing import Callable

import numpy as np

from minibert.classroom.report import CLOSED_TOL, SEED, CheckResult, Report, run
from minibert.student import init_student as ref_init_student
from minibert.student import student_config
from minibert.student import uniform_layer_map as ref_uniform_layer_map
from minibert.model import BertConfig, init_params, param_shapes
from minibert.optim import adamw_init, no_decay
from minibert.optim import adamw_step as ref_adamw_step

ADAMW_SHAPES = {"encoder.0.ffn.in.W": (3, 4), "encoder.0.ffn.in.b": (4,),
                "encoder.0.ffn.ln.gamma": (4,), "encoder.0.ffn.ln.beta": (4,),
                "embeddings.word": (5, 4), "mlm.bias": (5,)}


def _first_step(p, g, lr, eps, wd, decay):
    """AdamW's first step written out: m_hat = g and v_hat = g^2, so it moves by lr*g/(|g|+eps)."""
    return (p * (1 - lr * wd) if decay else p) - lr * g / (np.abs(g) + eps)


def check_adamw_step(impl: Callable) -> list[CheckResult]:
    """impl(params, grads, state, lr, beta1, beta2, eps, weight_decay) -> None, in place."""

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        for case, hyper in [("weight_decay=0.1", dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8,
                                                      weight_decay=0.1)),
                            ("weight_decay=0, beta1=0.8, beta2=0.99",
                             dict(lr=0.05, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.0))]:
            params = {k: rng.standard_normal(s) for k, s in ADAMW_SHAPES.items()}
            state = adamw_init(params)
            ref_params, ref_state = copy.deepcopy(params), adamw_init(params)
            for step in (1, 2, 3):
                grads = {k: rng.standard_normal(p.shape) for k, p in params.items()}
                grads["encoder.0.ffn.in.W"][0] = 0.0   # a zero-gradient row: only decay moves it
                before = {k: p.copy() for k, p in params.items()}
                grads_before = copy.deepcopy(grads)
                try:
                    impl(params, grads, state, **hyper)
                except (Exception, SystemExit) as err:
                    rep.fail(f"adamw_step ({case}, step {step}) runs",
                             f"raised {type(err).__name__}: {err}")
                    return
                ref_adamw_step(ref_params, grads_before, ref_state, **hyper)
                rep.true(f"grads are not modified ({case}, step {step})",
                         all(np.array_equal(grads[k], grads_before[k]) for k in grads),
                         "adamw_step changed a gradient array")
                for k in params:
                    what = "no decay: bias / LayerNorm" if no_decay(k) else "decayed"
                    rep.match(f"{k} after step {step} ({case}; {what})", params[k], ref_params[k],
                              tol=CLOSED_TOL)
                    if step == 1:
                        rep.match(f"{k} after step 1, against AdamW written out independently ({case})",
                                  params[k], _first_step(before[k], grads_before[k], hyper["lr"],
                                                         hyper["eps"], hyper["weight_decay"],
                                                         not no_decay(k)), tol=CLOSED_TOL)
                rep.true(f"state.step is {step} ({case})", state.step == step,
                         f"state.step = {state.step}")
                for k in params:
                    rep.match(f"state.m[{k!r}] after step {step} ({case})", state.m[k], ref_state.m[k],
                              tol=CLOSED_TOL)
                    rep.match(f"state.v[{k!r}] after step {step} ({case})", state.v[k], ref_state.v[k],
                              tol=CLOSED_TOL)
        p32 = {k: rng.standard_normal(s).astype(np.float32) for k, s in ADAMW_SHAPES.items()}
        s32 = adamw_init(p32)
        rep.call("adamw_step in float32", impl, p32, {k: np.ones_like(v) for k, v in p32.items()},
                 s32, 0.01, 0.9, 0.999, 1e-8, 0.01)
        rep.dtypes("float32 params and moments stay float32",
                   {**p32, **{f"m[{k}]": v for k, v in s32.m.items()},
                    **{f"v[{k}]": v for k, v in s32.v.items()}})

    return run(body)


def check_uniform_layer_map(impl: Callable) -> list[CheckResult]:
    """impl(n_student, n_teacher) -> g, a list of Ls+1 teacher hidden-state indices."""

    def body(rep: Report) -> None:
        for ls, lt in [(1, 6), (2, 6), (3, 6), (4, 6), (5, 6), (6, 6), (3, 12), (5, 12), (4, 7)]:
            case = f"{ls} student layers, {lt} teacher layers"
            got = rep.call(f"uniform_layer_map({ls}, {lt})", impl, ls, lt)
            want = ref_uniform_layer_map(ls, lt)
            try:
                g = [v for v in got]
            except TypeError:
                rep.fail(f"g ({case})", f"returned {type(got).__name__}, expected a list")
                continue
            ok = g == want and all(isinstance(v, (int, np.integer)) for v in g)
            why = ""
            if len(g) != ls + 1:
                why = (f"has {len(g)} entries, expected {ls + 1}: one per student hidden state, "
                       f"the embedding output included")
            elif g and g[0] != 0:
                why = "g[0] should be the embedding output (hidden state 0)"
            elif g and g[-1] != lt:
                why = "the student's last layer should learn from the teacher's last layer"
            elif not all(isinstance(v, (int, np.integer)) for v in g):
                why = "the entries must be integers (list indices), not floats"
            elif any(b <= a for a, b in zip(g, g[1:])):
                why = "the map should strictly increase"
            elif g != want:
                diff = [j for j, (a, b) in enumerate(zip(g, want)) if a != b]
                why = f"differs at student layer(s) {diff}: rounded the other way?"
            rep.true(f"g ({case})", ok, f"you returned {g}; " + why)

    return run(body)


def _tiny_teacher(rng: np.random.Generator, pooler: bool = True):
    config = BertConfig(vocab_size=20, hidden_size=8, num_layers=3, num_heads=2,
                        intermediate_size=16, max_position=16, num_labels=3, pooler=pooler,
                        labels=["c0", "c1", "c2"])
    params = {k: v + np.float32(0.1) * rng.standard_normal(v.shape, dtype=np.float32)
              for k, v in init_params(config, rng).items()}          # no two tensors alike
    return config, params


def check_init_student(impl: Callable) -> list[CheckResult]:
    """impl(teacher_params, teacher_config, config, init_layers, rng, dtype) -> student params:
    block j copied from teacher block init_layers[j]; embeddings, pooler, head copied."""

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        for pooler, layers, dtype in [(True, [0, 2], np.float32), (True, [2, 1], np.float32),
                                      (True, [1, 1], np.float32), (False, [0, 2], np.float32),
                                      (True, [2, 0], np.float64)]:
            tconfig, tparams = _tiny_teacher(rng, pooler)
            before = {k: v.copy() for k, v in tparams.items()}
            config = student_config(tconfig, 2)
            case = (f"init_layers={layers}" + ("" if pooler else ", a teacher without a pooler")
                    + (", a float64 student" if dtype == np.float64 else ""))
            got = rep.call(f"init_student ({case})", impl, tparams, tconfig, config, layers,
                           np.random.default_rng(0), dtype)
            want = ref_init_student(tparams, tconfig, config, layers, np.random.default_rng(0),
                                    dtype)
            if not isinstance(got, dict):
                rep.fail(f"returns a dict ({case})", f"returned {type(got).__name__}")
                continue
            rep.true(f"exactly the student's parameter names ({case})", sorted(got) == sorted(want),
                     f"missing {sorted(set(want) - set(got))[:4]}, "
                     f"unexpected {sorted(set(got) - set(want))[:4]}")
            wrong = []
            for name in want:
                if name in got and not (np.shape(got[name]) == want[name].shape
                                        and np.allclose(got[name], want[name], rtol=1e-7, atol=0)):
                    source = name
                    if name.startswith("encoder."):
                        _, j, rest = name.split(".", 2)
                        source = f"encoder.{layers[int(j)]}.{rest}"
                    wrong.append(f"{name} (should be the teacher's {source})"
                                 if source in tparams else f"{name} (should be init_params' draw)")
            rep.true(f"every tensor from the right place ({case})", not wrong,
                     f"{len(wrong)} wrong, e.g. {wrong[:2]}")
            shared = sorted(k for k in got if any(np.shares_memory(got[k], t) for t in tparams.values()))
            twice = sorted(a for a in got for b in got if a < b and np.shares_memory(got[a], got[b]))
            rep.true(f"copies, not views of the teacher ({case})", not shared,
                     f"{shared[:3]} share memory with the teacher: training the student would "
                     f"change the teacher")
            rep.true(f"no two student tensors share memory ({case})", not twice,
                     f"{twice[:3]} share memory with another student tensor")
            rep.dtypes(f"{np.dtype(dtype)} parameters, the dtype asked for ({case})", got, dtype)
            rep.true(f"the teacher is left unchanged ({case})",
                     all(np.array_equal(before[k], tparams[k]) for k in tparams),
                     "a teacher array was modified")
        tconfig, tparams = _tiny_teacher(rng)
        config = student_config(tconfig, 2)
        rand = rep.call("init_student(init_layers=None)", impl, tparams, tconfig, config, None,
                        np.random.default_rng(0), np.float32)
        ref = init_params(config, np.random.default_rng(0), dtype=np.float32)
        rep.true("init_layers=None: a random init (init_params with the given rng)",
                 isinstance(rand, dict) and sorted(rand) == sorted(ref)
                 and all(np.array_equal(rand[k], ref[k]) for k in ref),
                 "expected exactly init_params(config, rng, dtype)")

    return run(body)


def _count_by_part(config: BertConfig) -> dict[str, int]:
    """The count from model.param_shapes, the list of tensors the model really builds."""
    out = {"embeddings": 0, "encoder": 0, "head": 0}
    for name, shape in param_shapes(config).items():
        part = name.split(".")[0] if name.split(".")[0] in ("embeddings", "encoder") else "head"
        out[part] += int(np.prod(shape))
    out["total"] = sum(out.values())
    return out


def check_param_count(impl: Callable) -> list[CheckResult]:
    """impl(config) -> {"embeddings", "encoder", "head", "total"} parameter counts."""

    def body(rep: Report) -> None:
        configs = [("the MiniLM teacher, 3 classes", BertConfig(num_labels=3)),
                   ("2 layers, H=32, I=64, no pooler, no head",
                    BertConfig(vocab_size=100, hidden_size=32, num_layers=2, num_heads=4,
                               intermediate_size=64, max_position=20, pooler=False)),
                   ("an MLM head, one token type", BertConfig(vocab_size=50, hidden_size=16,
                    num_layers=3, num_heads=2, intermediate_size=48, max_position=12,
                    type_vocab_size=1, mlm_head=True)),
                   ("a 1-layer student, 2 classes", BertConfig(num_layers=1, num_labels=2))]
        for case, config in configs:
            got = rep.call(f"param_count ({case})", impl, config)
            want = _count_by_part(config)
            if not isinstance(got, dict):
                rep.fail(f"returns a dict ({case})", f"returned {type(got).__name__}")
                continue
            for part in ("embeddings", "encoder", "head", "total"):
                g = got.get(part)
                ok = isinstance(g, (int, np.integer)) and g == want[part]
                why = f"missing key {part!r}" if g is None else f"you counted {g}"
                if g is not None and part == "encoder" and config.num_layers and isinstance(g, (int, np.integer)):
                    per, ref = g / config.num_layers, want[part] / config.num_layers
                    why += f" ({per:g} per layer): off by {per - ref:+g} per layer"
                elif isinstance(g, (int, np.integer)):
                    why += f": off by {g - want[part]:+d}"
                rep.true(f"{part} ({case})", ok, why + " (a bias, a LayerNorm, a table forgotten?)")

    return run(body)
