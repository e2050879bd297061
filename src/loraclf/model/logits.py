"""Batched inference: the logits of every item of an encoded set, in input order."""

from __future__ import annotations

import numpy as np
import torch

from loraclf.data.batching import loader
from loraclf.data.encoding import Encoded
from loraclf.model.runtime import autocast


@torch.inference_mode()
def predict_logits(model, data: Encoded, batch_size: int, pad_id: int, device: str | torch.device,
                   dtype: torch.dtype | None = None) -> np.ndarray:
    """Logits for every item, in input order.

    Items are batched by length so padding stays small; `dtype` (e.g. bf16)
    runs the forward pass under autocast.
    """
    device = torch.device(device)
    order = np.argsort(data.lengths, kind="stable")
    by_length = data.subset(order)
    chunks = []
    for batch in loader(by_length, batch_size, pad_id):
        batch.pop("labels")
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device, dtype):
            chunks.append(model(**batch).logits.float().cpu())
    logits = torch.cat(chunks).numpy()
    out = np.empty_like(logits)
    out[order] = logits
    return out


def document_logits(logits: np.ndarray, documents: np.ndarray | None) -> np.ndarray:
    """One row per text from one per window (data.long_texts windows): the mean of its windows' logits.

    The mean of logits is the log of the windows' geometric-mean probabilities (up to a constant), so a window
    that is sure of a class outweighs several unsure ones less than a max would, and more than a mean of
    probabilities would; docs/benchmarks.md compares the three on long documents.
    """
    if documents is None:
        return logits
    count = int(documents[-1]) + 1 if len(documents) else 0
    sums = np.zeros((count, logits.shape[1]), dtype=np.float64)
    np.add.at(sums, documents, logits)
    return (sums / np.bincount(documents, minlength=count)[:, None]).astype(np.float32)

