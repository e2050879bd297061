"""An ONNX export run through onnxruntime (CPU), called like a transformers model."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch

from loraclf.errors import UserError


class OnnxModel:
    """An ONNX Runtime session called like a transformers model: model(input_ids=, attention_mask=).logits."""

    def __init__(self, path: Path):
        if importlib.util.find_spec("onnxruntime") is None:
            raise UserError(f"{path.parent}: an ONNX export needs onnxruntime (pip install 'loraclf[export]')")
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = {item.name for item in self.session.get_inputs()}

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 token_type_ids: torch.Tensor | None = None) -> Any:
        from types import SimpleNamespace

        feeds = {"input_ids": input_ids.cpu().numpy(), "attention_mask": attention_mask.cpu().numpy()}
        if token_type_ids is not None and "token_type_ids" in self.inputs:
            feeds["token_type_ids"] = token_type_ids.cpu().numpy()
        return SimpleNamespace(logits=torch.from_numpy(self.session.run(["logits"], feeds)[0]))

    def eval(self) -> "OnnxModel":
        return self
