"""Batched inference: the logits of every item of an encoded set, in input order."""

from __future__ import annotations

import numpy as np
import torch

from loraclf.data.encoding import Encoded, in_length_order
from loraclf.model.runtime import autocast


@torch.inference_mode()
def predict_logits(model, data: Encoded, batch_size: int, pad_id: int, device: str | torch.device,
                   dtype: torch.dtype | None = None) -> np.ndarray:
    """Logits for every item, in input order, batched by length (`in_length_order`); `dtype` (e.g. bf16)
    runs the forward pass under autocast."""
    device = torch.device(device)

    def forward(batch: dict[str, np.ndarray]) -> np.ndarray:
        with autocast(device, dtype):
            return model(**{k: torch.from_numpy(v).to(device) for k, v in batch.items()}).logits.float().cpu().numpy()

    return in_length_order(data, batch_size, pad_id, forward)
