"""How big a BERT is, from its config alone (lesson 9).

Counting the parameters of a config without building it answers the questions lesson 9 asks
before training anything: how much of the teacher is the word-embedding table, and how much
does each dropped encoder layer save. The count must equal `count_params(init_params(config))`;
the test checks it on configs with and without a pooler, a classifier and an MLM head.

Shape letters: V vocab, P max positions, Y token types, H hidden, I intermediate, L layers,
C classes.
"""

from __future__ import annotations

from minibert.model import BertConfig


def param_count(config: BertConfig) -> dict[str, int]:
    """Number of parameters of a BERT with this config, by part, without building it.

    Inputs: config, a BertConfig (see model.param_shapes for the tensors it implies).
    Returns: {"embeddings": ..., "encoder": ..., "head": ..., "total": ...}: the embeddings.*
    tensors; the encoder.* tensors of all L layers; everything else (pooler, classifier, MLM
    head; the MLM decoder is tied to the word embeddings and adds only its bias); their sum.
    """
    V, P, Y = config.vocab_size, config.max_position, config.type_vocab_size
    H, I, L, C = config.hidden_size, config.intermediate_size, config.num_layers, config.num_labels
    # BEGIN EXERCISE param_count
    # three lookup tables (word, position, token type), then one LayerNorm (gamma, beta)
    embeddings = (V + P + Y) * H + 2 * H
    # per layer: the fused q|k|v projection and the output projection (weights and biases),
    # the FFN's two linears, and two LayerNorms
    attention = (H * 3 * H + 3 * H) + (H * H + H)
    ffn = (H * I + I) + (I * H + H)
    layer = attention + ffn + 2 * (2 * H)
    encoder = L * layer
    head = 0
    if config.pooler:
        head += H * H + H
    if C > 0:
        head += H * C + C
    if config.mlm_head:
        head += (H * H + H) + 2 * H + V                 # transform, LayerNorm, decoder bias
    # END EXERCISE param_count
    return {"embeddings": embeddings, "encoder": encoder, "head": head,
            "total": embeddings + encoder + head}
