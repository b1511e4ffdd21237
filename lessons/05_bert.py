"""Lesson 5: the encoder layer, and the whole BERT.

One post-LayerNorm encoder layer (BERT's order):
    a  = attention(x);            x1 = LayerNorm(x + a)          (residual, then normalise)
    f  = W2 GELU(W1 x1 + b1) + b2; y  = LayerNorm(x1 + f)
Its backward is nothing new: the backward passes of lessons 1-4 called in reverse order. The
one new idea is the residual: x feeds both the branch and the sum, so its gradient is the SUM
of what comes back along both paths (forget one and the check fails by ~100%).

The whole BERT: embeddings (word + position + token type, LayerNorm) -> L encoder layers ->
a head. We load a real pretrained checkpoint, all-MiniLM-L6-v2 (6 layers, H=384, 12 heads,
22.7M parameters; `minibert fetch-teacher`), tokenise text with its WordPiece vocabulary, and
check our NumPy forward against reference outputs that PyTorch/transformers wrote once
(tests/fixtures). With --tiny, the lesson uses the committed tiny model instead
(tests/fixtures/tiny_cls: 2 layers, H=32, random weights) and checks logits, loss and every
gradient against PyTorch's, by parameter name.

Derive it yourself first (exercise encoder_layer_backward): write the layer's forward as a
list of calls with their caches, then walk the list backwards; mark where a tensor is used
twice. Section 1 runs the exercise's checks on the library's answer.

Layers are numbered 1..L everywhere below (table and figure); 0 is the embedding output.

Run: python lessons/05_bert.py [--tiny]      Exercise: encoder_layer_backward
"""

# %%
from _common import ROOT, done, parse_args, report_checks, savefig, section

import tempfile
import time
from pathlib import Path

import numpy as np

from minibert import exercise_checks, fetch, hf_convert, weights
from minibert.losses import cross_entropy
from minibert.model import (bert_forward, classify_backward, classify_forward, count_params,
                            encoder_layer_backward, l2_normalize, mean_pool)

args = parse_args(5, __doc__)
FIXTURES = ROOT / "tests" / "fixtures"
results = {}

# %%
section("1. The encoder layer's backward, composed from the layers' (the exercise's checks)")
checks = exercise_checks.check_encoder_layer_backward(encoder_layer_backward)
checks_record = report_checks(checks, "encoder_layer_backward")   # every check: lesson05.json

# %%
section("2. The whole model against PyTorch: the tiny fixture, every gradient by name")
ref = np.load(FIXTURES / "tiny_cls_reference.npz")
with tempfile.TemporaryDirectory() as tmp:
    hf_convert.convert_checkpoint(FIXTURES / "tiny_cls", Path(tmp) / "tiny", verbose=False)
    tiny_params, tiny_config = weights.load_model(Path(tmp) / "tiny")
print(f"tiny_cls: {tiny_config.num_layers} layers, H={tiny_config.hidden_size}, "
      f"{tiny_config.num_heads} heads, {tiny_config.num_labels} labels, "
      f"{count_params(tiny_params):,} parameters; batch ids {ref['ids'].shape}")
ref_grads = {k[len("grad/"):]: ref[k] for k in ref.files if k.startswith("grad/")}
state, _, _ = hf_convert.split_hf_state(ref_grads)
ref_grads = hf_convert.hf_to_minibert(state, tiny_config)      # PyTorch's names -> ours (with transposes)
H = tiny_config.hidden_size
for dtype in (np.float64, np.float32):
    p = {k: v.astype(dtype) for k, v in tiny_params.items()}
    logits, _, cache = classify_forward(p, tiny_config, ref["ids"], ref["mask"], ref["token_type_ids"])
    loss, dlogits = cross_entropy(logits, ref["labels"])
    grads = classify_backward(dlogits, cache)
    errs = {}
    for name, g in ref_grads.items():
        ours, theirs = grads[name], g
        if name.endswith("attn.qkv.b"):       # the key bias gets exactly zero gradient: skip those H
            ours, theirs = np.delete(ours, np.s_[H:2 * H]), np.delete(theirs, np.s_[H:2 * H])
        errs[name] = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
    worst = max(errs, key=errs.get)
    results[np.dtype(dtype).name] = (np.abs(logits - ref["logits"]).max(), abs(float(loss) - float(ref["loss"])),
                                     errs[worst], len(errs))
    print(f"{np.dtype(dtype).name}: max |logits diff| {results[np.dtype(dtype).name][0]:.1e}, "
          f"|loss diff| {results[np.dtype(dtype).name][1]:.1e}, worst of {len(errs)} gradients "
          f"(max |diff| / max |ref|) {errs[worst]:.1e} ({worst})")

if args.tiny:
    params, config = tiny_params, tiny_config
    ids, mask, types = ref["ids"], ref["mask"], ref["token_type_ids"]
    tokens = [f"id{i}" for i in ids[0][mask[0].astype(bool)]]
    name = "tiny_cls (random weights)"
else:
    # %%
    section("3. The real teacher: load, tokenise, forward, compare with transformers")
    from minibert.tokenizer import Tokenizer

    teacher_dir = ROOT / "weights" / "minilm-l6"
    if not (teacher_dir / "model.safetensors").exists():
        print("fetching the teacher (minibert fetch-teacher) ...")
    fetch.fetch_teacher(teacher_dir)                   # idempotent: checks the manifest
    t0 = time.perf_counter()
    params, config = weights.load_model(teacher_dir)
    tok = Tokenizer.from_dir(teacher_dir)
    print(f"loaded {teacher_dir.relative_to(ROOT)} in {time.perf_counter() - t0:.2f} s: "
          f"{config.num_layers} layers, H={config.hidden_size}, {config.num_heads} heads, "
          f"vocab {config.vocab_size}, {count_params(params):,} parameters")
    emb = sum(v.size for k, v in params.items() if k.startswith("embeddings."))
    per_layer = sum(v.size for k, v in params.items() if k.startswith("encoder.0."))
    print(f"  embeddings {emb:,} ({emb / count_params(params):.0%}: the word table alone is "
          f"{params['embeddings.word'].size:,}), each encoder layer {per_layer:,}")
    for text in ("Naïve café owners in Zürich serve crème brûlée.", "unbelievably"):
        print(f"  {text!r} -> {tok.tokenize(text)}")
    tref = np.load(FIXTURES / "teacher_reference.npz")
    texts = [str(t) for t in tref["texts"]]
    pairs = [str(p) or None for p in tref["pairs"]]
    singles = [i for i, p in enumerate(pairs) if p is None]
    paired = [i for i, p in enumerate(pairs) if p is not None]
    b1 = tok.encode([texts[i] for i in singles])
    b2 = tok.encode([texts[i] for i in paired], pairs=[pairs[i] for i in paired])
    ids_match = all(np.array_equal(b.ids[j, :b.mask[j].sum()], tref["ids"][i, :tref["mask"][i].sum()])
                    for b, idx in ((b1, singles), (b2, paired)) for j, i in enumerate(idx))
    print(f"our tokenizer's ids == transformers' ids for all 8 inputs: {ids_match}")
    ids, mask, types = tref["ids"], tref["mask"], tref["token_type_ids"]
    t0 = time.perf_counter()
    out, _ = bert_forward(params, config, ids, mask, types, output_hidden=True,
                          output_attentions=True, keep_cache=False)
    secs = time.perf_counter() - t0
    real = mask.astype(bool)
    hid_err = np.abs(out.last[real] - tref["hidden_real"]).max()
    cos = (l2_normalize(mean_pool(out.last, mask)) * tref["embeddings"]).sum(axis=1)
    results["teacher"] = (hid_err, cos.min(), ids_match)
    print(f"forward of {ids.shape} tokens in {secs * 1000:.0f} ms (float32); last hidden state vs "
          f"transformers at {real.sum()} real tokens: max |diff| {hid_err:.1e}")
    print(f"sentence embeddings (mean-pool + L2) vs sentence-transformers: min cosine {cos.min():.8f}")
    e = l2_normalize(mean_pool(out.last, mask))
    print(f"cosine similarity of the {len(texts)} sentence embeddings (row/column k = input k):")
    for k, (t, pr) in enumerate(zip(texts, pairs)):
        short = t if len(t) <= 70 else t[:67] + "..."
        print(f"  {k}: {short!r}" + (f" + pair {pr!r}" if pr else ""))
    sim = e @ e.T
    print("     " + " ".join(f"{k:>5d}" for k in range(len(texts))))
    for k, row in enumerate(sim):
        print(f"  {k:>2d} " + " ".join(f"{v:5.2f}" for v in row))
    off = sim - 2 * np.eye(len(texts))
    i_max, j_max = np.unravel_index(np.argmax(off), off.shape)
    print(f"most similar pair: {i_max} and {j_max} (cosine {sim[i_max, j_max]:.2f})")
    results["similarity"] = sim
    i0 = 0                                               # "The cat sat on the mat."
    ids, mask, types = ids[i0:i0 + 1], mask[i0:i0 + 1], types[i0:i0 + 1]
    ids = ids[:, :mask.sum()]
    mask, types = mask[:, :ids.shape[1]], types[:, :ids.shape[1]]
    tokens = [tok.id_to_token(int(i)) for i in ids[0]]
    name = "all-MiniLM-L6-v2"

# %%
section("4. Inside the model: hidden states and attention, layer by layer")
out, _ = bert_forward(params, config, ids, mask, types, output_hidden=True, output_attentions=True,
                      keep_cache=False)
real = mask[0].astype(bool)
print(f"{name}; input tokens: {tokens}")
print(f"{'layer':>5} | {'mean |h|':>8} | {'cos(h, h_prev)':>14} | {'attn entropy':>12} | "
      f"{'attn to [CLS]':>13} | {'attn to [SEP]':>13}")
norms, entropies = [], []
for layer, h in enumerate(out.hidden_states):
    hv = h[0][real]
    norm = np.linalg.norm(hv, axis=-1).mean()
    norms.append(norm)
    if layer == 0:
        print(f"{'emb':>5} | {norm:8.2f} | {'':>14} | {'':>12} | {'':>13} | {'':>13}")
        continue
    prev = out.hidden_states[layer - 1][0][real]
    c = (l2_normalize(hv) * l2_normalize(prev)).sum(-1).mean()
    a = out.attentions[layer - 1][0]                      # (nh,T,T)
    ent = float(-(a * np.log(a + 1e-12)).sum(-1).mean())
    entropies.append(ent)
    print(f"{layer:5d} | {norm:8.2f} | {c:14.3f} | {ent:12.3f} | {a[:, :, 0].mean():13.3f} | "
          f"{a[:, :, -1].mean():13.3f}")
print(f"(uniform attention over {real.sum()} tokens would have entropy {np.log(real.sum()):.3f})")

# %%
import matplotlib.pyplot as plt

L = config.num_layers
fig, axes = plt.subplots(1, L, figsize=(2.9 * L + 1, 3.8))
axes = np.atleast_1d(axes)
for layer, ax in enumerate(axes):
    im = ax.imshow(out.attentions[layer][0].mean(0), vmin=0, vmax=1, cmap="viridis")
    ax.set_title(f"layer {layer + 1}: to [CLS] {out.attentions[layer][0][:, :, 0].mean():.2f}", fontsize=9)
    ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=7)
    ax.set_yticks(range(len(tokens)), tokens, fontsize=7)
    ax.set_xlabel("key", fontsize=8)
axes[0].set_ylabel("query", fontsize=8)
fig.colorbar(im, ax=list(axes), fraction=0.015, pad=0.01, label="attention (mean of heads)")
top = 1 + int(np.argmax([a[0][:, :, 0].mean() for a in out.attentions]))
fig.suptitle(f"{name}: attention layer by layer (numbered as the table); layer {top} sends most "
             f"attention to the first token", fontsize=10)
savefig(fig, "lesson05_attention_layers.png", tight=False)

fig, ax = plt.subplots(figsize=(5, 3.2))
ax.plot(range(len(norms)), norms, "o-")
ax.set_xticks(range(len(norms)), ["emb"] + [str(i) for i in range(1, len(norms))])
ax.set_xlabel("hidden state (0 = embedding output)")
ax.set_ylabel("mean L2 norm over real tokens")
ax.set_title(f"{name}: hidden-state norms (largest after layer {int(np.argmax(norms))})", fontsize=10)
savefig(fig, "lesson05_hidden_norms.png")

assert all(r.passed for r in checks), [r for r in checks if not r.passed]
assert results["float64"][0] < 1e-10 and results["float64"][1] < 1e-10 and results["float64"][2] < 1e-7
assert results["float32"][0] < 1e-5 and results["float32"][2] < 1e-4
assert len(out.hidden_states) == L + 1 and len(out.attentions) == L
assert np.allclose(out.attentions[0][0][:, real].sum(-1), 1, atol=1e-5)   # real queries (padded rows are 0)
if not args.tiny:
    hid_err, cos_min, ids_match = results["teacher"]
    assert ids_match and hid_err < 1e-4 and cos_min > 0.99999

results.update(model=name, hidden_norms=norms, attention_entropy=entropies,
               encoder_layer_backward_checks=checks_record)
showed = [
    "An encoder layer's backward is the small backwards of lessons 1-4 in reverse; the residual's "
    "gradient is a sum of two paths.",
    f"The whole NumPy BERT matches PyTorch by parameter name (worst float32 gradient {results['float32'][2]:.0e})"
    + ("" if args.tiny else f" and the real MiniLM teacher to {results['teacher'][0]:.0e}") + ".",
]
done(args, results, showed)
