"""Lesson 2: softmax, cross-entropy and temperature.

A classifier's last layer gives logits z; softmax turns them into probabilities
p_c = exp(z_c) / sum_k exp(z_k). Three things to see with real numbers:

1. Softmax is computed as exp(z - max z): mathematically the same, but exp(1000) overflows.
2. The gradients. Cross-entropy is -log p[label], averaged over the N examples of a batch.
   Derive it yourself first (exercises softmax_cross_entropy and softmax_backward): write
   dp_i/dz_j for one example (two cases, i == j and i != j), then chain -log p[label] through
   it. For softmax_backward, do the same for an arbitrary upstream gradient dy and see which
   sum you never need to build as a C x C matrix. The lesson then checks the closed forms
   against finite differences, so read on after you have tried.

   The derivation: dp_i/dz_j = p_i (delta_ij - p_j), the Jacobian diag(p) - p p^T. The log's
   1/p[label] cancels the p[label] in front, so the cross-entropy gradient is
   (p - onehot(label)) / N. For any dy, J^T dy = y * (dy - sum(dy * y)): O(C), no matrix.
3. Temperature: softmax(z / T). T > 1 softens the distribution and exposes the teacher's
   "dark knowledge" (which wrong answers it finds plausible). Distillation matches the
   student's softened distribution to the teacher's with KL(p_t || p_s). By the same
   derivation (the logits are divided by T) its gradient w.r.t. the student logits is
   (p_s - p_t) / (N T). For large T, p_s - p_t itself shrinks like 1/T, so the gradient falls
   like 1/T^2; multiplying the KL by T^2 (Hinton et al. 2015) undoes that. The result is
   about the same size at every LARGE T (within ~10% for T >= 5 here), not at every T: at small T
   p_s - p_t does not yet shrink like 1/T, and section 5 measures the scaled gradient growing
   about 2x from T=1 to T=5 before it flattens.

Run: python lessons/02_softmax_temperature.py [--tiny]
Exercises: softmax_backward, softmax_cross_entropy (and distillation_loss in lesson 7)
"""

# %%
from _common import done, parse_args, savefig, section

import numpy as np

from minibert.gradcheck import numerical_vjp, rel_error
from minibert.layers import softmax_backward, softmax_forward
from minibert.losses import cross_entropy, distillation_loss, soft_kl

args = parse_args(2, __doc__)
rng = np.random.default_rng(0)

# %%
section("1. Softmax without overflow")
z = np.array([1000.0, 999.0, 995.0])
with np.errstate(over="ignore", invalid="ignore"):
    naive = np.exp(z) / np.exp(z).sum()
stable, _ = softmax_forward(z)
print(f"logits {z}: naive exp(z)/sum -> {naive}   (exp(1000) = inf, inf/inf = nan)")
print(f"softmax_forward (exp(z - max)) -> {np.round(stable, 6)}")

# %%
section("2. Cross-entropy and its gradient (p - onehot) / N")
N, C = (4, 3) if args.tiny else (32, 5)
logits, labels = 2 * rng.standard_normal((N, C)), rng.integers(0, C, N)
loss, dlogits = cross_entropy(logits, labels)
p, _ = softmax_forward(logits)
closed = (p - np.eye(C)[labels]) / N
num = numerical_vjp(lambda v: np.array([cross_entropy(v, labels)[0]]), logits, np.ones(1))
print(f"N={N}, C={C}: loss {float(loss):.6f} = mean of -log p[label] "
      f"= {-np.log(p[np.arange(N), labels]).mean():.6f}")
print(f"rel error dlogits vs (p - onehot)/N: {rel_error(dlogits, closed):.1e}; "
      f"vs finite differences: {rel_error(dlogits, num):.1e}")
print(f"each row of dlogits sums to 0 (probabilities sum to 1): max |row sum| "
      f"{np.abs(dlogits.sum(axis=1)).max():.1e}")

# %%
section("3. softmax_backward without the Jacobian")
x = rng.standard_normal((C,))
y, cache = softmax_forward(x)
dy = rng.standard_normal(C)
J = np.diag(y) - np.outer(y, y)                         # (C,C) dy_i/dx_j, symmetric
print(f"Jacobian diag(y) - y y^T, rows sum to 0: {np.abs(J.sum(axis=1)).max():.1e}")
fast = softmax_backward(dy, cache)
print(f"J^T dy = {np.round(J.T @ dy, 6)}")
print(f"y * (dy - sum(dy*y)) = {np.round(fast, 6)}  (rel error {rel_error(J.T @ dy, fast):.1e}, "
      f"O(C) work instead of O(C^2))")

# %%
section("4. Temperature softens the teacher's distribution")
classes = ["awful", "bad", "neutral", "good", "great"]
teacher = np.array([-2.0, -0.5, 1.0, 4.0, 3.0])         # "great" is a near miss, "awful" is not
temps = [1, 2, 5, 10]
soft = {T: softmax_forward(teacher / T)[0] for T in temps}
entropy = {T: float(-(q * np.log(q)).sum()) for T, q in soft.items()}
print(f"{'T':>3} | " + " ".join(f"{c:>8}" for c in classes) + " | entropy (max ln 5 = 1.609)")
for T in temps:
    print(f"{T:3d} | " + " ".join(f"{v:8.4f}" for v in soft[T]) + f" | {entropy[T]:.3f}")
q1 = soft[1]
print(f"At T=1 the teacher says 'good' ({q1[3]:.0%}); that it finds 'great' {q1[4] / q1[2]:.0f}x more "
      f"plausible than 'neutral' is hidden in small numbers. Softened, that ranking is a visible signal.")

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(7, 4))
width = 0.8 / len(temps)
for k, T in enumerate(temps):
    ax.bar(np.arange(len(classes)) + (k - 1.5) * width, soft[T], width, label=f"T = {T}")
ax.set_xticks(np.arange(len(classes)), classes)
ax.set_xlabel("class (the teacher's logits: " + ", ".join(f"{v:g}" for v in teacher) + ")")
ax.set_ylabel("probability, softmax(z / T)")
ax.set_title(f"Higher T softens the teacher: 'good' {soft[1][3]:.2f} -> {soft[10][3]:.2f}, 'neutral' "
             f"{soft[1][2]:.2f} -> {soft[10][2]:.2f} (T = 1 -> 10)", fontsize=10)
ax.legend()
savefig(fig, "lesson02_temperature.png")

# %%
section("5. Why the T^2 factor: gradient size vs temperature")
Nb, Cb = (8, 3) if args.tiny else (256, 3)
s_logits, t_logits = rng.standard_normal((Nb, Cb)), 3 * rng.standard_normal((Nb, Cb))
Ts = np.array([1, 1.5, 2, 3, 5, 7, 10, 15, 20, 30])
labels_b = rng.integers(0, Cb, Nb)
raw, scaled = [], []
for T in Ts:
    raw.append(np.linalg.norm(soft_kl(s_logits, t_logits, T)[1]))                   # no T^2
    scaled.append(np.linalg.norm(distillation_loss(s_logits, t_logits, labels_b, 0.0, T)[1]))
raw, scaled = np.array(raw), np.array(scaled)
print(f"{'T':>5} | {'|grad KL_T|':>12} | {'|grad T^2 KL_T|':>15}")
for T, r, sc in zip(Ts, raw, scaled):
    print(f"{T:5g} | {r:12.3e} | {sc:15.3e}")
slope = np.log(raw[-1] / raw[-3]) / np.log(Ts[-1] / Ts[-3])
spread = scaled[Ts >= 5].max() / scaled[Ts >= 5].min()
print(f"log-log slope of |grad KL_T| for T in [15, 30]: {slope:.2f} (theory: -2)")
print(f"with T^2, the gradient size varies by a factor {spread:.2f} for T in [5, 30]")

fig, ax = plt.subplots(figsize=(6, 4))
ax.loglog(Ts, raw, "o-", label="KL at T (no T^2): falls like 1/T^2 for large T")
ax.loglog(Ts, scaled, "s-", label=f"T^2 * KL at T: grows {scaled[Ts == 5][0] / scaled[0]:.1f}x up to T=5, "
          f"then flat (x{spread:.2f} over T=5..30)")
ax.loglog(Ts, raw[0] / Ts ** 2, "k:", label="slope -2")
ax.set_xlabel("temperature T")
ax.set_ylabel("|d loss / d student logits| (L2 norm)")
ax.set_title("T^2 makes the soft gradient's size independent of T, for large T", fontsize=10)
ax.legend(fontsize=8)
savefig(fig, "lesson02_t_squared.png")

assert np.all(np.isnan(naive)) and np.isclose(stable.sum(), 1.0)
assert rel_error(dlogits, closed) < 1e-12 and rel_error(dlogits, num) < 1e-6
assert rel_error(J.T @ dy, fast) < 1e-12
assert all(entropy[a] < entropy[b] for a, b in zip(temps, temps[1:]))   # softer as T grows
assert -2.2 < slope < -1.8, slope
assert spread < 1.5, spread
assert scaled[Ts == 5][0] > 1.5 * scaled[0]     # ... but not at small T: that is why "for large T"

results = {"naive_is_nan": bool(np.all(np.isnan(naive))), "ce_rel_error_closed": rel_error(dlogits, closed),
           "ce_rel_error_fd": rel_error(dlogits, num), "softmax_backward_rel_error": rel_error(J.T @ dy, fast),
           "entropy_by_T": entropy, "T": Ts, "grad_norm_raw": raw, "grad_norm_T2": scaled,
           "slope_large_T": slope, "T2_spread_T5_30": spread}
showed = [
    "Softmax is exp(z - max z); cross-entropy's gradient is (p - onehot)/N and softmax's backward "
    "needs no Jacobian.",
    f"Temperature softens the teacher (entropy {entropy[1]:.2f} at T=1, {entropy[10]:.2f} at T=10); "
    f"T^2 keeps the soft gradient's size constant only for large T (x{scaled[Ts == 5][0] / scaled[0]:.1f} "
    f"from T=1 to 5, x{spread:.2f} from 5 to 30).",
]
done(args, results, showed)
