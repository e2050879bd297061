"""Classification metrics (scikit-learn): accuracy, F1, loss, per class, confusion; multi-label decisions."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    hamming_loss,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
)


def softmax(logits: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(logits), dim=-1).numpy()


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """multi_label: each class's independent probability."""
    return torch.sigmoid(torch.from_numpy(logits).float()).numpy()


def metrics(labels: np.ndarray, logits: np.ndarray, label_names: list[str],
            thresholds: list[float] | None = None) -> dict[str, Any]:
    """Accuracy, macro- and micro-F1, loss, per-class precision/recall/F1/support and the confusion matrix.

    Labels of shape (n, classes) are multi_label: see `multi_label_metrics` (`thresholds` applies to them).
    """
    if labels.ndim > 1:
        return multi_label_metrics(labels, logits, label_names, thresholds)
    preds = logits.argmax(axis=1)
    ids = list(range(len(label_names)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, preds, labels=ids, zero_division=0)
    loss = torch.nn.functional.cross_entropy(torch.from_numpy(logits).float(), torch.from_numpy(labels)).item()
    return {
        "accuracy": float(accuracy_score(labels, preds)),
        "macro_f1": float(f1_score(labels, preds, labels=ids, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(labels, preds, labels=ids, average="micro", zero_division=0)),
        "loss": loss,
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
        "confusion_matrix": confusion_matrix(labels, preds, labels=ids).tolist(),
    }


def above_thresholds(probs: np.ndarray, thresholds: list[float] | None) -> np.ndarray:
    """multi_label: 1 where a class's probability reaches its threshold (0.5 without thresholds)."""
    return (probs >= (0.5 if thresholds is None else np.asarray(thresholds))).astype(np.int64)


def multi_label_metrics(labels: np.ndarray, logits: np.ndarray, label_names: list[str],
                        thresholds: list[float] | None = None) -> dict[str, Any]:
    """Subset accuracy (`accuracy`), micro-, macro- and samples-F1, Hamming loss, the mean binary cross-entropy
    (`loss`), per-class scores and one 2x2 confusion matrix per class ([[TN, FP], [FN, TP]], scikit-learn's
    layout). A text with no true and no predicted class counts as right in samples-F1."""
    truth = labels.astype(np.int64)
    preds = above_thresholds(sigmoid(logits), thresholds)
    precision, recall, f1, support = precision_recall_fscore_support(truth, preds, zero_division=0)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(torch.from_numpy(logits).float(),
                                                                torch.from_numpy(labels).float()).item()
    used = [0.5] * len(label_names) if thresholds is None else [float(t) for t in thresholds]
    return {
        "accuracy": float(accuracy_score(truth, preds)),
        "micro_f1": float(f1_score(truth, preds, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(truth, preds, average="macro", zero_division=0)),
        "samples_f1": float(f1_score(truth, preds, average="samples", zero_division=1)),
        "hamming_loss": float(hamming_loss(truth, preds)),
        "loss": loss,
        "count": int(len(labels)),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i]), "threshold": used[i]}
            for i, name in enumerate(label_names)
        },
        "labels": list(label_names),
        "thresholds": used,
        "confusion_matrix": multilabel_confusion_matrix(truth, preds).tolist(),
    }


# Candidate thresholds for tune_thresholds: a grid keeps the choice stable on small validation sets.
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)


def tune_thresholds(labels: np.ndarray, logits: np.ndarray) -> list[float]:
    """Per class, the grid threshold with the best F1 on these (validation) items; ties go to the one nearest 0.5."""
    probs = sigmoid(logits)
    by_nearness = THRESHOLD_GRID[np.argsort(np.abs(THRESHOLD_GRID - 0.5), kind="stable")]
    chosen = []
    for c in range(labels.shape[1]):
        scores = [f1_score(labels[:, c].astype(np.int64), (probs[:, c] >= t).astype(np.int64), zero_division=0)
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
