"""The precision a run's answers are given in: fp32, or the training dtype where it gives fp32's labels.

Training may autocast to bf16 (fp16 on CUDA) with the frozen base stored in it. Evaluate, predict and serve must
give the run's recorded answers on every machine, including the many CPUs without native bf16, so at the end the
best model's labels in the training dtype are checked against its labels in fp32, with the base's exact weights
put back, on validation and on test. The training dtype is kept for inference (where the machine has it natively)
only if every label agrees; the test split is scored in fp32, which every machine runs the same. The share of
validation labels that `predict --int8` (model/int8.py) gives as fp32 does is measured and recorded too.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from loraclf.data.encoding import Encoded, document_logits
from loraclf.metrics.probabilities import above_thresholds, sigmoid
from loraclf.model import runtime
from loraclf.model.build import build_base
from loraclf.model.heads import head_module_names
from loraclf.model.int8 import quantize_linears
from loraclf.model.runtime import dtype_name
from loraclf.rundir import layout
from loraclf.training import checkpoint
from loraclf.training.evaluation import predict_shared
from loraclf.training.state import RunContext, Trainable, TrainData


@dataclass
class Settled:
    """What `settle` found: the dtype to score test in (None: fp32), metrics.json's record, and the test split's
    fp32 logits with the seconds they took where they were already computed."""

    test_dtype: torch.dtype | None
    record: dict[str, Any]
    test_logits: np.ndarray | None = None
    test_seconds: float = 0.0


def settle(run: RunContext, data: TrainData, trainable: Trainable, best_state: dict[str, torch.Tensor],
           test_set: Encoded | None, thresholds: list[float] | None) -> Settled:
    """Check the best model's labels in the training dtype and in int8 against fp32's; see the module's doc."""
    if run.dtype is not None and not _restorable(run):  # a quantized base, or PiSSA/OLoRA's residual W
        return Settled(run.dtype, {"inference_precision": dtype_name(run.dtype), "label_agreement_with_fp32": None,
                                   "int8_label_agreement_with_fp32": None})
    checkpoint.load_trainable(trainable.model, best_state)
    trainable.model.eval()
    sets = {"validation": data.val_set} | ({"test": test_set} if test_set is not None and run.dtype else {})
    record: dict[str, Any] = {"inference_precision": "float32"}
    low = {name: _logits(run, data, trainable.model, encoded, run.dtype) for name, encoded in sets.items()} \
        if run.dtype is not None else {}
    if run.dtype is not None:
        saved = run.out / layout.BASE_MODEL
        fresh = build_base(run.config.model, data.label_names, base_folder=saved if saved.is_dir() else None)
        runtime.restore_linears(trainable.model, fresh)
        del fresh
    exact, seconds = {}, {}
    for name, encoded in sets.items():
        started = time.perf_counter()
        exact[name] = _logits(run, data, trainable.model, encoded, None)
        seconds[name] = time.perf_counter() - started
    if low:
        agreement = {name: _agree(exact[name], low[name], thresholds) for name in sets}
        same = all(value == 1.0 for value in agreement.values())
        record = {"inference_precision": dtype_name(run.dtype) if same else "float32",
                  "label_agreement_with_fp32": agreement}
        run.log(f"answers: {dtype_name(run.dtype)} gives fp32's labels on {_shares(agreement)}; evaluate, predict "
                f"and serve run in {'it where it is native, else in ' if same else ''}fp32"
                + ("; test scored in fp32" if "test" in sets else ""))
    record["int8_label_agreement_with_fp32"] = _int8_agreement(run, data, trainable, exact["validation"], thresholds)
    return Settled(None, record, exact.get("test"), seconds.get("test", 0.0))


def _int8_agreement(run: RunContext, data: TrainData, trainable: Trainable, exact: np.ndarray,
                    thresholds: list[float] | None) -> dict[str, float] | None:
    """The share of validation labels an int8 copy of the merged model (predict --int8) shares with fp32."""
    if run.device.type != "cpu" or run.config.lora.method in ("vera", "ia3"):
        return None
    merged = copy.deepcopy(trainable.model).merge_and_unload()
    quantize_linears(merged, head_module_names(merged))
    agreement = {"validation": _agree(exact, _logits(run, data, merged, data.val_set, None), thresholds)}
    del merged
    run.log(f"int8 (predict --int8) gives fp32's labels on {_shares(agreement)}")
    return agreement


def _shares(agreement: dict[str, float]) -> str:
    return ", ".join(f"{100 * value:.2f}% of {name}" for name, value in agreement.items())


def _agree(exact: np.ndarray, other: np.ndarray, thresholds: list[float] | None) -> float:
    a, b = _decisions(exact, thresholds), _decisions(other, thresholds)
    return float(np.mean(np.all(a == b, axis=-1) if a.ndim > 1 else a == b))


def _restorable(run: RunContext) -> bool:
    return not run.config.quantization.bits and run.config.lora.init == "default"


def _logits(run: RunContext, data: TrainData, model: torch.nn.Module, encoded: Encoded,
            dtype: torch.dtype | None) -> np.ndarray:
    """One row of logits per item (its windows' mean), from `model` in `dtype` (None: fp32)."""
    return document_logits(predict_shared(model, encoded, run.config.train.eval_batch_size, data.pad_id, run.device,
                                          dtype, run.procs), encoded.documents)


def _decisions(logits: np.ndarray, thresholds: list[float] | None) -> np.ndarray:
    """Each item's label (multi_label: its row of chosen classes)."""
    if thresholds is not None:
        return above_thresholds(sigmoid(logits), thresholds)
    return logits.argmax(axis=1)
