"""Batched inference, and prediction files: per-class probabilities, or the competition's `ID,Label`."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from loraclf.data import Encoded, loader
from loraclf.errors import UserError
from loraclf.run import write_text
from loraclf.runtime import autocast


@torch.inference_mode()
def predict_logits(model, data: Encoded, batch_size: int, pad_id: int, device: str | torch.device,
                   dtype: torch.dtype | None = None) -> np.ndarray:
    """Logits for every item, in input order.

    Items are batched by length so padding stays small; `dtype` (e.g. bf16)
    runs the forward pass under autocast.
    """
    device = torch.device(device)
    order = np.argsort([len(ids) for ids in data.input_ids], kind="stable")
    by_length = Encoded([data.input_ids[i] for i in order])
    chunks = []
    for batch in loader(by_length, batch_size, pad_id):
        batch.pop("labels")
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device, dtype):
            chunks.append(model(**batch).logits.float().cpu())
    logits = torch.cat(chunks).numpy()
    out = np.empty_like(logits)
    out[order] = logits
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(logits), dim=-1).numpy()


def render(probs: np.ndarray, label_names: list[str], fmt: str, submission: bool) -> str:
    """The output file's text: CSV or JSONL rows of label, label_name and p_<class>, or `ID,Label`."""
    labels = probs.argmax(axis=1)
    if submission:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["ID", "Label"])
        writer.writerows(enumerate(labels.tolist()))
        return buffer.getvalue()
    prob_columns = [f"p_{name}" for name in label_names]
    rows = (
        {"label": int(label), "label_name": label_names[label]}
        | {column: round(float(p), 6) for column, p in zip(prob_columns, row)}
        for label, row in zip(labels, probs)
    )
    if fmt == "jsonl":
        return "".join(json.dumps(row) + "\n" for row in rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["label", "label_name", *prob_columns], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def output_format(path: Path, submission: bool) -> str:
    suffix = path.suffix.lower()
    if submission:
        if suffix != ".csv":
            raise UserError(f"output {path}: a submission is a .csv file")
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    raise UserError(f"output {path}: use a .csv or .jsonl file name")


def write_predictions(path: Path, probs: np.ndarray, label_names: list[str], submission: bool) -> None:
    fmt = output_format(path, submission)
    if path.is_dir():
        raise UserError(f"output {path}: is a directory, expected a file name")
    write_text(path, render(probs, label_names, fmt, submission))


@dataclass
class Classifier:
    """What evaluate, predict and serve need of a model, whichever form it ships in."""

    path: Path
    kind: str  # run, merged, onnx or onnx-int8
    label_names: list[str]
    max_length: int
    text_column: str
    label_column: str
    precision: str = "fp32"  # the run's train.precision; exports run in fp32
    info: dict[str, Any] = field(default_factory=dict)
    model: Any = None
    tokenizer: Any = None


def open_classifier(folder: str | Path) -> Classifier:
    """A run folder or an export folder, described without loading its weights (fast checks first)."""
    from loraclf import export, run

    path = Path(folder)
    if (path / export.MANIFEST).is_file():
        m = export.read_manifest(path)
        return Classifier(path, m["format"], m["label_names"], m["max_length"], m["text_column"],
                          m.get("label_column", "label"), info=m)
    _, config, label_names = run.read_run_config(path)
    return Classifier(path, "run", label_names, config.data.max_length, config.data.text_column,
                      config.data.label_column, config.train.precision,
                      info={"base_model": config.model.name_or_path, "method": config.lora.method,
                            "quantization": config.quantization.bits or None,
                            "parameters": json.loads((path / run.BUDGET).read_text(encoding="utf-8"))
                            if (path / run.BUDGET).is_file() else None})


def load_weights(classifier: Classifier, device: torch.device, dtype: torch.dtype | None,
                 quantized: bool = True) -> Classifier:
    """Load `classifier`'s model and tokenizer: a run through PEFT, a merged export through transformers
    alone, an ONNX export through onnxruntime (CPU)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from loraclf import export, run

    if classifier.kind == "run":
        trained = run.load(classifier.path, device, dtype=dtype, quantized=quantized)
        classifier.model, classifier.tokenizer = trained.model, trained.tokenizer
        return classifier
    classifier.tokenizer = AutoTokenizer.from_pretrained(classifier.path)
    if classifier.kind == "merged":
        model = AutoModelForSequenceClassification.from_pretrained(classifier.path, use_safetensors=True)
        classifier.model = model.to(device).eval()
    elif classifier.kind in ("onnx", "onnx-int8"):
        classifier.model = export.OnnxModel(classifier.path / export.ONNX_FILE)
    else:
        raise UserError(f"export folder {classifier.path}: unknown format {classifier.kind!r}")
    return classifier
