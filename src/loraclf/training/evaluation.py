"""Validation during training: logits on a set split across processes, and its metrics."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from loraclf.data.encoding import Encoded
from loraclf.metrics.classification import metrics
from loraclf.model.logits import predict_logits
from loraclf.training.distributed import Processes


def predict_shared(model: torch.nn.Module, data: Encoded, batch_size: int, pad_id: int, device: torch.device,
                   dtype: torch.dtype | None, procs: Processes) -> np.ndarray:
    """Logits for every item of `data`: each process predicts its share, all get the whole."""
    part = data.subset(procs.part(len(data)))
    return np.concatenate(procs.gather(predict_logits(model, part, batch_size, pad_id, device, dtype)))


def validate(model: torch.nn.Module, data: Encoded, labels: np.ndarray, label_names: list[str], batch_size: int,
             pad_id: int, device: torch.device, dtype: torch.dtype | None, procs: Processes) -> dict[str, Any]:
    """Metrics of `model` on a labelled set (loss, accuracy, macro-F1, per class); the model is left in train mode."""
    model.eval()
    logits = predict_shared(model, data, batch_size, pad_id, device, dtype, procs)
    model.train()
    return metrics(labels, logits, label_names)
