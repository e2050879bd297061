"""train.calibrate temperature: one temperature, fit on the validation split, folded into the head's output layer.

Folded into the weights, T needs no code on any path: the adapter, a merged or ONNX export, serve and
plain PEFT loading all give softmax(logits / T), with the same labels as before. A multi_label run fits one
temperature per class (sigmoid(logit_c / T_c), each class's output row divided by its own T_c): decisions at 0.5
stay as they were, and each class's ECE is measured on its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from loraclf.metrics.classification import (
    binary_reliability,
    class_calibration_errors,
    expected_calibration_error,
    fit_class_temperatures,
    fit_temperature,
    reliability,
    sigmoid,
    softmax,
)
from loraclf.metrics.plots import calibration_figure, save_figure
from loraclf.rundir import atomic, layout
from loraclf.training import checkpoint
from loraclf.training.evaluation import predict_shared
from loraclf.training.keep import save_best
from loraclf.training.state import RunContext, Trainable, TrainData, TrainState


def output_layer(model: torch.nn.Module, classes: int) -> torch.nn.Linear:
    """The trainable linear layer that makes the logits: the last one with `classes` outputs (under PEFT, the
    trained copy of the head, not the frozen original)."""
    found = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == classes
             and m.weight.requires_grad]
    if not found:
        raise RuntimeError(f"no trainable linear layer with {classes} outputs to calibrate")
    return found[-1]


def calibrate(run: RunContext, data: TrainData, trainable: Trainable, state: TrainState,
              best_state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Fit T on validation for the best model, divide its output layer by T and save the adapter again.
    Returns the new best tensors and the record (T, validation ECE and reliability before and after)."""
    if run.config.train.calibrate != "temperature":
        return best_state, None
    checkpoint.load_trainable(trainable.model, best_state)
    trainable.model.eval()
    logits = predict_shared(trainable.model, data.val_set, run.config.train.eval_batch_size, data.pad_id,
                            run.device, run.dtype, run.procs)
    labels = data.splits.val.labels
    temperature = fit_class_temperatures(logits, labels) if labels.ndim > 1 else fit_temperature(logits, labels)
    layer = output_layer(trainable.model, len(data.label_names))
    with torch.no_grad():
        t = torch.tensor(temperature, dtype=layer.weight.dtype, device=layer.weight.device)
        layer.weight.div_(t.reshape(-1, 1))
        if layer.bias is not None:
            layer.bias.div_(t.reshape(-1))
    best_state = checkpoint.trainable_state(trainable.model)
    if run.procs.main:
        atomic.replace_folder(run.out / layout.ADAPTER,
                              lambda folder: save_best(run, data, trainable, folder, state.best_record))
    record = {"method": "temperature", "temperature": temperature,
              "validation": measured(labels, logits, temperature)}
    run.log(f"calibrated: {describe(temperature)}; validation {'mean per-class ' * (labels.ndim > 1)}ECE "
            f"{record['validation']['ece_before']:.4f} -> {record['validation']['ece_after']:.4f}")
    return best_state, record


def describe(temperature: float | list[float]) -> str:
    if isinstance(temperature, list):
        return f"{len(temperature)} per-class temperatures {min(temperature):.3f}-{max(temperature):.3f}"
    return f"temperature {temperature:.3f}"


def measured(labels: np.ndarray, logits: np.ndarray, temperature: float) -> dict[str, Any]:
    """ECE and reliability of uncalibrated `logits` and of logits / temperature (multi_label: per class, their mean
    as ece_before and ece_after)."""
    if labels.ndim > 1:
        before, after = sigmoid(logits), sigmoid(logits / np.asarray(temperature))
        errors = class_calibration_errors(labels, before), class_calibration_errors(labels, after)
        return {"ece_before": float(np.mean(errors[0])), "ece_after": float(np.mean(errors[1])),
                "class_ece_before": errors[0], "class_ece_after": errors[1],
                "reliability_before": binary_reliability(labels, before),
                "reliability_after": binary_reliability(labels, after)}
    before, after = softmax(logits), softmax(logits / temperature)
    return {"ece_before": expected_calibration_error(labels, before),
            "ece_after": expected_calibration_error(labels, after),
            "reliability_before": reliability(labels, before), "reliability_after": reliability(labels, after)}


def plot(run: RunContext, record: dict[str, Any]) -> None:
    """calibration.png: reliability before and after, on validation and (where there is one) test."""
    save_figure(calibration_figure(record), run.out / layout.CALIBRATION_PLOT)
