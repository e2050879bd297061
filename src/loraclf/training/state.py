"""What training works with, one type per concern: the run it writes, its data, what it optimises, the passes it
makes over the items, and the loop's position."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch

from loraclf.config.schema import Config
from loraclf.data.encoding import Encoded
from loraclf.data.splits import Splits
from loraclf.model.accounting import Breakdown
from loraclf.training.averaging import Average
from loraclf.training.distributed import Processes
from loraclf.training.losses import Objective


class ModelLoss(Protocol):
    """A loss that runs the model itself (training/consistency.py): `fit` hands it the model and each chunk's
    batch, and it returns the chunk's loss summed over items."""

    runs_model: bool

    def summed(self, forward: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...


# A loss over a batch's logits and labels (a mean over its items) in place of the objective's, or a ModelLoss.
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | ModelLoss


@dataclass
class RunContext:
    """Where a run writes and how it executes: config, run folder, processes, device, autocast dtype, log."""

    config: Config
    out: Path
    procs: Processes
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype; None: fp32
    log: Callable[[str], None]
    resume_from: Path | None = None  # the checkpoint a resumed run continues from


@dataclass
class TrainData:
    """The labelled data: the tokenizer, the splits, and the training and validation sets as token ids."""

    tokenizer: Any
    splits: Splits
    train_set: Encoded
    val_set: Encoded

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    @property
    def label_names(self) -> list[str]:
        return self.splits.label_names


@dataclass
class Trainable:
    """What a step updates and what a saved adapter is made from."""

    model: torch.nn.Module
    forward: torch.nn.Module  # the model as the step calls it (compiled, DDP-wrapped)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    objective: Objective
    parameters: Breakdown
    base_bytes: int  # the frozen base's weights in memory
    initial_adapter: Path | None  # PiSSA/OLoRA: the adapter as initialised, for converting the saved one
    average: Average | None = None  # train.ema's moving average of the trainable parameters


@dataclass
class EpochPlan:
    """The passes `fit` makes: over which items, shuffled by which seed, for how many epochs and steps."""

    items: Encoded
    pad_id: int
    seed: int  # epoch e draws its order from seed + e alone, so a resumed run sees the same batches
    epochs: int
    steps_per_epoch: int
    total_steps: int
    loss_fn: LossFn | None = None


@dataclass
class TrainState:
    """The loop's position and what it carries from step to step; a checkpoint saves and restores it."""

    epoch: int = 0
    batch: int = 0  # batches of `epoch` already trained
    step: int = 0
    seen: int = 0
    tokens: int = 0
    window_loss: float = 0.0  # loss summed since the last train record
    best_value: float | None = None
    best_record: dict[str, Any] = field(default_factory=dict)
    best_step: int | None = None
    stale: int = 0  # evaluations in a row without a better metric_for_best
    stopped: str | None = None  # why training stopped before its last step (early stopping)
    eval_seconds: float = 0.0
    train_seconds: float = 0.0  # training steps only, carried across resumes
    log_bytes: int = 0  # metrics.jsonl's length at the checkpoint


class Clock:
    """Training time without the validation passes; it accumulates into `state.train_seconds`."""

    def __init__(self, state: TrainState):
        self.state, self.mark = state, time.perf_counter()

    def elapsed(self) -> float:
        return self.state.train_seconds + time.perf_counter() - self.mark

    def stop(self) -> None:
        self.state.train_seconds, self.mark = self.elapsed(), time.perf_counter()

    def restart(self) -> None:
        self.mark = time.perf_counter()


def is_better(metric: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value < best if metric == "loss" else value > best
