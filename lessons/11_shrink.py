"""Lesson 11: how far can it shrink? int8 quantization and attention-head pruning.

A distilled 2-layer student is already 1/3 of its teacher's compute. Two more knobs make it
smaller still, and each has a price we can measure:

- Quantization stores each weight in 8 bits instead of 32: w ~ q * scale with q an integer in
  [-127, 127], symmetric: scale = max|w| / 127 and q = round(w / scale), so the round-off of one
  entry is at most scale / 2. One scale per output channel (a column of W) instead of one per tensor costs
  nothing on disk and removes most of the error: the columns of a real weight matrix differ a
  lot in size, and one scale for all wastes the levels on the biggest column.
- Pruning removes whole attention heads. Which ones? Put a gate g_h = 1 on each head's
  context; |dL/dg_h| over some data says how much the loss cares (Michel et al. 2019). With our
  hand-written backward it is one multiply and a sum: dL/dg_h = sum over the batch, the tokens
  and the head's features of ctx_h * dL/d(g_h ctx_h) (at g = 1 the same number as the sum of
  W_o * dW_o over the head's rows of W_o).

NumPy has no fast int8 matrix multiply, so int8 here is a storage format (the file is ~4x
smaller); the matmuls run in float32 on dequantized weights. Section 2 shows why.

Run: python lessons/11_shrink.py [--tiny]       (--tiny: a random tiny BERT, seconds; no download)
"""

# %%
from _common import ROOT, done, parse_args, savefig, section

import shutil
import sys
import time
import warnings

import numpy as np

args = parse_args(11, __doc__)
WORK = args.out                                    # lessons/out/ (--tiny: lessons/out/tiny/)


# %% ------------------------------------------------------------------------------------------
section("0. A 2-layer student to shrink")
# Full: all-MiniLM-L6-v2's layers 3 and 6 copied into a 2-layer model, fine-tuned on 600 tweets
# of the default corpus (what `minibert distill --init teacher` starts from; hard labels here,
# to keep the lesson short). --tiny: a random 4-layer H=32 BERT and a separable toy CSV.
from minibert.data import load_dataset  # noqa: E402
from minibert.student import init_student, student_config  # noqa: E402
from minibert.tokenizer import Tokenizer  # noqa: E402
from minibert.batches import encode_examples  # noqa: E402
from minibert.train import TrainConfig, finetune_classifier  # noqa: E402
from minibert.weights import load_model  # noqa: E402

if args.tiny:
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny import make_tiny_model_dir, write_tiny_dataset
    base_dir = WORK / "pretrained_4heads"
    if not (base_dir / "model.safetensors").exists():
        make_tiny_model_dir(base_dir, num_layers=4, hidden_size=32, num_heads=4, intermediate_size=64, seed=0)
    data = load_dataset(f"csv:{write_tiny_dataset(WORK / 'sentiment.csv', n=400, num_classes=2, seed=0)}")
    tcfg = TrainConfig(epochs=3, lr=5e-3, batch_size=16, max_length=16, progress=False)
else:
    from minibert.fetch import fetch_teacher
    base_dir = fetch_teacher(ROOT / "weights" / "minilm-l6")
    data = load_dataset("default", limit=600, seed=0)
    tcfg = TrainConfig(epochs=3, lr=2e-4, batch_size=32, max_length=32, progress=False)

tparams, tconfig = load_model(base_dir)
tok = Tokenizer.from_dir(base_dir)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")                # long tweets are cut to max_length: fine here
    train = encode_examples(tok, data.train, tcfg.max_length)
    dev = encode_examples(tok, data.dev, tcfg.max_length)
sconfig = student_config(tconfig, 2)
init = [tconfig.num_layers // 2 - 1, tconfig.num_layers - 1]
sparams = init_student(tparams, tconfig, sconfig, init, np.random.default_rng(0))
student_dir, run_dir = WORK / "lesson11_student", WORK / "lesson11_run"
shutil.rmtree(run_dir, ignore_errors=True)         # a lesson always starts fresh
t0 = time.perf_counter()
fitres, _ = finetune_classifier(sparams, sconfig, data.labels, train, dev, tcfg, student_dir,
                                tokenizer_dir=base_dir, data_spec="lesson11", run_dir=run_dir)
shutil.rmtree(run_dir, ignore_errors=True)         # its resumable checkpoint: not needed
params, config = load_model(student_dir)
print(f"student: {config.num_layers} layers from teacher blocks {init}, {config.num_heads} heads of "
      f"{config.head_size}, fine-tuned {len(fitres.step_losses)} steps in {time.perf_counter() - t0:.1f} s; "
      f"dev accuracy {fitres.best_metrics['accuracy']:.3f} ({len(dev.labels)} examples)")

# %% ------------------------------------------------------------------------------------------
section("1. One weight matrix, 8, 6 and 4 bits")
from minibert.quantize import dequantize, quantization_error, quantize  # noqa: E402

W = tparams["encoder.0.ffn.in.W"]                  # (H, I): the teacher's first FFN matrix
col_max = np.abs(W).max(axis=0)                    # (I,) the range of each output channel
print(f"encoder.0.ffn.in.W {W.shape}: column max |w| from {col_max.min():.3f} to {col_max.max():.3f} "
      f"(median {np.median(col_max):.3f})")
names = ["encoder.0.attn.qkv.W", "encoder.0.attn.out.W", "encoder.0.ffn.in.W", "encoder.0.ffn.out.W",
         "embeddings.word"]
bits = [8, 6, 4]
errors = {}                                        # (name, per) -> [error at 8, 6, 4 bits]
for name in names:
    axis = 0 if name.startswith("embeddings") else 1    # a table: one scale per row (token)
    errors[name, "tensor"] = [quantization_error(tparams[name], b, None) for b in bits]
    errors[name, "channel"] = [quantization_error(tparams[name], b, axis) for b in bits]
print(f"{'relative error ||W - W_hat|| / ||W||':40s} " + "  ".join(f"{b} bits".rjust(17) for b in bits))
for name in names:
    cells = [f"{t:.1e} / {c:.1e}".rjust(17) for t, c in zip(errors[name, "tensor"], errors[name, "channel"])]
    print(f"{name + ' (tensor / channel)':40s} " + "  ".join(cells))
ratios = [errors[n, "channel"][0] / errors[n, "channel"][1] for n in names]
print(f"two bits fewer = 4x coarser steps: error 6 bits / 8 bits = {1 / np.mean(ratios):.2f}x on average")
q, s = quantize(W, 8, 1)
worst = np.argmin(col_max)
col_err_t = np.linalg.norm(W[:, worst] - dequantize(*quantize(W, 8, None))[:, worst]) / np.linalg.norm(W[:, worst])
col_err_c = np.linalg.norm(W[:, worst] - dequantize(q, s)[:, worst]) / np.linalg.norm(W[:, worst])
print(f"the smallest column ({worst}): error {col_err_t:.1e} with one scale per tensor, "
      f"{col_err_c:.1e} with its own")

import matplotlib.pyplot as plt  # noqa: E402

fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
for k, name in enumerate(names):
    a1.semilogy(bits, errors[name, "tensor"], "--o", color=f"C{k}", alpha=0.6)
    a1.semilogy(bits, errors[name, "channel"], "-o", color=f"C{k}", label=name)
a1.set_xticks(bits)                                 # 8, 6, 4: no fractional bits
a1.set_xlabel("bits per weight")
a1.set_ylabel("relative error ||W - W_hat|| / ||W||")
a1.set_title("Quantization error: dashed one scale per tensor, solid per channel")
a1.invert_xaxis()
a1.legend(fontsize=7)
a2.hist(col_max, bins=40)
a2.axvline(np.abs(W).max(), color="k", ls="--", label="the tensor's max (one scale)")
a2.set_xlabel("max |w| of each output channel of encoder.0.ffn.in.W")
a2.set_ylabel("channels")
a2.set_title("Why per channel: the columns' ranges differ")
a2.legend(fontsize=8)
savefig(fig, "lesson11_quant_error.png")

# %% ------------------------------------------------------------------------------------------
section("2. Why int8 is not faster in NumPy")
rng = np.random.default_rng(0)
x = rng.normal(size=(256, W.shape[0])).astype(np.float32)   # (N,H) tokens
qi = q.astype(np.int32)


def best_of(fn, n=3):
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3


t_f32 = best_of(lambda: x @ W)
t_deq = best_of(lambda: x @ dequantize(q, s))
xq = np.rint(x / (np.abs(x).max() / 127)).astype(np.int32)
t_int = best_of(lambda: xq @ qi, n=1)
print(f"x {x.shape} @ W {W.shape}: float32 BLAS {t_f32:.2f} ms; dequantize then float32 {t_deq:.2f} ms; "
      f"int32 matmul (no BLAS) {t_int:.1f} ms = {t_int / t_f32:.0f}x the float32 time")
print("so the library dequantizes once when it loads a model: int8 saves disk, not time")

# %% ------------------------------------------------------------------------------------------
section("3. What quantization costs the student")
from minibert.evaluate import predict_and_score  # noqa: E402
from minibert.quantize import dequantize_tensors, quantize_params  # noqa: E402


def nbytes(tensors, prefix=""):
    return sum(v.nbytes for k, v in tensors.items() if k.startswith(prefix))


pred_f32, m_f32 = predict_and_score(params, config, dev)
rows = [("float32", m_f32["accuracy"], 1.0, 1.0, 1.0)]
variants = {}
for label, per_channel, b in (("int8 per tensor", False, 8), ("int8 per channel", True, 8),
                              ("int6 per channel", True, 6), ("int4 per channel", True, 4)):
    stored = quantize_params(params, per_channel=per_channel, bits=b)
    qparams = dequantize_tensors(stored)
    pred, m = predict_and_score(qparams, config, dev)
    variants[label] = (qparams, pred, m)
    rows.append((label, m["accuracy"], float((pred == pred_f32).mean()),
                 nbytes(stored, "encoder.") / nbytes(params, "encoder."), nbytes(stored) / nbytes(params)))
qp8 = variants["int8 per channel"][0]
import dataclasses  # noqa: E402

dyn_config = dataclasses.replace(config, activation_quant="dynamic")   # every linear input int8 per row
pred, m = predict_and_score(qp8, dyn_config, dev)
variants["int8 per channel + dynamic int8 activations"] = (qp8, pred, m)
rows.append(("int8 + dyn. act.", m["accuracy"], float((pred == pred_f32).mean()), rows[2][3], rows[2][4]))
print(f"{'weights':18s} {'dev acc':>8s} {'agrees w/ f32':>14s} {'encoder bytes':>14s} {'file bytes':>11s}")
for name, acc, agree, enc, total in rows:
    print(f"{name:18s} {acc:8.3f} {agree:14.1%} {enc:14.1%} {total:11.1%}")
print("(int6/int4 are stored one per byte here: their size would need bit packing)")

# %% ------------------------------------------------------------------------------------------
section("4. Which heads matter: |dL/d gate| per head")
from minibert.prune import choose_heads, head_importance, remove_heads  # noqa: E402
from minibert.batches import train_batches  # noqa: E402

sample = list(train_batches(train, tcfg.batch_size, np.random.default_rng(0)))[:8 if args.tiny else 6]
t0 = time.perf_counter()
imp = head_importance(params, config, sample)
print(f"importance from {sum(b.ids.shape[0] for b in sample)} training examples in "
      f"{time.perf_counter() - t0:.1f} s (normalised per layer):")
for i, s_ in enumerate(imp):
    print(f"  layer {i}: " + " ".join(f"{v:.2f}" for v in s_))

# %% ------------------------------------------------------------------------------------------
section("5. Accuracy vs heads kept")
total = sum(len(s_) for s_ in imp)
keeps = sorted({max(config.num_layers, round(total * f)) for f in (1.0, 0.75, 0.5, 0.33, 0.25, 0.1)},
               reverse=True)
curve = {"importance": [], "reverse": []}
for k in keeps:
    for order, scores in (("importance", imp), ("reverse", [-s_ for s_ in imp])):
        remove = choose_heads(scores, keep=k)      # "reverse": the MOST important heads go first
        pp, pc = remove_heads(params, config, remove)
        curve[order].append(predict_and_score(pp, pc, dev)[1]["accuracy"])
print(f"{'heads kept':>10s} {'least important removed':>24s} {'most important removed':>23s}")
for k, a, r in zip(keeps, curve["importance"], curve["reverse"]):
    print(f"{k:10d} {a:24.3f} {r:23.3f}")

fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1.3, 1]})
im = a1.imshow(np.array(imp), cmap="viridis", aspect="auto")
a1.set_xlabel("head")
a1.set_ylabel("layer")
a1.set_yticks(range(config.num_layers))
a1.set_title("Head importance |dL/dg| (normalised per layer)")
fig.colorbar(im, ax=a1)
a2.plot(keeps, curve["importance"], "-o", label="remove least important first")
a2.plot(keeps, curve["reverse"], "--s", label="remove most important first")
a2.axhline(m_f32["accuracy"], color="k", lw=0.8, label="all heads")
a2.set_xlabel(f"heads kept (of {total})")
a2.set_ylabel("dev accuracy (no re-training)")
a2.set_title("Accuracy vs heads kept")
a2.legend(fontsize=8)
savefig(fig, "lesson11_heads.png")

# %% ------------------------------------------------------------------------------------------
section("Checks")
for name in names:                                 # per channel is never worse, at every bit width
    assert all(c <= t * 1.001 for c, t in zip(errors[name, "channel"], errors[name, "tensor"])), name
for name in names:                                 # each 2 bits fewer: ~4x the error
    e8, e6, e4 = errors[name, "channel"]
    assert 2.5 < e6 / e8 < 5.5 and 2.5 < e4 / e6 < 6.0, (name, e8, e6, e4)
_, _, m8 = variants["int8 per channel"]
by = {r[0]: r for r in rows}
# the encoder's bytes: < 30% of float32 (tiny H=32: the float32 biases, LayerNorms and scales weigh more)
assert by["int8 per channel"][3] < (0.35 if args.tiny else 0.30)
assert by["int8 per channel"][2] >= 0.95, by                    # int8 per channel barely moves a prediction
assert abs(m8["accuracy"] - m_f32["accuracy"]) <= 0.02, (m8, m_f32)
assert curve["importance"][0] == m_f32["accuracy"]             # all heads kept: the same model
if not args.tiny:
    assert col_err_c < col_err_t / 5                            # the small column is where it shows
    # pruning by importance beats pruning the important heads first, on average over the curve
    assert np.mean(curve["importance"]) >= np.mean(curve["reverse"]), curve
results = {"student_dev_accuracy": m_f32["accuracy"], "quantization_error": {f"{n} {per}": e for (n, per), e in errors.items()},
           "bits": bits, "matmul_ms": {"float32": t_f32, "dequantize_then_float32": t_deq, "int32": t_int},
           "quantized_student": [dict(zip(("weights", "dev_accuracy", "agreement", "encoder_bytes", "file_bytes"), r))
                                 for r in rows],
           "importance": imp, "heads_kept": keeps, "accuracy_vs_heads": curve}
showed = [
    f"Per output channel, int8 keeps weight error at {errors[names[3], 'channel'][0]:.1e} where one scale per tensor "
    f"gives {errors[names[3], 'tensor'][0]:.1e} ({names[3]}); two bits fewer = ~4x the error.",
    f"int8 per channel: dev accuracy {m8['accuracy']:.3f} vs float32 {m_f32['accuracy']:.3f}, "
    f"{by['int8 per channel'][2]:.1%} of predictions unchanged, encoder at {by['int8 per channel'][3]:.0%} of its bytes.",
    f"NumPy's int32 matmul is {t_int / t_f32:.0f}x slower than float32 BLAS: int8 here saves disk, not time.",
    f"Removing heads by |dL/dg|: {keeps[-1]} of {total} heads left -> dev accuracy {curve['importance'][-1]:.3f}; "
    f"removing the most important first -> {curve['reverse'][-1]:.3f}.",
]
done(args, results, showed)
