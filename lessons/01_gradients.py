"""Lesson 1: gradients and finite differences, on a linear layer.

Every backward pass in minibert is written by hand, so every one needs a referee. The referee
is the definition of a derivative: nudge one input by h, see how much the loss moves.

    forward difference   (f(x + h) - f(x)) / h             error ~ h   * |f''| / 2   + eps |f| / h
    centred difference   (f(x + h) - f(x - h)) / (2h)      error ~ h^2 * |f'''| / 6  + eps |f| / h

The first term (truncation) shrinks with h; the second (rounding: f is only known to machine
precision eps) grows as h shrinks. So each scheme has a best h, and the centred one is far
better: about eps^(2/3) instead of eps^(1/2). In float64 (eps 2.2e-16) a centred difference
is good to ~1e-10; in float32 (eps 1.2e-7) only to ~1e-4..1e-3, too coarse to tell a right gradient
from a slightly wrong one. That is why every gradient check in minibert runs in float64.

The layer: y = x @ W + b (minibert.layers.linear_forward), followed by tanh and a fixed random
"upstream" vector G, so the scalar loss L = sum(tanh(y) * G) has curvature (a purely linear
loss would make every finite difference exact and hide the truncation error).

Run: python lessons/01_gradients.py [--tiny]      Exercise: linear_backward
"""

# %%
from _common import done, parse_args, savefig, section

import numpy as np

from minibert.exercise_checks import FD_TOL
from minibert.gradcheck import numerical_vjp, rel_error
from minibert.layers import linear_backward, linear_forward

args = parse_args(1, __doc__)
rng = np.random.default_rng(0)
B, T, D, M = (2, 3, 4, 5) if args.tiny else (4, 16, 32, 24)
x, W, b = rng.standard_normal((B, T, D)), rng.standard_normal((D, M)) / np.sqrt(D), rng.standard_normal(M)
G = rng.standard_normal((B, T, M))                      # fixed upstream weights of the loss


def loss(x, W, b):
    """L = sum(tanh(x @ W + b) * G), computed in the dtype of x."""
    y, _ = linear_forward(x, W, b)                      # (B,T,D) @ (D,M) -> (B,T,M)
    return float(np.sum(np.tanh(y) * G.astype(x.dtype)))


def analytic(x, W, b):
    """dL/dx, dL/dW, dL/db by the chain rule: through tanh by hand, then linear_backward."""
    y, cache = linear_forward(x, W, b)
    dy = G.astype(x.dtype) * (1 - np.tanh(y) ** 2)      # (B,T,M): d tanh(y) / dy = 1 - tanh^2
    return linear_backward(dy, cache)                   # dx (B,T,D), dW (D,M), db (M,)


# %%
section("1. The analytic gradient (chain rule + linear_backward)")
dx, dW, db = analytic(x, W, b)
print(f"x {x.shape}, W {W.shape}, b {b.shape} -> y {(B, T, M)}; loss L = {loss(x, W, b):.6f}")
print(f"dL/dx {dx.shape}, dL/dW {dW.shape}, dL/db {db.shape}: each gradient has its input's shape "
      f"(derive dW and db yourself first: exercise linear_backward)")
print(f"dL/dW[0,0] = {dW[0, 0]:.12f}")

# %%
section("2. One derivative, many step sizes h (forward vs centred, float64 vs float32)")
hs = np.logspace(-1, -12, 12 if args.tiny else 34)
picks = [tuple(rng.integers(0, s) for s in W.shape) for _ in range(4 if args.tiny else 8)]
errors = {}                                             # (scheme, dtype) -> mean relative error per h
for dtype in (np.float64, np.float32):
    xd, Wd, bd = x.astype(dtype), W.astype(dtype), b.astype(dtype)
    exact = analytic(x, W, b)[1]                        # the float64 analytic dW is the reference
    for scheme in ("forward", "centred"):
        errs = []
        for h in hs:
            e = []
            for (i, j) in picks:
                Wp, Wm = Wd.copy(), Wd.copy()
                Wp[i, j] += dtype(h)
                Wm[i, j] -= dtype(h) if scheme == "centred" else dtype(0)
                step = float(Wp[i, j]) - float(Wm[i, j])   # the step actually taken (rounded)
                num = (loss(xd, Wp, bd) - loss(xd, Wm, bd)) / step if step else np.nan
                e.append(abs(num - exact[i, j]) / max(1e-8, abs(num) + abs(exact[i, j])))
            e = [v for v in e if np.isfinite(v)]
            errs.append(np.mean(e) if e else np.nan)    # nan: h is below the dtype's resolution
        errors[scheme, np.dtype(dtype).name] = np.array(errs)

print(f"{'h':>9} | {'fwd f64':>9} {'cen f64':>9} | {'fwd f32':>9} {'cen f32':>9}   (relative error;"
      " nan: W + h == W in that dtype)")
for k, h in enumerate(hs):
    if args.tiny or k % 3 == 0:
        print(f"{h:9.1e} | {errors['forward', 'float64'][k]:9.1e} {errors['centred', 'float64'][k]:9.1e} | "
              f"{errors['forward', 'float32'][k]:9.1e} {errors['centred', 'float32'][k]:9.1e}")
best = {key: (np.nanmin(v), hs[np.nanargmin(v)]) for key, v in errors.items()}
for (scheme, dt), (err, h) in best.items():
    print(f"best {scheme:8s} {dt}: error {err:.1e} at h = {h:.0e}")

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6.5, 4.5))
styles = {("forward", "float64"): "C0--", ("centred", "float64"): "C0-",
          ("forward", "float32"): "C3--", ("centred", "float32"): "C3-"}
for key, style in styles.items():
    ax.loglog(hs, errors[key], style, marker=".", label=f"{key[0]} difference, {key[1]}")
ax.loglog(hs, hs, "k:", lw=0.8, label="slope 1 (truncation, forward)")
ax.loglog(hs, hs ** 2, "k-.", lw=0.8, label="slope 2 (truncation, centred)")
ax.set_ylim(1e-13, 10)
ax.set_xlabel("step h (the nudge of one weight)")
ax.set_ylabel("relative error of dL/dW (mean of picked entries)")
ax.set_title(f"Centred differences reach {best['centred', 'float64'][0]:.0e} in float64, "
             f"only {best['centred', 'float32'][0]:.0e} in float32", fontsize=10)
ax.legend(fontsize=8)
savefig(fig, "lesson01_fd_error.png")

# %%
section("3. Checking the whole gradient: centred differences and rel_error")
print("(exercises rel_error and numerical_vjp: write them yourself first; the definition and a written-out")
print(" centred-difference check follow)")
print("rel_error(a, b) = max |a - b| / max(1e-8, |a| + |b|), the worst entry. Correct float64 code gives")
print("1e-10..1e-7 (the worst entry is a tiny gradient, where round-off counts most); a wrong term gives")
print("1e-2..1. The exercise checks accept 1e-6. In float32 even correct code fails that test.")


def centred_vjp(f, v, dout, h):
    """(Try exercise numerical_vjp before reading this.) What minibert.gradcheck.numerical_vjp
    does, written out, in v's own dtype (the library version refuses float32 on purpose)."""
    grad = np.zeros(v.shape)
    for i in np.ndindex(v.shape):
        old = v[i]
        v[i] = old + v.dtype.type(h)
        up = np.sum(f(v) * dout)
        v[i] = old - v.dtype.type(h)
        down = np.sum(f(v) * dout)
        v[i] = old
        grad[i] = (up - down) / (2 * h)
    return grad


def check_all(dtype, h):
    xd, Wd, bd = x.astype(dtype), W.astype(dtype), b.astype(dtype)
    grads = analytic(xd, Wd, bd)
    out = {}
    for name, arr, k in (("dx", xd, 0), ("dW", Wd, 1), ("db", bd, 2)):
        def f(v, k=k):
            args_ = [xd, Wd, bd]
            args_[k] = v
            y, _ = linear_forward(*args_)
            return np.tanh(y)                           # the check sums f(v) * dout
        if dtype == np.float64:
            num = numerical_vjp(f, arr, G, h=h)
        else:
            num = centred_vjp(f, arr, G.astype(dtype), h)
        out[name] = rel_error(grads[k], num)
    return out


rel64 = check_all(np.float64, 1e-5)
rel32 = check_all(np.float32, 1e-2)
for name in rel64:
    print(f"{name}: float64 rel error {rel64[name]:.1e}   float32 rel error {rel32[name]:.1e}")

# %%
section("4. What a bug looks like")
y, cache = linear_forward(x, W, b)
dy = G * (1 - np.tanh(y) ** 2)
good_db = linear_backward(dy, cache)[2]
bug_db = dy.reshape(-1, M).mean(axis=0)                 # a classic slip: mean instead of sum
num_db = numerical_vjp(lambda v: np.tanh(linear_forward(x, W, v)[0]), b, G)
print(f"db with sum:  rel error {rel_error(good_db, num_db):.1e}")
print(f"db with mean: rel error {rel_error(bug_db, num_db):.1e}   <- off by the factor B*T = {B * T}")

# %%
# The lesson's claims, as assertions.
assert best["centred", "float64"][0] < 1e-8, best
assert best["forward", "float64"][0] > 10 * best["centred", "float64"][0], best
assert best["centred", "float32"][0] > 100 * best["centred", "float64"][0], best
assert max(rel64.values()) < FD_TOL, rel64           # the exercise checks' tolerance
assert rel_error(bug_db, num_db) > 0.1

results = {"best": {f"{k[0]} {k[1]}": {"error": e, "h": h} for k, (e, h) in best.items()},
           "rel_error_float64": rel64, "rel_error_float32": rel32,
           "db_sum_rel_error": rel_error(good_db, num_db), "db_mean_bug_rel_error": rel_error(bug_db, num_db)}
showed = [
    f"Centred differences are far better than forward ones (best {best['centred', 'float64'][0]:.0e} vs "
    f"{best['forward', 'float64'][0]:.0e} in float64): truncation shrinks like h^2, rounding grows like 1/h.",
    f"So gradient checks run in float64 (float32's best is {best['centred', 'float32'][0]:.0e}); "
    f"a correct backward measures ~1e-10, a wrong one ~1e-1.",
]
done(args, results, showed)
