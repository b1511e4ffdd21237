"""model_size.param_count: the closed-form count equals the tensors the model really builds."""

import dataclasses

import numpy as np
import pytest

from minibert.model import BertConfig, count_params, init_params, param_shapes
from minibert.model_size import param_count

SMALL = BertConfig(vocab_size=50, hidden_size=16, num_layers=3, num_heads=2, intermediate_size=48,
                   max_position=12)


@pytest.mark.exercise("param_count")
@pytest.mark.parametrize("change", [{}, {"num_labels": 3}, {"pooler": False}, {"mlm_head": True},
                                    {"type_vocab_size": 1, "num_layers": 1, "num_labels": 2}])
def test_param_count_equals_the_built_parameters(change):
    config = dataclasses.replace(SMALL, **change)
    got = param_count(config)
    built = init_params(config, np.random.default_rng(0))
    assert got["total"] == count_params(built)
    assert got["embeddings"] == sum(v.size for k, v in built.items() if k.startswith("embeddings."))
    assert got["encoder"] == sum(v.size for k, v in built.items() if k.startswith("encoder."))
    assert got["total"] == got["embeddings"] + got["encoder"] + got["head"]


@pytest.mark.exercise("param_count")
def test_the_minilm_teacher_has_22_7_million_parameters_half_of_them_the_word_table():
    config = BertConfig(num_labels=3)                      # 6 layers, H=384, V=30522
    got = param_count(config)
    assert got["total"] == sum(int(np.prod(s)) for s in param_shapes(config).values()) == 22_714_371
    assert 30522 * 384 / got["total"] > 0.5
