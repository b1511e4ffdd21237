"""Lesson 3: LayerNorm and GELU, forward and backward.

LayerNorm normalises each token's vector over its H features, then scales and shifts:
    xhat = (x - mean) * rstd,  rstd = 1 / sqrt(var + eps),   y = xhat * gamma + beta
The forward keeps exactly what the backward needs: xhat and rstd (llm.c does the same).
dgamma and dbeta are sums over tokens (as db was in lesson 1). dx is the hard part, because
mean and rstd depend on x too: every x_i moves every output of its row.

GELU(x) = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), with Phi the standard normal CDF: a
smooth ReLU. BERT uses this exact form (the tanh formula is an approximation some models use;
mixing them up costs up to ~5e-4 per activation, which breaks float32 parity with the checkpoint).
NumPy has no erf, so minibert.layers.erf is a polynomial fit good to float precision.

Derive it yourself first (exercises layernorm_backward and gelu_backward), before reading on:
- LayerNorm: write dxhat = dy * gamma, then follow xhat = (x - mean) * rstd back to x through
  its three paths (directly, through the mean, through rstd). Two facts let you check your
  answer without finite differences: LayerNorm(x + c) = LayerNorm(x) for any constant c, and
  LayerNorm(a x) = LayerNorm(x) for a > 0 (up to eps). What must that mean for each row of dx?
  Section 2 measures both.
- GELU: the product rule on x * Phi(x); Phi' is the normal density phi.
The exercise hints (the comments kept in the stubs) give the steps; the checks grade the result.

Run: python lessons/03_layernorm_gelu.py [--tiny]      Exercises: layernorm_backward, gelu_backward
"""

# %%
from _common import done, parse_args, savefig, section

import math

import numpy as np

from minibert.exercise_checks import FD_TOL
from minibert.gradcheck import numerical_vjp, rel_error
from minibert.layers import erf, gelu_backward, gelu_forward, layernorm_backward, layernorm_forward

args = parse_args(3, __doc__)
rng = np.random.default_rng(0)
B, T, H = (2, 3, 8) if args.tiny else (8, 32, 384)

# %%
section("1. LayerNorm forward: every token becomes mean 0, variance 1")
x = 5.0 + 3.0 * rng.standard_normal((B, T, H))          # off-centre, scale 3
gamma, beta = np.ones(H), np.zeros(H)
y, cache = layernorm_forward(x, gamma, beta, 1e-12)
print(f"x: per-token mean {x.mean(-1).mean():.3f}, std {x.std(-1).mean():.3f}   "
      f"y: per-token mean max |.| {np.abs(y.mean(-1)).max():.1e}, std {y.std(-1).mean():.6f}")
print(f"cache holds xhat {cache.xhat.shape} and rstd {cache.rstd.shape}: "
      f"{cache.xhat.size + cache.rstd.size} numbers, nothing else")

# %%
section("2. LayerNorm backward: finite differences and the two invariances")
xs = x[:2, :3, :min(H, 16)].copy()                      # a small slice: the check is O(size^2)
g, b_ = 1 + 0.3 * rng.standard_normal(xs.shape[-1]), rng.standard_normal(xs.shape[-1])
ys, cs = layernorm_forward(xs, g, b_, 1e-12)
dy = rng.standard_normal(ys.shape)
dx, dgamma, dbeta = layernorm_backward(dy, cs)
errs = {
    "dx": rel_error(dx, numerical_vjp(lambda v: layernorm_forward(v, g, b_, 1e-12)[0], xs, dy)),
    "dgamma": rel_error(dgamma, numerical_vjp(lambda v: layernorm_forward(xs, v, b_, 1e-12)[0], g, dy)),
    "dbeta": rel_error(dbeta, numerical_vjp(lambda v: layernorm_forward(xs, g, v, 1e-12)[0], b_, dy)),
}
for k, v in errs.items():
    print(f"{k:7s} vs centred differences (float64): rel error {v:.1e}")
row_sum = np.abs(dx.sum(-1)).max()
row_dot = np.abs((dx * cs.xhat).sum(-1)).max()
print(f"shift invariance: max |sum_h dx| = {row_sum:.1e};  scale invariance: max |sum_h dx * xhat| "
      f"= {row_dot:.1e}   (vs |dx| ~ {np.abs(dx).mean():.1e})")
naive = cs.rstd * dy * g                                # forgetting that mean and rstd depend on x
print(f"backward that forgets mean/rstd depend on x: rel error "
      f"{rel_error(naive, dx):.1e} (and its rows do not sum to 0: {np.abs(naive.sum(-1)).max():.1e})")

# %%
section("3. erf and the exact GELU")
grid = np.linspace(-6, 6, 2001)
ref = np.array([math.erf(v) for v in grid])
erf64 = np.abs(erf(grid) - ref).max()
erf32 = np.abs(erf(grid.astype(np.float32)).astype(np.float64) - ref).max()
print(f"minibert erf vs math.erf on [-6, 6]: max abs error float64 {erf64:.1e}, float32 {erf32:.1e} "
      f"(float32 eps/2 = {np.finfo(np.float32).eps / 2:.1e})")
gelu, gcache = gelu_forward(grid)
tanh_gelu = 0.5 * grid * (1 + np.tanh(math.sqrt(2 / math.pi) * (grid + 0.044715 * grid ** 3)))
gap = np.abs(gelu - tanh_gelu).max()
print(f"exact GELU vs the tanh approximation: max difference {gap:.1e} at x = "
      f"{grid[np.argmax(np.abs(gelu - tanh_gelu))]:.2f}")
print(f"GELU(-1) = {gelu_forward(np.array([-1.0]))[0][0]:.6f} (ReLU gives 0: GELU lets a little "
      f"negative signal through), GELU(3) = {gelu_forward(np.array([3.0]))[0][0]:.6f}")

# %%
section("4. GELU backward")
xg = rng.standard_normal((B, T, min(H, 16)))
yg, cg = gelu_forward(xg)
dyg = rng.standard_normal(yg.shape)
dxg = gelu_backward(dyg, cg)
gelu_err = rel_error(dxg, numerical_vjp(lambda v: gelu_forward(v)[0], xg, dyg))
slope = gelu_backward(np.ones_like(grid), gcache)           # GELU'(x) on the grid
print(f"dx vs centred differences: rel error {gelu_err:.1e}")
print(f"GELU'(0) = {gelu_backward(np.ones(1), gelu_forward(np.zeros(1))[1])[0]:.6f} (= 1/2); "
      f"minimum slope {slope.min():.4f} at x = {grid[np.argmin(slope)]:.3f} (GELU is not monotone)")

# %%
section("5. float32 stays float32")
y32, c32 = layernorm_forward(x.astype(np.float32), gamma.astype(np.float32), beta.astype(np.float32), 1e-12)
d32 = layernorm_backward(y32, c32)
g32, gc32 = gelu_forward(x.astype(np.float32))
gd32 = gelu_backward(g32, gc32)
dtypes = {a.dtype for a in (y32, *d32, g32, gd32)}
print(f"dtypes of every output from float32 inputs: {sorted(str(d) for d in dtypes)}")

# %%
import matplotlib.pyplot as plt

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
ax1.plot(grid, gelu, label="GELU (exact, erf)")
ax1.plot(grid, np.maximum(grid, 0), "--", label="ReLU")
ax1.plot(grid, 100 * (gelu - tanh_gelu), ":", label="100 x (exact - tanh approx.)")
ax1.set_xlim(-4, 4)
ax1.set_ylim(-1, 4)
ax1.set_title(f"GELU(x) = x Phi(x): a smooth ReLU (GELU(-1) = {float(gelu_forward(np.array([-1.0]))[0][0]):.3f})",
              fontsize=10)
ax1.set_xlabel("x")
ax1.set_ylabel("activation")
ax1.legend(fontsize=8)
ax2.plot(grid, slope, label="gelu_backward (the exercise)")
pts = np.linspace(-4, 4, 17)
fd_pts = numerical_vjp(lambda v: gelu_forward(v)[0], pts.copy(), np.ones_like(pts))
ax2.plot(pts, fd_pts, "o", ms=4, label="centred differences")
ax2.axhline(0, color="k", lw=0.5)
ax2.set_xlim(-4, 4)
ax2.set_title(f"GELU'(x) dips below 0 (min {slope.min():.3f} at x = {grid[np.argmin(slope)]:.2f})",
              fontsize=10)
ax2.set_xlabel("x")
ax2.set_ylabel("d GELU / dx")
ax2.legend(fontsize=8)
savefig(fig, "lesson03_gelu.png")

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.hist(x[0].ravel(), bins=60, alpha=0.6, density=True, label="x (mean 5, std 3)")
ax.hist(y[0].ravel(), bins=60, alpha=0.6, density=True, label="LayerNorm(x)")
ax.set_title("LayerNorm recentres and rescales every token (mean 0, std 1)", fontsize=10)
ax.set_xlabel("feature value")
ax.set_ylabel("density (histogram of one batch row)")
ax.legend(fontsize=8)
savefig(fig, "lesson03_layernorm.png")

assert np.abs(y.mean(-1)).max() < 1e-9 and np.abs(y.std(-1) - 1).max() < 1e-9
assert max(errs.values()) < FD_TOL, errs                # the exercise checks' tolerance
assert row_sum < 1e-12 and row_dot < 1e-10
assert rel_error(naive, dx) > 1e-2
assert erf64 < 1e-15 and erf32 < 1e-6
assert 1e-4 < gap < 1e-2                                  # the approximation is close, not equal
assert gelu_err < 1e-6
assert dtypes == {np.dtype(np.float32)}

results = {"ln_rel_errors": errs, "row_sum": row_sum, "row_dot_xhat": row_dot,
           "naive_rel_error": rel_error(naive, dx), "erf_max_error": {"float64": erf64, "float32": erf32},
           "tanh_gap": gap, "gelu_rel_error": gelu_err, "gelu_min_slope": float(slope.min())}
showed = [
    f"LayerNorm's dx has three terms because mean and rstd depend on x; its rows sum to 0 "
    f"({row_sum:.0e}) and are orthogonal to xhat ({row_dot:.0e}): the two invariances, as checks.",
    f"The exact GELU (erf) and the tanh approximation differ by up to {gap:.0e}: enough to break "
    f"float32 parity with a checkpoint.",
]
done(args, results, showed)
