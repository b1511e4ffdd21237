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

import numpy as np

from minibert.errors import MinibertError
from minibert.general_objective import (DISTILBERT_WEIGHTS, GeneralSettings, check_general_settings,
                                        general_student, make_general_eval, make_general_step)
from minibert.model import BertConfig


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


# ----------------------------------------------------------------------------- minibert distill-general

def settings_from_args(args, teacher: BertConfig, config: BertConfig) -> GeneralSettings:
    """The flags -> GeneralSettings. DistilBERT's weights (5, 2, 1) are the default when the
    teacher has a masked-LM head (cosine only when the widths match); 0 otherwise."""
    from minibert.student import uniform_layer_map
    auto = {}
    for name, w in DISTILBERT_WEIGHTS.items():
        given = getattr(args, name, None)
        same_width = config.hidden_size == teacher.hidden_size
        auto[name] = given if given is not None else (
            w if teacher.mlm_head and (same_width or name != "cosine_weight") else 0.0)
    return GeneralSettings(args.embedding_weight, args.hidden_weight, args.attention_weight,
                           temperature=args.temperature, mask_prob=args.mask_prob,
                           layer_map=tuple(uniform_layer_map(config.num_layers, teacher.num_layers)),
                           **auto)


def general_init_layers(args, tconfig: BertConfig, config: BertConfig):
    """--init / --init-from -> teacher blocks to copy, or None (random). A student of another
    shape than the teacher's blocks starts at random (TinyBERT's general distillation always
    does); asking to copy blocks into it is an error."""
    from minibert.student import parse_init_from, same_shape_layers
    if args.init == "random":
        if args.init_from:
            raise MinibertError("--init-from names teacher layers to copy, which --init random "
                                "does not do; drop one of them")
        return None
    if not same_shape_layers(tconfig, config):
        if args.init_from:
            raise MinibertError(f"--init-from {args.init_from}: the student (hidden "
                                f"{config.hidden_size}) is narrower than the teacher's blocks "
                                f"(hidden {tconfig.hidden_size}); they cannot be copied")
        print("init: random (the student is narrower than the teacher's blocks)")
        return None
    return parse_init_from(args.init_from, config.num_layers, tconfig.num_layers)


def load_student_init(path, teacher_dir, tparams: dict, tconfig: BertConfig, config: BertConfig,
                      rng: np.random.Generator) -> dict:
    """`minibert distill --student-init DIR`: the task student's starting parameters.

    The embeddings and every encoder block come from the general-distilled student in DIR; the
    pooler and the classifier from the (fine-tuned) teacher when their shapes fit, else fresh
    (init_params); a masked-LM head is dropped. MinibertError when DIR's shape differs from the
    student asked for (--layers, --hidden-size, ...) or its tokenizer is not the teacher's.
    """
    from pathlib import Path
    from minibert.model import init_params, param_shapes
    from minibert.transfer_set import fingerprint
    from minibert.weights import load_model
    gparams, g = load_model(path)
    fields = ("num_layers", "hidden_size", "num_heads", "intermediate_size", "vocab_size",
              "max_position", "type_vocab_size")
    wrong = [f for f in fields if getattr(g, f) != getattr(config, f)]
    if wrong:
        has = ", ".join(f"{f} {getattr(g, f)}" for f in wrong)
        want = ", ".join(f"{f} {getattr(config, f)}" for f in wrong)
        raise MinibertError(
            f"--student-init {path} is a student with {has}, but this distillation asks for "
            f"{want} (--layers {config.num_layers}, --hidden-size / --heads / "
            f"--intermediate-size); pass the flags that match it (--layers {g.num_layers}), or "
            f"run minibert distill-general again with --layers {config.num_layers}")
    if (Path(path) / "tokenizer.json").is_file() and \
            fingerprint(path)["tokenizer"] != fingerprint(teacher_dir)["tokenizer"]:
        raise MinibertError(f"--student-init {path} has another tokenizer than --teacher "
                            f"{teacher_dir}: its word embeddings belong to other token ids")
    params = init_params(config, rng)
    for name, shape in param_shapes(config).items():
        if name.startswith(("embeddings.", "encoder.")):
            params[name] = gparams[name].astype(np.float32, copy=True)
        elif name in tparams and tparams[name].shape == shape:          # pooler.*, classifier.*
            params[name] = tparams[name].astype(np.float32, copy=True)
    return params


def cli_distill_general(args) -> int:
    """minibert distill-general: TinyBERT (+ DistilBERT) general distillation on unlabelled text.
    OUT: the best held-out-loss student (model, config, tokenizer, general.json) + fit's files."""
    import dataclasses
    from minibert.batches import encode_examples, train_batches
    from minibert.files import atomic_write_json
    from minibert.outdir import claim_dir
    from minibert.student import describe_mapping, strip_projections, student_config
    from minibert.tokenizer import check_length_fits
    from minibert.train import TrainConfig, fit
    from minibert.transfer_set import fingerprint
    from minibert.weights import load_model_and_tokenizer, save_model
    tcfg = dataclasses.replace(TrainConfig.from_args(args), metric="neg_loss")
    tcfg.validate()
    tparams, tconfig, tokenizer = load_model_and_tokenizer(args.teacher)
    check_length_fits(tcfg.max_length, tconfig)
    config = student_config(tconfig, args.layers, args.hidden_size, args.intermediate_size, args.heads)
    settings = settings_from_args(args, tconfig, config)
    config = dataclasses.replace(config, num_labels=0, labels=None, pooler=False,
                                 mlm_head=settings.needs_mlm)
    check_general_settings(settings, config, tconfig)
    if settings.needs_mlm and tokenizer.mask_id is None:
        raise MinibertError(f"{args.teacher}: the tokenizer has no [MASK] token for the MLM terms")
    init_layers = general_init_layers(args, tconfig, config)
    train, dev, name = corpus_examples(args)
    train_split = encode_examples(tokenizer, train, tcfg.max_length)
    dev_split = encode_examples(tokenizer, dev, tcfg.max_length)
    params = general_student(tparams, tconfig, config, init_layers, settings,
                             np.random.default_rng([tcfg.seed, 20200923]))
    special = np.zeros(config.vocab_size, bool)
    for sid in (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id,
                tokenizer.mask_id):
        if sid is not None and sid < config.vocab_size:
            special[sid] = True
    print(f"teacher {args.teacher}: {tconfig.num_layers} layers, hidden {tconfig.hidden_size}, "
          f"{'a' if tconfig.mlm_head else 'no'} masked-LM head; student: {config.num_layers} "
          f"layers, hidden {config.hidden_size}, {config.num_heads} heads")
    print(describe_mapping(init_layers, config.num_layers, tconfig.num_layers)
          .replace("embeddings, pooler, head copied", "embeddings copied"))
    if config.hidden_size != tconfig.hidden_size:
        print(f"projections {config.hidden_size}->{tconfig.hidden_size} learned for the hidden-state terms")
    terms = " + ".join(f"{v:g}*{k[:-len('_weight')]}" for k, v in settings._asdict().items()
                       if k.endswith("_weight") and v > 0)
    t_note = f" (T={settings.temperature:g})" if settings.soft_mlm_weight > 0 else ""
    print(f"loss: {terms}{t_note}; {len(train)} train / {len(dev)} held-out "
          f"sentences from {name}, max_length {tcfg.max_length}, {tcfg.epochs} epochs")
    record = {"general_distilled": True, "teacher": str(args.teacher),
              "fingerprint": fingerprint(args.teacher), "data": name, "limit": args.limit,
              "init_layers": init_layers, "settings": settings._asdict()}
    run_config = {"command": "distill-general", "student": config.to_dict(),
                  **{k: v for k, v in record.items() if k != "general_distilled"}}
    step = make_general_step(tparams, tconfig, config, settings, special, tokenizer.mask_id)
    eval_fn = make_general_eval(tparams, tconfig, config, settings, special, tokenizer.mask_id,
                                dev_split, tcfg.batch_size, tcfg.seed)
    with claim_dir(args.out, "distill-general", resume=args.resume,
                   overwrite=getattr(args, "overwrite", False), inputs=[args.teacher]) as out:
        def on_best(p, epoch, metrics):
            save_model(out, strip_projections(p), config, tokenizer_dir=args.teacher)
            atomic_write_json(out / "general.json", {**record, "epoch": epoch,
                                                     "held_out_loss": metrics["loss"]})

        res = fit(params, step, lambda e, r: train_batches(train_split, tcfg.batch_size, r),
                  eval_fn, out, tcfg, resume=args.resume, run_config=run_config, on_best=on_best)
    print(f"best epoch {res.best_epoch}: held-out loss {res.best_metrics['loss']:.4f}; student "
          f"written to {out} (minibert distill --student-init {out} ...)")
    return 0
