"""A run (base + adapter, through PEFT) or a merged export, loaded into torch: the Classifier's torch side.

inference/classifier.py imports this module only for such folders, so an ONNX export predicts without torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PretrainedConfig

from loraclf.data.encoding import Encoded
from loraclf.errors import UserError
from loraclf.inference.manifest import Description
from loraclf.model import runtime
from loraclf.model.adapter_loading import load_adapter
from loraclf.model.build import build_base, set_task
from loraclf.model.heads import head_module_names
from loraclf.model.int8 import quantize_linears
from loraclf.model.logits import predict_logits
from loraclf.model.pooling import apply_pooling
from loraclf.model.runtime import inference_dtype, pick_device
from loraclf.rundir import layout, readers


class TorchModel:
    """A loaded torch model with its tokenizer, device and dtype (None: fp32)."""

    def __init__(self, model: Any, tokenizer: Any, device: torch.device, dtype: torch.dtype | None, int8: bool):
        self.model, self.tokenizer, self.device, self.dtype, self.int8 = model, tokenizer, device, dtype, int8

    def logits(self, tokens: Encoded, batch_size: int) -> np.ndarray:
        return predict_logits(self.model, tokens, batch_size, self.tokenizer.pad_token_id, self.device, self.dtype)

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else runtime.dtype_name(self.dtype)

    def runs_in(self, agreement: dict[str, float] | None) -> str:
        line = runtime.describe(self.device, self.dtype)
        if not self.int8:
            return line
        measured = ("the same labels as fp32 on " + ", ".join(f"{100 * v:.2f}% of {k}" for k, v in agreement.items())
                    + " (measured when the run finished)") if agreement else "agreement with fp32 not measured"
        return line.replace("precision: fp32", f"precision: int8 linear layers (per-row scales), head fp32; {measured}")


def load(description: Description, device: str | torch.device | None, precision: str, quantized: bool,
         merge: bool, int8: bool) -> TorchModel:
    """`description`'s run or merged export on `device` (default CUDA, else MPS, else the CPU), in the dtype
    `precision` resolves to there (model/runtime.py inference_dtype), int8 linear layers with `int8`."""
    device = pick_device("auto") if device is None else torch.device(device)
    dtype = None if int8 else inference_dtype(precision, description.precision, device)
    if int8:
        _check_int8(description, device, quantized, merge)
    if description.kind == "run":
        model, tokenizer = _load_run(description.path, device, dtype, quantized, merge)
    elif description.kind == "merged":
        config = stock_config(description.path)
        tokenizer = AutoTokenizer.from_pretrained(description.path, config=config)
        model = AutoModelForSequenceClassification.from_pretrained(description.path, config=config,
                                                                   use_safetensors=True)
        model = apply_pooling(model, description.info.get("pooling", "cls")).to(device).eval()
    else:
        raise UserError(f"export folder {description.path}: unknown format {description.kind!r}")
    if int8:
        quantize_linears(model, head_module_names(model))
    return TorchModel(model, tokenizer, device, dtype, int8)


def _load_run(path: Path, device: torch.device, dtype: torch.dtype | None, quantized: bool, merge: bool):
    """Base + adapter of a run folder. Merged, the adapter is folded into the base weights (W + (alpha/r)BA)
    and the linear weights cast once to `dtype`, instead of autocast casting them for every batch. A run trained on a
    quantized base loads on it unmerged: merging into 4-bit weights would round the update away."""
    _, config, labels = readers.read_run_config(path)
    tokenizer = AutoTokenizer.from_pretrained(path / layout.TOKENIZER)
    base_folder = path / layout.BASE_MODEL if (path / layout.BASE_MODEL).is_dir() else None
    quantization = config.quantization if quantized and config.quantization.bits else None
    base = build_base(config.model, labels, base_folder=base_folder, quantization=quantization, device=device,
                      autocast=dtype)
    model = load_adapter(set_task(base, config.data.task), path / layout.ADAPTER)
    if quantization is not None:
        return model.eval(), tokenizer
    # PEFT 0.21 cannot unload VeRA or IA3 beside a trained head (modules_to_save): they run unmerged.
    if merge and config.lora.method not in ("vera", "ia3"):
        model = model.merge_and_unload()
        if dtype is not None:
            # The linear weights stored in `dtype`, the rest fp32 under autocast: what training validated in.
            runtime.frozen_linears_to(model.requires_grad_(False), dtype)
    return model.to(device).eval(), tokenizer


def _check_int8(description: Description, device: torch.device, quantized: bool, merge: bool) -> None:
    if device.type != "cpu":
        raise UserError(f"--int8: runs on the CPU (int8 matmuls through oneDNN), not on {device}")
    if description.kind == "run" and (not merge or description.info.get("method") in ("vera", "ia3")
                                      or (quantized and description.info.get("quantization"))):
        raise UserError(f"--int8: needs the adapter merged into full-precision weights; {description.path} is "
                        f"{description.info.get('method')} on a {description.info.get('quantization') or 'full'}-bit "
                        "base (merge off, VeRA, IA3 or a quantized base)")


def stock_config(folder: Path) -> PretrainedConfig:
    """A merged export's config in its stock transformers class.

    A mean-pooled export declares a model type of its own (deploy/export.py) so that plain transformers code
    needs `trust_remote_code=True`; loraclf knows that code (the stock class plus apply_pooling) and loads
    the weights into the stock class instead of running Python from the folder."""
    settings = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    stock_type = settings.pop("loraclf_stock_model_type", None)
    if stock_type is None:
        return AutoConfig.from_pretrained(folder)
    for key in ("model_type", "auto_map", "architectures"):
        settings.pop(key, None)
    return AutoConfig.for_model(stock_type, **settings)
