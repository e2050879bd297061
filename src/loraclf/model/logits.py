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
    order = np.argsort([len(ids) for ids in data.input_ids], kind="stable")
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
