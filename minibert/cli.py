"""The `minibert` command line.

Each subcommand's flags are declared here; the work is done by a `cli_*` function in the
workflow module named next to it (imported lazily, so `minibert --help` is instant and a
command never imports more than it needs).

Every failure minibert can explain is one line on stderr and exit status 2, never a traceback:
bad flags (argparse; counts are checked by `positive_int`), `MinibertError`s (bad data, models,
folders; a diverged training run), and `OSError`s (a full disk, a read-only or missing folder, a
path that is a file), named by the file concerned. Ctrl-C exits 130 and SIGTERM 143, after the
`finally` blocks have released locks and removed temporary files. Warnings print as one plain
line ("note: 3 of 800 sequences were longer than ...") instead of Python's source-line format.
Only a bug in minibert itself still shows a traceback (exit 1).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import signal
import sys
import threading
import warnings

from minibert.allocator import keep_freed_memory
from minibert.errors import MinibertError


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (batch sizes, lengths, counts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def seed_list(text: str) -> list[int]:
    """argparse type: comma-separated seeds >= 0, distinct ("0,1,2")."""
    seeds = [nonnegative_int(t.strip()) for t in text.split(",") if t.strip()]
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct seeds like 0,1,2, got {text!r}")
    return seeds


def positive_int_list(text: str) -> list[int]:
    """argparse type: comma-separated integers >= 1 ("16,64,128")."""
    values = [positive_int(t.strip()) for t in text.split(",") if t.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected integers like 16,64, got {text!r}")
    return values


def recipe_list(text: str) -> list[str]:
    """argparse type: comma-separated student recipes for the demo ("kd,tinybert")."""
    from minibert.recipes import RECIPES
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in RECIPES]
    if not names or bad or "kd" not in names:
        raise argparse.ArgumentTypeError(f"expected recipes from {','.join(RECIPES)} including kd (the "
                                         f"KD row is the demo's reference), got {text!r}")
    return names


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0 (seeds)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def length_int(text: str) -> int:
    """argparse type for --max-length: room for [CLS], one token and [SEP] at least."""
    value = positive_int(text)
    if value < 3:
        raise argparse.ArgumentTypeError(f"expected at least 3 ([CLS], a token, [SEP]), got {text!r}")
    return value


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="default",
                   help="default | sst2:DIR | csv:PATH (also .tsv / .jsonl)")
    p.add_argument("--text-column", default=None, help="text column for csv/tsv/jsonl data")
    p.add_argument("--text-pair-column", default=None,
                   help="optional second text column (sentence pairs)")
    p.add_argument("--label-column", default=None, help="label column for csv/tsv/jsonl data")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="use at most this many training examples (dev/test are limited proportionally)")


def _add_train_args(p: argparse.ArgumentParser, *, epochs: int, lr: float) -> None:
    p.add_argument("--epochs", type=positive_int, default=epochs)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--max-length", type=length_int, default=64,
                   help="truncate sequences to this many tokens")
    p.add_argument("--warmup", type=float, default=0.1, help="fraction of steps for linear warm-up")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--clip", type=float, default=1.0, help="global gradient-norm clip")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    _add_output_flags(p)


def _add_output_flags(p: argparse.ArgumentParser, resume: bool = True) -> None:
    """--resume / --overwrite: what to do with an earlier run of the same command in the output
    folder (minibert.outdir; without either flag such a folder is refused)."""
    if resume:
        p.add_argument("--resume", action="store_true",
                       help="continue the earlier run of this command in the output folder")
    p.add_argument("--overwrite", action="store_true",
                   help="replace what an earlier run of this command wrote there (in a folder: "
                        "only the files minibert writes; the rest is kept)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minibert",
        description="BERT knowledge distillation from first principles, in pure NumPy.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("fetch-teacher", help="download, verify and convert the default teacher")
    p.add_argument("--out", default="weights/minilm-l6")
    p.set_defaults(handler="minibert.fetch:cli_fetch_teacher")

    p = sub.add_parser("convert", help="convert a local Hugging Face BERT (safetensors) to minibert")
    p.add_argument("hf_dir")
    p.add_argument("out_dir")
    _add_output_flags(p, resume=False)
    p.set_defaults(handler="minibert.hf_convert:cli_convert")

    p = sub.add_parser("export", help="write a minibert model in the Hugging Face layout")
    p.add_argument("model_dir")
    p.add_argument("hf_out_dir")
    p.add_argument("--pruned-heads-config", action="store_true",
                   help="a pruned model as smaller tensors + pruned_heads in config.json (transformers < 5); "
                        "default: removed heads written back as zeros, which every version loads")
    _add_output_flags(p, resume=False)
    p.set_defaults(handler="minibert.hf_convert:cli_export")

    p = sub.add_parser("embed", help="mean-pooled, L2-normalised sentence embeddings")
    p.add_argument("--model", default="weights/minilm-l6")
    p.add_argument("--text-file", required=True, help="one sentence per line")
    p.add_argument("--out", required=True,
                   help="output file (NumPy .npy format, under exactly this name), (N, H) float32")
    p.add_argument("--batch-size", type=positive_int, default=32)
    _add_output_flags(p, resume=False)
    p.set_defaults(handler="minibert.infer:cli_embed")

    p = sub.add_parser("fill-mask", help="predict [MASK] tokens (checkpoints with an MLM head)")
    p.add_argument("--model", required=True)
    p.add_argument("--top-k", type=positive_int, default=5)
    p.add_argument("text", nargs="+", help="sentences containing [MASK]")
    p.set_defaults(handler="minibert.infer:cli_fill_mask")

    p = sub.add_parser("finetune", help="fine-tune a teacher on a labelled task")
    p.add_argument("--model", default="weights/minilm-l6")
    p.add_argument("--out", required=True)
    _add_data_args(p)
    _add_train_args(p, epochs=3, lr=5e-5)
    p.set_defaults(handler="minibert.train:cli_finetune")

    p = sub.add_parser("distill", help="distil a fine-tuned teacher into a shallow student")
    p.add_argument("--teacher", required=True, help="a fine-tuned teacher (minibert finetune --out)")
    p.add_argument("--out", required=True)
    _add_data_args(p)
    _add_train_args(p, epochs=3, lr=1e-4)
    p.add_argument("--layers", type=positive_int, default=2, help="student encoder layers")
    p.add_argument("--hidden-size", type=positive_int, default=None,
                   help="student width (default: teacher's)")
    p.add_argument("--intermediate-size", type=positive_int, default=None)
    p.add_argument("--heads", type=positive_int, default=None)
    p.add_argument("--init", choices=["teacher", "random"], default="teacher")
    p.add_argument("--init-from", default=None,
                   help="comma-separated teacher layers to copy, e.g. 0,5 (default: uniform)")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the hard-label CE")
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--hidden-weight", type=float, default=0.0, help="TinyBERT hidden-state MSE")
    p.add_argument("--attention-weight", type=float, default=0.0, help="TinyBERT attention MSE")
    p.add_argument("--cosine-weight", type=float, default=0.0, help="DistilBERT cosine loss")
    p.add_argument("--relation-weight", type=float, default=0.0,
                   help="MiniLM: KL of the last layers' attention distributions + value relations")
    p.add_argument("--recipe", choices=["kd", "tinybert", "tinybert-aug"], default="kd",
                   help="kd: one stage with the losses above; tinybert: intermediate layers "
                        "first (--intermediate-epochs), then the prediction layer (--epochs); "
                        "tinybert-aug: the --transfer sentences join stage 2 only")
    p.add_argument("--intermediate-epochs", type=positive_int, default=1,
                   help="tinybert recipe: epochs of stage 1 (hidden + attention MSE only)")
    p.add_argument("--transfer", default=None, metavar="FILE",
                   help="also train on these augmented sentences (minibert augment --out FILE)")
    p.add_argument("--student-init", default=None, metavar="DIR",
                   help="start from a general-distilled student (minibert distill-general --out DIR)")
    p.set_defaults(handler="minibert.distill:cli_distill")

    p = sub.add_parser("distill-general",
                       help="TinyBERT general distillation on unlabelled text (+ DistilBERT MLM terms)")
    p.add_argument("--teacher", default="weights/minilm-l6",
                   help="any model: pre-trained or fine-tuned (its head is not used)")
    p.add_argument("--out", required=True)
    p.add_argument("--text-file", default=None, help="one sentence a line, UTF-8 (instead of --data)")
    _add_data_args(p)
    p.set_defaults(data=None)                        # --data default only without --text-file
    _add_train_args(p, epochs=3, lr=1e-4)
    p.add_argument("--layers", type=positive_int, default=2, help="student encoder layers")
    p.add_argument("--hidden-size", type=positive_int, default=None)
    p.add_argument("--intermediate-size", type=positive_int, default=None)
    p.add_argument("--heads", type=positive_int, default=None)
    p.add_argument("--init", choices=["teacher", "random"], default="teacher")
    p.add_argument("--init-from", default=None, help="teacher blocks to copy, e.g. 2,5")
    p.add_argument("--embedding-weight", type=float, default=1.0, help="TinyBERT: embedding output MSE")
    p.add_argument("--hidden-weight", type=float, default=1.0, help="TinyBERT: hidden-state MSE")
    p.add_argument("--attention-weight", type=float, default=1.0, help="TinyBERT: attention-score MSE")
    p.add_argument("--soft-mlm-weight", type=float, default=None,
                   help="DistilBERT: soft masked-LM KL (default 5 with a masked-LM teacher, else 0)")
    p.add_argument("--mlm-weight", type=float, default=None,
                   help="DistilBERT: hard masked-LM CE (default 2 with a masked-LM teacher, else 0)")
    p.add_argument("--cosine-weight", type=float, default=None,
                   help="DistilBERT: cosine on the last hidden states (default 1 with a masked-LM "
                        "teacher of the same width, else 0)")
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--mask-prob", type=float, default=0.15, help="share of tokens for the MLM terms")
    p.set_defaults(handler="minibert.general_distill:cli_distill_general")

    p = sub.add_parser("augment", help="TinyBERT-style augmentation, labelled by the teacher "
                                       "(for distill --transfer)")
    p.add_argument("--teacher", required=True, help="the fine-tuned teacher distill will use")
    p.add_argument("--out", required=True, help="output file (safetensors)")
    _add_data_args(p)
    p.add_argument("--seed", type=nonnegative_int, default=0,
                   help="as distill's --seed: picks the --limit examples and the replacements")
    p.add_argument("--per-example", type=int, default=20, help="new sentences tried per example")
    p.add_argument("--p", type=float, default=0.4, help="probability of replacing each word")
    p.add_argument("--candidates", type=int, default=15, help="candidates per word")
    p.add_argument("--multi-piece", choices=["mean", "skip"], default="mean",
                   help="words of several pieces: mean of their piece embeddings, or left alone")
    p.add_argument("--mlm-model", default=None, metavar="DIR",
                   help="a model with a masked-LM head (same tokenizer) to propose candidates")
    p.add_argument("--max-length", type=length_int, default=64, help="as distill's --max-length")
    p.add_argument("--batch-size", type=positive_int, default=64)
    _add_output_flags(p, resume=False)
    p.set_defaults(handler="minibert.augment:cli_augment")

    p = sub.add_parser("evaluate", help="accuracy, macro-F1, params and latency")
    p.add_argument("--model", required=True)
    _add_data_args(p)
    p.add_argument("--split", choices=["dev", "test"], default="dev")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--max-length", type=length_int, default=64)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler="minibert.evaluate:cli_evaluate")

    p = sub.add_parser("predict", help="labels and probabilities for some texts")
    p.add_argument("--model", required=True)
    p.add_argument("text", nargs="+")
    p.set_defaults(handler="minibert.evaluate:cli_predict")

    p = sub.add_parser("bench", help="forward / train-step timings (and PyTorch's, if installed)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--repeats", type=positive_int, default=5)
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--seq-len", type=positive_int, default=64, help="padded length of the batch")
    p.add_argument("--augment", type=positive_int, default=None, metavar="N",
                   help="instead: time `minibert augment`'s stages on N default-data sentences")
    p.add_argument("--teacher", default=None, help="with --augment: the model (default weights/minilm-l6)")
    p.add_argument("--demo-times", nargs="+", metavar="RUN", help="instead: demo runs' stage times")
    p.add_argument("--model", action="append", metavar="DIR", help="instead: time model folders")
    p.add_argument("--scaling", action="store_true",
                   help="instead: time per real token at T = 16..512 x B = 1, 8, 32 (a few minutes)")
    p.add_argument("--lengths", type=positive_int_list, metavar="T,...", help="--scaling: T values")
    p.add_argument("--batch-sizes", type=positive_int_list, metavar="B,...", help="--scaling: B values")
    p.add_argument("--layers", type=positive_int, help="--scaling: layers timed (default 2)")
    p.set_defaults(handler="minibert.bench:cli_bench")

    p = sub.add_parser("demo", help="the main job: fetch, fine-tune, distil, compare, plot")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--quick", action="store_true", help="classroom-sized run (about 100 s on 2 idle cores)")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--sweep", action="store_true",
                   help="student temperature x alpha sweep (reuses the fine-tuned teacher)")
    _add_output_flags(p)
    p.add_argument("--seeds", type=seed_list, default=None,
                   help="run the demo once per seed into OUT/seed-N and print each recipe minus "
                        "the hard-label control with a 95%% interval (OUT/seeds.md)")
    p.add_argument("--recipes", type=recipe_list, default=None,
                   help="student recipes besides the hard-label control (default "
                        "kd,tinybert,tinybert-aug)")
    p.set_defaults(handler="minibert.demo:cli_demo")

    p = sub.add_parser("report", help="over finished demo runs: each recipe minus the hard-label "
                                      "control, mean and 95%% interval over seeds")
    p.add_argument("runs", nargs="+", help="demo --out directories (or a directory of them, or "
                                           "results.json files)")
    p.add_argument("--out", help="also write the table to this markdown file")
    _add_output_flags(p, resume=False)
    p.set_defaults(handler="minibert.report:cli_report")

    p = sub.add_parser("quantize", help="int8 weights (per output channel), stored as int8: ~4x smaller")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--per-tensor", action="store_true", help="one scale per tensor instead of per output channel")
    p.add_argument("--activations", choices=["none", "dynamic"], default="none",
                   help="none: weight-only int8; dynamic: each linear input rounded to int8 per row at run time")
    p.add_argument("--calibrate", default=None, metavar="SPEC",
                   help="static int8 activations: one scale per linear input, measured on this data's training split")
    p.add_argument("--calibrate-rows", type=positive_int, default=256, help="training rows used for --calibrate")
    p.add_argument("--max-length", type=length_int, default=64, help="truncation for --calibrate")
    _add_output_flags(p, resume=False)
    p.set_defaults(handler="minibert.shrink:cli_quantize")

    p = sub.add_parser("prune-heads", help="remove the least important attention heads (|dL/d gate|)")
    p.add_argument("--model", required=True, help="a classifier (fine-tuned or distilled)")
    p.add_argument("--out", required=True)
    _add_data_args(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--keep", type=int, default=None, help="heads kept in total (>= layers)")
    g.add_argument("--fraction", type=float, default=None, help="share of all heads removed, in [0, 1)")
    p.add_argument("--sample", type=positive_int, default=512, help="training examples the importance is measured on")
    p.add_argument("--max-length", type=length_int, default=64)
    p.add_argument("--seed", type=nonnegative_int, default=0)
    _add_output_flags(p, resume=False)
    p.add_argument("--teacher", default=None, help="re-distil the pruned model from this fine-tuned teacher")
    p.add_argument("--epochs", type=positive_int, default=1, help="re-distillation epochs (with --teacher)")
    p.add_argument("--lr", type=float, default=1e-4, help="re-distillation peak learning rate")
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--temperature", type=float, default=2.0)
    p.set_defaults(handler="minibert.shrink:cli_prune_heads")

    p = sub.add_parser("exercises", help="classroom exercises: list, init, check, hint, test, grade")
    esub = p.add_subparsers(dest="exercises_command", required=True, metavar="ACTION")
    here = "minibert.classroom.cli:"
    ws = "your workspace (minibert exercises init DIR)"
    e = esub.add_parser("list", help="the exercises in course order, with the lesson to read")
    e.add_argument("--path", default="workspace", help=ws)
    e.set_defaults(handler=here + "cli_list")
    e = esub.add_parser("init", help="write a workspace: one short file per exercise")
    e.add_argument("dir")
    e.add_argument("--no-solutions", action="store_true",
                   help="`exercises solution` refuses for this workspace (for graded work)")
    e.set_defaults(handler=here + "cli_init")
    e = esub.add_parser("check", help="run an exercise's checks (or --all) against your code")
    e.add_argument("name", nargs="?", default=None)
    e.add_argument("--all", action="store_true", help="every exercise, one table")
    e.add_argument("--path", default="workspace", help=ws)
    e.add_argument("--json", action="store_true")
    e.add_argument("--verbose", action="store_true", help="list the checks that pass too")
    e.set_defaults(handler=here + "cli_check")
    e = esub.add_parser("hint", help="a hint for one exercise; higher levels reveal more")
    e.add_argument("name")
    e.add_argument("--level", type=int, choices=[1, 2, 3], default=1)
    e.add_argument("--path", default="workspace", help=ws)
    e.set_defaults(handler=here + "cli_hint")
    e = esub.add_parser("solution", help="the reference code (unless init --no-solutions)")
    e.add_argument("name")
    e.add_argument("--path", default="workspace", help=ws)
    e.set_defaults(handler=here + "cli_solution")
    e = esub.add_parser("test", help="run the library's own unit tests on your function")
    e.add_argument("name")
    e.add_argument("--path", default="workspace", help=ws)
    e.set_defaults(handler=here + "cli_test")
    e = esub.add_parser("grade", help="grade a class: one workspace per subfolder of ROSTER_DIR")
    e.add_argument("roster")
    e.add_argument("--out", default="grades.csv", help="CSV; the Markdown table goes beside it (.md)")
    e.add_argument("--overwrite", action="store_true", help="replace existing grade files")
    e.add_argument("--timeout", type=float, default=30.0, help="seconds per exercise per student")
    e.add_argument("--jobs", type=int, default=2, help="students graded at once")
    e.set_defaults(handler=here + "cli_grade")

    return parser


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that `finally` blocks (locks, temporary files) run."""


def _on_sigterm(signum, frame):
    raise Terminated()


# errno -> what to do about it, appended to the system's own words
OS_ERROR_HINTS = {
    errno.ENOSPC: "free some space or write elsewhere; files written before are intact and the "
                  "temporary file was removed",
    errno.EDQUOT: "your disk quota is used up; free some space or write elsewhere",
    errno.EACCES: "you lack permission there; choose a folder you can write to",
    errno.EPERM: "you lack permission there; choose a folder you can write to",
    errno.EROFS: "choose a folder on a writable file system",
    errno.ENOTDIR: "a part of this path is a file, not a folder",
    errno.EISDIR: "this is a folder; a file name is needed",
    errno.ENOENT: "no such file or folder",
}


def describe_os_error(err: OSError) -> str:
    """One line naming the file(s), the system's reason and a hint: 'cannot use PATH: No space
    left on device (free some space ...)'."""
    where = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
    reason = err.strerror or str(err)
    hint = OS_ERROR_HINTS.get(err.errno)
    return ((f"cannot use {where}: " if where else "") + reason
            + (f" ({hint})" if hint and hint.lower() != reason.lower() else ""))


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    """warnings.showwarning for the command line: one plain line, no source path or code."""
    from minibert.tokenizer import TruncationWarning
    kind = "note" if issubclass(category, TruncationWarning) else f"warning ({category.__name__})"
    print(f"{kind}: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()                      # page faults cost ~10% of a forward: see minibert/allocator.py
    in_main_thread = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    name = f"minibert {args.command}"
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            module_name, func_name = args.handler.split(":")
            handler = getattr(importlib.import_module(module_name), func_name)
            result = handler(args)
    except MinibertError as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:                  # `minibert exercises list | head`: the reader left
        sys.stdout = open(os.devnull, "w")   # keep Python's exit-time flush from failing again
        return 0
    except OSError as err:
        print(f"{name}: error: {describe_os_error(err)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"{name}: error: out of memory (try a smaller --batch-size or --max-length)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"{name}: terminated (SIGTERM)", file=sys.stderr)
        return 143
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, old_term)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
