"""What `minibert bench` times: the inputs, minibert's tasks and PyTorch's, on the same shapes.

Shape legend
    B batch   T tokens (padded length)   H hidden   nh heads   hs head size   I intermediate
    V vocab   L layers   C classes

Each engine gives a dict task name -> (fn, warm-up runs): teacher forward (eval mode, no
caches), batch-1 latency (one sequence at its real length) for teacher and student, and the
train step (forward with dropout + cross-entropy + backward + AdamW over all parameters) for
teacher and student. torch and transformers are imported lazily, only inside the torch_*
functions. How they are timed and reported is minibert.bench.
"""

from __future__ import annotations

import numpy as np

from minibert.fast_model import classify_backward, classify_forward
from minibert.fast_optim import adamw_step
from minibert.losses import cross_entropy
from minibert.model import BertConfig, count_params, init_params
from minibert.optim import adamw_init
from minibert.student import student_config

NUM_LABELS = 3          # a 3-class head (negative / neutral / positive, like the default data)
LR = 1e-4               # any positive lr: the step's cost does not depend on it


# ----------------------------------------------------------------------------------------------
# Inputs


def teacher_config(num_layers=6, **overrides) -> BertConfig:
    """The teacher's shapes (all-MiniLM-L6-v2) with a 3-class head; `overrides` for tiny tests."""
    sizes = dict(vocab_size=30522, hidden_size=384, num_layers=num_layers, num_heads=12,
                 intermediate_size=1536, max_position=512, num_labels=NUM_LABELS, pooler=True)
    sizes.update(overrides)
    return BertConfig(**sizes)


def random_batch(rng, batch_size, seq_len, vocab_size):
    """A padded batch with realistic, varied lengths.

    Lengths are drawn uniformly from [max(2, T/4), T] and one sequence has the full length T (the
    batch is padded to its longest, as the tokenizer does). Each row is [CLS] ids... [SEP] pads.
    Inputs: rng (np.random.Generator), batch_size B, seq_len T, vocab_size V.
    Returns: ids int64 (B,T), mask int64 (B,T), token_type_ids int64 (B,T), labels int64 (B,).
    """
    B, T = batch_size, seq_len
    lengths = rng.integers(max(2, T // 4), T + 1, size=B)             # (B,)
    lengths[0] = T
    ids = rng.integers(min(1000, vocab_size - 1), vocab_size, size=(B, T))  # (B,T) ordinary word pieces
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)      # (B,T) 1 = real
    ids[:, 0] = min(101, vocab_size - 1)                              # [CLS]
    ids[np.arange(B), lengths - 1] = min(102, vocab_size - 1)         # [SEP]
    ids *= mask                                                       # pads are id 0
    labels = rng.integers(0, NUM_LABELS, size=B)                      # (B,)
    return ids, mask, np.zeros((B, T), dtype=np.int64), labels


def forward_flops(config: BertConfig, batch_size, seq_len, lengths=None) -> int:
    """Multiply-adds x 2 of every matmul in one forward (what really runs).

    lengths: None for the padded batch (PyTorch's work: every sequence is T tokens long), or the
    (B,) real lengths n_b for minibert's inference forward, which runs on the real tokens only
    (N = sum n_b token-wise rows, attention over sum n_b^2 query-key pairs instead of B*T^2).
    Layer i has A_i = config.heads_in_layer(i) * hs attention columns (A_i = H unless heads were
    pruned): QKV 2*N*H*3A_i, scores q k^T 2*pairs*A_i, probs @ v the same, output projection
    2*N*A_i*H, FFN 2*N*H*I twice; then, with a classifier (num_labels > 0), the pooler and the
    classifier on [CLS]. Elementwise work (softmax, GELU, LayerNorm, int8 rounding of
    activations) is not counted (it is < 1% of the FLOPs).
    """
    B, T, H, I = batch_size, seq_len, config.hidden_size, config.intermediate_size
    if lengths is None:
        N, pairs = B * T, B * T * T
    else:
        n = np.asarray(lengths, dtype=np.int64)
        N, pairs = int(n.sum()), int((n * n).sum())
    total = 0
    for i in range(config.num_layers):
        A = config.heads_in_layer(i) * config.head_size                 # attention width of layer i
        attn = 2 * N * H * 3 * A + 2 * 2 * pairs * A + 2 * N * A * H
        ffn = 2 * 2 * N * H * I
        total += attn + ffn
    if config.num_labels > 0:
        total += 2 * B * H * H * int(config.pooler) + 2 * B * H * config.num_labels
    return total


# ----------------------------------------------------------------------------------------------
# minibert


def minibert_forward_fn(params, config, ids, mask, tt):
    """A closure running the inference forward (eval mode, no caches) and returning the logits."""
    def run():
        logits, _, _ = classify_forward(params, config, ids, mask, tt, rng=None, keep_cache=False)
        return logits
    return run


def minibert_train_fn(params, config, ids, mask, tt, labels, seed=0):
    """A closure running one train step: forward with dropout, cross-entropy, backward, AdamW."""
    state = adamw_init(params)
    rng = np.random.default_rng(seed)

    def run():
        logits, _, cache = classify_forward(params, config, ids, mask, tt, rng=rng)  # (B,C)
        loss, dlogits = cross_entropy(logits, labels)
        grads = classify_backward(dlogits, cache)
        adamw_step(params, grads, state, LR)
        return loss
    return run


def minibert_tasks(config, student_layers, batch):
    """The NumPy engine's timed tasks: dict name -> (closure, warm-up runs), plus parameter counts."""
    ids, mask, tt, labels = batch
    rng = np.random.default_rng(0)
    teacher = init_params(config, rng)
    student_cfg = student_config(config, student_layers)
    student = init_params(student_cfg, rng)
    n1 = int(mask[0].sum())                                           # batch-1: one sequence, unpadded
    one = (ids[:1, :n1], mask[:1, :n1], tt[:1, :n1])
    tasks = {
        "teacher_forward": (minibert_forward_fn(teacher, config, ids, mask, tt), 1),
        "teacher_latency": (minibert_forward_fn(teacher, config, *one), 2),
        "student_latency": (minibert_forward_fn(student, student_cfg, *one), 2),
        "teacher_train_step": (minibert_train_fn(teacher, config, ids, mask, tt, labels), 2),
        "student_train_step": (minibert_train_fn(student, student_cfg, ids, mask, tt, labels), 2),
    }
    return tasks, {"teacher_params": count_params(teacher), "student_params": count_params(student)}


# ----------------------------------------------------------------------------------------------
# PyTorch (optional; imported lazily, only here)


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except Exception:
        return False
    return True


def torch_model(config, num_layers):
    import transformers
    hf_config = transformers.BertConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=config.num_heads, intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_position, type_vocab_size=config.type_vocab_size,
        layer_norm_eps=config.layer_norm_eps, hidden_dropout_prob=config.hidden_dropout,
        attention_probs_dropout_prob=config.attention_dropout, hidden_act="gelu",
        num_labels=config.num_labels)
    return transformers.BertForSequenceClassification(hf_config)


def torch_forward_fn(model, ids, mask, tt):
    import torch

    def run():
        model.eval()
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=mask, token_type_ids=tt).logits
    return run


def torch_train_fn(model, ids, mask, tt, labels):
    import torch
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)

    def run():
        model.train()
        loss = model(input_ids=ids, attention_mask=mask, token_type_ids=tt, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss
    return run


def torch_tasks(config, student_layers, batch, threads):
    """PyTorch's timed tasks (same config, batch and thread count) and facts about the run."""
    import torch
    import transformers
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    ids, mask, tt, labels = (torch.from_numpy(np.ascontiguousarray(a)) for a in batch)
    teacher = torch_model(config, config.num_layers)
    student = torch_model(config, student_layers)
    n1 = int(mask[0].sum())
    one = (ids[:1, :n1], mask[:1, :n1], tt[:1, :n1])
    tasks = {
        "teacher_forward": (torch_forward_fn(teacher, ids, mask, tt), 1),
        "teacher_latency": (torch_forward_fn(teacher, *one), 2),
        "student_latency": (torch_forward_fn(student, *one), 2),
        "teacher_train_step": (torch_train_fn(teacher, ids, mask, tt, labels), 2),
        "student_train_step": (torch_train_fn(student, ids, mask, tt, labels), 2),
    }
    facts = {"torch_version": torch.__version__, "transformers_version": transformers.__version__,
             "threads": torch.get_num_threads(),
             "attn_implementation": getattr(teacher.config, "_attn_implementation", None),
             "teacher_params": sum(p.numel() for p in teacher.parameters()),
             "student_params": sum(p.numel() for p in student.parameters())}
    return tasks, facts
