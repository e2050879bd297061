"""The run folder: its layout, atomic writes into it, and loading a trained model back from it.

    RUN_DIR/
      config.yaml       resolved config
      labels.json       class names in id order
      versions.json     Python, torch, transformers, peft, loraclf versions and the git commit
      budget.json       trainable-parameter breakdown
      adapter/          best LoRA adapter + head (PEFT format, safetensors)
      tokenizer/        the tokenizer used in training
      base_model/       only for `model.init: random`: the random base weights
      metrics.jsonl     one JSON object per log / evaluation event
      metrics.json      summary: best validation, test metrics, timings
      checkpoints/      resumable training state (see checkpoint.py)
      report.html       curves, confusion matrix, mistakes, parameters, timings (see report.py)

A run folder loads back for inference through `loraclf.Classifier.load`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from loraclf.config import Config, load_config
from loraclf.errors import UserError

CONFIG = "config.yaml"
LABELS = "labels.json"
BUDGET = "budget.json"
ADAPTER = "adapter"
TOKENIZER = "tokenizer"
BASE_MODEL = "base_model"
VERSIONS = "versions.json"
METRICS_LOG = "metrics.jsonl"
SUMMARY = "metrics.json"
CHECKPOINTS = "checkpoints"
INITIAL_ADAPTER = "adapter_init"
THRESHOLDS = "thresholds.json"  # multi_label: each class's decision threshold  # PiSSA/OLoRA: the adapter before training, for the saved adapter's conversion


def prepare(output_dir: str | Path, overwrite: bool) -> Path:
    """Check that the run folder can be written, creating nothing yet.

    Training checks its data and budget before it creates the folder, so a
    failed start leaves no empty run folder behind.
    """
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise UserError(f"output {path}: exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise UserError(f"output {path}: folder exists and is not empty; pass --overwrite or choose another --output-dir")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"output {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"output {path}: cannot write there ({existing} is read-only)")
    return path


def create(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"output {path}: cannot write there ({exc.strerror or exc})") from None


RUN_FILES = (CONFIG, LABELS, VERSIONS, BUDGET, ADAPTER, TOKENIZER, BASE_MODEL, METRICS_LOG, SUMMARY, CHECKPOINTS, INITIAL_ADAPTER,
             THRESHOLDS,
             "test_metrics.json", "test_confusion_matrix.png", "report.html", "tensorboard", "mlruns")


def clear(path: Path) -> None:
    """Remove an earlier run's files (only ours) before an overwriting run writes its own.

    A stale base_model/ would otherwise be loaded in place of a pretrained base.
    """
    for name in RUN_FILES:
        target = path / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


_UMASK = os.umask(0)
os.umask(_UMASK)


def write_text(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so a reader never sees half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise UserError(f"output {path}: cannot write there ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide run files from other users
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise UserError(f"output {path}: cannot write ({exc.strerror or exc})") from None
        raise


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def replace_folder(target: Path, fill) -> None:
    """Fill a temporary sibling folder with `fill(folder)`, then swap it in for `target`."""
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        fill(tmp)
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def check_folder(path: Path, required: tuple[str, ...], what: str) -> None:
    if not path.is_dir():
        raise UserError(f"run folder {path}: not found" if not path.exists() else f"run folder {path}: not a folder")
    for name in required:
        if not (path / name).exists():
            raise UserError(f"run folder {path}: no {name}; is it {what}?")


def read_config(run_dir: str | Path) -> Config:
    """The resolved config a run folder was trained with (finished or not)."""
    path = Path(run_dir)
    check_folder(path, (CONFIG,), "a loraclf run folder")
    try:
        tree = yaml.safe_load((path / CONFIG).read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"run folder {path}: unreadable {CONFIG} ({' '.join(str(exc).split())})") from None
    return load_config(tree=tree)


def read_thresholds(run_dir: Path) -> list[float] | None:
    """A multi_label run's decision thresholds (None: 0.5 for every class)."""
    path = run_dir / THRESHOLDS
    if not path.is_file():
        return None
    try:
        return [float(t) for t in json.loads(path.read_text(encoding="utf-8"))["thresholds"]]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise UserError(f"run folder {run_dir}: unreadable {THRESHOLDS} ({exc})") from None


def read_run_config(run_dir: str | Path) -> tuple[Path, Config, list[str]]:
    path = Path(run_dir)
    check_folder(path, (CONFIG, LABELS, ADAPTER), "a finished loraclf training run")
    config = read_config(path)
    try:
        label_names = json.loads((path / LABELS).read_text(encoding="utf-8"))["label_names"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise UserError(f"run folder {path}: unreadable {LABELS} ({exc})") from None
    return path, config, label_names
