"""Evaluation: accuracy, macro-F1, per-class F1, parameter count and latency; `minibert
evaluate` and `minibert predict`.

Shape legend: N examples, B batch, T tokens, C classes.

The metrics are written out by hand from the confusion matrix (no scikit-learn):
    precision_c = TP_c / (TP_c + FP_c)    recall_c = TP_c / (TP_c + FN_c)
    F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)          (0 when the denominator is 0)
    macro-F1 = mean over classes of F1_c            (every class counts the same, however rare)
A class the model never predicts has TP = 0, so its F1 is 0: macro-F1 exposes a classifier
that ignores a minority class, which accuracy hides.

Latency is the forward + classification head only (tokenisation excluded), on one batch of
`batch_size` examples padded to their longest, as the median of repeated timings, in ms per
example: this is the number the teacher/student speed-up is computed from.
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time

import numpy as np

from minibert.batches import encode_examples, make_batch, sorted_batches
from minibert.errors import DataError, MinibertError

# ----------------------------------------------------------------------------- metrics


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Inputs: y_true, y_pred int arrays (N,) with values in [0, num_classes).
    Returns: (C, C) int64, rows = true class, columns = predicted class."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true/y_pred: expected equal shapes (N,), got {y_true.shape} and {y_pred.shape}")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name}: values must be in [0, {num_classes}), got {y.min()}..{y.max()}")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def classification_metrics(y_true, y_pred, num_classes: int) -> dict:
    """Returns {"accuracy": float, "macro_f1": float, "f1": (C,) float64 array}."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    n = cm.sum()
    if n == 0:
        raise DataError("cannot compute metrics on zero examples")
    tp = np.diag(cm).astype(np.float64)                  # (C,)
    fp = cm.sum(axis=0) - tp                             # predicted c, truly something else
    fn = cm.sum(axis=1) - tp                             # truly c, predicted something else
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"accuracy": float(tp.sum() / n), "macro_f1": float(f1.mean()), "f1": f1}


# ----------------------------------------------------------------------------- inference

def _check_head(config) -> None:
    if config.num_labels < 1:
        raise MinibertError("the model has no classification head (config.num_labels is 0); "
                            "fine-tune it first: minibert finetune --model DIR --out OUT")


def predict_logits(params, config, split, batch_size: int = 32) -> np.ndarray:
    """Logits for every example of an EncodedSplit, in the split's order (eval mode).

    Inputs: params, config (with a head), split (batches.EncodedSplit), batch_size.
    Returns: (N, C) float32.
    """
    from minibert.fast_model import classify_forward
    _check_head(config)
    logits = np.zeros((len(split.labels), config.num_labels), dtype=np.float32)   # (N,C)
    for idx in sorted_batches(split.lengths, batch_size):      # similar lengths: little padding
        b = make_batch(split, idx)
        out, _, _ = classify_forward(params, config, b.ids, b.mask, b.token_type_ids,
                                     rng=None, keep_cache=False)                  # (B,C)
        logits[idx] = out
    return logits


def predict_texts(params, config, tokenizer, texts, pairs=None, batch_size: int = 32,
                  max_length: int = 64) -> np.ndarray:
    """Logits (N, C) for raw texts (optionally sentence pairs)."""
    from minibert.data import Example
    pairs = pairs if pairs is not None else [None] * len(texts)
    examples = [Example(text=t, label=0, text_pair=p) for t, p in zip(texts, pairs)]
    return predict_logits(params, config, encode_examples(tokenizer, examples, max_length),
                          batch_size)


def predict_and_score(params, config, split, batch_size: int = 32, labels=None):
    """The predicted class of every example and their metrics against `labels` (default the
    split's). Returns (pred (N,), classification_metrics dict)."""
    pred = predict_logits(params, config, split, batch_size).argmax(axis=1)       # (N,)
    truth = split.labels if labels is None else labels
    return pred, classification_metrics(truth, pred, config.num_labels)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities over the last axis (layers.softmax_forward without its cache)."""
    from minibert.layers import softmax_forward
    return softmax_forward(logits)[0]


def median_time(fn, repeats, warmup=1):
    """Run fn() `warmup` times, then `repeats` times timed, after one garbage collection (so a
    collection of earlier garbage does not land inside a timing). Returns (median s, list of s)."""
    for _ in range(warmup):
        fn()
    gc.collect()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def measure_latency(params, config, split, batch_size: int = 32, repeats: int = 5) -> float:
    """Milliseconds per example of forward + head on the split's first `batch_size` examples
    (padded to their longest), median over `repeats` timings after one warm-up run."""
    from minibert.fast_model import classify_forward
    _check_head(config)
    b = make_batch(split, np.arange(min(batch_size, len(split.labels))))
    seconds, _ = median_time(lambda: classify_forward(params, config, b.ids, b.mask, b.token_type_ids,
                                                      rng=None, keep_cache=False), repeats)
    return 1000.0 * seconds / b.ids.shape[0]


# ----------------------------------------------------------------------------- labels

def align_labels(dataset_labels, config) -> np.ndarray:
    """Map the dataset's label indices to the model's. Returns (len(dataset_labels),) int64.

    A model trained on ["negative", "positive"] can be evaluated on data whose labels are a
    subset of those, in any order; a label the model does not know is an error. A head without
    class names (config.labels None) is matched by position when the counts agree."""
    _check_head(config)
    if not config.labels:                    # a head without class names: match by position
        if len(dataset_labels) != config.num_labels:
            raise MinibertError(f"the model has {config.num_labels} unnamed classes but the data "
                                f"has {len(dataset_labels)} labels {list(dataset_labels)}")
        return np.arange(config.num_labels, dtype=np.int64)
    model_labels = list(config.labels)
    unknown = [lab for lab in dataset_labels if lab not in model_labels]
    if unknown:
        raise MinibertError(f"labels {unknown} of the data are not in the model's label set "
                            f"{model_labels}; evaluate on data with the labels the model was trained on")
    return np.asarray([model_labels.index(lab) for lab in dataset_labels], dtype=np.int64)


def evaluate_model(params, config, tokenizer, examples, batch_size: int = 32,
                   max_length: int = 64, labels=None, repeats: int = 5) -> dict:
    """Accuracy, macro-F1, per-class F1, size and latency of a classifier.

    Inputs: params, config (a model with a head), tokenizer, examples (list of data.Example
    whose .label indexes `labels`, or the model's labels when labels is None), batch_size,
    max_length, repeats (latency timings).
    Returns: {"accuracy", "macro_f1", "per_class_f1": {label name: f1}, "n", "params",
    "ms_per_example"}.
    """
    from minibert.model import count_params
    _check_head(config)
    if len(examples) == 0:
        raise DataError("cannot evaluate on an empty split (0 examples)")
    model_labels = list(config.labels) if config.labels else [str(i) for i in range(config.num_labels)]
    split = encode_examples(tokenizer, examples, max_length)
    y_true = split.labels if labels is None else align_labels(labels, config)[split.labels]
    if y_true.min() < 0 or y_true.max() >= config.num_labels:
        raise MinibertError(f"example labels must be in [0, {config.num_labels}) for this model, "
                            f"got {y_true.min()}..{y_true.max()}")
    _, m = predict_and_score(params, config, split, batch_size, labels=y_true)
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
            "per_class_f1": {name: float(f) for name, f in zip(model_labels, m["f1"])},
            "n": int(len(y_true)), "params": int(count_params(params)),
            "ms_per_example": measure_latency(params, config, split, batch_size, repeats)}


# ----------------------------------------------------------------------------- CLI

def _load_classifier(model_dir):
    from minibert.weights import load_model_and_tokenizer
    params, config, tokenizer = load_model_and_tokenizer(model_dir)   # the tokenizer fits the vocab
    _check_head(config)
    return params, config, tokenizer


def cli_evaluate(args) -> int:
    from minibert.data import load_dataset
    from minibert.tokenizer import check_length_fits
    params, config, tokenizer = _load_classifier(args.model)
    check_length_fits(args.max_length, config)
    data = load_dataset(args.data, text_column=args.text_column, label_column=args.label_column,
                        text_pair_column=args.text_pair_column, limit=args.limit)
    examples = data.dev if args.split == "dev" else data.test
    if not examples:
        raise DataError(f"--split {args.split}: the {data.name} data has no {args.split} examples")
    res = evaluate_model(params, config, tokenizer, examples, batch_size=args.batch_size,
                         max_length=args.max_length, labels=data.labels)
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"model {args.model} on {data.name} {args.split} ({res['n']} examples)")
    rows = [("accuracy", f"{res['accuracy']:.4f}"), ("macro F1", f"{res['macro_f1']:.4f}")]
    rows += [(f"F1 {name}", f"{f:.4f}") for name, f in res["per_class_f1"].items()]
    rows += [("parameters", f"{res['params']:,}"),
             ("latency", f"{res['ms_per_example']:.3f} ms/example (batch {args.batch_size})")]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    return 0


def cli_predict(args) -> int:
    params, config, tokenizer = _load_classifier(args.model)
    texts = [t for t in args.text]
    if any(not t.strip() for t in texts):
        raise DataError("predict: every TEXT must be non-empty")
    probs = softmax(predict_texts(params, config, tokenizer, texts,
                                  max_length=config.max_position).astype(np.float64))
    names = list(config.labels) if config.labels else [str(i) for i in range(config.num_labels)]
    for text, p in zip(texts, probs):
        shown = "  ".join(f"{n} {q:.3f}" for n, q in zip(names, p))
        print(f"{names[int(p.argmax())]}\t{shown}\t{text}")
    sys.stdout.flush()
    return 0
