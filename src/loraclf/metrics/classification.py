"""Classification metrics (scikit-learn): accuracy, F1, loss, per class, confusion; multi-label decisions."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from loraclf.metrics.probabilities import above_thresholds, sigmoid, softmax

# scikit-learn is imported where a score is computed, not here: serve and the training stage import this
# module, and scikit-learn's import (1.4 s on a 2-core CPU) would delay every start-up that computes no score.


def metrics(labels: np.ndarray, logits: np.ndarray, label_names: list[str],
            thresholds: list[float] | None = None) -> dict[str, Any]:
    """Accuracy, macro- and micro-F1, loss, per-class precision/recall/F1/support and the confusion matrix.

    Labels of shape (n, classes) are multi_label: see `multi_label_metrics` (`thresholds` applies to them).
    """
    from sklearn import metrics as skm

    if labels.ndim > 1:
        return multi_label_metrics(labels, logits, label_names, thresholds)
    preds = logits.argmax(axis=1)
    ids = list(range(len(label_names)))
    precision, recall, f1, support = skm.precision_recall_fscore_support(labels, preds, labels=ids, zero_division=0)
    loss = torch.nn.functional.cross_entropy(torch.from_numpy(logits).float(), torch.from_numpy(labels)).item()
    confusion = skm.confusion_matrix(labels, preds, labels=ids)
    return {
        "accuracy": float(skm.accuracy_score(labels, preds)),
        "macro_f1": float(skm.f1_score(labels, preds, labels=ids, average="macro", zero_division=0)),
        "micro_f1": float(skm.f1_score(labels, preds, labels=ids, average="micro", zero_division=0)),
        "loss": loss,
        "ece": expected_calibration_error(labels, softmax(logits)),
        "count": int(len(labels)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(label_names)
        },
        "labels": list(label_names),
        "confusion_matrix": confusion.tolist(),
        "confused_pairs": confused_pairs(confusion, label_names),
    }


def confused_pairs(confusion: np.ndarray, label_names: list[str], count: int = 10) -> list[dict[str, Any]]:
    """The `count` most frequent mistakes as (true class, predicted class, how many), most frequent first: what
    stays readable of a confusion matrix at many classes."""
    wrong = confusion.copy()
    np.fill_diagonal(wrong, 0)
    order = np.argsort(-wrong, axis=None, kind="stable")[:count]
    return [{"label": label_names[t], "predicted": label_names[p], "count": int(wrong[t, p])}
            for t, p in zip(*np.unravel_index(order, wrong.shape)) if wrong[t, p]]


ECE_BINS = 15  # equal-width confidence bins, as in Guo et al. (2017) and netcal's default


def reliability(labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> dict[str, list]:
    """Per confidence bin ((i/bins, (i+1)/bins], the first also holding 0): how many texts, their mean
    confidence (the top probability) and their accuracy; None for an empty bin (valid JSON, unlike NaN)."""
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    sums = np.bincount(which, weights=confidence, minlength=bins), np.bincount(which, weights=correct, minlength=bins)
    mean_confidence, accuracy = ([float(v / n) if n else None for v, n in zip(total, counts)] for total in sums)
    return {"count": counts.tolist(), "confidence": mean_confidence, "accuracy": accuracy}


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: the count-weighted mean gap between confidence and accuracy over the bins."""
    table = reliability(labels, probs, bins)
    gaps = sum(n * abs(c - a) for n, c, a in zip(table["count"], table["confidence"], table["accuracy"]) if n)
    return float(gaps / max(len(labels), 1))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the cross-entropy of softmax(logits / T) on these labels (searched over
    log T, so T stays positive). Dividing logits by one T changes no prediction, only how sure each is."""
    from scipy.optimize import minimize_scalar

    logits_t, labels_t = torch.from_numpy(logits).double(), torch.from_numpy(labels).long()

    def loss(log_t: float) -> float:
        return torch.nn.functional.cross_entropy(logits_t / float(np.exp(log_t)), labels_t).item()

    found = minimize_scalar(loss, bounds=(-5.0, 5.0), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(found.x))


def fit_class_temperatures(logits: np.ndarray, labels: np.ndarray) -> list[float]:
    """multi_label: per class, the temperature T_c minimising the binary cross-entropy of sigmoid(logits_c / T_c)
    (searched over log T_c). A logit of 0 stays 0, so decisions at 0.5 do not change."""
    from scipy.optimize import minimize_scalar

    found = []
    for c in range(labels.shape[1]):
        z, y = torch.from_numpy(logits[:, c]).double(), torch.from_numpy(labels[:, c]).double()

        def loss(log_t: float) -> float:
            return torch.nn.functional.binary_cross_entropy_with_logits(z / float(np.exp(log_t)), y).item()

        found.append(float(np.exp(minimize_scalar(loss, bounds=(-5.0, 5.0), method="bounded",
                                                  options={"xatol": 1e-6}).x)))
    return found


def binary_reliability(labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> dict[str, list]:
    """multi_label: per probability bin, over every (text, class) pair: how many, their mean probability and the
    share that are positive (a calibrated model's bins lie on the diagonal)."""
    p, y = probs.ravel(), labels.ravel().astype(np.float64)
    which = np.clip(np.ceil(p * bins).astype(int) - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    sums = np.bincount(which, weights=p, minlength=bins), np.bincount(which, weights=y, minlength=bins)
    mean_p, positive = ([float(v / n) if n else None for v, n in zip(total, counts)] for total in sums)
    return {"count": counts.tolist(), "confidence": mean_p, "accuracy": positive}


def class_calibration_errors(labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> list[float]:
    """multi_label: each class's binary ECE, the count-weighted mean gap between its probability and the share
    of positives over the probability bins."""
    errors = []
    for c in range(labels.shape[1]):
        table = binary_reliability(labels[:, c], probs[:, c], bins)
        gaps = sum(n * abs(q - a) for n, q, a in zip(table["count"], table["confidence"], table["accuracy"]) if n)
        errors.append(float(gaps / max(len(labels), 1)))
    return errors


def multi_label_metrics(labels: np.ndarray, logits: np.ndarray, label_names: list[str],
                        thresholds: list[float] | None = None) -> dict[str, Any]:
    """Subset accuracy (`accuracy`), micro-, macro- and samples-F1, Hamming loss, the mean binary cross-entropy
    (`loss`), per-class scores and one 2x2 confusion matrix per class ([[TN, FP], [FN, TP]], scikit-learn's
    layout). A text with no true and no predicted class counts as right in samples-F1."""
    from sklearn import metrics as skm

    truth = labels.astype(np.int64)
    preds = above_thresholds(sigmoid(logits), thresholds)
    precision, recall, f1, support = skm.precision_recall_fscore_support(truth, preds, zero_division=0)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(torch.from_numpy(logits).float(),
                                                                torch.from_numpy(labels).float()).item()
    used = [0.5] * len(label_names) if thresholds is None else [float(t) for t in thresholds]
    return {
        "accuracy": float(skm.accuracy_score(truth, preds)),
        "micro_f1": float(skm.f1_score(truth, preds, average="micro", zero_division=0)),
        "macro_f1": float(skm.f1_score(truth, preds, average="macro", zero_division=0)),
        "samples_f1": float(skm.f1_score(truth, preds, average="samples", zero_division=1)),
        "hamming_loss": float(skm.hamming_loss(truth, preds)),
        "loss": loss,
        "count": int(len(labels)),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i]), "threshold": used[i]}
            for i, name in enumerate(label_names)
        },
        "labels": list(label_names),
        "thresholds": used,
        "confusion_matrix": skm.multilabel_confusion_matrix(truth, preds).tolist(),
    }


# Candidate thresholds for tune_thresholds: a grid keeps the choice stable on small validation sets.
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)


def tune_thresholds(labels: np.ndarray, logits: np.ndarray) -> list[float]:
    """Per class, the grid threshold with the best F1 on these (validation) items; ties go to the one nearest 0.5."""
    from sklearn import metrics as skm

    probs = sigmoid(logits)
    by_nearness = THRESHOLD_GRID[np.argsort(np.abs(THRESHOLD_GRID - 0.5), kind="stable")]
    chosen = []
    for c in range(labels.shape[1]):
        scores = [skm.f1_score(labels[:, c].astype(np.int64), (probs[:, c] >= t).astype(np.int64), zero_division=0)
                  for t in by_nearness]
        chosen.append(float(by_nearness[int(np.argmax(scores))]))
    return chosen


def confident_mistakes(texts: list[str], labels: np.ndarray, logits: np.ndarray, label_names: list[str],
                       count: int = 20, thresholds: list[float] | None = None) -> list[dict[str, Any]]:
    """The `count` wrong predictions made with the highest probability, most confident first (multi_label: the
    texts whose most confident wrong class decision is most confident)."""
    if labels.ndim > 1:
        probs = sigmoid(logits)
        preds = above_thresholds(probs, thresholds)
        confidence = np.where(preds != labels, np.where(preds == 1, probs, 1 - probs), -1.0).max(axis=1)
        order = np.argsort(-confidence, kind="stable")[: int((confidence >= 0).sum())][:count]
        return [{"index": int(i), "text": texts[i],
                 "label": [label_names[c] for c in np.flatnonzero(labels[i])],
                 "predicted": [label_names[c] for c in np.flatnonzero(preds[i])],
                 "confidence": round(float(confidence[i]), 4)} for i in order]
    probs = torch.softmax(torch.from_numpy(logits).float(), dim=-1).numpy()
    preds = probs.argmax(axis=1)
    wrong = np.flatnonzero(preds != labels)
    order = wrong[np.argsort(-probs[wrong, preds[wrong]], kind="stable")][:count]
    return [{"index": int(i), "text": texts[i], "label": label_names[labels[i]], "predicted": label_names[preds[i]],
             "confidence": round(float(probs[i, preds[i]]), 4)} for i in order]
