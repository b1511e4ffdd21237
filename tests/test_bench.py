"""Smoke tests of `minibert bench` on a tiny config: the code path runs and reports every figure.

No timing assertions: the machine is shared, so a time proves nothing here. What must hold is
that every key is present, times are positive, the FLOP count follows the formula, and the
batch really is padded with varied lengths.
"""

import json

import numpy as np
import pytest

from minibert import bench, bench_tasks, cli
from minibert.errors import MinibertError

TINY = dict(vocab_size=60, hidden_size=16, num_heads=2, intermediate_size=32, max_position=32)
TIMES = ("teacher_forward_s", "teacher_train_step_s", "student_train_step_s",
         "teacher_latency_s", "student_latency_s")
DERIVED = ("teacher_forward_tokens_per_s", "teacher_train_step_tokens_per_s",
           "student_train_step_tokens_per_s", "teacher_forward_gflops",
           "teacher_forward_roofline_fraction", "teacher_forward_roofline_fraction_paired")


def tiny_run(**kw):
    config = bench_tasks.teacher_config(num_layers=2, **TINY)
    args = dict(batch_size=3, seq_len=8, repeats=1, with_torch=False, with_rss=True,
                student_layers=1, config=config, roofline_n=64)
    args.update(kw)
    return bench.run_bench(**args)


def test_random_batch_is_padded_with_varied_lengths_and_a_full_row():
    ids, mask, tt, labels = bench_tasks.random_batch(np.random.default_rng(0), 16, 12, 100)
    lengths = mask.sum(axis=1)
    assert ids.shape == mask.shape == tt.shape == (16, 12) and labels.shape == (16,)
    assert lengths.max() == 12 and len(set(lengths.tolist())) > 1
    assert np.all(ids[mask == 0] == 0) and np.all(ids[mask == 1] > 0)
    assert ids.min() >= 0 and ids.max() < 100


def test_forward_flops_follow_the_matmul_formula():
    cfg = bench_tasks.teacher_config()   # MiniLM: per layer 2N(3H^2 + H^2 + 2HI) + 4 B T^2 H, N = B T
    B, T, H, I = 32, 64, 384, 1536
    per_layer = 2 * B * T * (4 * H * H + 2 * H * I) + 4 * B * T * T * H
    assert bench_tasks.forward_flops(cfg, B, T) == 6 * per_layer + 2 * B * H * H + 2 * B * H * 3
    # Unpadded (minibert's inference): token-wise rows = sum of lengths, attention pairs = sum n_b^2.
    lengths = np.array([64, 10, 3])
    n, pairs = 77, 64 * 64 + 100 + 9
    per_layer = 2 * n * (4 * H * H + 2 * H * I) + 4 * pairs * H
    assert bench_tasks.forward_flops(cfg, 3, T, lengths) == 6 * per_layer + 2 * 3 * H * H + 2 * 3 * H * 3
    assert bench_tasks.forward_flops(cfg, 3, T, [T, T, T]) == bench_tasks.forward_flops(cfg, 3, T)


def test_run_bench_reports_every_figure_and_json_round_trips():
    res = tiny_run()
    mb = res["minibert"]
    for key in TIMES + DERIVED:
        assert mb[key] > 0, key
    for key in ("teacher_train_peak_rss_mb", "teacher_train_rss_before_mb"):
        assert mb[key] > 0, (key, mb.get("rss_error"))
    assert mb["teacher_train_peak_rss_mb"] >= mb["teacher_train_rss_before_mb"]
    assert res["roofline_gflops"] > 0 and res["teacher_forward_flops"] > 0
    assert res["blas"]["threads"] >= 1 and "OPENBLAS_CORETYPE" in res["blas"]["env"]
    assert res["shapes"]["real_tokens"] == sum(res["shapes"]["lengths"])
    assert res["malloc"] in ("freed memory kept (minibert.allocator)", "system default")
    lengths = res["shapes"]["lengths"]                            # minibert's FLOPs: real tokens only
    assert res["minibert_teacher_forward_flops"] == bench_tasks.forward_flops(
        bench_tasks.teacher_config(num_layers=2, **TINY), 3, 8, lengths) < res["teacher_forward_flops"]
    assert json.loads(json.dumps(res)) == res                     # plain JSON types only
    table = bench.format_table(res)
    assert "teacher train step" in table and "roofline" in table


def test_cli_json_prints_one_json_object(capsys, monkeypatch):
    real = bench.run_bench
    monkeypatch.setattr(bench, "run_bench", lambda **kw: real(
        **{**kw, "config": bench_tasks.teacher_config(num_layers=2, **TINY), "student_layers": 1,
           "roofline_n": 64, "with_rss": False}))
    assert cli.main(["bench", "--json", "--repeats", "1", "--no-torch",
                     "--batch-size", "2", "--seq-len", "6"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["shapes"]["batch_size"] == 2 and res["shapes"]["seq_len"] == 6
    assert set(TIMES) <= set(res["minibert"]) and "torch" not in res


def test_bad_sizes_are_a_clear_error():
    with pytest.raises(MinibertError, match="seq-len"):
        tiny_run(seq_len=1000)
    with pytest.raises(MinibertError, match="repeats"):
        tiny_run(repeats=0)


@pytest.mark.torch
@pytest.mark.slow
def test_torch_comparison_reports_ratios():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    res = tiny_run(with_torch=True, with_rss=False)   # RSS subprocesses would re-import torch
    th, ratio = res["torch"], res["ratio_minibert_over_torch"]
    assert th["teacher_params"] == res["minibert"]["teacher_params"]   # same architecture
    for key in TIMES:
        assert th[key] > 0 and ratio[key] == pytest.approx(res["minibert"][key] / th[key])
        assert res["ratio_minibert_over_torch_paired"][key] > 0
