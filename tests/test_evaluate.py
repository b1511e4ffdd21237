"""Metrics by hand, `minibert evaluate` / `predict` on the tiny model, and their bad inputs."""

import json

import numpy as np
import pytest
from tiny import make_tiny_model_dir, write_tiny_dataset

from minibert.cli import main
from minibert.errors import DataError, MinibertError
from minibert.evaluate import classification_metrics, confusion_matrix, softmax


def test_confusion_matrix_counts_true_rows_against_predicted_columns():
    cm = confusion_matrix([0, 0, 1, 2], [0, 1, 1, 0], 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 0]])


def test_macro_f1_matches_a_hand_computed_confusion_matrix():
    y_true = [0, 0, 0, 1, 1, 2, 2, 2]
    y_pred = [0, 0, 1, 1, 1, 1, 0, 0]        # class 2 is never predicted
    m = classification_metrics(y_true, y_pred, 3)
    # class 0: TP 2, FP 2 (true 2 predicted 0 twice), FN 1 -> F1 = 4 / (4+2+1) = 4/7
    # class 1: TP 2, FP 2, FN 0 -> F1 = 4/6;  class 2: TP 0 -> F1 = 0
    np.testing.assert_allclose(m["f1"], [4 / 7, 4 / 6, 0.0], rtol=0, atol=1e-15)
    assert m["macro_f1"] == pytest.approx((4 / 7 + 4 / 6 + 0) / 3, abs=1e-15)
    assert m["accuracy"] == 0.5


def test_a_perfect_classifier_scores_one_and_an_absent_class_scores_zero():
    m = classification_metrics([0, 1, 1], [0, 1, 1], 3)      # class 2: no examples, no predictions
    assert m["accuracy"] == 1.0
    np.testing.assert_array_equal(m["f1"], [1.0, 1.0, 0.0])


def test_metrics_refuse_labels_outside_the_class_range():
    with pytest.raises(ValueError, match=r"y_true: values must be in \[0, 2\)"):
        classification_metrics([0, 2], [0, 1], 2)


def test_softmax_rows_sum_to_one_even_for_large_logits():
    p = softmax(np.array([[1000.0, 0.0], [3.0, 3.0]]))
    np.testing.assert_allclose(p.sum(1), 1.0)
    np.testing.assert_allclose(p[1], [0.5, 0.5])


# ----------------------------------------------------------------------------- the CLI

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    return {"model": make_tiny_model_dir(root / "m", num_labels=2),
            "data": write_tiny_dataset(root / "d.csv", n=60),
            "data3": write_tiny_dataset(root / "d3.csv", n=60, num_classes=3),
            "root": root}


def test_evaluate_json_has_exactly_the_documented_keys(tiny, capsys):
    rc = main(["evaluate", "--model", str(tiny["model"]), "--data", f"csv:{tiny['data']}", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res) == {"accuracy", "macro_f1", "per_class_f1", "n", "params", "ms_per_example"}
    assert set(res["per_class_f1"]) == {"negative", "positive"}
    assert 0 <= res["accuracy"] <= 1 and res["n"] > 0 and res["ms_per_example"] > 0
    from minibert.model import count_params
    from minibert.weights import load_model
    assert res["params"] == count_params(load_model(tiny["model"])[0])


def test_evaluate_table_names_every_metric(tiny, capsys):
    assert main(["evaluate", "--model", str(tiny["model"]), "--data", f"csv:{tiny['data']}"]) == 0
    out = capsys.readouterr().out
    for word in ("accuracy", "macro F1", "F1 negative", "F1 positive", "parameters", "ms/example"):
        assert word in out


def test_evaluate_refuses_data_labels_the_model_does_not_know(tiny, capsys):
    rc = main(["evaluate", "--model", str(tiny["model"]), "--data", f"csv:{tiny['data3']}"])
    assert rc == 2
    assert "neutral" in capsys.readouterr().err


def test_evaluate_refuses_a_model_without_a_head(tiny, capsys):
    bare = make_tiny_model_dir(tiny["root"] / "bare")
    rc = main(["evaluate", "--model", str(bare), "--data", f"csv:{tiny['data']}"])
    assert rc == 2 and "no classification head" in capsys.readouterr().err


def test_evaluate_model_refuses_an_empty_split(tiny):
    from minibert.evaluate import evaluate_model
    from minibert.tokenizer import Tokenizer
    from minibert.weights import load_model
    params, config = load_model(tiny["model"])
    with pytest.raises(DataError, match="empty"):
        evaluate_model(params, config, Tokenizer.from_dir(tiny["model"]), [])


def test_predict_prints_a_label_and_probabilities_per_text(tiny, capsys):
    texts = ["a great film", "an awful plot"]
    assert main(["predict", "--model", str(tiny["model"]), *texts]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line, text in zip(lines, texts):
        label, probs, shown_text = line.split("\t")
        assert label in ("negative", "positive") and shown_text == text
        values = [float(v) for v in probs.split()[1::2]]
        assert abs(sum(values) - 1) < 2e-3                   # printed with 3 decimals


def test_predict_refuses_an_empty_text(tiny):
    with pytest.raises(MinibertError, match="non-empty"):
        from minibert.evaluate import cli_predict

        class A:
            model = str(tiny["model"])
            text = ["fine", "  "]
        cli_predict(A)


def test_accuracy_vs_latency_plot_writes_a_png(tmp_path):
    from minibert.plots import plot_accuracy_vs_latency
    path = tmp_path / "scatter.png"
    plot_accuracy_vs_latency([{"name": "teacher", "ms_per_example": 4.0, "accuracy": 0.8,
                               "params": 22_000_000},
                              {"name": "student", "ms_per_example": 1.5, "accuracy": 0.75,
                               "params": 8_000_000}], path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp*"))                # the temporary file was renamed


def test_align_labels_maps_data_labels_to_the_models_by_name():
    from minibert.evaluate import align_labels
    from minibert.model import BertConfig
    cfg = BertConfig(vocab_size=10, hidden_size=4, num_layers=1, num_heads=1, intermediate_size=4,
                     num_labels=3, labels=["negative", "neutral", "positive"])
    np.testing.assert_array_equal(align_labels(["negative", "positive"], cfg), [0, 2])
    with pytest.raises(MinibertError, match=r"\['mixed'\]"):
        align_labels(["mixed", "positive"], cfg)
