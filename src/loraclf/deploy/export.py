"""Ship a run without loraclf's training stack: a merged transformers folder, an ONNX graph, int8 ONNX.

    EXPORT_DIR/
      loraclf_export.json   format, labels, max_length, text column, the run it came from
      tokenizer files       the run's tokenizer
      merged:  config.json + model.safetensors (adapter folded into the weights, head included);
               loads with AutoModelForSequenceClassification.from_pretrained, no peft needed. A mean-pooled
               run adds modeling_loraclf.py under a model type of its own: trust_remote_code=True, or a
               refusal, never the stock class's other answers (ModernBERT pools natively: its config says
               classifier_pooling, no code is added)
      onnx:    model.onnx (inputs input_ids, attention_mask, and token_type_ids for a text-pair model whose
               tokenizer makes them; output logits; batch and length dynamic) + config.json (labels);
               with --int8 int8 weights and int8 compute with per-row scales (onnxruntime MatMulNBits),
               so no answer depends on the batch

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

from loraclf.errors import UserError
from loraclf.inference.classifier import Classifier
from loraclf.inference.manifest import MANIFEST, ONNX_FILE
from loraclf.model import pooling
from loraclf.model.heads import fold_low_rank
from loraclf.rundir import atomic, card, layout, readers

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
    """Write `run_dir`'s model to `output` as `fmt` (merged or onnx; `int8`: ONNX with int8 weights and
    per-row int8 compute, batch-independent). Returns the folder."""
    if fmt not in FORMATS:
        raise UserError(f"export --format: expected one of {', '.join(FORMATS)}; got {fmt!r}")
    if int8 and fmt != "onnx":
        raise UserError("export --int8: applies to --format onnx (int8 weights through onnxruntime)")
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
    # A quantized run ships its adapter merged into the full-precision base: 4-bit weights do not export.
    trained = Classifier.load(run_dir, device="cpu", precision="fp32", quantized=False, start_up=False)
    model = trained.model.float().eval()
    _plain_attention(model)
    manifest: dict[str, Any] = {
        "format": "onnx-int8" if int8 else fmt, "label_names": label_names,
        "max_length": config.data.max_length, "long_texts": config.data.long_texts,
        "window_stride": config.data.window_stride, "text_column": config.data.text_column,
        "label_column": config.data.label_column, "base_model": config.model.name_or_path,
        "pooling": config.model.pooling, "task": config.data.task, "schema": dataclasses.asdict(trained.description.schema),
        "thresholds": trained.description.thresholds,
        "run": str(Path(run_dir).resolve()), "parameters": _parameters(Path(run_dir)),
        "fingerprint": readers.fingerprint(Path(run_dir)),
    }

    def fill(folder: Path) -> None:
        trained.tokenizer.save_pretrained(folder)
        if fmt == "merged":
            fold_low_rank(model)  # the low-rank head as one dense layer: the stock head class loads it
            model.save_pretrained(folder)
            if config.model.pooling == "mean" and not pooling.pools_natively(model.config):
                write_remote_code(model, folder)
        else:
            _export_onnx(model, trained.tokenizer, folder / ONNX_FILE, trained.description.pairs, int8)
            model.config.save_pretrained(folder)  # labels and architecture, for ONNX loaders that read it
        atomic.write_json(folder / MANIFEST, manifest)

    layout.create(out.parent)
    with quiet():
        atomic.replace_folder(out, fill)
    log(f"exported {run_dir} as {manifest['format']} to {out}")
    return out


def export_start_up(run_dir: str | Path, log=print) -> Path:
    """The run as an ONNX export inside its own folder (RUN/onnx, replaced if there), which Classifier.load(RUN)
    runs instead of torch on the CPU in fp32 (inference/classifier.py start_up_export): `loraclf predict RUN "a
    text"` then starts without importing torch, PEFT or transformers' models."""
    _, config, _ = readers.read_run_config(run_dir)
    if config.quantization.bits:
        raise UserError(f"export --start-up: {run_dir} answers on its {config.quantization.bits}-bit base; an ONNX "
                        "export holds full-precision weights and would answer otherwise")
    out = export(run_dir, "onnx", Path(run_dir) / layout.START_UP, overwrite=True, log=log)
    if readers.read_summary(Path(run_dir)).get("inference_precision", "float32") != "float32":
        log(f"{run_dir} answered in bf16 where the CPU has it natively; with {out} it answers in fp32 on the CPU "
            "(the same labels on its validation and test sets); --precision bf16 loads its torch model in bf16")
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
    """Hide what the ONNX exporter and quantizer say about nothing wrong: torchvision ops it skips, every node
    the quantizer visits. Log records up to WARNING are off for every logger (also those that set a level and
    a handler of their own), and stdout and warnings are swallowed. Errors still raise."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _parameters(run_dir: Path) -> dict | None:
    path = run_dir / layout.BUDGET
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _require(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise UserError(f"{what}: needs {module} (pip install 'loraclf[export]')")


def _export_onnx(model: torch.nn.Module, tokenizer, path: Path, pairs: bool, int8: bool) -> None:
    """The ONNX graph, quantized to int8 with `int8`."""
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
        quantize_int8(target, path)
        shutil.rmtree(target.parent)


def quantize_int8(fp32: Path, path: Path) -> None:
    """int8 weights (per block of 32, symmetric) in onnxruntime's MatMulNBits, computing in int8 with
    activations quantized per row block (accuracy_level 4).

    Dynamic quantization scales each activation by the largest value in the whole batch, so a text's answer
    depends on what else is in its batch (and `serve` pools different users' texts); static scales fixed
    from calibration texts cost a point or more of accuracy on MiniLM. Per-row scales depend on the text
    alone: the same answer alone or in any batch, and the fp32 export's labels (docs/benchmarks.md)."""
    import onnx
    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    quantizer = nbits.MatMulNBitsQuantizer(onnx.load(str(fp32)), bits=8, block_size=32, is_symmetric=True,
                                           accuracy_level=4)
    quantizer.process()
    quantizer.model.save_model_to_file(str(path), use_external_data_format=False)
