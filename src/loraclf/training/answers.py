"""The precision a run's answers are given in: fp32, or the training dtype where it gives fp32's labels.

Training may autocast to bf16 (fp16 on CUDA) with the frozen base stored in it. Evaluate, predict and serve must
give the run's recorded answers on every machine, including the many CPUs without native bf16, so at the end the
best model's labels in the training dtype are checked against its labels in fp32, with the base's exact weights
put back, on validation and on test. The training dtype is kept for inference (where the machine has it natively)
only if every label agrees; the test split is scored in fp32, which every machine runs the same.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from loraclf.data.encoding import Encoded
from loraclf.metrics.classification import above_thresholds, sigmoid
from loraclf.model import runtime
from loraclf.model.build import build_base
from loraclf.model.logits import document_logits
from loraclf.rundir import layout
from loraclf.training import checkpoint
from loraclf.training.evaluation import predict_shared
from loraclf.training.state import RunContext, Trainable, TrainData


def dtype_name(dtype: torch.dtype | None) -> str:
    return str(dtype).removeprefix("torch.") if dtype is not None else "float32"


def settle(run: RunContext, data: TrainData, trainable: Trainable, best_state: dict[str, torch.Tensor],
           test_set: Encoded | None, thresholds: list[float] | None) -> tuple[torch.dtype | None, dict[str, Any]]:
    """The dtype to score the test split in (None: fp32) and the record for metrics.json: inference_precision,
    and each set's label agreement between the training dtype and fp32."""
    if run.dtype is None:
        return None, {"inference_precision": "float32"}
    if not _restorable(run):  # a quantized base, or PiSSA/OLoRA's residual W: no exact fp32 base to put back
        return run.dtype, {"inference_precision": dtype_name(run.dtype), "label_agreement_with_fp32": None}
    checkpoint.load_trainable(trainable.model, best_state)
    trainable.model.eval()
    sets = {"validation": data.val_set} | ({"test": test_set} if test_set is not None else {})
    low = {name: _decisions(run, data, trainable, encoded, run.dtype, thresholds) for name, encoded in sets.items()}
    saved = run.out / layout.BASE_MODEL
    fresh = build_base(run.config.model, data.label_names, base_folder=saved if saved.is_dir() else None)
    runtime.restore_linears(trainable.model, fresh)
    del fresh
    agreement = {}
    for name, encoded in sets.items():
        exact = _decisions(run, data, trainable, encoded, None, thresholds)
        agreement[name] = float(np.mean(np.all(exact == low[name], axis=-1) if exact.ndim > 1 else exact == low[name]))
    same = all(value == 1.0 for value in agreement.values())
    chosen = dtype_name(run.dtype) if same else "float32"
    run.log(f"answers: {dtype_name(run.dtype)} gives fp32's labels on "
            + ", ".join(f"{100 * value:.2f}% of {name}" for name, value in agreement.items())
            + f"; evaluate, predict and serve run in {chosen} (fp32 where {chosen} is not native); test scored in fp32")
    return None, {"inference_precision": chosen, "label_agreement_with_fp32": agreement}


def _restorable(run: RunContext) -> bool:
    return not run.config.quantization.bits and run.config.lora.init == "default"


def _decisions(run: RunContext, data: TrainData, trainable: Trainable, encoded: Encoded, dtype: torch.dtype | None,
               thresholds: list[float] | None) -> np.ndarray:
    """Each item's label (multi_label: its row of chosen classes) from the model in `dtype` (None: fp32)."""
    logits = document_logits(predict_shared(trainable.model, encoded, run.config.train.eval_batch_size, data.pad_id,
                                            run.device, dtype, run.procs), encoded.documents)
    if thresholds is not None:
        return above_thresholds(sigmoid(logits), thresholds)
    return logits.argmax(axis=1)

