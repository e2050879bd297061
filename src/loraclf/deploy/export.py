"""Ship a run without loraclf's training stack: a merged transformers folder, an ONNX graph, int8 ONNX.

    EXPORT_DIR/
      loraclf_export.json   format, labels, max_length, text column, the run it came from
      tokenizer files       the run's tokenizer
      merged:  config.json + model.safetensors (adapter folded into the weights, head included);
               loads with AutoModelForSequenceClassification.from_pretrained, no peft needed
      onnx:    model.onnx (inputs input_ids, attention_mask, and token_type_ids for a text-pair model whose
               tokenizer makes them; output logits; batch and length dynamic),
               with --int8 dynamically quantized (int8 weights, for CPU) by onnxruntime

Reading an export back is inference/manifest.py's and inference/classifier.py's job.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from loraclf.errors import UserError
from loraclf.inference.classifier import Classifier
from loraclf.inference.manifest import MANIFEST, ONNX_FILE
from loraclf.model.heads import fold_low_rank
from loraclf.rundir import atomic, layout, readers

FORMATS = ("merged", "onnx")


class LogitsOnly(torch.nn.Module):
    """(input_ids, attention_mask[, token_type_ids]) -> logits: the graph ONNX gets, plain tensors in and out."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits


def _plain_attention(model: torch.nn.Module) -> None:
    # loraclf's own attention kernel is registered only inside loraclf: exports use PyTorch's SDPA.
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.set_attn_implementation("sdpa")


def export(run_dir: str | Path, fmt: str, output: str | Path, int8: bool = False, overwrite: bool = False,
           log=print) -> Path:
    if fmt not in FORMATS:
        raise UserError(f"export --format: expected one of {', '.join(FORMATS)}; got {fmt!r}")
    if int8 and fmt != "onnx":
        raise UserError("export --int8: applies to --format onnx (int8 weights through onnxruntime)")
    out = layout.prepare(output, overwrite)
    _, config, label_names = readers.read_run_config(run_dir)
    if fmt == "merged":
        if config.model.head == "linear":
            raise UserError(f"export {run_dir}: model.head linear has no transformers counterpart (its head has no "
                            "dense layer); use --format onnx")
        if config.lora.method in ("vera", "ia3"):
            raise UserError(f"export {run_dir}: PEFT cannot merge lora.method {config.lora.method} beside a trained "
                            "head; use --format onnx")
    if int8:
        _require("onnxruntime", "export --int8")
    if fmt == "onnx":
        _require("onnx", "export --format onnx")
        _require("onnxscript", "export --format onnx")
    # A quantized run ships its adapter merged into the full-precision base: 4-bit weights do not export.
    trained = Classifier.load(run_dir, device="cpu", precision="fp32", quantized=False)
    model = trained.model.float().eval()
    _plain_attention(model)
    manifest: dict[str, Any] = {
        "format": "onnx-int8" if int8 else fmt, "label_names": label_names,
        "max_length": config.data.max_length, "text_column": config.data.text_column,
        "label_column": config.data.label_column, "base_model": config.model.name_or_path,
        "pooling": config.model.pooling, "task": config.data.task, "schema": dataclasses.asdict(trained.description.schema),
        "thresholds": trained.description.thresholds,
        "run": str(Path(run_dir).resolve()), "parameters": _parameters(Path(run_dir)),
    }

    def fill(folder: Path) -> None:
        trained.tokenizer.save_pretrained(folder)
        if fmt == "merged":
            fold_low_rank(model)  # the low-rank head as one dense layer: the stock head class loads it
            model.save_pretrained(folder)
        else:
            _export_onnx(model, trained.tokenizer, folder / ONNX_FILE, int8, trained.description.pairs)
        atomic.write_json(folder / MANIFEST, manifest)

    layout.create(out.parent)
    atomic.replace_folder(out, fill)
    log(f"exported {run_dir} as {manifest['format']} to {out}")
    return out


def _parameters(run_dir: Path) -> dict | None:
    path = run_dir / layout.BUDGET
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _require(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise UserError(f"{what}: needs {module} (pip install 'loraclf[export]')")


def _export_onnx(model: torch.nn.Module, tokenizer, path: Path, int8: bool, pairs: bool) -> None:
    graph = LogitsOnly(model).eval()
    texts = ["an example text to trace the graph", "another"]
    sample = tokenizer(texts, texts[::-1] if pairs else None, return_tensors="pt", padding=True)
    # Segment ids are an input only where they carry something: the second text of a pair, for tokenizers
    # (BERT's) that mark it.
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if pairs and "token_type_ids" in sample else [])
    batch, length = torch.export.Dim("batch"), torch.export.Dim("sequence")
    # With --int8 the float graph (and any external weight file it comes with) is only an intermediate.
    target = path.parent / "fp32" / path.name if int8 else path
    target.parent.mkdir(exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, tuple(sample[name] for name in names), str(target),
                          input_names=names, output_names=["logits"],
                          dynamic_shapes={name: {0: batch, 1: length} for name in names},
                          dynamo=True, verbose=False)
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # Dynamic quantization: int8 weights, activations quantized per batch at run time (CPU).
        quantize_dynamic(str(target), str(path), weight_type=QuantType.QInt8)
        shutil.rmtree(target.parent)
