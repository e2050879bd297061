"""Consistency training on unlabelled text (adapt.method consistency), in the manner of FixMatch.

In each batch, a labelled item adds its cross-entropy. An unlabelled item (label IGNORE) is first predicted as
it is, without dropout and without a gradient (the weak view); where that prediction's probability reaches the
round's threshold, its label becomes the target of a strongly perturbed view of the same text
(`data/perturb.py`: a deleted span, masked tokens), weighted by `weight`. Below the threshold an item adds
nothing. The targets come from the current model at every step, not from a model frozen at the round's start as
pseudo-labels are.

The loss runs the model itself, so `fit` hands it the model and each chunk's batch (`runs_model`); it returns the
chunk's loss summed over items, which `fit` normalises as it does every loss.
"""

from __future__ import annotations

import torch

from loraclf.data.perturb import strong_view

IGNORE = -100  # the label of an unlabelled item


class ConsistencyLoss:
    runs_model = True

    def __init__(self, threshold: float, weight: float, pad_id: int, mask_id: int | None, mask_rate: float,
                 deletion: float):
        self.threshold, self.weight, self.pad_id, self.mask_id = threshold, weight, pad_id, mask_id
        self.mask_rate, self.deletion = mask_rate, deletion
        self.unlabelled = torch.zeros((), dtype=torch.long)  # seen in training, for the round's record
        self.confident = torch.zeros((), dtype=torch.long)

    def summed(self, forward: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        labels = batch.pop("labels")
        unlabelled = labels == IGNORE
        total = torch.zeros((), device=labels.device)
        if (~unlabelled).any():
            logits = forward(**{k: v[~unlabelled] for k, v in batch.items()}).logits.float()
            total = total + torch.nn.functional.cross_entropy(logits, labels[~unlabelled], reduction="sum")
        if unlabelled.any():
            total = total + self.weight * self._unlabelled(forward, {k: v[unlabelled] for k, v in batch.items()})
        return total

    def _unlabelled(self, forward: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        forward.eval()
        with torch.no_grad():
            probs = torch.softmax(forward(**batch).logits.float(), dim=-1)
        forward.train()
        confidence, target = probs.max(dim=-1)
        keep = confidence >= self.threshold
        self.unlabelled += len(keep)
        self.confident += int(keep.sum())
        if not keep.any():
            return torch.zeros((), device=probs.device)
        ids, mask = strong_view(batch["input_ids"][keep], batch["attention_mask"][keep], self.pad_id, self.mask_id,
                                self.mask_rate, self.deletion)
        strong = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in batch:
            strong["token_type_ids"] = torch.zeros_like(ids)
        logits = forward(**strong).logits.float()
        return torch.nn.functional.cross_entropy(logits, target[keep], reduction="sum")
