"""Which fast function stands in for which reference function: the one table.

The reference modules (layers, attention, model, heads, optim) hold the plain implementation the
lessons teach and the exercises cut out. The fast modules beside them hold what the pipeline runs:
block drivers and `out=` buffers (fast_layers, fast_attention, fast_optim), the packed attention and
the unpadded inference path (fast_attention.attention_packed, fast_model), and the unpadded training
path (fast_packed: the forward with dropout and caches, and its backward). Each fast function is
named after the reference it stands in for and tested equal to it, forward and every gradient, by
tests/test_fast.py, which walks this table.

Where the switch is: model.py's `fast` flag picks the kernels (model.kernels); fast_model.py calls
model.py with fast=True and takes a packed path on padded batches (inference: its own; training:
fast_packed's); the training loop calls fast_optim.adamw_step. The pipeline's modules (train, objective, teacher_cache, evaluate,
infer, bench, augment, general_distill, prune, quantize) import from fast_model and fast_optim, so
student and teacher, training and inference, all run the fast path; the lessons and exercises
import the reference modules.
"""

from __future__ import annotations

# "fast module.function": "reference module.function" it stands in for (equal up to rounding)
STANDS_IN_FOR: dict[str, str] = {
    "fast_layers.erf": "layers.erf",
    "fast_layers.gelu_forward": "layers.gelu_forward",
    "fast_layers.gelu": "layers.gelu",
    "fast_layers.gelu_backward": "layers.gelu_backward",
    "fast_attention.attention_forward": "attention.attention_forward",
    "fast_attention.attention_backward": "attention.attention_backward",
    "fast_attention.attention_packed": "attention.attention_forward",   # the core: qkv -> ctx, per sequence
    "fast_attention.attention_packed_backward": "attention.attention_backward",   # its backward
    "fast_packed.bert_forward": "model.bert_forward",      # training on the real tokens: dropout, caches
    "fast_packed.bert_backward": "model.bert_backward",
    "fast_model.bert_forward": "model.bert_forward",
    "fast_model.bert_backward": "model.bert_backward",
    "fast_model.classify_forward": "model.classify_forward",
    "fast_model.classify_backward": "model.classify_backward",
    "fast_model.mlm_forward": "heads.mlm_forward",
    "fast_optim.adamw_step": "optim.adamw_step",
}
