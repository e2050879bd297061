import numpy as np
import pytest

from loraclf.evaluate import metrics, plot_confusion
from loraclf.predict import render, softmax


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
    assert render(probs, ["neg", "pos"], "csv", submission=True) == "ID,Label\n0,1\n1,0\n2,1\n"
    rows = render(probs, ["neg", "pos"], "csv", submission=False).splitlines()
    assert rows[0] == "label,label_name,p_neg,p_pos" and rows[1].startswith("1,pos,")
    assert '"label_name": "neg"' in render(probs, ["neg", "pos"], "jsonl", submission=False).splitlines()[1]
