"""A strongly perturbed view of a padded batch of token ids, for consistency training on unlabelled text.

    ids, mask = strong_view(input_ids, attention_mask, pad_id, mask_id, mask_rate=0.15, deletion=0.1)

Each text loses one contiguous span (`deletion` of its tokens, at a random place), and each remaining token is
replaced by the mask token with probability `mask_rate`; the first and last tokens (the tokenizer's [CLS]/<s>
and [SEP]/</s>) are kept. Neither needs another model. Masking is what a masked-language-model encoder (BERT,
RoBERTa, MPNet) saw in pre-training in exactly this role, so the view stays readable to it; a deleted span is
the kind of damage the shifted texts carry (LLM-written news that drops a clause or trails off). Word-order
swaps were left out: on sub-word tokens they cut words into pieces no text contains. A tokenizer without a mask
token gets the deletion only.
"""

from __future__ import annotations

import math

import torch


def strong_view(input_ids: torch.Tensor, attention_mask: torch.Tensor, pad_id: int, mask_id: int | None,
                mask_rate: float, deletion: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The perturbed rows, re-padded to their own longest; random draws from torch's global generator."""
    rows = []
    for ids, length in zip(input_ids.cpu(), attention_mask.sum(dim=1).tolist()):
        ids = ids[:length]
        inner = length - 2
        cut = math.floor(deletion * inner) if inner > 1 else 0
        if cut:
            start = 1 + int(torch.randint(0, inner - cut + 1, ()))
            ids = torch.cat([ids[:start], ids[start + cut:]])
        if mask_id is not None and mask_rate and len(ids) > 2:
            masked = torch.rand(len(ids) - 2) < mask_rate
            ids = ids.clone()
            ids[1:-1][masked] = mask_id
        rows.append(ids)
    padded = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=pad_id)
    lengths = torch.tensor([len(r) for r in rows])
    mask = (torch.arange(padded.shape[1])[None, :] < lengths[:, None]).to(attention_mask.dtype)
    return padded.to(input_ids.device), mask.to(attention_mask.device)
