"""Weight averaging (`train.ema`): an exponential moving average of the trainable parameters (LoRA and head).

The average is a shadow copy, updated after every optimizer step; training itself never sees it, so a run with
an average trains exactly the weights of a run without one. Each validation scores both, and the run keeps
whichever validates better: the saved adapter is one adapter either way, inside the same budget.

    average = Average(model, decay=0.99)
    average.update(model, step)              # after optimizer step `step` (1, 2, ...)
    with average.applied(model):             # the model holds the average inside the block
        validate(model, ...)

The decay warms up as (1 + step) / (10 + step) until it reaches `decay` (TensorFlow's num_updates rule), so the
early average is not dominated by the freshly initialised head. torch's `AveragedModel` would copy the whole
model, frozen base included (440 MB for a base-size encoder), and has no such warm-up; this copies the trainable
tensors only (4 MB under the default budget).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from loraclf.errors import UserError
from loraclf.training import checkpoint


def decay_at(decay: float, step: int) -> float:
    """The decay applied at optimizer step `step` (counted from 1)."""
    return min(decay, (1 + step) / (10 + step))


class Average:
    """The moving average of `model`'s trainable parameters, in float32."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.tensors = {name: value.float() for name, value in checkpoint.trainable_state(model).items()}

    def update(self, model: torch.nn.Module, step: int) -> None:
        """average <- d * average + (1 - d) * parameters, with d = decay_at(decay, step)."""
        pairs = [(self.tensors[name], p.detach().float()) for name, p in model.named_parameters()
                 if name in self.tensors]
        with torch.no_grad():
            torch._foreach_lerp_([a for a, _ in pairs], [p for _, p in pairs], 1.0 - decay_at(self.decay, step))

    def state(self) -> dict[str, torch.Tensor]:
        """The average by parameter name, as `checkpoint.trainable_state` gives parameters (in float32)."""
        return {name: value.clone() for name, value in self.tensors.items()}

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        if tensors.keys() != self.tensors.keys():
            raise UserError("train.ema: the saved moving average does not match this model's trainable parameters")
        self.tensors = {name: tensors[name].to(self.tensors[name].device, torch.float32) for name in self.tensors}

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[None]:
        """Put the average into the model for the block; the trained parameters come back after it, bit for bit."""
        trained = checkpoint.trainable_state(model)
        checkpoint.load_trainable(model, self.tensors)
        try:
            yield
        finally:
            checkpoint.load_trainable(model, trained)
