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

import sys
from pathlib import Path
from typing import Any, Iterable, Union

import numpy as np

from loraclf.data.encoding import Encoded, document_logits, encode
from loraclf.data.tables import Text
from loraclf.errors import UserError
from loraclf.inference import corpus, engines, manifest
from loraclf.inference.manifest import Description, describe, load_options, with_long_texts
from loraclf.inference.onnx_runtime import OnnxExport
from loraclf.metrics.probabilities import above_thresholds, sigmoid, softmax
from loraclf.rundir import layout, readers

PRECISIONS = ("auto", "bf16", "fp32")
ONNX_KINDS = ("onnx", "onnx-int8")
Inputs = Union[Text, Iterable[Text]]  # one text (a string; a pair for a text-pair model) or a list of them


class Classifier:
    """A loaded model with its tokenizer and labels. Build it with `Classifier.load`."""

    def __init__(self, description: Description, backend: Any):
        # backend: inference/torch_model.TorchModel, or inference/onnx_runtime.OnnxExport (no torch).
        self.description, self.backend = description, backend

    @classmethod
    def load(cls, folder: str | Path, device: str | Any | None = None, precision: str = "auto",
             quantized: bool = True, merge: bool = True, long_texts: str | None = None,
             window_stride: int | None = None, int8: bool = False, start_up: bool = True) -> Classifier:
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
        An ONNX export runs through onnxruntime on the CPU, without importing torch, and so does a run with a
        start-up export (`loraclf export RUN --start-up`) where it answers as the run does (`start_up_export`);
        `start_up` false always loads the run's torch model.
        """
        if precision not in PRECISIONS:
            raise UserError(f"precision: expected one of {', '.join(PRECISIONS)}; got {precision!r}")
        description = with_long_texts(describe(folder), long_texts, window_stride)
        own_export = start_up_export(description, device, precision, quantized, merge, int8) if start_up else None
        if description.kind in ONNX_KINDS:
            if int8:
                raise UserError(f"--int8: {description.path} is an ONNX export; `loraclf export --int8` makes an "
                                "int8 one")
            backend = OnnxExport(description.path, description.kind)
        elif own_export is not None:
            backend = OnnxExport(own_export, "onnx", start_up=True)
        else:
            from loraclf.inference import torch_model  # here, not at the top: ONNX exports run without torch

            backend = torch_model.load(description, device, precision, quantized, merge, int8)
        # Truncate where training did, also for tokenizers saved before the run recorded it.
        backend.tokenizer.model_max_length = description.max_length
        classifier = cls(description, backend)
        # What another process (a Ray actor) needs to load the same model the same way.
        classifier.options = load_options(description, precision, quantized, merge, int8)
        return classifier

    @property
    def model(self) -> Any:
        """The torch model (an onnxruntime session wrapper for an ONNX export)."""
        return self.backend.model

    @property
    def tokenizer(self) -> Any:
        return self.backend.tokenizer

    @property
    def device(self) -> Any:
        return self.backend.device

    @property
    def dtype(self) -> Any:
        """The torch dtype the model runs in; None means fp32."""
        return self.backend.dtype

    @property
    def int8(self) -> bool:
        return self.options.get("int8", False)

    @property
    def runs_in(self) -> str:
        """Where and in what precision this classifier runs, in one line (printed by evaluate, predict, serve)."""
        return self.backend.runs_in(self.description.info.get("int8_agreement"))

    @property
    def precision(self) -> str:
        """The dtype the model runs in: float32, bfloat16 or float16 (int8: the linear layers' int8)."""
        return self.backend.precision

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
        return document_logits(self.backend.logits(tokens, batch_size), tokens.documents)

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


def start_up_export(about: Description, device: Any, precision: str, quantized: bool, merge: bool,
                    int8: bool) -> Path | None:
    """A run's own ONNX export (`loraclf export RUN --start-up`), where it answers as the run's torch model
    does in fp32: `precision` auto or fp32, on the CPU (`device` cpu, or none given on a machine with no CUDA
    or Apple GPU that torch would pick), merged, not int8, not on a quantized base; and the export's
    fingerprint is the run's (same config, adapter and tokenizer). Its logits are the torch model's fp32 logits
    within 1e-5 (tests/test_export.py), and it starts without importing torch. A run that answers in bf16 where
    the CPU has it natively answers in fp32 once it has a start-up export (its user asked for it; bf16 gave
    fp32's labels on its validation and test sets, or the run would answer in fp32 anyway); `precision` bf16
    loads the torch model in bf16."""
    folder = about.path / layout.START_UP
    if about.kind != "run" or not (folder / manifest.MANIFEST).is_file() or int8 or not merge:
        return None
    if precision not in ("auto", "fp32"):
        return None
    if (quantized and about.info.get("quantization")) or not _on_cpu(device):
        return None
    made = manifest.read_manifest(folder)
    return folder if made.get("fingerprint") == readers.fingerprint(about.path) else None


def _on_cpu(device: Any) -> bool:
    """Whether `device` (a name, a torch.device or None: torch's pick) is the CPU, asked without importing torch:
    with none given, torch picks CUDA or Apple's MPS where the machine has one."""
    if device is not None:
        return str(device) == "cpu"
    return sys.platform != "darwin" and not any(Path("/dev").glob("nvidia[0-9]*"))

