"""What a run or export folder holds, read without its weights: labels, schema, precision, thresholds."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loraclf.config.schema import check_long_texts
from loraclf.data.tables import Schema
from loraclf.errors import UserError
from loraclf.model.hub import require_model
from loraclf.rundir import layout, readers

MANIFEST = "loraclf_export.json"  # an export folder's description of itself
ONNX_FILE = "model.onnx"


@dataclass(frozen=True)
class Description:
    """What a run or export folder holds, read without its weights."""

    path: Path
    kind: str  # run, merged, onnx or onnx-int8
    labels: list[str]
    max_length: int
    schema: Schema  # the columns and the task its data had (files to evaluate or predict are read with it)
    precision: str  # what the run's answers were checked in (float32, bfloat16, float16); exports: float32
    info: dict[str, Any] = field(default_factory=dict)  # base model, method, quantization, parameter counts
    thresholds: list[float] | None = None  # multi_label: each class's decision threshold (None: 0.5 each)
    long_texts: str = "truncate"  # data.long_texts: what is done with texts longer than max_length
    window_stride: int | None = None  # data.window_stride: tokens consecutive windows share (None: max_length/4)

    @property
    def multi_label(self) -> bool:
        return self.schema.task == "multi_label"

    @property
    def pairs(self) -> bool:
        return self.schema.pair is not None


def describe(folder: str | Path) -> Description:
    """A run folder or an export folder, described without loading its weights (fast checks first)."""
    path = Path(folder)
    if (path / MANIFEST).is_file():
        m = read_manifest(path)
        schema = Schema(**{k: tuple(v) if isinstance(v, list) else v for k, v in m["schema"].items()}) \
            if "schema" in m else Schema(m["text_column"], m.get("label_column", "label"))
        return Description(path, m["format"], m["label_names"], m["max_length"], schema, "float32", m,
                           m.get("thresholds"), m.get("long_texts", "truncate"), m.get("window_stride"))
    _, config, labels = readers.read_run_config(path)
    budget = path / layout.BUDGET
    summary = readers.read_summary(path)
    # inference_precision: what the run's answers were checked in; runs from before it answer in fp32.
    return Description(path, "run", labels, config.data.max_length, Schema.of(config.data),
                       str(summary.get("inference_precision", "float32")),
                       {"base_model": config.model.name_or_path, "method": config.lora.method,
                        "quantization": config.quantization.bits or None,
                        "parameters": json.loads(budget.read_text(encoding="utf-8")) if budget.is_file() else None,
                        "int8_agreement": summary.get("int8_label_agreement_with_fp32")},
                       readers.read_thresholds(path), config.data.long_texts, config.data.window_stride)


def require_base(about: Description) -> None:
    """Fail now, in one line, where a run's base model cannot load (offline and not in the hub's cache,
    model/hub.py), before torch and transformers take seconds to import. An export folder holds its weights, and
    so does a run folder with its own base_model/."""
    if about.kind == "run" and not (about.path / layout.BASE_MODEL).is_dir():
        require_model(about.info["base_model"])


def read_manifest(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"export folder {folder}: unreadable {MANIFEST} ({exc})") from None


def with_long_texts(about: Description, long_texts: str | None, window_stride: int | None) -> Description:
    """`about` with data.long_texts / data.window_stride overridden where given (checked as the config is)."""
    long_texts = about.long_texts if long_texts is None else long_texts
    window_stride = window_stride if window_stride is not None else about.window_stride
    check_long_texts(long_texts, window_stride, about.max_length, about.schema.pair)
    return dataclasses.replace(about, long_texts=long_texts, window_stride=window_stride)


def load_options(about: Description, precision: str = "auto", quantized: bool = True,
                 merge: bool = True, int8: bool = False) -> dict[str, Any]:
    """Classifier.load's keywords that load the model `about` describes this way again, in another process (a
    Ray actor) or a resumed job, which must run it as the first did."""
    return {"precision": precision, "quantized": quantized, "merge": merge, "long_texts": about.long_texts,
            "window_stride": about.window_stride, "int8": int8}
