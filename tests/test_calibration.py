"""Temperature scaling: ECE as defined, the temperature at the optimum, and T folded into the saved head."""

import json

import numpy as np
import pytest
import torch

from loraclf.data.splits import load_splits
from loraclf.inference.classifier import Classifier
from loraclf.metrics.classification import (
    class_calibration_errors,
    expected_calibration_error,
    fit_class_temperatures,
    fit_temperature,
    reliability,
    sigmoid,
    softmax,
)
from loraclf.model.build import load_tokenizer
from loraclf.rundir import layout
from loraclf.training.recipe import train

from conftest import write_csv
from test_training import tiny_config


def direct_ece(labels, probs, bins=15):
    """ECE written out: for each bin (lo, hi], |accuracy - mean confidence| weighted by its share of items."""
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = (confidence > lo) & (confidence <= hi) if b else (confidence <= hi)
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return total


def test_ece_equals_the_direct_computation():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 4)) * 3
    labels = rng.integers(0, 4, 500)
    probs = softmax(logits)
    assert expected_calibration_error(labels, probs) == pytest.approx(direct_ece(labels, probs), abs=1e-12)
    assert sum(reliability(labels, probs)["count"]) == 500
    # A model whose confidence equals its accuracy in every bin has ECE 0.
    sure = np.eye(4)[labels]
    assert expected_calibration_error(labels, sure) == 0.0


def test_the_fitted_temperature_is_the_minimum_of_the_validation_loss():
    rng = np.random.default_rng(1)
    true_logits = rng.normal(size=(4000, 4)) * 2
    labels = np.array([rng.choice(4, p=p) for p in softmax(true_logits)])
    overconfident = true_logits * 3  # the labels were drawn at temperature 1: T should come back near 3
    t = fit_temperature(overconfident, labels)
    assert t == pytest.approx(3.0, rel=0.1)

    def nll(temperature):
        return torch.nn.functional.cross_entropy(torch.from_numpy(overconfident / temperature),
                                                 torch.from_numpy(labels)).item()

    assert nll(t) <= min(nll(t * 0.99), nll(t * 1.01))
    assert expected_calibration_error(labels, softmax(overconfident / t)) < \
        expected_calibration_error(labels, softmax(overconfident))


def test_multi_label_temperatures_are_each_class_s_own_minimum():
    rng = np.random.default_rng(2)
    true_logits = rng.normal(size=(4000, 3)) * 2
    labels = (rng.random((4000, 3)) < sigmoid(true_logits)).astype(np.float32)
    factors = np.array([0.5, 1.0, 3.0])  # under-, well- and over-confident classes
    found = fit_class_temperatures(true_logits * factors, labels)
    assert found == pytest.approx(factors.tolist(), rel=0.1)
    # Each class's ECE, written out: over its probability bins, |share of positives - mean probability|.
    probs = sigmoid(true_logits * factors)
    for c, error in enumerate(class_calibration_errors(labels, probs)):
        p, y, direct = probs[:, c], labels[:, c], 0.0
        for b in range(15):
            inside = (p > b / 15) & (p <= (b + 1) / 15) if b else p <= 1 / 15
            if inside.any():
                direct += inside.mean() * abs(y[inside].mean() - p[inside].mean())
        assert error == pytest.approx(direct, abs=1e-6)
    after = class_calibration_errors(labels, sigmoid(true_logits * factors / np.array(found)))
    assert after[2] < class_calibration_errors(labels, probs)[2]


def test_a_calibrated_run_saves_logits_divided_by_t(tmp_path, tiny_model_dir, agnews_rows):
    texts, labels = agnews_rows
    config = tiny_config(tiny_model_dir, write_csv(tmp_path / "train.csv", texts[:160], labels[:160]), epochs=3,
                         lr=2e-2, precision="fp32", calibrate="temperature")
    config.data.test_size, config.data.length_filter = 40, None
    summary = train(config, tmp_path / "run", log=lambda _: None)
    record = summary["calibration"]
    assert record["temperature"] > 0 and set(record) >= {"validation", "test"}
    assert record["validation"]["ece_after"] <= record["validation"]["ece_before"] + 1e-9
    assert json.loads((tmp_path / "run" / layout.SUMMARY).read_text())["calibration"] == record
    assert (tmp_path / "run" / layout.CALIBRATION_PLOT).stat().st_size > 0
    assert "Calibration (temperature" in (tmp_path / "run" / layout.REPORT).read_text()
    # What the saved adapter gives on the test split is the calibrated model: its ECE is the one recorded.
    split = load_splits(config.data, load_tokenizer(config.model), log=lambda _: None).test
    probs = Classifier.load(tmp_path / "run", device="cpu", precision="fp32").predict_proba(split.texts)
    assert expected_calibration_error(split.labels, probs) == pytest.approx(record["test"]["ece_after"], abs=1e-6)
    assert summary["test"]["ece"] == pytest.approx(record["test"]["ece_after"], abs=1e-6)
