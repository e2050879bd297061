import json

import numpy as np
import pytest

from loraclf.inference.outputs import Layout, render
from loraclf.metrics.classification import metrics, softmax
from loraclf.metrics.plots import plot_confusion


def one_hot_logits(preds, k):
    logits = np.full((len(preds), k), -5.0, dtype=np.float32)
    logits[np.arange(len(preds)), preds] = 5.0
    return logits


def test_metrics_match_hand_computed_values():
    labels = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([0, 1, 1, 1, 2, 0])
    m = metrics(labels, one_hot_logits(preds, 3), ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    # a: P=1/2 R=1/2 F=1/2; b: P=2/3 R=1 F=0.8; c: P=1 R=1/2 F=2/3
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["per_class"]["c"]["support"] == 2


def test_class_never_seen_gets_zero_not_an_error():
    m = metrics(np.array([0, 0]), one_hot_logits(np.array([0, 0]), 3), ["a", "b", "c"])
    assert m["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_confusion_png(tmp_path):
    plot_confusion([[3, 1], [0, 4]], ["x", "y"], tmp_path / "cm.png", "t")
    assert (tmp_path / "cm.png").read_bytes()[:4] == b"\x89PNG"


def test_submission_and_probability_rendering():
    probs = softmax(np.array([[0.0, 2.0], [3.0, 1.0], [0.0, 0.1]], dtype=np.float32))
    names, decided = ("neg", "pos"), ["pos", "neg", "pos"]
    assert render(Layout(names, "csv", submission=True), probs, decided) == "ID,Label\n0,1\n1,0\n2,1\n"
    rows = render(Layout(names, "csv"), probs, decided).splitlines()
    assert rows[0] == "label,label_name,p_neg,p_pos" and rows[1].startswith("1,pos,")
    assert '"label_name": "neg"' in render(Layout(names, "jsonl"), probs, decided).splitlines()[1]


def test_multi_label_metrics_equal_scikit_learns():
    from sklearn.metrics import accuracy_score, f1_score, hamming_loss, multilabel_confusion_matrix

    from loraclf.metrics.classification import tune_thresholds

    rng = np.random.default_rng(0)
    labels = (rng.random((50, 4)) > 0.6).astype(np.float32)
    logits = (labels * 2 - 1) * rng.random((50, 4)) * 3 + rng.normal(0, 1, (50, 4))
    logits = logits.astype(np.float32)
    thresholds = [0.5, 0.3, 0.7, 0.5]
    m = metrics(labels, logits, ["a", "b", "c", "d"], thresholds)
    preds = (1 / (1 + np.exp(-logits)) >= np.array(thresholds)).astype(int)
    truth = labels.astype(int)
    assert m["accuracy"] == pytest.approx(accuracy_score(truth, preds))
    assert m["micro_f1"] == pytest.approx(f1_score(truth, preds, average="micro"))
    assert m["macro_f1"] == pytest.approx(f1_score(truth, preds, average="macro"))
    assert m["samples_f1"] == pytest.approx(f1_score(truth, preds, average="samples", zero_division=1))
    assert m["hamming_loss"] == pytest.approx(hamming_loss(truth, preds))
    assert m["confusion_matrix"] == multilabel_confusion_matrix(truth, preds).tolist()
    bce = np.mean(np.logaddexp(0, logits) - labels * logits)
    assert m["loss"] == pytest.approx(bce, rel=1e-5)
    # Tuned thresholds: each class's F1 is the best the grid offers.
    tuned = tune_thresholds(labels, logits)
    probs = 1 / (1 + np.exp(-logits))
    for c, t in enumerate(tuned):
        best = max(f1_score(truth[:, c], probs[:, c] >= g, zero_division=0) for g in np.arange(0.05, 0.951, 0.05))
        assert f1_score(truth[:, c], probs[:, c] >= t, zero_division=0) == pytest.approx(best)


def test_multi_label_rendering_and_confusion_grid(tmp_path):
    probs = np.array([[0.9, 0.2, 0.6], [0.1, 0.1, 0.2]])
    text = render(Layout(("a", "b", "c"), "csv", multi_label=True), probs, [["a", "c"], []])
    assert text.splitlines() == ["labels,p_a,p_b,p_c", "a;c,0.9,0.2,0.6", ",0.1,0.1,0.2"]
    jsonl = render(Layout(("a", "b", "c"), "jsonl", multi_label=True), probs, [["a", "c"], []])
    rows = [json.loads(line) for line in jsonl.splitlines()]
    assert rows[0]["labels"] == ["a", "c"] and rows[1]["labels"] == []
    plot_confusion([[[3, 1], [0, 2]]] * 5, list("abcde"), tmp_path / "grid.png", "test")
    assert (tmp_path / "grid.png").stat().st_size > 1000
