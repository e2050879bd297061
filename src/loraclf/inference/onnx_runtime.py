"""An ONNX export run through onnxruntime (CPU), without torch: its session, its tokenizer, its logits.

The tokenizer is the export's saved tokenizer.json read by transformers' tokenizers backend, which imports no
torch (AutoTokenizer does), so `loraclf predict EXPORT "a text"` starts in about a second."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from loraclf.data.encoding import Encoded, in_length_order
from loraclf.errors import UserError
from loraclf.inference.manifest import ONNX_FILE


class OnnxModel:
    """An ONNX Runtime session that maps a padded batch (numpy) to its logits."""

    def __init__(self, path: Path):
        if importlib.util.find_spec("onnxruntime") is None:
            raise UserError(f"{path.parent}: an ONNX export needs onnxruntime (pip install 'loraclf[export]')")
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = {item.name for item in self.session.get_inputs()}

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        # Segment ids are fed only to a graph that takes them (a text-pair model whose tokenizer makes them).
        feeds = {name: array for name, array in batch.items() if name in self.inputs}
        return self.session.run(["logits"], feeds)[0]


class OnnxExport:
    """An ONNX export's session and tokenizer, as the Classifier runs them: on the CPU, in the graph's precision."""

    device, dtype, precision = "cpu", None, "float32"

    def __init__(self, folder: Path, kind: str, start_up: bool = False):
        # start_up: the folder is a run's own export (`export --start-up`), which the Classifier runs for the run.
        self.kind, self.folder, self.start_up, self.model = kind, folder, start_up, OnnxModel(folder / ONNX_FILE)
        if (folder / "tokenizer.json").is_file():
            from transformers import TokenizersBackend

            # The generic class knows no model's input names: segment ids are asked for where the graph takes them.
            names = [name for name in ("input_ids", "token_type_ids", "attention_mask") if name in self.model.inputs]
            self.tokenizer = TokenizersBackend.from_pretrained(folder, model_input_names=names)
        else:
            from transformers import AutoTokenizer  # a slow (Python) tokenizer: AutoTokenizer knows its class

            self.tokenizer = AutoTokenizer.from_pretrained(folder)

    def logits(self, tokens: Encoded, batch_size: int) -> np.ndarray:
        """Logits for every item, in input order, batched by length as the torch predictor batches them."""
        return in_length_order(tokens, batch_size, self.tokenizer.pad_token_id, self.model)

    def runs_in(self, agreement: dict[str, float] | None = None) -> str:
        weights = "int8 weights (MatMulNBits)" if self.kind == "onnx-int8" else "fp32"
        source = f"; from the run's ONNX export {self.folder} (export --start-up; it matches the run's adapter)" \
            if self.start_up else ""
        return f"device: cpu (onnxruntime); precision: {weights}{source}"
