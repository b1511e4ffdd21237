"""Hugging Face <-> minibert: the one mapping table, checkpoint conversion and export.

Shape legend: H hidden, I intermediate (FFN), V vocab, P max positions, C classes, L layers.

Hugging Face keeps BERT weights under other names and stores every Linear as (out, in); we store
(in, out) so that `y = x @ W + b`, and we fuse the query/key/value projections into one (H, 3H)
matrix. `hf_mapping` is the ONE table that says which HF tensor becomes which minibert tensor and
how (copied, transposed, or concatenated); conversion, export and the gradient-parity tests all
read it. No pickle file is ever opened: only safetensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import safetensors.numpy

from minibert.errors import CheckpointError
from minibert.files import atomic_write, atomic_write_json
from minibert.model import BertConfig, param_shapes
from minibert.weights import (CONFIG_FILE, MODEL_FILE, TOKENIZER_FILES, atomic_copy, load_model,
                              read_json, read_safetensors, save_model)

# HF architectures whose weights mean what our model computes (classifier on the pooled [CLS]).
SUPPORTED_ARCHITECTURES = ("BertModel", "BertForSequenceClassification", "BertForMaskedLM",
                           "BertForPreTraining")
# HF keys we knowingly drop: a buffer, and the next-sentence-prediction head we do not implement.
DROPPED_KEYS = ("embeddings.position_ids", "cls.seq_relationship.weight", "cls.seq_relationship.bias")


# ----------------------------------------------------------------------------- the mapping table

class Mapping(NamedTuple):
    ours: str              # minibert name
    hf: tuple              # HF name(s), without the "bert." prefix for backbone tensors
    op: str                # "copy" | "T" (transpose a Linear weight) | "qkv" (concat q|k|v)


def hf_mapping(config: BertConfig) -> list[Mapping]:
    """THE table HF name -> minibert name, in param_shapes order. Backbone HF names are given
    without the `bert.` prefix (sentence-transformers layout); heads (cls.*, classifier.*) never
    carry it."""
    m = [Mapping("embeddings.word", ("embeddings.word_embeddings.weight",), "copy"),
         Mapping("embeddings.position", ("embeddings.position_embeddings.weight",), "copy"),
         Mapping("embeddings.token_type", ("embeddings.token_type_embeddings.weight",), "copy"),
         Mapping("embeddings.ln.gamma", ("embeddings.LayerNorm.weight",), "copy"),
         Mapping("embeddings.ln.beta", ("embeddings.LayerNorm.bias",), "copy")]
    for i in range(config.num_layers):
        ours, hf = f"encoder.{i}.", f"encoder.layer.{i}."
        qkv = [hf + f"attention.self.{n}" for n in ("query", "key", "value")]
        m += [Mapping(ours + "attn.qkv.W", tuple(q + ".weight" for q in qkv), "qkv"),
              Mapping(ours + "attn.qkv.b", tuple(q + ".bias" for q in qkv), "qkv"),
              Mapping(ours + "attn.out.W", (hf + "attention.output.dense.weight",), "T"),
              Mapping(ours + "attn.out.b", (hf + "attention.output.dense.bias",), "copy"),
              Mapping(ours + "attn.ln.gamma", (hf + "attention.output.LayerNorm.weight",), "copy"),
              Mapping(ours + "attn.ln.beta", (hf + "attention.output.LayerNorm.bias",), "copy"),
              Mapping(ours + "ffn.in.W", (hf + "intermediate.dense.weight",), "T"),
              Mapping(ours + "ffn.in.b", (hf + "intermediate.dense.bias",), "copy"),
              Mapping(ours + "ffn.out.W", (hf + "output.dense.weight",), "T"),
              Mapping(ours + "ffn.out.b", (hf + "output.dense.bias",), "copy"),
              Mapping(ours + "ffn.ln.gamma", (hf + "output.LayerNorm.weight",), "copy"),
              Mapping(ours + "ffn.ln.beta", (hf + "output.LayerNorm.bias",), "copy")]
    if config.pooler:
        m += [Mapping("pooler.W", ("pooler.dense.weight",), "T"),
              Mapping("pooler.b", ("pooler.dense.bias",), "copy")]
    if config.num_labels > 0:
        m += [Mapping("classifier.W", ("classifier.weight",), "T"),
              Mapping("classifier.b", ("classifier.bias",), "copy")]
    if config.mlm_head:  # the decoder is embeddings.word^T (tied), so it has no entry of its own
        m += [Mapping("mlm.transform.W", ("cls.predictions.transform.dense.weight",), "T"),
              Mapping("mlm.transform.b", ("cls.predictions.transform.dense.bias",), "copy"),
              Mapping("mlm.ln.gamma", ("cls.predictions.transform.LayerNorm.weight",), "copy"),
              Mapping("mlm.ln.beta", ("cls.predictions.transform.LayerNorm.bias",), "copy"),
              Mapping("mlm.bias", ("cls.predictions.bias",), "copy")]
    return m


def _hf_shapes(entry: Mapping, our_shape: tuple) -> list[tuple]:
    """The shape each HF source tensor of `entry` must have, given our tensor's shape."""
    if entry.op == "T":
        return [tuple(reversed(our_shape))]                  # (in,out) <- (out,in)
    if entry.op == "qkv":
        if len(our_shape) == 2:                              # W (H,3H) <- 3 x (H,H)
            return [(our_shape[1] // 3, our_shape[0])] * 3
        return [(our_shape[0] // 3,)] * 3                    # b (3H,) <- 3 x (H,)
    return [tuple(our_shape)]


def hf_to_minibert(state: dict, config: BertConfig) -> dict:
    """Map un-prefixed HF tensors to minibert names (contiguous, in the source dtype; they may
    share memory with `state`; save_model casts to float32). Used for weights and, in the
    parity tests, for PyTorch's gradients: transposes and concatenation are linear, so gradients
    map exactly like the weights. Every mapped HF tensor must be present with the right shape."""
    shapes = param_shapes(config)
    out = {}
    for e in hf_mapping(config):
        for name, want in zip(e.hf, _hf_shapes(e, shapes[e.ours])):
            if name not in state:
                raise CheckpointError(f"tensor '{name}' (for {e.ours}) is missing from the checkpoint")
            got = tuple(state[name].shape)
            if got != want:
                raise CheckpointError(f"tensor '{name}' has shape {got} but config.json "
                                      f"(hidden_size={config.hidden_size}, "
                                      f"intermediate_size={config.intermediate_size}, "
                                      f"vocab_size={config.vocab_size}) implies {want}")
        src = [np.asarray(state[n]) for n in e.hf]
        if e.op == "T":
            arr = src[0].T                                   # (out,in) -> (in,out)
        elif e.op == "qkv":
            arr = np.concatenate([s.T if s.ndim == 2 else s for s in src], axis=-1)  # -> (H,3H) / (3H,)
        else:
            arr = src[0]
        out[e.ours] = np.ascontiguousarray(arr)
        assert out[e.ours].shape == tuple(shapes[e.ours]), e
    return out


def minibert_to_hf(params: dict, config: BertConfig) -> dict:
    """Inverse of hf_to_minibert: un-prefixed HF names, HF (out, in) Linear layout."""
    out = {}
    for e in hf_mapping(config):
        arr = params[e.ours]
        if e.op == "T":
            out[e.hf[0]] = np.ascontiguousarray(arr.T)
        elif e.op == "qkv":
            for name, part in zip(e.hf, np.split(arr, 3, axis=-1)):   # (H,3H) -> 3 x (H,H)
                out[name] = np.ascontiguousarray(part.T if part.ndim == 2 else part)
        else:
            out[e.hf[0]] = np.ascontiguousarray(arr)
    return out


def mapping_report(config: BertConfig, prefix: str = "") -> str:
    """The mapping table as text: one line per minibert tensor (layer 0 and the heads in full)."""
    shapes = param_shapes(config)
    how = {"copy": "copy", "T": "transpose (out,in)->(in,out)", "qkv": "concat q|k|v columns (weights transposed)"}
    lines = [f"{'minibert':<24} {'shape':<14} {'from Hugging Face':<62} how"]
    for e in hf_mapping(config):
        if e.ours.startswith("encoder.") and not e.ours.startswith("encoder.0."):
            continue
        heads = e.hf[0].startswith(("cls.", "classifier."))
        hf = " + ".join((("" if heads else prefix) + n) for n in e.hf)
        if e.op == "qkv":
            hf = (prefix + e.hf[0]).replace("query", "{query,key,value}")
        lines.append(f"{e.ours:<24} {str(tuple(shapes[e.ours])):<14} {hf:<62} {how[e.op]}")
    if config.num_layers > 1:
        rest = f"encoder.1 .. encoder.{config.num_layers - 1}" if config.num_layers > 2 else "encoder.1"
        lines.append(f"({rest}: same as encoder.0)")
    if config.mlm_head:
        lines.append("mlm decoder = embeddings.word^T (tied; cls.predictions.decoder.weight not stored)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- HF checkpoints

def read_hf_checkpoint(hf_dir) -> tuple[dict, dict]:
    """Inputs: a Hugging Face checkpoint directory (config.json + model.safetensors, or a sharded
    model.safetensors.index.json). Returns (config dict, tensors dict). Pickle formats are refused."""
    hf_dir = Path(hf_dir)
    if hf_dir.is_file():
        raise CheckpointError(f"{hf_dir} is a file; give the checkpoint DIRECTORY "
                              f"(with config.json and model.safetensors)")
    if not hf_dir.is_dir():
        raise CheckpointError(f"checkpoint directory {hf_dir} does not exist")
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(read_json(index, "convert").get("weight_map", {}).values()))
        files = [hf_dir / s for s in shards]
    else:
        files = [hf_dir / MODEL_FILE] if (hf_dir / MODEL_FILE).is_file() else sorted(hf_dir.glob("*.safetensors"))
    if not files:
        pickles = [p.name for p in hf_dir.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
        if pickles:
            raise CheckpointError(
                f"{hf_dir} holds {pickles}, a pickle-based PyTorch format that minibert never loads "
                f"(unpickling can run arbitrary code). Convert it to safetensors first where you trust it, with "
                f"the transformers class it was saved from, e.g. "
                f"BertForSequenceClassification.from_pretrained('{hf_dir}').save_pretrained('OUT_DIR') "
                f"(safetensors is the default), then run minibert convert OUT_DIR ...")
        raise CheckpointError(f"no model.safetensors in {hf_dir}")
    hf_config = read_json(hf_dir / CONFIG_FILE, "convert")
    if "num_layers" in hf_config and "num_hidden_layers" not in hf_config:
        raise CheckpointError(f"{hf_dir} is already a minibert model (config.json has num_layers); "
                              f"use `minibert export` to write the Hugging Face layout")
    tensors = {}
    for f in files:
        tensors.update(read_safetensors(f))
    return hf_config, tensors


def _refuse_unsupported(hf: dict) -> None:
    """CheckpointError naming the config.json setting minibert does not implement."""
    def no(what):
        raise CheckpointError(f"config.json: {what}; minibert cannot convert this checkpoint")
    if hf.get("model_type", "bert") != "bert":
        no(f"model_type={hf['model_type']!r}, but minibert implements only BERT (model_type 'bert')")
    if hf.get("hidden_act", "gelu") != "gelu":
        no(f"hidden_act={hf['hidden_act']!r}, but minibert implements only the exact erf GELU ('gelu')")
    if hf.get("position_embedding_type", "absolute") not in (None, "absolute"):
        no(f"position_embedding_type={hf['position_embedding_type']!r}, but minibert implements "
           f"only learned absolute positions ('absolute')")
    for flag in ("is_decoder", "add_cross_attention"):
        if hf.get(flag):
            no(f"{flag}=true, but minibert implements only the bidirectional encoder")
    if hf.get("embedding_size", hf.get("hidden_size")) != hf.get("hidden_size"):
        no(f"embedding_size={hf['embedding_size']} differs from hidden_size (factorised embeddings)")
    if hf.get("problem_type") not in (None, "single_label_classification"):
        no(f"problem_type={hf['problem_type']!r}, but minibert classifies with a softmax over labels")
    bad = [a for a in hf.get("architectures") or [] if a not in SUPPORTED_ARCHITECTURES]
    if bad:
        no(f"architectures={bad}, but minibert supports {list(SUPPORTED_ARCHITECTURES)}")


def split_hf_state(tensors: dict) -> tuple[dict, str, list[str]]:
    """Strip the `bert.` prefix, rename old LayerNorm gamma/beta, drop buffers and heads we do not
    implement, and check the tied decoder. Returns (state, prefix, notes). CheckpointError if the
    tied decoder differs from the word table."""
    prefix = "bert." if any(k.startswith("bert.") for k in tensors) else ""
    state, notes = {}, []
    for key, arr in tensors.items():
        name = key[len(prefix):] if prefix and key.startswith(prefix) else key
        name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        if name in DROPPED_KEYS:
            notes.append(f"dropped {key} ({'buffer' if 'position_ids' in name else 'NSP head, not implemented'})")
            continue
        state[name] = arr
    dec_w = state.pop("cls.predictions.decoder.weight", None)
    if dec_w is not None:
        word = state.get("embeddings.word_embeddings.weight")
        if word is None or dec_w.shape != word.shape or not np.array_equal(dec_w, word):
            raise CheckpointError("cls.predictions.decoder.weight differs from the word embeddings; "
                                  "minibert's MLM decoder is tied to embeddings.word (untied heads unsupported)")
        notes.append("cls.predictions.decoder.weight equals the word embeddings (tied): not stored")
    dec_b = state.pop("cls.predictions.decoder.bias", None)
    if dec_b is not None:
        bias = state.setdefault("cls.predictions.bias", dec_b)
        if bias.shape != dec_b.shape or not np.array_equal(bias, dec_b):
            raise CheckpointError("cls.predictions.decoder.bias differs from cls.predictions.bias "
                                  "(they are one tied tensor in BERT)")
    return state, prefix, notes


def config_from_hf(hf: dict, state: dict) -> BertConfig:
    """BertConfig from an HF config.json dict; heads come from which tensors exist."""
    _refuse_unsupported(hf)
    need = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    missing = [k for k in need if k not in hf]
    if missing:
        raise CheckpointError(f"config.json lacks {missing}")
    num_labels, labels = 0, None
    if "classifier.weight" in state:
        num_labels = int(state["classifier.weight"].shape[0])
        id2label = hf.get("id2label")
        if id2label:
            if len(id2label) != num_labels:
                raise CheckpointError(f"config.json id2label has {len(id2label)} labels but "
                                      f"classifier.weight has {num_labels} rows")
            labels = [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(num_labels)]
            if labels == [f"LABEL_{i}" for i in range(num_labels)]:
                labels = None                                  # transformers' placeholder names
    try:
        return _hf_to_config(hf, num_labels, labels, state)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"config.json: {err}") from None


def _hf_to_config(hf: dict, num_labels: int, labels, state: dict) -> BertConfig:
    return BertConfig(
        vocab_size=int(hf["vocab_size"]), hidden_size=int(hf["hidden_size"]),
        num_layers=int(hf["num_hidden_layers"]), num_heads=int(hf["num_attention_heads"]),
        intermediate_size=int(hf["intermediate_size"]),
        max_position=int(hf.get("max_position_embeddings", 512)),
        type_vocab_size=int(hf.get("type_vocab_size", 2)),
        layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
        hidden_dropout=float(hf.get("hidden_dropout_prob", 0.1)),
        attention_dropout=float(hf.get("attention_probs_dropout_prob", 0.1)),
        num_labels=num_labels, pooler="pooler.dense.weight" in state,
        mlm_head="cls.predictions.transform.dense.weight" in state,
        pad_token_id=int(hf.get("pad_token_id") or 0),
        initializer_range=float(hf.get("initializer_range", 0.02)), labels=labels,
        pruned_heads={str(k): list(v) for k, v in (hf.get("pruned_heads") or {}).items()} or None)


def config_to_hf(config: BertConfig, architecture: str) -> dict:
    """HF config.json for `architecture` (BertModel / BertForSequenceClassification / BertForMaskedLM)."""
    hf = {"architectures": [architecture], "model_type": "bert",
          "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
          "num_hidden_layers": config.num_layers, "num_attention_heads": config.num_heads,
          "intermediate_size": config.intermediate_size, "hidden_act": "gelu",
          "hidden_dropout_prob": config.hidden_dropout,
          "attention_probs_dropout_prob": config.attention_dropout,
          "max_position_embeddings": config.max_position, "type_vocab_size": config.type_vocab_size,
          "initializer_range": config.initializer_range, "layer_norm_eps": config.layer_norm_eps,
          "pad_token_id": config.pad_token_id, "position_embedding_type": "absolute",
          "tie_word_embeddings": True}
    if config.num_labels > 0:
        names = config.labels or [f"LABEL_{i}" for i in range(config.num_labels)]
        hf.update(num_labels=config.num_labels, problem_type="single_label_classification",
                  id2label={str(i): n for i, n in enumerate(names)},
                  label2id={n: i for i, n in enumerate(names)})
    if config.pruned_heads:           # transformers < 5 prunes these heads at init, then loads
        hf["pruned_heads"] = {str(k): list(v) for k, v in config.pruned_heads.items()}
    return hf


def convert_checkpoint(hf_dir, out_dir, verbose: bool = True) -> str:
    """Convert a local HF BERT checkpoint (safetensors) into a minibert model directory.
    Every shape is asserted and every HF tensor must be used (see DROPPED_KEYS).
    Returns the report (mapping table + notes), printed when verbose."""
    hf_config, tensors = read_hf_checkpoint(hf_dir)
    state, prefix, notes = split_hf_state(tensors)
    config = config_from_hf(hf_config, state)
    params = hf_to_minibert(state, config)
    used = {n for e in hf_mapping(config) for n in e.hf}
    unused = sorted(set(state) - used)
    if unused:
        raise CheckpointError(f"{len(unused)} tensor(s) in {hf_dir} have no place in a minibert BERT: "
                              f"{unused[:8]}{' ...' if len(unused) > 8 else ''}")
    tok_dir = Path(hf_dir)
    if not (tok_dir / "tokenizer.json").is_file():
        notes.append("no tokenizer.json in the checkpoint: copy one into the output before use")
    save_model(out_dir, params, config, tokenizer_dir=tok_dir)
    n = sum(p.size for p in params.values())
    report = "\n".join([
        f"converted {hf_dir} -> {out_dir}",
        f"layout: {'bert.-prefixed (BertModel/BertFor*)' if prefix else 'no prefix (sentence-transformers)'}; "
        f"{config.num_layers} layers, hidden {config.hidden_size}, {config.num_heads} heads, "
        f"intermediate {config.intermediate_size}, vocab {config.vocab_size}, pooler={config.pooler}, "
        f"mlm_head={config.mlm_head}, num_labels={config.num_labels}; {n:,} parameters",
        f"{len(used)} HF tensors -> {len(params)} minibert tensors (q/k/v fused); all shapes checked",
        mapping_report(config, prefix), *notes])
    if verbose:
        print(report)
    return report


def export_hf(model_dir, hf_out_dir, pruned_heads_config: bool = False) -> Path:
    """Write a minibert model in the HF layout: BertForSequenceClassification (`bert.` prefix) when
    it has a classifier, BertForMaskedLM when it has an MLM head, else BertModel. The result loads
    with transformers' from_pretrained, and `minibert convert` gives back the same model.
    A quantized model is written dequantized (float32). A model with pruned heads is written with
    those heads back as zeros (prune.pad_pruned_heads: the same outputs, full-size tensors; what
    transformers >= 5 loads, having no head pruning), or with pruned_heads_config as the smaller
    tensors plus `pruned_heads` in config.json (the layout transformers < 5 reads)."""
    params, config = load_model(model_dir)
    if config.pruned_heads and not pruned_heads_config:
        from minibert.prune import pad_pruned_heads
        print(f"pruned heads {config.pruned_heads} written back as zero heads (same outputs; "
              f"--pruned-heads-config writes the smaller layout of transformers < 5)")
        params, config = pad_pruned_heads(params, config)
    if config.num_labels > 0 and config.mlm_head:
        raise CheckpointError("model has both a classifier and an MLM head; no single HF architecture holds both")
    if config.num_labels > 0 and not config.pooler:
        raise CheckpointError("model has a classifier but no pooler; BertForSequenceClassification "
                              "classifies the pooled [CLS] and needs pooler weights")
    arch = ("BertForSequenceClassification" if config.num_labels > 0
            else "BertForMaskedLM" if config.mlm_head else "BertModel")
    prefix = "" if arch == "BertModel" else "bert."
    hf = {(n if n.startswith(("cls.", "classifier.")) else prefix + n): a
          for n, a in minibert_to_hf(params, config).items()}
    hf_out_dir = Path(hf_out_dir)
    atomic_write(hf_out_dir / MODEL_FILE,
                 lambda tmp: safetensors.numpy.save_file(hf, str(tmp), metadata={"format": "pt"}))
    atomic_write_json(hf_out_dir / CONFIG_FILE, config_to_hf(config, arch))
    for name in TOKENIZER_FILES:
        if (Path(model_dir) / name).is_file():
            atomic_copy(Path(model_dir) / name, hf_out_dir / name)
    if not (hf_out_dir / "tokenizer_config.json").exists() and (hf_out_dir / "tokenizer.json").exists():
        atomic_write_json(hf_out_dir / "tokenizer_config.json",
                          {"tokenizer_class": "BertTokenizer", "model_max_length": config.max_position})
    print(f"exported {model_dir} -> {hf_out_dir} as {arch} ({len(hf)} tensors)")
    return hf_out_dir


# ----------------------------------------------------------------------------- command line

def cli_convert(args) -> int:
    """minibert convert: OUT_DIR is claimed through minibert.outdir (new or empty, or an earlier
    convert with --overwrite, whose files go first: no stale tokenizer or head is left)."""
    from minibert.outdir import claim_dir
    with claim_dir(args.out_dir, "convert", overwrite=args.overwrite, inputs=[args.hf_dir],
                   option="OUT_DIR", record={"source": str(args.hf_dir)}) as out:
        convert_checkpoint(args.hf_dir, out, verbose=True)
    return 0


def cli_export(args) -> int:
    """minibert export: HF_OUT_DIR is claimed through minibert.outdir (never a minibert model, the
    input itself or another command's folder; an earlier export only with --overwrite)."""
    from minibert.outdir import claim_dir
    with claim_dir(args.hf_out_dir, "export", overwrite=args.overwrite, inputs=[args.model_dir],
                   option="HF_OUT_DIR", record={"source": str(args.model_dir)}) as out:
        export_hf(args.model_dir, out, pruned_heads_config=args.pruned_heads_config)
    return 0
