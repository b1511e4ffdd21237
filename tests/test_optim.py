"""Tests for minibert/optim.py: AdamW (closed forms, PyTorch parity, exact resume), the
linear schedule and global-norm clipping."""

import numpy as np
import pytest

from minibert.optim import (AdamWState, adamw_init, adamw_step, clip_grad_norm, linear_schedule,
                            no_decay, state_from_arrays, state_to_arrays)


def _params(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"embeddings.word": (7, 4), "embeddings.ln.gamma": (4,), "embeddings.ln.beta": (4,),
              "encoder.0.attn.qkv.W": (4, 12), "encoder.0.attn.qkv.b": (12,),
              "classifier.W": (4, 3), "classifier.b": (3,), "mlm.bias": (7,)}
    return {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}


def _grads(params, seed):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(p.shape).astype(p.dtype) for k, p in params.items()}


def _copy(d):
    return {k: v.copy() for k, v in d.items()}


# ----------------------------------------------------------------------------- no_decay

def test_no_decay_exempts_biases_and_layernorm_only():
    for name in ["encoder.3.attn.qkv.b", "classifier.b", "mlm.bias", "embeddings.ln.gamma",
                 "encoder.0.ffn.ln.beta", "mlm.ln.gamma", "distill.proj.0.b"]:
        assert no_decay(name), name
    for name in ["embeddings.word", "embeddings.position", "encoder.3.attn.qkv.W",
                 "classifier.W", "pooler.W", "distill.proj.0.W"]:
        assert not no_decay(name), name


# ----------------------------------------------------------------------------- AdamW

@pytest.mark.exercise("adamw_step")
def test_first_step_closed_form_with_bias_correction():
    # At step 1 the bias-corrected moments are exactly g and g^2, so Adam's update is
    # lr * g / (|g| + eps) (a step of size ~lr in every coordinate), plus the decoupled decay
    # lr * wd * p on decayed parameters. float64: both sides agree to rounding (rtol 1e-12).
    params = _params(np.float64)
    grads = _grads(params, 1)
    p0 = _copy(params)
    lr, wd, eps = 1e-2, 0.1, 1e-8
    adamw_step(params, grads, adamw_init(params), lr, weight_decay=wd, eps=eps)
    for name, p in params.items():
        g = grads[name]
        decay = 0.0 if no_decay(name) else lr * wd
        expected = p0[name] * (1 - decay) - lr * g / (np.abs(g) + eps)
        np.testing.assert_allclose(p, expected, rtol=1e-12, atol=1e-15, err_msg=name)


@pytest.mark.exercise("adamw_step")
def test_zero_grad_only_decays_the_decayed_parameters():
    params = _params(np.float32)
    p0 = _copy(params)
    zeros = {k: np.zeros_like(p) for k, p in params.items()}
    state = adamw_init(params)
    lr, wd = 1e-3, 0.01
    adamw_step(params, zeros, state, lr, weight_decay=wd)
    for name, p in params.items():
        if no_decay(name):
            np.testing.assert_array_equal(p, p0[name], err_msg=name)
        else:   # m = v = 0: the Adam part is exactly 0 / (0 + eps) = 0
            np.testing.assert_array_equal(p, p0[name] * np.float32(1 - lr * wd), err_msg=name)


@pytest.mark.exercise("adamw_step")
def test_adamw_keeps_float32_and_leaves_grads_alone():
    params = _params(np.float32)
    grads = _grads(params, 2)
    g0 = _copy(grads)
    state = adamw_init(params)
    for _ in range(2):
        adamw_step(params, grads, state, 1e-3)
    assert state.step == 2
    for name in params:
        assert params[name].dtype == state.m[name].dtype == state.v[name].dtype == np.float32
        np.testing.assert_array_equal(grads[name], g0[name])


@pytest.mark.exercise("adamw_step")
def test_adamw_matches_torch_adamw():
    torch = pytest.importorskip("torch")
    params = _params(np.float32)
    lr, wd, betas, eps = 1e-2, 0.05, (0.9, 0.98), 1e-6
    tparams = {k: torch.tensor(p.copy(), requires_grad=True) for k, p in params.items()}
    opt = torch.optim.AdamW(
        [{"params": [t for k, t in tparams.items() if not no_decay(k)], "weight_decay": wd},
         {"params": [t for k, t in tparams.items() if no_decay(k)], "weight_decay": 0.0}],
        lr=lr, betas=betas, eps=eps)
    state = adamw_init(params)
    for step in range(5):
        grads = _grads(params, 10 + step)
        step_lr = lr * (step + 1) / 5                     # a changing lr, as under a schedule
        for group in opt.param_groups:
            group["lr"] = step_lr
        for k, t in tparams.items():
            t.grad = torch.from_numpy(grads[k].copy())
        opt.step()
        adamw_step(params, grads, state, step_lr, beta1=betas[0], beta2=betas[1], eps=eps,
                   weight_decay=wd)
    # float32 on both sides, same formula; only the rounding of a few operations differs
    # (torch uses lerp for m and divides by sqrt(bc2)), so 1e-6 absolute on O(1) weights.
    for k, t in tparams.items():
        np.testing.assert_allclose(params[k], t.detach().numpy(), rtol=0, atol=1e-6, err_msg=k)


def test_state_round_trips_through_safetensors_and_resumes_exactly(tmp_path):
    from safetensors.numpy import load_file, save_file
    a = _params(np.float32)
    sa = adamw_init(a)
    for step in range(3):
        adamw_step(a, _grads(a, step), sa, 1e-3)
    b = _copy(a)
    save_file(state_to_arrays(sa), str(tmp_path / "opt.safetensors"))
    sb = state_from_arrays(load_file(str(tmp_path / "opt.safetensors")), params=b)
    assert sb.step == 3
    for step in range(3, 6):
        adamw_step(a, _grads(a, step), sa, 1e-3)
        adamw_step(b, _grads(b, step), sb, 1e-3)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        np.testing.assert_array_equal(sa.m[name], sb.m[name], err_msg=name)
        np.testing.assert_array_equal(sa.v[name], sb.v[name], err_msg=name)


def test_adamw_rejects_mismatched_grads_and_bad_hyperparameters():
    params = _params(np.float32)
    state = adamw_init(params)
    grads = _grads(params, 3)
    missing = {k: g for k, g in grads.items() if k != "classifier.b"}
    with pytest.raises(ValueError, match=r"missing grads \['classifier.b'\]"):
        adamw_step(params, missing, state, 1e-3)
    wrong = {**grads, "classifier.W": np.zeros((3, 4), np.float32)}
    with pytest.raises(ValueError, match=r"grads\['classifier.W'\]: expected shape \(4, 3\) dtype float32"):
        adamw_step(params, wrong, state, 1e-3)
    wrong = {**grads, "classifier.W": grads["classifier.W"].astype(np.float64)}
    with pytest.raises(ValueError, match=r"got \(4, 3\) float64"):
        adamw_step(params, wrong, state, 1e-3)
    with pytest.raises(ValueError, match=r"lr: invalid value -0.1"):
        adamw_step(params, grads, state, -0.1)
    with pytest.raises(ValueError, match=r"beta2: invalid value 1.0"):
        adamw_step(params, grads, state, 1e-3, beta2=1.0)
    assert state.step == 0, "a rejected step must not advance the state"
    bigger = {**params, "extra.W": np.zeros((2, 2), np.float32)}
    with pytest.raises(ValueError, match=r"does not match the parameters: missing \[.extra.W.\]"):
        state_from_arrays(state_to_arrays(state), params=bigger)


# ----------------------------------------------------------------------------- schedule

def test_linear_schedule_warms_up_then_decays_to_zero():
    total, warmup, peak = 100, 10, 5e-4
    assert linear_schedule(0, total, warmup, peak) == 0.0                 # warm-up starts at 0
    assert linear_schedule(5, total, warmup, peak) == pytest.approx(peak / 2)
    assert linear_schedule(10, total, warmup, peak) == pytest.approx(peak)  # end of warm-up
    assert linear_schedule(55, total, warmup, peak) == pytest.approx(peak / 2)  # middle of decay
    assert linear_schedule(100, total, warmup, peak) == 0.0               # end
    assert linear_schedule(150, total, warmup, peak) == 0.0               # never negative
    assert linear_schedule(0, total, 0, peak) == pytest.approx(peak)      # no warm-up
    lrs = [linear_schedule(s, total, warmup, peak) for s in range(total + 1)]
    assert max(lrs) == pytest.approx(peak) and np.argmax(lrs) == warmup


def test_linear_schedule_rejects_bad_arguments():
    with pytest.raises(ValueError, match="warmup_steps"):
        linear_schedule(0, 10, 11, 1e-3)
    with pytest.raises(ValueError, match="total_steps"):
        linear_schedule(0, 0, 0, 1e-3)
    with pytest.raises(ValueError, match="step: expected >= 0"):
        linear_schedule(-1, 10, 1, 1e-3)


# ----------------------------------------------------------------------------- clipping

def test_clip_grad_norm_scales_to_max_norm_and_returns_the_pre_clip_norm():
    grads = _grads(_params(np.float32), 4)
    before = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads.values()))
    returned = clip_grad_norm(grads, 1.0)
    after = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads.values()))
    assert before > 1.0                                       # so the clip really happened
    assert returned == pytest.approx(before, rel=1e-6)        # float32 dot products
    assert after == pytest.approx(1.0, rel=1e-6)
    assert all(g.dtype == np.float32 for g in grads.values())


def test_clip_grad_norm_is_a_no_op_below_max_norm():
    grads = _grads(_params(np.float32), 5)
    g0 = _copy(grads)
    norm = clip_grad_norm(grads, 1e6)
    assert norm < 1e6
    for k in grads:
        np.testing.assert_array_equal(grads[k], g0[k])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_clip_grad_norm_leaves_non_finite_grads_for_the_caller(bad):
    grads = _grads(_params(np.float32), 6)
    grads["classifier.W"][0, 0] = bad
    g0 = _copy(grads)
    assert not np.isfinite(clip_grad_norm(grads, 1.0))
    for k in grads:
        np.testing.assert_array_equal(grads[k], g0[k])
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(grads, 0.0)


def test_state_is_plain_data():
    s = AdamWState(step=4, m={"a": np.ones(2)}, v={"a": np.ones(2)})
    arrays = state_to_arrays(s)
    assert sorted(arrays) == ["m.a", "step", "v.a"]
    assert state_from_arrays(arrays).step == 4
