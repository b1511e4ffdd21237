"""General (task-agnostic) distillation: a shallow student learns the teacher's inside on plain text.

Shape legend: B batch, T tokens, Hs / Ht student / teacher hidden size, nh heads, V vocab,
M masked positions in a batch, Ls / Lt student / teacher layers.

TinyBERT's first stage (Jiao et al. 2020, Sec. 3.1) needs no labels: on unlabelled sentences the
student matches, through the uniform layer map g (g[0] = 0, g[j] = j*Lt//Ls),
- the embedding-layer output (hidden state 0):      hidden_mse(h_0 @ W_0 + b_0, teacher h_0)
- every mapped hidden state j = 1..Ls:               hidden_mse(h_j @ W_j + b_j, teacher h_g(j))
- every student block's pre-softmax attention scores: attention_mse(scores_j, teacher block g(j+1)-1)
with learned projections W_j (Hs, Ht) when the student is narrower (thrown away afterwards).

DistilBERT (Sanh et al. 2019) adds, for a teacher with a masked-LM head: 15% of the tokens are
chosen (80% -> [MASK], 10% -> a random token, 10% kept), both models see the same corrupted
text, and at the chosen positions the student's masked-LM head learns
- the teacher's soft distribution at temperature T: T^2 * KL(p_teacher,T || p_student,T)
- the original token (hard MLM cross-entropy),
plus the cosine loss between the last hidden states. The three DistilBERT weights are 5, 2, 1.

The result is an ordinary model directory (no classifier, no pooler; an MLM head if one was
trained) plus general.json; `minibert distill --student-init DIR` starts task distillation from it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from minibert.errors import MinibertError
from minibert.losses import attention_mse, cosine_loss, cross_entropy, hidden_mse, soft_kl
from minibert.fast_model import bert_forward, mlm_forward
from minibert.model import BertConfig, add_grads, bert_backward, mlm_backward

PROJ_PREFIX = "distill.proj."        # the projections' names (as in task distillation)
DISTILBERT_WEIGHTS = {"soft_mlm_weight": 5.0, "mlm_weight": 2.0, "cosine_weight": 1.0}


class GeneralSettings(NamedTuple):
    embedding_weight: float = 1.0     # TinyBERT: hidden state 0 (embedding output) MSE
    hidden_weight: float = 1.0        # TinyBERT: mapped hidden states 1..Ls MSE (summed)
    attention_weight: float = 1.0     # TinyBERT: mapped attention scores MSE (summed)
    soft_mlm_weight: float = 0.0      # DistilBERT: T^2 * KL on the masked positions
    mlm_weight: float = 0.0           # DistilBERT: hard MLM cross-entropy on the masked positions
    cosine_weight: float = 0.0        # DistilBERT: 1 - cos(last hidden states)
    temperature: float = 2.0
    mask_prob: float = 0.15           # share of real tokens chosen for the MLM terms
    layer_map: tuple = ()             # uniform_layer_map(Ls, Lt)

    @property
    def needs_mlm(self) -> bool:
        return self.soft_mlm_weight > 0 or self.mlm_weight > 0

    @property
    def needs_scores(self) -> bool:
        return self.attention_weight > 0


def check_general_settings(s: GeneralSettings, config: BertConfig, teacher: BertConfig) -> None:
    """MinibertError naming the flag when the settings cannot work with these two models."""
    names = ("embedding_weight", "hidden_weight", "attention_weight", "soft_mlm_weight",
             "mlm_weight", "cosine_weight")
    for name in names:
        v = getattr(s, name)
        if not (np.isfinite(v) and v >= 0):
            raise MinibertError(f"--{name.replace('_', '-')}: expected a weight >= 0, got {v}")
    if not any(getattr(s, n) > 0 for n in names):
        raise MinibertError("every loss weight is 0: general distillation would learn nothing")
    if not (np.isfinite(s.temperature) and s.temperature > 0):
        raise MinibertError(f"--temperature must be positive, got {s.temperature}")
    if s.needs_mlm and not teacher.mlm_head:
        raise MinibertError(
            "--soft-mlm-weight / --mlm-weight need a teacher with a masked-LM head (its "
            "predictions are the soft targets), and this teacher has none (config mlm_head "
            "false; all-MiniLM-L6-v2 ships without one); use TinyBERT's losses only, or a teacher "
            "converted from a BertForMaskedLM checkpoint (minibert convert)")
    if s.needs_mlm and not 0.0 < s.mask_prob < 1.0:
        raise MinibertError(f"--mask-prob: expected a share in (0, 1), got {s.mask_prob}")
    if s.cosine_weight > 0 and config.hidden_size != teacher.hidden_size:
        raise MinibertError(f"--cosine-weight compares hidden states directly, so the student must "
                            f"be as wide as the teacher ({teacher.hidden_size}), got "
                            f"{config.hidden_size}")
    if s.attention_weight > 0 and config.num_heads != teacher.num_heads:
        raise MinibertError(f"--attention-weight compares heads one to one: the student needs the "
                            f"teacher's {teacher.num_heads} heads, got {config.num_heads}")
    if len(s.layer_map) != config.num_layers + 1:
        raise MinibertError(f"layer_map: expected {config.num_layers + 1} entries, got "
                            f"{len(s.layer_map)}")


# ----------------------------------------------------------------------------- masking

class Masked(NamedTuple):
    ids: np.ndarray           # (B,T) int64, the corrupted input both models see
    positions: np.ndarray     # (M,2) int64 (row, column) of the chosen tokens, row-major order
    targets: np.ndarray       # (M,) int64 the original tokens there


def mask_tokens(ids: np.ndarray, mask: np.ndarray, special: np.ndarray, mask_id: int,
                prob: float, rng: np.random.Generator) -> Masked:
    """BERT's corruption: each real, non-special token is chosen with probability `prob`
    (at least one per batch); a chosen token becomes [MASK] (80%), a random non-special token
    (10%) or stays (10%). Inputs: ids / mask (B,T), special (V,) bool, mask_id, prob, rng.
    Returns: Masked (a fresh ids array; the input is not modified)."""
    ids = np.array(ids, dtype=np.int64, copy=True)
    can = (np.asarray(mask) == 1) & ~special[ids]                        # (B,T)
    if not can.any():
        raise MinibertError("a batch has no maskable tokens (only [CLS]/[SEP]/padding)")
    chosen = can & (rng.random(ids.shape) < prob)                        # (B,T)
    if not chosen.any():                                                 # keep the MLM terms defined
        flat = np.flatnonzero(can)
        chosen.reshape(-1)[flat[rng.integers(len(flat))]] = True
    positions = np.argwhere(chosen).astype(np.int64)                     # (M,2)
    targets = ids[chosen].copy()                                         # (M,)
    action = rng.random(len(targets))                                    # (M,)
    pool = np.flatnonzero(~special)
    replacement = np.where(action < 0.8, mask_id,
                           np.where(action < 0.9, pool[rng.integers(len(pool), size=len(targets))],
                                    targets))
    ids[positions[:, 0], positions[:, 1]] = replacement
    return Masked(ids, positions, targets)


# ----------------------------------------------------------------------------- the MLM loss

def mlm_distill_loss(params: dict, config: BertConfig, last: np.ndarray, positions: np.ndarray,
                     targets: np.ndarray, teacher_logits: np.ndarray | None, T: float,
                     soft_weight: float, hard_weight: float):
    """DistilBERT's masked-LM terms, at the masked positions only.

    loss = soft_weight * T^2 * KL(softmax(t/T) || softmax(s/T)) + hard_weight * CE(s, targets),
    with s = the student's MLM logits at the M positions (mean over positions in both terms).
    Only the M rows go through the head: (M,H) @ (H,V) instead of (B*T,H) @ (H,V).

    Inputs: student params/config (with an MLM head), last (B,T,H) the student's last hidden
    state, positions (M,2) distinct (row, column), targets (M,) token ids, teacher_logits (M,V)
    (None only when soft_weight is 0), T, the two weights.
    Returns: loss (float), dlast (B,T,H) fresh (0 away from the positions), grads for mlm.* and
    embeddings.word (the tied decoder; add it with add_grads), parts {"soft_mlm", "mlm"}.
    """
    rows, cols = positions[:, 0], positions[:, 1]
    x = last[rows, cols][None]                                           # (B,T,H) -> (1,M,H)
    logits, cache = mlm_forward(params, config, x)                       # (1,M,V)
    s = logits[0]                                                        # (M,V)
    dt = s.dtype.type
    loss, ds, parts = 0.0, np.zeros_like(s), {"soft_mlm": 0.0, "mlm": 0.0}
    if soft_weight > 0:
        kl, dkl = soft_kl(s, teacher_logits, T)                          # dkl (M,V)
        w = dt(soft_weight * T * T)
        loss += float(w) * float(kl)
        ds += w * dkl
        parts["soft_mlm"] = float(kl)
    if hard_weight > 0:
        ce, dce = cross_entropy(s, targets)                              # dce (M,V)
        loss += hard_weight * float(ce)
        ds += dt(hard_weight) * dce
        parts["mlm"] = float(ce)
    dx, grads = mlm_backward(ds[None], cache)                            # (1,M,H)
    dlast = np.zeros_like(last)                                          # (B,T,H)
    dlast[rows, cols] = dx[0]                                            # positions are distinct
    return loss, dlast, grads, parts


# ----------------------------------------------------------------------------- teacher and student

class GeneralTargets(NamedTuple):
    """The teacher's side for one batch: mapped hidden states (Ls+1 of (B,T,Ht)), mapped scores
    (Ls of (B,nh,T,T)) or None, MLM logits at the masked positions (M,V) or None."""
    hidden: list
    scores: list | None
    mlm_logits: np.ndarray | None


def teacher_targets(tparams: dict, tconfig: BertConfig, ids, mask, token_type_ids,
                    settings: GeneralSettings, positions=None) -> GeneralTargets:
    """The frozen teacher on one (possibly corrupted) batch: eval mode, no caches."""
    out, _ = bert_forward(tparams, tconfig, ids, mask, token_type_ids, rng=None,
                          output_hidden=True, output_attentions=settings.needs_scores,
                          keep_cache=False)
    g = settings.layer_map
    hidden = [out.hidden_states[t] for t in g]
    scores = [out.scores[t - 1] for t in g[1:]] if settings.needs_scores else None
    mlm = None
    if settings.soft_mlm_weight > 0:
        x = out.last[positions[:, 0], positions[:, 1]][None]             # (1,M,Ht)
        mlm = mlm_forward(tparams, tconfig, x)[0][0]                     # (M,V)
    return GeneralTargets(hidden, scores, mlm)


def general_loss(params: dict, config: BertConfig, ids, mask, token_type_ids,
                 teacher: GeneralTargets, settings: GeneralSettings, positions=None,
                 targets=None, rng=None, backward: bool = True):
    """One student forward + backward of the general-distillation objective.

    Inputs: student params (may hold "distill.proj.{j}.W/.b"), config, ids (the same corrupted
    ids the teacher saw) / mask / token types (B,T), the GeneralTargets, settings, the masked
    positions (M,2) and targets (M,) (needed with MLM terms), rng (None = no dropout),
    backward (False: the loss only, for evaluation; grads is then None).
    Returns: (loss float, grads with exactly params' keys, parts: unweighted loss values).
    """
    model = {k: v for k, v in params.items() if not k.startswith(PROJ_PREFIX)}
    out, cache = bert_forward(model, config, ids, mask, token_type_ids, rng,
                              output_hidden=True, output_attentions=settings.needs_scores,
                              keep_cache=backward)
    dt = out.last.dtype.type
    L = config.num_layers
    parts = {"embedding": 0.0, "hidden": 0.0, "attention": 0.0, "soft_mlm": 0.0, "mlm": 0.0,
             "cosine": 0.0}
    loss, extra = 0.0, {}
    dhidden = [None] * (L + 1)
    for j in range(L + 1):
        w = settings.embedding_weight if j == 0 else settings.hidden_weight
        if w <= 0:
            continue
        W, b = params.get(f"{PROJ_PREFIX}{j}.W"), params.get(f"{PROJ_PREFIX}{j}.b")
        lj, dh, dW, db = hidden_mse(out.hidden_states[j], teacher.hidden[j], mask, W, b)
        parts["embedding" if j == 0 else "hidden"] += float(lj)
        loss += w * float(lj)
        dh *= dt(w)                                                      # (B,T,Hs), fresh
        dhidden[j] = dh
        if W is not None:
            extra[f"{PROJ_PREFIX}{j}.W"] = dW * dt(w)                    # (Hs,Ht)
            extra[f"{PROJ_PREFIX}{j}.b"] = db * dt(w)                    # (Ht,)
    if settings.cosine_weight > 0:
        lc, dh = cosine_loss(out.hidden_states[L], teacher.hidden[L], mask)
        parts["cosine"] = float(lc)
        loss += settings.cosine_weight * float(lc)
        dh *= dt(settings.cosine_weight)
        dhidden[L] = dh if dhidden[L] is None else dhidden[L] + dh
    dscores = None
    if settings.needs_scores:
        dscores = []
        for j, ts in enumerate(teacher.scores):
            la, ds = attention_mse(out.scores[j], ts, mask)
            parts["attention"] += float(la)
            ds *= dt(settings.attention_weight)
            dscores.append(ds)                                           # (B,nh,T,T)
        loss += settings.attention_weight * parts["attention"]
    dlast, mlm_grads = None, {}
    if settings.needs_mlm:
        lm, dlast, mlm_grads, p = mlm_distill_loss(model, config, out.last, positions, targets,
                                                    teacher.mlm_logits, settings.temperature,
                                                    settings.soft_mlm_weight, settings.mlm_weight)
        parts.update(p)
        loss += lm
    if not backward:
        return loss, None, parts
    grads = bert_backward(dlast, cache, dhidden=dhidden, dscores=dscores)
    add_grads(grads, mlm_grads)
    grads.update(extra)
    for name in params:                                                  # e.g. a projection of a 0-weight term
        if name not in grads:
            grads[name] = np.zeros_like(params[name])
    return loss, grads, parts


# ----------------------------------------------------------------------------- the corpus

def read_text_file(path) -> list[str]:
    """One sentence a line (blank lines skipped). DataError if the file is missing, not UTF-8
    text (e.g. a binary file) or has no sentence at all."""
    from pathlib import Path
    from minibert.errors import DataError
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--text-file {path}: no such file")
    raw = path.read_bytes()
    if b"\0" in raw[:1 << 20]:
        raise DataError(f"--text-file {path}: not a text file (it contains NUL bytes; give one "
                        f"sentence per line, UTF-8)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise DataError(f"--text-file {path}: line {line} is not valid UTF-8 ({err.reason} at "
                        f"byte {err.start}); give one sentence per line, UTF-8") from None
    lines = [s.strip() for s in text.splitlines()]
    lines = [s for s in lines if s]
    if not lines:
        raise DataError(f"--text-file {path}: no sentences (the file is empty or blank)")
    return lines


def corpus_examples(args):
    """(train examples, dev examples, name) of unlabelled text: --text-file F (5% held out,
    seeded, for picking the best epoch; at most 500) or the train / dev text of --data (labels
    unused, set to -1). --limit / --seed limit both as everywhere else."""
    from minibert.data import SPLIT_SEED, Example, load_dataset
    from minibert.errors import DataError
    text_file, spec = getattr(args, "text_file", None), getattr(args, "data", None)
    if text_file and spec:
        raise DataError("give either --text-file or --data, not both")
    if text_file:
        lines = read_text_file(text_file)
        if args.limit:
            keep = np.random.default_rng(args.seed).permutation(len(lines))[:args.limit]
            lines = [lines[i] for i in np.sort(keep)]
        if len(lines) < 2:
            return [Example(lines[0], -1)], [Example(lines[0], -1)], str(text_file)
        order = np.random.default_rng(SPLIT_SEED).permutation(len(lines))
        n_dev = min(500, max(1, len(lines) // 20))
        dev_idx, train_idx = set(order[:n_dev].tolist()), np.sort(order[n_dev:])
        return ([Example(lines[i], -1) for i in train_idx],
                [Example(lines[i], -1) for i in sorted(dev_idx)], str(text_file))
    spec = spec or "default"
    data = load_dataset(spec, text_column=getattr(args, "text_column", None),
                        label_column=getattr(args, "label_column", None),
                        text_pair_column=getattr(args, "text_pair_column", None),
                        limit=args.limit, seed=args.seed)
    strip = [e._replace(label=-1) for e in data.train]
    dev = [e._replace(label=-1) for e in (data.dev or data.train)][:500]
    if not strip:
        raise DataError(f"--data {spec}: no training text")
    return strip, dev, spec


# ----------------------------------------------------------------------------- training

def general_student(tparams: dict, tconfig: BertConfig, config: BertConfig, init_layers,
                    settings: GeneralSettings, rng: np.random.Generator) -> dict:
    """Student parameters: init_student (teacher blocks init_layers, or random) plus a
    projection per hidden-state term when the student is narrower."""
    from minibert.student import init_projections, init_student
    params = init_student(tparams, tconfig, config, init_layers, rng)
    for name, value in init_projections(config, tconfig, rng).items():
        j = int(name[len(PROJ_PREFIX):].split(".")[0])
        if (settings.embedding_weight if j == 0 else settings.hidden_weight) > 0:
            params[name] = value
    return params


def make_general_step(tparams, tconfig, config, settings: GeneralSettings, special, mask_id):
    """step_fn for train.fit: corrupt the batch (MLM terms only), run the teacher on it, then the
    student's loss and gradients. rng draws the masking first, then the dropout masks."""
    def step(params, batch, rng):
        ids, pos, tgt = batch.ids, None, None
        if settings.needs_mlm:
            ids, pos, tgt = mask_tokens(batch.ids, batch.mask, special, mask_id,
                                        settings.mask_prob, rng)
        teacher = teacher_targets(tparams, tconfig, ids, batch.mask, batch.token_type_ids,
                                  settings, pos)
        return general_loss(params, config, ids, batch.mask, batch.token_type_ids, teacher,
                            settings, pos, tgt, rng)
    return step


def make_general_eval(tparams, tconfig, config, settings, special, mask_id, dev, batch_size,
                      seed):
    """eval_fn for train.fit: the objective on the held-out text, no dropout, the same masking
    every epoch. Returns {"neg_loss": -loss, "loss": loss} (fit keeps the highest neg_loss)."""
    from minibert.batches import make_batch, sorted_batches

    def eval_fn(params):
        rng = np.random.default_rng([seed, 4242])
        total, n = 0.0, 0
        for idx in sorted_batches(dev.lengths, batch_size):
            b = make_batch(dev, idx)
            ids, pos, tgt = b.ids, None, None
            if settings.needs_mlm:
                ids, pos, tgt = mask_tokens(b.ids, b.mask, special, mask_id, settings.mask_prob, rng)
            t = teacher_targets(tparams, tconfig, ids, b.mask, b.token_type_ids, settings, pos)
            loss, _, _ = general_loss(params, config, ids, b.mask, b.token_type_ids, t, settings,
                                      pos, tgt, None, backward=False)
            total, n = total + loss * len(idx), n + len(idx)
        return {"neg_loss": -total / n, "loss": total / n}
    return eval_fn


# ----------------------------------------------------------------------------- minibert distill-general

def settings_from_args(args, teacher: BertConfig, config: BertConfig) -> GeneralSettings:
    """The flags -> GeneralSettings. DistilBERT's weights (5, 2, 1) are the default when the
    teacher has a masked-LM head (cosine only when the widths match); 0 otherwise."""
    from minibert.student import uniform_layer_map
    auto = {}
    for name, w in DISTILBERT_WEIGHTS.items():
        given = getattr(args, name, None)
        if given is not None:
            auto[name] = given
        elif name == "cosine_weight":
            auto[name] = w if teacher.mlm_head and config.hidden_size == teacher.hidden_size else 0.0
        else:
            auto[name] = w if teacher.mlm_head else 0.0
    return GeneralSettings(args.embedding_weight, args.hidden_weight, args.attention_weight,
                           temperature=args.temperature, mask_prob=args.mask_prob,
                           layer_map=tuple(uniform_layer_map(config.num_layers, teacher.num_layers)),
                           **auto)


def cli_distill_general(args) -> int:
    """minibert distill-general: TinyBERT (+ DistilBERT) general distillation on unlabelled text.
    OUT: the best held-out-loss student (model, config, tokenizer, general.json) + fit's files."""
    import dataclasses
    from minibert.batches import encode_examples, train_batches
    from minibert.distill import resolve_init
    from minibert.files import atomic_write_json as write_json
    from minibert.student import describe_mapping, strip_projections, student_config
    from minibert.train import TrainConfig, check_out_dir, fit
    from minibert.transfer_set import fingerprint
    from minibert.weights import load_model_and_tokenizer, save_model
    tcfg = dataclasses.replace(TrainConfig.from_args(args), metric="neg_loss")
    tcfg.validate()
    out = check_out_dir(args.out, args.teacher)
    tparams, tconfig, tokenizer = load_model_and_tokenizer(args.teacher)
    config = student_config(tconfig, args.layers, args.hidden_size, args.intermediate_size, args.heads)
    settings = settings_from_args(args, tconfig, config)
    config = dataclasses.replace(config, num_labels=0, labels=None, pooler=False,
                                 mlm_head=settings.needs_mlm)
    check_general_settings(settings, config, tconfig)
    if settings.needs_mlm and tokenizer.mask_id is None:
        raise MinibertError(f"{args.teacher}: the tokenizer has no [MASK] token for the MLM terms")
    init_layers = resolve_init(args, tconfig, config)
    train, dev, name = corpus_examples(args)
    train_split = encode_examples(tokenizer, train, tcfg.max_length)
    dev_split = encode_examples(tokenizer, dev, tcfg.max_length)
    rng = np.random.default_rng([tcfg.seed, 20200923])
    params = general_student(tparams, tconfig, config, init_layers, settings, rng)
    special = np.zeros(config.vocab_size, bool)
    for sid in (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id,
                tokenizer.mask_id):
        if sid is not None and sid < config.vocab_size:
            special[sid] = True
    print(f"teacher {args.teacher}: {tconfig.num_layers} layers, hidden {tconfig.hidden_size}"
          f"{', masked-LM head' if tconfig.mlm_head else ', no masked-LM head'}; student: "
          f"{config.num_layers} layers, hidden {config.hidden_size}, {config.num_heads} heads")
    print(describe_mapping(init_layers, config.num_layers, tconfig.num_layers))
    if config.hidden_size != tconfig.hidden_size:
        print(f"projections {config.hidden_size}->{tconfig.hidden_size} learned for the hidden-state terms")
    terms = ", ".join(f"{v:g}*{k[:-7]}" for k, v in settings._asdict().items()
                      if k.endswith("_weight") and v > 0)
    print(f"loss: {terms} (T={settings.temperature:g}); {len(train)} train / {len(dev)} held-out "
          f"sentences from {name}, max_length {tcfg.max_length}, {tcfg.epochs} epochs")
    record = {"general_distilled": True, "teacher": str(args.teacher),
              "fingerprint": fingerprint(args.teacher), "data": name, "limit": args.limit,
              "init_layers": init_layers, "settings": settings._asdict()}
    run_config = {"command": "distill-general", **{k: v for k, v in record.items()
                                                   if k != "general_distilled"},
                  "student": config.to_dict()}

    def on_best(p, epoch, metrics):
        save_model(out, strip_projections(p), config, tokenizer_dir=args.teacher)
        write_json(out / "general.json", {**record, "epoch": epoch, "held_out_loss": metrics["loss"]})

    step = make_general_step(tparams, tconfig, config, settings, special, tokenizer.mask_id)
    eval_fn = make_general_eval(tparams, tconfig, config, settings, special, tokenizer.mask_id,
                                dev_split, tcfg.batch_size, tcfg.seed)
    res = fit(params, step, lambda e, r: train_batches(train_split, tcfg.batch_size, r), eval_fn,
              out, tcfg, resume=args.resume, run_config=run_config, on_best=on_best)
    print(f"best epoch {res.best_epoch}: held-out loss {res.best_metrics['loss']:.4f}; student "
          f"written to {out} (minibert distill --student-init {out} ...)")
    return 0
