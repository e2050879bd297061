"""Ship a run without loraclf's training stack: a merged transformers folder, an ONNX graph, int8 ONNX.

    EXPORT_DIR/
      loraclf_export.json   format, labels, max_length, text column, the run it came from
      tokenizer files       the run's tokenizer
      merged:  config.json + model.safetensors (adapter folded into the weights, head included);
               loads with AutoModelForSequenceClassification.from_pretrained, no peft needed. A mean-pooled
               run adds modeling_loraclf.py under a model type of its own: trust_remote_code=True, or a
               refusal, never the stock class's other answers
      onnx:    model.onnx (inputs input_ids, attention_mask, and token_type_ids for a text-pair model whose
               tokenizer makes them; output logits; batch and length dynamic) + config.json (labels);
               with --int8 statically quantized by onnxruntime (int8 matrix products whose scales come
               from calibration texts, so no answer depends on the batch)

Reading an export back is inference/manifest.py's and inference/classifier.py's job.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import json
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from loraclf.data.sources import read_file
from loraclf.data.splits import load_splits
from loraclf.data.tables import Schema
from loraclf.errors import UserError
from loraclf.inference.classifier import Classifier
from loraclf.inference.manifest import MANIFEST, ONNX_FILE
from loraclf.model.build import load_tokenizer
from loraclf.model.heads import fold_low_rank
from loraclf.rundir import atomic, card, layout, readers

FORMATS = ("merged", "onnx")
CALIBRATION_TEXTS = 256  # texts that fix the int8 activation scales


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
           log=print, calibration: str | Path | None = None) -> Path:
    """Write `run_dir`'s model to `output` as `fmt` (merged or onnx; int8: static int8 ONNX, calibrated on
    `calibration`, a text file, or by default on the run's own training texts). Returns the folder."""
    if fmt not in FORMATS:
        raise UserError(f"export --format: expected one of {', '.join(FORMATS)}; got {fmt!r}")
    if int8 and fmt != "onnx":
        raise UserError("export --int8: applies to --format onnx (int8 weights through onnxruntime)")
    if calibration is not None and not int8:
        raise UserError("export --calibration: applies to --int8")
    for module in ("onnx", "onnxscript") if fmt == "onnx" else ():
        _require(module, "export --format onnx")
    if int8:
        _require("onnxruntime", "export --int8")
    out = layout.prepare(output, overwrite, flag="--output")
    _, config, label_names = readers.read_run_config(run_dir)
    if fmt == "merged":
        if config.model.head == "linear":
            raise UserError(f"export {run_dir}: model.head linear has no transformers counterpart (its head has no "
                            "dense layer); use --format onnx")
        if config.lora.method in ("vera", "ia3"):
            raise UserError(f"export {run_dir}: PEFT cannot merge lora.method {config.lora.method} beside a trained "
                            "head; use --format onnx")
    texts = calibration_texts(config, calibration) if int8 else None
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
            if config.model.pooling == "mean":
                write_remote_code(model, folder)
        else:
            _export_onnx(model, trained.tokenizer, folder / ONNX_FILE, trained.description.pairs, texts)
            model.config.save_pretrained(folder)  # labels and architecture, for ONNX loaders that read it
        atomic.write_json(folder / MANIFEST, manifest)

    layout.create(out.parent)
    with quiet():
        atomic.replace_folder(out, fill)
    log(f"exported {run_dir} as {manifest['format']} to {out}")
    return out


REMOTE_CODE = "modeling_loraclf.py"
MEAN_POOLING_MODEL = "LoraclfMeanPoolingForSequenceClassification"
MEAN_POOLING_CONFIG = "LoraclfMeanPoolingConfig"


def write_remote_code(model: torch.nn.Module, folder: Path) -> None:
    """Make a mean-pooled merged export a model type of its own, with its modeling code beside it.

    The stock class reads the first token, so loading this folder as a plain BERT/RoBERTa/MPNet model would
    give other answers without a word. Under its own model type, `from_pretrained` without
    `trust_remote_code=True` refuses to load it, and with it runs the stock class plus the very pooling hook
    loraclf trains with. The weights keep their stock names.
    """
    stock_config, stock_model = type(model.config).__name__, type(model).__name__
    model_type = f"loraclf-mean-{model.config.model_type}"
    code = [f'"""{stock_model} reading the mean over the non-padding tokens (written by loraclf export)."""',
            "", f"from transformers import {stock_config}, {stock_model}", "", *card.pooling_source(), "", "",
            f"class {MEAN_POOLING_CONFIG}({stock_config}):", f'    model_type = "{model_type}"', "", "",
            f"class {MEAN_POOLING_MODEL}({stock_model}):", f"    config_class = {MEAN_POOLING_CONFIG}", "",
            "    def __init__(self, config):", "        super().__init__(config)",
            "        encoder = getattr(self, self.base_model_prefix)",
            "        encoder.register_forward_hook(_mean_into_first, with_kwargs=True)", ""]
    atomic.write_text(folder / REMOTE_CODE, "\n".join(code))
    path = folder / "config.json"
    settings = json.loads(path.read_text(encoding="utf-8"))
    module = Path(REMOTE_CODE).stem
    settings |= {"model_type": model_type, "architectures": [MEAN_POOLING_MODEL], "loraclf_stock_model_type":
                 model.config.model_type, "auto_map": {"AutoConfig": f"{module}.{MEAN_POOLING_CONFIG}",
                                                       "AutoModelForSequenceClassification":
                                                           f"{module}.{MEAN_POOLING_MODEL}"}}
    atomic.write_json(path, settings)


@contextlib.contextmanager
def quiet():
    """Hide what the ONNX exporter and quantizer print about nothing wrong: torchvision ops it skips, advice to
    pre-process, calibration progress. Errors still raise."""
    loggers = [logging.getLogger(), logging.getLogger("torch.onnx")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _parameters(run_dir: Path) -> dict | None:
    path = run_dir / layout.BUDGET
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _require(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise UserError(f"{what}: needs {module} (pip install 'loraclf[export]')")


def _export_onnx(model: torch.nn.Module, tokenizer, path: Path, pairs: bool, calibration: list | None) -> None:
    """The ONNX graph; with `calibration` texts, quantized to int8 from them."""
    int8 = calibration is not None
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
    torch.onnx.export(graph, tuple(sample[name] for name in names), str(target),
                      input_names=names, output_names=["logits"],
                      dynamic_shapes={name: {0: batch, 1: length} for name in names},
                      dynamo=True, verbose=False)
    if int8:
        quantize_int8(target, path, tokenizer, calibration, names, pairs)
        shutil.rmtree(target.parent)


def calibration_texts(config, file: str | Path | None) -> list:
    """CALIBRATION_TEXTS texts, evenly spread over `file` or (by default) over the run's training split."""
    if file is not None:
        texts = read_file(file, Schema.of(config.data)).texts
    else:
        try:
            texts = load_splits(config.data, load_tokenizer(config.model), log=lambda _: None).train.texts
        except UserError as exc:
            raise UserError(f"export --int8 calibrates on the run's training texts, which cannot be read here "
                            f"({exc}); pass --calibration FILE") from None
    step = max(1, len(texts) // CALIBRATION_TEXTS)
    return list(texts[::step][:CALIBRATION_TEXTS])


def quantize_int8(fp32: Path, path: Path, tokenizer, texts: list, names: list[str], pairs: bool) -> None:
    """Static int8 quantization of the matrix products, calibrated on `texts`.

    Dynamic quantization scales each activation by the largest value in the whole batch, so a text's answer
    depends on what else is in its batch (and `serve` pools different users' texts). Static scales are fixed
    here, from the calibration texts: the same text gets the same answer alone or in any batch. Only MatMul
    and Gemm are quantized; layer norms, softmax and GELU stay in float, where int8 would cost accuracy."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    # One shape for all batches: the percentile calibrator stacks what every batch showed it.
    encoded = tokenizer(*(list(zip(*texts)) if pairs else (texts,)), truncation=True, padding=True,
                        return_tensors="np")

    class Batches(CalibrationDataReader):
        def __init__(self):
            size = min(16, len(texts))  # whole batches only, for the same reason
            self.batches = iter([{name: encoded[name][i:i + size] for name in names}
                                 for i in range(0, len(texts) - size + 1, size)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(fp32), str(path), Batches(), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["MatMul", "Gemm"], per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.Percentile,
                    extra_options={"CalibPercentile": 99.99, "ActivationSymmetric": True})
