"""bench --model on tiny model folders (float32, int8 with dynamic activations, heads pruned): every
figure is reported per folder, the FLOPs count the heads each layer really has, and the paired
ratios are to the first folder. No timing is asserted (the machine is shared)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from minibert import bench_tasks, cli
from minibert.bench_model import format_model_bench, run_model_bench
from minibert.errors import MinibertError

sys.path.insert(0, str(Path(__file__).parent))
from tiny import make_tiny_model_dir  # noqa: E402

H, NH, HS = 32, 4, 8                     # hidden, heads, head size


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A float32 classifier, its int8 copy (per channel, dynamic activations), and a copy with
    3 of its 8 heads removed (layer 0: heads 1, 2; layer 1: head 0)."""
    from minibert.prune import remove_heads
    from minibert.shrink import save_quantized
    from minibert.weights import load_model, save_model
    root = tmp_path_factory.mktemp("bench_model")
    f = make_tiny_model_dir(root / "float", num_labels=2, hidden_size=H, num_heads=NH,
                            intermediate_size=2 * H)
    params, config = load_model(f)
    q = save_quantized(root / "int8", params, dataclasses.replace(config, activation_quant="dynamic"))
    pp, pc = remove_heads(params, config, {0: [1, 2], 1: [0]})
    p = save_model(root / "pruned", pp, pc)
    return f, Path(q), Path(p), config


def test_every_folder_gets_its_figures_and_the_flops_count_its_real_heads(folders):
    f, q, p, config = folders
    res = run_model_bench([f, q, p], batch_size=4, seq_len=12, repeats=1, roofline_n=64)
    fm, qm, pm = res["models"]
    assert [m["path"] for m in res["models"]] == [str(f), str(q), str(p)]
    assert (fm["weights"], fm["activations"]) == ("float32", "none")
    assert qm["weights"] == "int8 per channel" and qm["activations"] == "dynamic"
    assert [m["heads_per_layer"] for m in res["models"]] == [[4, 4], [4, 4], [2, 3]]
    assert [m["pruned_heads"] for m in res["models"]] == [0, 0, 3]
    assert qm["file_bytes"] < fm["file_bytes"] and pm["file_bytes"] < fm["file_bytes"]
    removed = 3 * HS                                       # attention columns removed, both layers
    assert fm["params"] - pm["params"] == removed * (3 * H + 3) + removed * H   # qkv.W, qkv.b, out.W
    lengths = res["shapes"]["lengths"]
    assert res["shapes"]["real_tokens"] == sum(lengths) and max(lengths) == 12
    assert fm["forward_flops"] == qm["forward_flops"] == bench_tasks.forward_flops(config, 4, 12, lengths)
    N, pairs, I = sum(lengths), sum(n * n for n in lengths), 2 * H
    per_width = lambda A: 2 * N * H * 3 * A + 4 * pairs * A + 2 * N * A * H + 4 * N * H * I  # noqa: E731
    head = 2 * 4 * H * H + 2 * 4 * H * 2                   # pooler + 2-class classifier on [CLS]
    assert pm["forward_flops"] == per_width(2 * HS) + per_width(3 * HS) + head
    assert pm["forward_flops"] < fm["forward_flops"]
    for m in res["models"]:
        for key in ("forward_s", "forward_tokens_per_s", "forward_gflops", "latency_ms",
                    "forward_roofline_fraction_paired", "ratio_forward_paired", "ratio_latency_paired"):
            assert m[key] > 0, key
    assert fm["ratio_forward_paired"] == fm["ratio_latency_paired"] == 1.0     # the first, to itself
    assert json.loads(json.dumps(res)) == res
    table = format_model_bench(res)
    rows = [ln for ln in table.splitlines() if ln.startswith(f"| {f.parent}")]
    assert len(rows) == 3 and "| 2,3 |" in rows[2] and "| dynamic |" in rows[1]


def test_forward_flops_of_a_pruned_config_count_each_layers_heads():
    cfg = bench_tasks.teacher_config(num_layers=2, pruned_heads={"0": [0, 5, 7], "1": []})
    B, T, H, I, hs = 2, 10, 384, 1536, 32
    layer = lambda A: 2 * B * T * (3 * H * A + A * H + 2 * H * I) + 4 * B * T * T * A  # noqa: E731
    assert bench_tasks.forward_flops(cfg, B, T) == layer(9 * hs) + layer(12 * hs) + 2 * B * H * H + 2 * B * H * 3
    no_head = dataclasses.replace(cfg, num_labels=0)      # encoder only: no pooler / classifier
    assert bench_tasks.forward_flops(no_head, B, T) == layer(9 * hs) + layer(12 * hs)


def test_the_command_times_folders_with_and_without_a_classifier(folders, tmp_path, capsys):
    f, _, p, _ = folders
    encoder = make_tiny_model_dir(tmp_path / "encoder", num_labels=0)
    assert cli.main(["bench", "--model", str(encoder), "--model", str(p), "--repeats", "1",
                     "--batch-size", "2", "--seq-len", "8", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [m["path"] for m in res["models"]] == [str(encoder), str(p)]
    assert res["shapes"]["batch_size"] == 2 and res["shapes"]["seq_len"] == 8
    assert cli.main(["bench", "--model", str(f), "--repeats", "1", "--batch-size", "2",
                     "--seq-len", "8"]) == 0
    assert "| float32 | none | 4,4 |" in capsys.readouterr().out


def test_bad_requests_are_clear_errors(folders, capsys):
    f, q, _, _ = folders
    with pytest.raises(MinibertError, match="longer than .* position table"):
        run_model_bench([f], seq_len=65, repeats=1, roofline_n=64)
    with pytest.raises(MinibertError, match="given twice"):
        run_model_bench([f, f], repeats=1, roofline_n=64)
    assert cli.main(["bench", "--model", str(f), "--scaling"]) == 2
    assert "separate benchmarks" in capsys.readouterr().err
    assert cli.main(["bench", "--model", str(f.parent / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
