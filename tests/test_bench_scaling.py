"""bench --scaling on a tiny config: the table's rows and columns (no timing is asserted)."""

from __future__ import annotations

import pytest

from minibert import bench_scaling as BS
from minibert.bench_tasks import teacher_config, torch_available
from minibert.errors import MinibertError

TINY = dict(vocab_size=1200, hidden_size=16, num_heads=2, intermediate_size=32, max_position=32)


@pytest.mark.parametrize("with_torch", [False, True])
def test_scaling_table_has_one_row_per_length_and_batch(with_torch):
    if with_torch and not torch_available():
        pytest.skip("torch/transformers not installed")
    res = BS.run_scaling(lengths=(4, 16), batch_sizes=(1, 3), repeats=1, layers=1,
                         config=teacher_config(**TINY), with_torch=with_torch)
    assert [(r["seq_len"], r["batch_size"]) for r in res["rows"]] == [(4, 1), (4, 3), (16, 1),
                                                                      (16, 3)]
    for r in res["rows"]:
        assert 0 < r["real_tokens"] <= r["seq_len"] * r["batch_size"]
        assert r["padding_fraction"] == pytest.approx(1 - r["real_tokens"] /
                                                       (r["seq_len"] * r["batch_size"]))
        assert r["minibert_forward_us_per_token"] > 0 and r["minibert_train_step_us_per_token"] > 0
        assert ("ratio_train_step_paired" in r) == with_torch
    assert res["rows"][0]["padding_fraction"] == 0            # B = 1: padded to its own length
    text = BS.format_scaling(res)
    lines = text.splitlines()
    assert lines[2].startswith("| T | B | real tokens | padding |")
    body = [ln for ln in lines if ln.startswith("| ") and ln[2].isdigit()]
    assert len(body) == 4 and all(ln.count("|") == 11 for ln in body)
    assert ("PyTorch not timed" in text) != with_torch
    if not with_torch:
        assert body[0].split("|")[6].strip() == "-"           # torch columns empty


def test_scaling_rejects_lengths_past_the_position_table():
    with pytest.raises(MinibertError, match="lengths must be in"):
        BS.run_scaling(lengths=(64,), batch_sizes=(1,), repeats=1, layers=1,
                       config=teacher_config(**TINY), with_torch=False)
