"""Logits to probabilities and multi-label decisions, in numpy alone: the predictor imports this module, and an
ONNX export predicts without loading torch."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Each row's class probabilities, in the logits' own dtype."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """multi_label: each class's independent probability (float32)."""
    with np.errstate(over="ignore"):  # exp(-x) overflows to inf for very negative x: the probability is then 0
        return (1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float32)))).astype(np.float32)


def above_thresholds(probs: np.ndarray, thresholds: list[float] | None) -> np.ndarray:
    """multi_label: 1 where a class's probability reaches its threshold (0.5 without thresholds)."""
    return (probs >= (0.5 if thresholds is None else np.asarray(thresholds))).astype(np.int64)
