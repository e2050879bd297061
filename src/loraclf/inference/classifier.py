"""A trained classifier, opened from a run folder or an export folder: the one way to load and predict.

    clf = Classifier.load("runs/quickstart")       # a run folder, or a folder made by `loraclf export`
    clf.labels                                      # class names in id order
    clf.predict(["Stocks rally as oil falls"])      # ['Business']
    clf.predict_proba([...])                        # (n, classes) probabilities, rows sum to 1

A multi_label run predicts a list of class names per text, and its probabilities are one sigmoid per class
(rows do not sum to 1); a text-pair run takes (first, second) pairs instead of texts.
evaluate, predict, serve, export and the benchmarks all go through it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Union

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PretrainedConfig

from loraclf.data.encoding import Encoded, encode
from loraclf.data.tables import Text
from loraclf.errors import UserError
from loraclf.inference import corpus, engines, manifest, onnx_runtime
from loraclf.inference.manifest import Description, describe, load_options, with_long_texts
from loraclf.metrics.classification import above_thresholds, sigmoid, softmax
from loraclf.model import runtime
from loraclf.model.adapter_loading import load_adapter
from loraclf.model.build import build_base, set_task
from loraclf.model.heads import head_module_names
from loraclf.model.int8 import quantize_linears
from loraclf.model.logits import document_logits, predict_logits
from loraclf.model.pooling import apply_pooling
from loraclf.model.runtime import inference_dtype, pick_device
from loraclf.rundir import layout, readers

PRECISIONS = ("auto", "bf16", "fp32")
Inputs = Union[Text, Iterable[Text]]  # one text (a string; a pair for a text-pair model) or a list of them


def _device(device: str | torch.device | None) -> torch.device:
    return pick_device("auto") if device is None else torch.device(device)


def _dtype(precision: str, recorded: str, device: torch.device) -> torch.dtype | None:
    """auto: the precision the run's answers were checked in, where `device` runs it natively, else fp32
    (model/runtime.py inference_dtype); None means fp32."""
    if precision not in PRECISIONS:
        raise UserError(f"precision: expected one of {', '.join(PRECISIONS)}; got {precision!r}")
    return inference_dtype(precision, recorded, device)


class Classifier:
    """A loaded model with its tokenizer and labels. Build it with `Classifier.load`."""

    def __init__(self, description: Description, model: Any, tokenizer: Any, device: torch.device,
                 dtype: torch.dtype | None):
        self.description, self.model, self.tokenizer = description, model, tokenizer
        self.device, self.dtype = device, dtype

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device | None = None, precision: str = "auto",
             quantized: bool = True, merge: bool = True, long_texts: str | None = None,
             window_stride: int | None = None, int8: bool = False) -> Classifier:
        """Open a run folder (base + adapter, through PEFT) or an export folder (merged, ONNX).

        device: default CUDA, else Apple's MPS, else the CPU. precision: `auto` runs in the precision
        the run's answers were checked in where this device has it natively (bf16 only where the run
        found it gives fp32's labels on its validation and test sets), else fp32; `fp32` or `bf16` force
        one; exports run in fp32. `runs_in` says which, in one line. A run trained on a quantized base loads
        on that quantized base unless `quantized` is false. `merge` folds the adapter
        into the weights (the same predictions, fewer matmuls). `long_texts` (truncate or windows) and
        `window_stride` override the run's data.long_texts and data.window_stride. `int8` runs the encoder's
        linear layers as int8 matmuls (model/int8.py; CPUs with VNNI or AMX): faster, answers the same alone and
        in any batch, and labels that agree with fp32's on the share the run recorded (`int8_agreement`).
        """
        description = with_long_texts(describe(folder), long_texts, window_stride)
        device = _device(device)
        dtype = None if int8 else _dtype(precision, description.precision, device)
        if int8:
            _check_int8(description, device, quantized, merge)
        if description.kind == "run":
            model, tokenizer = _load_run(description.path, device, dtype, quantized, merge)
        else:
            model, tokenizer = _load_export(description, device)
        if int8:
            quantize_linears(model, head_module_names(model))
        # Truncate where training did, also for tokenizers saved before the run recorded it.
        tokenizer.model_max_length = description.max_length
        classifier = cls(description, model, tokenizer, device, dtype)
        # What another process (a Ray actor) needs to load the same model the same way.
        classifier.options = load_options(description, precision, quantized, merge, int8)
        return classifier

    @property
    def int8(self) -> bool:
        return self.options.get("int8", False)

    @property
    def runs_in(self) -> str:
        """Where and in what precision this classifier runs, in one line (printed by evaluate, predict, serve)."""
        if self.description.kind in ("onnx", "onnx-int8"):
            kind = "int8 weights (MatMulNBits)" if self.description.kind == "onnx-int8" else "fp32"
            return f"device: cpu (onnxruntime); precision: {kind}"
        line = runtime.describe(self.device, self.dtype)
        if not self.int8:
            return line
        agreement = self.description.info.get("int8_agreement")
        measured = ("the same labels as fp32 on " + ", ".join(f"{100 * v:.2f}% of {k}" for k, v in agreement.items())
                    + " (measured when the run finished)") if agreement else "agreement with fp32 not measured"
        return line.replace("precision: fp32", f"precision: int8 linear layers (per-row scales), head fp32; {measured}")

    @property
    def precision(self) -> str:
        """The dtype the model runs in: float32, bfloat16 or float16 (int8: the linear layers' int8)."""
        if self.int8:
            return "int8"
        return runtime.dtype_name(self.dtype)

    @property
    def labels(self) -> list[str]:
        return list(self.description.labels)

    @property
    def multi_label(self) -> bool:
        return self.description.multi_label

    def logits(self, texts: Inputs, batch_size: int = 32) -> np.ndarray:
        """Raw logits, shape (len(texts), classes), in input order; one text alone (a string, or a pair for a
        text-pair model) gives shape (classes,). A text longer than max_length tokens is truncated, or read as
        windows whose logits are averaged (`long_texts`)."""
        items = self.check_inputs(texts)
        if not items:
            return np.empty((0, len(self.labels)), dtype=np.float32)
        logits = self.logits_of(self.tokens(items), batch_size)
        return logits[0] if self._single(texts) else logits

    def tokens(self, items: list[Text]) -> Encoded:
        """Checked texts (`check_inputs`) as the model reads them; `.cut` counts those longer than max_length."""
        about = self.description
        return encode(self.tokenizer, items, None, about.max_length, about.long_texts, about.window_stride)

    def logits_of(self, tokens: Encoded, batch_size: int = 32) -> np.ndarray:
        """Logits of `tokens` (from `tokens()`), one row per text: its windows' logits averaged."""
        logits = predict_logits(self.model, tokens, batch_size, self.tokenizer.pad_token_id, self.device,
                                self.dtype)
        return document_logits(logits, tokens.documents)

    def _single(self, texts: Inputs) -> bool:
        return isinstance(texts, str) or (self.description.pairs and isinstance(texts, tuple))

    def check_inputs(self, texts: Inputs, name: str = "texts") -> list[Text]:
        """The texts as the model takes them: a list of strings, or of (first, second) tuples for a text-pair
        model. One string (one tuple, for pairs) is one text. A UserError names `name`[i] for an item that is
        not a text, or is blank: what the CLI and serve refuse, the API refuses too."""
        if self._single(texts):
            texts = [texts]
        elif isinstance(texts, (str, bytes)) or not hasattr(texts, "__iter__"):
            raise UserError(f"{name}: expected a list of texts; got {type(texts).__name__} {texts!r:.80}")
        items = [tuple(t) if isinstance(t, (list, tuple)) else t for t in texts]
        for i, item in enumerate(items):
            if self.description.pairs != isinstance(item, tuple) or (isinstance(item, tuple) and len(item) != 2):
                wanted = "a pair of two texts [first, second]" if self.description.pairs else "a text (a string)"
                raise UserError(f"{name}[{i}]: this model classifies {wanted}; got {item!r:.80}")
            for part in item if isinstance(item, tuple) else (item,):
                if not isinstance(part, str):
                    raise UserError(f"{name}[{i}]: expected a string; got {part!r:.80} ({type(part).__name__})")
                if not part.strip():
                    raise UserError(f"{name}[{i}]: empty or blank text ({part!r})")
        return items

    def predict_proba(self, texts: Inputs, batch_size: int = 32) -> np.ndarray:
        """Class probabilities, shape (len(texts), classes); the numbers `loraclf predict` writes. multi_label:
        one independent probability per class. One text alone gives shape (classes,)."""
        return self.proba_of(self.logits(texts, batch_size))

    def proba_of(self, logits: np.ndarray) -> np.ndarray:
        """Probabilities from logits: softmax, or (multi_label) one sigmoid per class."""
        return sigmoid(logits) if self.multi_label else softmax(logits)

    def decide(self, probs: np.ndarray) -> list[str] | list[list[str]]:
        """Class names from `predict_proba`'s probabilities (rows): the most probable one per text, or
        (multi_label) each class at or above its threshold."""
        if self.multi_label:
            chosen = above_thresholds(probs, self.description.thresholds)
            return [[self.labels[c] for c in np.flatnonzero(row)] for row in chosen]
        return [self.labels[i] for i in probs.argmax(axis=1)]

    def predict_file(self, input: str | Path, output: str | Path, *, resume: bool = False, overwrite: bool = False,
                     id_column: str | None = None, text_column: str | None = None, on_bad_row: str = "error",
                     shard_rows: int = 10_000, batch_size: int = 32, submission: bool = False,
                     allow_pickle: bool = False, engine: str = "local", ray_address: str | None = None,
                     ray_actors: int | None = None, progress: bool = True) -> dict[str, Any]:
        """`loraclf predict FOLDER --input INPUT --output OUTPUT`: a file of any size (CSV, JSON Lines, Parquet)
        predicted shard by shard into a CSV, JSON Lines or Parquet file, with the input's id column, progress
        on stderr and `resume` after an interruption (see inference/corpus.py). `engine` ray predicts the
        shards on Ray Data actors (inference/ray_engine.py), the same file. Returns the summary."""
        job = corpus.FileJob(Path(input), Path(output), text_column, id_column, on_bad_row, shard_rows,
                             batch_size, submission, allow_pickle)
        planned = corpus.plan(job, self.description, self.options, resume, overwrite)
        predict = engines.local_engine(self, batch_size) if engine == "local" else \
            engines.engine(engine, batch_size, Classifier.load, self.description.path, self.options, ray_address,
                           ray_actors)
        return corpus.run(planned, predict, progress)

    def predict(self, texts: Inputs, batch_size: int = 32) -> Any:
        """The most probable class name of each text (multi_label: the list of its classes); for one text alone
        (a string), its class name (multi_label: its list); for an empty list, an empty list."""
        probs = self.predict_proba(texts, batch_size)
        decided = self.decide(probs.reshape(-1, len(self.labels)))
        return decided[0] if self._single(texts) else decided


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
    if description.kind in ("onnx", "onnx-int8"):
        raise UserError(f"--int8: {description.path} is an ONNX export; `loraclf export --int8` makes an int8 one")
    if description.kind == "run" and (not merge or description.info.get("method") in ("vera", "ia3")
                                      or (quantized and description.info.get("quantization"))):
        raise UserError(f"--int8: needs the adapter merged into full-precision weights; {description.path} is "
                        f"{description.info.get('method')} on a {description.info.get('quantization') or 'full'}-bit "
                        "base (merge off, VeRA, IA3 or a quantized base)")


def _load_export(description: Description, device: torch.device):
    """A merged export through transformers alone, an ONNX export through onnxruntime (CPU)."""
    if description.kind == "merged":
        config = stock_config(description.path)
        tokenizer = AutoTokenizer.from_pretrained(description.path, config=config)
        model = AutoModelForSequenceClassification.from_pretrained(description.path, config=config,
                                                                   use_safetensors=True)
        return apply_pooling(model, description.info.get("pooling", "cls")).to(device).eval(), tokenizer
    if description.kind in ("onnx", "onnx-int8"):
        return onnx_runtime.OnnxModel(description.path / manifest.ONNX_FILE), \
            AutoTokenizer.from_pretrained(description.path)
    raise UserError(f"export folder {description.path}: unknown format {description.kind!r}")


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
