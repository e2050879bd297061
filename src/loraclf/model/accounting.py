"""Exact trainable-parameter accounting, from the model config alone (meta device, no weights)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from loraclf.config.schema import Config
from loraclf.errors import UserError
from loraclf.model.adapter import wrap_with_lora
from loraclf.model.build import meta_model
from loraclf.model.heads import apply_head
from loraclf.model.quantize import logical_numel
from loraclf.model.targets import shared_depth

# Names of adapter tensors: LoRA's A/B (and DoRA's magnitudes, AdaLoRA's E), VeRA's and IA3's vectors.
ADAPTER_MARKERS = ("lora_", "vera_lambda_", "ia3_l")


@dataclass
class Breakdown:
    trainable: int
    lora: int
    head: int
    other: int
    frozen: int
    max_trainable: int
    # The module names LoRA adapts, as resolved for the architecture (roles become names).
    targets: list[str] = field(default_factory=list)
    # Set where the encoder runs one set of layer weights at every depth (ALBERT): how many layers deep.
    shared_depth: int | None = None

    @property
    def over_by(self) -> int:
        return self.trainable - self.max_trainable

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"total": self.trainable + self.frozen}

    def describe(self) -> str:
        share = 100 * self.trainable / max(1, self.trainable + self.frozen)
        return (
            f"trainable {self.trainable:,} ({share:.2f}% of {self.trainable + self.frozen:,}) = "
            f"LoRA {self.lora:,} + head {self.head:,} + other {self.other:,}; "
            f"budget {self.max_trainable:,}"
            + (f"; adapted: {', '.join(self.targets)}" if self.targets else "")
            + (f"; its {self.shared_depth} layers share one set of weights, so each adapted module is one adapter "
               "used at every layer, counted once" if self.shared_depth else "")
        )


def count(model: torch.nn.Module, max_trainable: int) -> Breakdown:
    """Split the parameters of a PEFT-wrapped model into LoRA, head (modules_to_save), other and frozen."""
    lora = head = other = frozen = 0
    for name, param in model.named_parameters():
        n = logical_numel(param)  # a quantized base counts the weights it stands for
        if ".original_module." in name:
            continue  # PEFT's frozen copy of the head, kept only to unload the adapter
        if not param.requires_grad:
            frozen += n
        elif any(marker in name for marker in ADAPTER_MARKERS):
            lora += n
        elif ".modules_to_save." in name:
            head += n
        else:
            other += n
    settings = getattr(model, "peft_config", {}).get("default")
    targets = getattr(settings, "target_modules", None) or []
    # PEFT keeps a list of names as a set: report them in a stable order.
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return Breakdown(lora + head + other, lora, head, other, frozen, max_trainable,
                     [targets] if isinstance(targets, str) else sorted(targets), shared_depth(base))


def estimate(config: Config, label_names: list[str]) -> Breakdown:
    """The breakdown the recipe will train, built on the meta device: no weights are read or allocated.

    Quantization changes how frozen weights are stored, not how many there are: the count is the same.
    """
    base = meta_model(config.model, label_names)
    with torch.device("meta"):
        model = wrap_with_lora(apply_head(base, config.model.head, config.model.head_rank), config.lora)
    return count(model, config.budget.max_trainable)


def enforce(breakdown: Breakdown) -> None:
    if breakdown.over_by > 0:
        raise UserError(
            f"over budget by {breakdown.over_by:,} trainable parameters: {breakdown.describe()}; "
            "lower lora.r, target fewer modules, use a smaller model.head (lowrank or linear), "
            "or raise budget.max_trainable"
        )
