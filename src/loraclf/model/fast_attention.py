"""loraclf's attention function for transformers (`attn_implementation: fast`).

SDPA falls back from its fused kernel to an unfused math path on CPU whenever attention dropout is on.
While training with attention dropout on CPU, `attention` runs that math path itself (two batched
matmuls and a softmax, in float32 as SDPA's math path does) with geometric dropout; otherwise it is
transformers' SDPA path. `register()` adds it to transformers' registry; model building calls it,
so importing loraclf changes nothing in transformers.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from loraclf.model.geometric_dropout import geometric_dropout

ATTENTION_NAME = "loraclf_fast"


def attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
              **kwargs) -> tuple[torch.Tensor, None]:
    """transformers attention function: SDPA, except for CPU training with attention dropout."""
    if dropout == 0 or query.device.type != "cpu" or getattr(module, "num_key_value_groups", 1) != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    # In float32 throughout, as SDPA's own math path computes bf16 inputs on CPU.
    with torch.autocast(query.device.type, enabled=False):
        scores = torch.matmul(query.float(), key.float().transpose(2, 3)) * scaling
        if attention_mask is not None:
            if attention_mask.dtype == torch.bool:
                scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
            else:
                scores = scores + attention_mask.float()
        probs = geometric_dropout(scores.softmax(-1), dropout)
        out = torch.matmul(probs, value.float()).to(value.dtype)
    return out.transpose(1, 2).contiguous(), None


def register() -> str:
    """Add `attention` to transformers' registry under ATTENTION_NAME (idempotent); returns the name."""
    AttentionInterface.register(ATTENTION_NAME, attention)
    # transformers builds no padding mask at all for an attention name it has no mask function for:
    # this one takes SDPA's masks (boolean, or none when nothing is padded).
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    return ATTENTION_NAME
