"""The training loss: cross-entropy (single_label) or binary cross-entropy (multi_label), with class weights and
label smoothing, summed over items so that any split of a batch (length chunks, micro-batches, processes) adds up
to the whole batch's mean.

    objective = Objective.build(config.data.task, config.train, train_labels, label_names)
    loss = objective.summed(logits, labels) / objective.normaliser(batch_labels)   # the batch's mean loss

Without weights or smoothing the model's own loss is this same loss; `plain` says so, and training then uses the
model's (AdaLoRA adds its regulariser to it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight

from loraclf.errors import UserError


@dataclass(frozen=True)
class Objective:
    task: str  # single_label or multi_label
    # single_label: the weight of each class; multi_label: each class's weight of its positives (pos_weight).
    weights: torch.Tensor | None = None
    label_smoothing: float = 0.0

    @classmethod
    def build(cls, task: str, class_weights: list[float] | str, label_smoothing: float, labels: np.ndarray,
              label_names: list[str]) -> "Objective":
        """`class_weights`: none, balanced (from the training `labels`) or one weight per class."""
        return cls(task, class_weight_tensor(task, class_weights, labels, label_names), label_smoothing)

    @property
    def plain(self) -> bool:
        return self.weights is None and not self.label_smoothing

    def summed(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss summed over items (single_label, each weighted by its class) or over items and classes."""
        weights = None if self.weights is None else self.weights.to(logits.device)
        if self.task == "multi_label":
            targets = labels.float() * (1 - self.label_smoothing) + self.label_smoothing / 2
            return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), targets, pos_weight=weights,
                                                                        reduction="sum")
        return torch.nn.functional.cross_entropy(logits.float(), labels, weight=weights,
                                                 label_smoothing=self.label_smoothing, reduction="sum")

    def normaliser(self, labels: np.ndarray) -> float:
        """What `summed` over these labels divides by to give torch's mean: items x classes (multi_label), the
        summed weights of the items' classes (weighted single_label), or the number of items."""
        if self.task == "multi_label":
            return float(labels.size)
        if self.weights is None:
            return float(len(labels))
        return float(self.weights.double()[torch.from_numpy(np.asarray(labels))].sum())


def class_weight_tensor(task: str, class_weights: list[float] | str, labels: np.ndarray,
                        label_names: list[str]) -> torch.Tensor | None:
    classes = len(label_names)
    if class_weights == "none":
        return None
    if isinstance(class_weights, list):
        if len(class_weights) != classes:
            raise UserError(f"config train.class_weights: {len(class_weights)} weights for {classes} classes "
                            f"{label_names}")
        return torch.tensor(class_weights, dtype=torch.float32)
    if task == "multi_label":
        positives = labels.sum(axis=0)
        empty = [label_names[c] for c in np.flatnonzero(positives == 0)]
        if empty:
            raise UserError(f"config train.class_weights balanced: class {empty[0]!r} has no training item")
        return torch.tensor((len(labels) - positives) / positives, dtype=torch.float32)
    present = np.unique(labels)
    if len(present) < classes:
        missing = sorted(set(range(classes)) - set(present.tolist()))[0]
        raise UserError(f"config train.class_weights balanced: class {label_names[missing]!r} has no training item")
    return torch.tensor(compute_class_weight("balanced", classes=np.arange(classes), y=labels), dtype=torch.float32)
