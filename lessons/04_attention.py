"""Lesson 4: scaled dot-product and multi-head attention, with padding masks.

One head: every token asks a question (query q), advertises what it holds (key k) and carries
a message (value v). Token i reads sum_j softmax_j(q_i . k_j / sqrt(hs)) v_j.

- Why / sqrt(hs): for random unit-variance q and k, q . k has variance hs. Unscaled, the scores
  grow with the head size and softmax saturates to one-hot: its gradient vanishes.
- Multi-head: nh heads of size hs = H / nh run side by side. minibert computes q, k, v for all
  heads with ONE fused (H, 3H) matmul and reshapes to (B, nh, T, hs): no Python loop over heads.
  attention_naive is the loop-over-heads twin it is tested against.
- Padding: a batch pads short sentences to the longest. Padded keys must get zero attention,
  so we add a bias of MASK_NEG = -1e9 to their scores (exp(-1e9) == 0.0 exactly). Finite, not
  -inf: a row whose keys are all masked then gives finite weights instead of NaN (-inf - -inf).

Derive it yourself first (exercise attention_backward): the backward runs the forward in
reverse, out-projection, probs @ v, softmax (lesson 2's backward, row by row), the scores
q k^T / sqrt(hs), the fused QKV projection. Write the shape of every gradient before its
formula; the masked scores need no special case (why?). Section 4 runs the exercise's checks.

Run: python lessons/04_attention.py [--tiny]      Exercise: attention_backward
"""

# %%
from _common import done, parse_args, report_checks, savefig, section

import time

import numpy as np

from minibert import exercise_checks
from minibert.attention import MASK_NEG, attention_backward, attention_forward, attention_naive, mask_to_bias
from minibert.layers import softmax_forward

args = parse_args(4, __doc__)
rng = np.random.default_rng(0)

# %%
section("1. Why divide by sqrt(head size)")
print(f"{'hs':>5} | {'std(q.k)':>9} | {'max prob, unscaled':>18} | {'max prob, scaled':>16} | "
      f"{'|d softmax| unscaled/scaled':>27}")
sat = {}
for hs in (8, 64, 256) if args.tiny else (8, 32, 64, 128, 256, 512):
    q, k = rng.standard_normal((64, hs)), rng.standard_normal((64, hs))
    s = q @ k.T                                          # (64, 64) raw scores
    p_raw, p_scaled = softmax_forward(s)[0], softmax_forward(s / np.sqrt(hs))[0]
    # size of the softmax Jacobian: sum of p(1-p), which is 0 for a one-hot row
    g_raw, g_scaled = (p_raw * (1 - p_raw)).sum(1).mean(), (p_scaled * (1 - p_scaled)).sum(1).mean()
    sat[hs] = (p_raw.max(1).mean(), p_scaled.max(1).mean(), g_raw / g_scaled)
    print(f"{hs:5d} | {s.std():9.2f} | {sat[hs][0]:18.3f} | {sat[hs][1]:16.3f} | {sat[hs][2]:27.3f}")
print("Unscaled, attention collapses onto one key as hs grows and the softmax stops passing gradient.")

# %%
section("2. Multi-head attention: fused and naive agree")
B, T, H, nh = (2, 6, 16, 4) if args.tiny else (2, 10, 64, 4)
x = rng.standard_normal((B, T, H))
W_qkv, b_qkv = 2 * rng.standard_normal((H, 3 * H)) / np.sqrt(H), 0.1 * rng.standard_normal(3 * H)
W_o, b_o = rng.standard_normal((H, H)) / np.sqrt(H), 0.1 * rng.standard_normal(H)
mask = np.ones((B, T), dtype=np.int64)
n_real = T - 3
mask[1, n_real:] = 0                                     # sentence 2 is 3 tokens shorter: padding
bias = mask_to_bias(mask, np.float64)
y, cache = attention_forward(x, W_qkv, b_qkv, W_o, b_o, bias, nh)
y_naive, probs_naive = attention_naive(x, W_qkv, b_qkv, W_o, b_o, bias, nh)
diff64 = np.abs(y - y_naive).max()
args32 = [a.astype(np.float32) for a in (x, W_qkv, b_qkv, W_o, b_o)]
y32, _ = attention_forward(*args32, mask_to_bias(mask, np.float32), nh)
diff32 = np.abs(y32 - attention_naive(*args32, mask_to_bias(mask, np.float32), nh)[0]).max()
print(f"x {x.shape}, {nh} heads of size {H // nh}; scores and probs {cache.probs.shape}")
print(f"max |fused - naive|: float64 {diff64:.1e}, float32 {diff32:.1e}; output dtype {y32.dtype}")

# %%
section("3. The padding mask")
pad_cols = cache.probs[1][:, :, n_real:]                 # attention paid TO padded keys, sentence 2
print(f"bias for sentence 2: {bias[1, 0, 0]}")
print(f"attention on padded keys: max {pad_cols.max():.1e} (exactly zero); rows sum to 1: "
      f"max |sum - 1| {np.abs(cache.probs.sum(-1) - 1).max():.1e}")
y_alone, _ = attention_forward(x[1:, :n_real], W_qkv, b_qkv, W_o, b_o, None, nh)
same = np.abs(y[1, :n_real] - y_alone[0]).max()
y_nomask, _ = attention_forward(x, W_qkv, b_qkv, W_o, b_o, None, nh)
leak = np.abs(y_nomask[1, :n_real] - y_alone[0]).max()
print(f"real tokens of the padded sentence vs the same sentence alone: max diff {same:.1e}")
print(f"... and without the mask (the padding leaks in): max diff {leak:.2f}")
all_masked = (np.array([1.0, 2.0, 3.0], dtype=np.float32) + np.float32(MASK_NEG))
with np.errstate(invalid="ignore"):
    inf_row = softmax_forward(np.array([1.0, 2.0, 3.0]) - np.inf)[0]
masked_row = softmax_forward(all_masked)[0]
print(f"a row whose keys are all masked (float32 scores 1, 2, 3 + bias): with -1e9 -> {masked_row} "
      f"(1e9's float32 spacing is 64, so the scores become equal); with -inf -> {inf_row}")

# %%
section("4. The backward pass, with the mask: the exercise's own checks")
results = exercise_checks.check_attention_backward(attention_backward)
checks_record = report_checks(results, "attention_backward")   # every check: lesson04.json

# %%
section("5. Speed: no loops over heads")
if args.tiny:
    Bs, Ts, Hs, nhs, reps = 2, 16, 32, 4, 3
else:
    Bs, Ts, Hs, nhs, reps = 8, 64, 384, 12, 9            # MiniLM's width and heads
xs = rng.standard_normal((Bs, Ts, Hs)).astype(np.float32)
ws = [(rng.standard_normal(s) / np.sqrt(Hs)).astype(np.float32) for s in ((Hs, 3 * Hs), (3 * Hs,), (Hs, Hs), (Hs,))]
bs = mask_to_bias(np.ones((Bs, Ts)), np.float32)
timing = {"attention_forward": [], "attention_naive": []}
for fn in (attention_forward, attention_naive):
    fn(xs, *ws, bs, nhs)                                 # warm-up
for _ in range(reps):                                    # interleaved rounds: load hits both alike
    for name, fn in (("attention_forward", attention_forward), ("attention_naive", attention_naive)):
        t0 = time.perf_counter()
        fn(xs, *ws, bs, nhs)
        timing[name].append((time.perf_counter() - t0) * 1000)
ratios = np.array(timing["attention_naive"]) / np.array(timing["attention_forward"])   # paired, per round
timing = {k: float(np.median(v)) for k, v in timing.items()}
print(f"B={Bs}, T={Ts}, H={Hs}, {nhs} heads, float32: fused {timing['attention_forward']:.2f} ms, "
      f"naive loops {timing['attention_naive']:.2f} ms "
      f"(medians of {reps} interleaved rounds; paired ratio naive/fused {np.median(ratios):.1f}x, "
      f"range {ratios.min():.1f}-{ratios.max():.1f}{'; tiny sizes: noise' if args.tiny else ''})")

# %%
import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle

fig, axes = plt.subplots(1, nh, figsize=(3.2 * nh + 1, 4.2))
labels = [f"t{i}" for i in range(n_real)] + ["[PAD]"] * (T - n_real)
for h, ax in enumerate(axes):
    im = ax.imshow(cache.probs[1, h], vmin=0, vmax=1, cmap="viridis")
    # padded QUERY rows still attend (their keys are real), but nothing reads their output:
    # pooling, the loss and the next layer's real tokens never look at them. Hatched here.
    ax.add_patch(Rectangle((-0.5, n_real - 0.5), T, T - n_real, facecolor="white", alpha=0.55,
                           hatch="//", edgecolor="0.3", lw=0))
    ax.set_title(f"head {h}")
    ax.set_xticks(range(T), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(T), labels, fontsize=7)
    ax.set_xlabel("key (attended to)")
axes[0].set_ylabel("query (attending)")
fig.colorbar(im, ax=list(axes), fraction=0.02, pad=0.02, label="attention probability")
fig.suptitle("A padded sentence: padded keys (right columns) get exactly 0. Hatched rows: padded "
             "queries, computed but never read", fontsize=10)
savefig(fig, "lesson04_attention_heads.png", tight=False)

hss = sorted(sat)
fig, ax = plt.subplots(figsize=(5.5, 3.5))
ax.semilogx(hss, [sat[h][0] for h in hss], "o-", base=2, label="unscaled q.k")
ax.semilogx(hss, [sat[h][1] for h in hss], "s-", base=2, label="q.k / sqrt(hs)")
ax.set_xlabel("head size hs (random unit-variance q, k; 64 keys)")
ax.set_ylabel("mean largest attention weight")
ax.set_title(f"Unscaled, softmax saturates: max weight {sat[max(sat)][0]:.2f} vs "
             f"{sat[max(sat)][1]:.2f} at hs={max(sat)}", fontsize=10)
ax.set_ylim(0, 1.05)
ax.legend()
savefig(fig, "lesson04_scaling.png")

assert sat[max(sat)][0] > 0.8 and sat[max(sat)][1] < 0.5          # saturated vs spread
assert diff64 < 1e-12 and diff32 < 1e-5 and y32.dtype == np.float32
assert pad_cols.max() == 0.0 and same < 1e-12 and leak > 1e-3
assert np.all(np.isnan(inf_row)) and np.allclose(masked_row, 1 / 3)
assert all(r.passed for r in results), [r for r in results if not r.passed]
assert args.tiny or np.median(ratios) > 1.0           # tiny sizes: timing noise, not asserted

results = {"saturation": {str(k): {"max_prob_unscaled": v[0], "max_prob_scaled": v[1],
                                   "grad_ratio_unscaled_over_scaled": v[2]} for k, v in sat.items()},
           "fused_vs_naive_max_diff": {"float64": diff64, "float32": diff32},
           "padded_key_attention_max": pad_cols.max(), "padded_vs_alone_max_diff": same,
           "leak_without_mask": leak, "ms_median": timing, "naive_over_fused_ratio_median": np.median(ratios),
           "timing_shape": [Bs, Ts, Hs, nhs], "timing_rounds": reps,
           "attention_backward_checks": checks_record}
showed = [
    f"Dividing scores by sqrt(hs) keeps softmax from saturating (max weight {sat[max(sat)][0]:.2f} "
    f"unscaled at hs={max(sat)}); one fused QKV matmul equals the per-head loops.",
    "A -1e9 bias gives padded keys exactly 0 attention, and a padded sentence's real tokens equal "
    "the same sentence alone.",
]
done(args, results, showed)
