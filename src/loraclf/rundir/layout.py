"""The run folder's layout: every name in it, checking it before a run writes, and clearing an old run.

    RUN_DIR/
      INCOMPLETE        there while the run trains: a failed or killed run keeps it (the same command reuses the
                        folder, resuming from its checkpoint where the config is the same); gone once it finished
      config.yaml       resolved config
      labels.json       class names in id order
      versions.json     Python, torch, transformers, peft, loraclf versions, the git commit and the command
      budget.json       trainable-parameter breakdown
      adapter/          best adapter + head (PEFT format, safetensors), tokenizer, model card
      tokenizer/        the tokenizer used in training
      base_model/       only for `model.init: random`: the random base weights
      adapter_init/     only for PiSSA/OLoRA: the adapter before training
      thresholds.json   only for multi_label: each class's decision threshold
      metrics.jsonl     one JSON object per log / evaluation event
      metrics.json      summary: best validation, test metrics, timings
      test_metrics.json, test_confusion_matrix.png
      checkpoints/      resumable training state (training/checkpoint.py)
      adapt/round-N/    with adapt: each round's pseudo-labels and weights (training/adapt.py)
      eval_<data>.json, eval_<data>.png   written by `loraclf evaluate`
      report.html       curves, confusion matrix, mistakes, parameters, timings (rundir/report.py)
      tensorboard/, mlruns/   with train.log_to

`clear` removes exactly these (an --overwrite run starts from none of the old run's files).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from loraclf.errors import UserError

INCOMPLETE = "INCOMPLETE"
CONFIG = "config.yaml"
LABELS = "labels.json"
BUDGET = "budget.json"
VERSIONS = "versions.json"
ADAPTER = "adapter"
ADAPTER_CARD = "README.md"  # inside ADAPTER: the model card
TOKENIZER = "tokenizer"
BASE_MODEL = "base_model"
INITIAL_ADAPTER = "adapter_init"  # PiSSA/OLoRA: the adapter before training, for the saved adapter's conversion
THRESHOLDS = "thresholds.json"  # multi_label: each class's decision threshold
METRICS_LOG = "metrics.jsonl"
SUMMARY = "metrics.json"
TEST_METRICS = "test_metrics.json"
TEST_CONFUSION = "test_confusion_matrix.png"
CALIBRATION_PLOT = "calibration.png"  # train.calibrate: reliability diagrams before and after
CHECKPOINTS = "checkpoints"
ADAPT = "adapt"
REPORT = "report.html"
TENSORBOARD = "tensorboard"
MLRUNS = "mlruns"

# Inside ADAPT: one folder per round.
ROUND_PREFIX = "round-"
ROUND_RECORD = "round.json"
ROUND_STATE = "trainable.safetensors"
PSEUDO_LABELS = "pseudo_labels.csv"
# Optional: the run as an ONNX export (`loraclf export RUN --start-up`), which the Classifier runs instead of
# torch where it gives the run's own answers, so a one-shot `loraclf predict RUN "a text"` starts in about a second.
START_UP = "onnx"

# What `loraclf evaluate` writes into a run folder, per --data file.
EVAL_PREFIX = "eval_"

RUN_FILES = (INCOMPLETE, CONFIG, LABELS, BUDGET, VERSIONS, ADAPTER, TOKENIZER, BASE_MODEL, INITIAL_ADAPTER, THRESHOLDS, METRICS_LOG,
             SUMMARY, TEST_METRICS, TEST_CONFUSION, CALIBRATION_PLOT, CHECKPOINTS, ADAPT, REPORT, TENSORBOARD, MLRUNS,
             START_UP)


def round_folder(run_dir: Path, number: int) -> Path:
    """Adaptation round `number` (from 1)."""
    return run_dir / ADAPT / f"{ROUND_PREFIX}{number}"


def round_folders(run_dir: Path) -> list[Path]:
    """The run's adaptation round folders, in round order."""
    found = (run_dir / ADAPT).glob(f"{ROUND_PREFIX}*")
    return sorted((p for p in found if p.name.removeprefix(ROUND_PREFIX).isdigit()),
                  key=lambda p: int(p.name.removeprefix(ROUND_PREFIX)))


def eval_file(run_dir: Path, data: str | Path) -> Path:
    """Where `loraclf evaluate` writes the metrics of the labelled file `data` (JSON; its confusion-matrix PNG
    beside it, with the suffix .png)."""
    return run_dir / f"{EVAL_PREFIX}{Path(data).stem}.json"


def run_files(run_dir: Path) -> list[Path]:
    """Everything of a run's own in `run_dir`: RUN_FILES and the evaluations written into it."""
    evaluations = sorted(p for p in run_dir.glob(f"{EVAL_PREFIX}*") if p.suffix in (".json", ".png"))
    return [run_dir / name for name in RUN_FILES if (run_dir / name).exists()] + evaluations


def prepare(output_dir: str | Path, overwrite: bool, flag: str = "--output-dir") -> Path:
    """Check that the run folder can be written, creating nothing yet.

    Training checks its data and budget before it creates the folder, so a
    failed start leaves no empty run folder behind. `flag`: the option that names the folder, for the message.
    """
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise UserError(f"output {path}: exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite and not incomplete(path):
        raise UserError(f"output {path}: folder exists and is not empty; pass --overwrite or choose another {flag}")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"output {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"output {path}: cannot write there ({existing} is read-only)")
    return path


def incomplete(path: Path) -> bool:
    """A run folder whose training started and did not finish (it failed, or was killed)."""
    return (path / INCOMPLETE).is_file()


def create(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"output {path}: cannot write there ({exc.strerror or exc})") from None


def clear(path: Path) -> None:
    """Remove an earlier run's files (only ours: `run_files`) before an overwriting run writes its own.

    Whatever an old run left would otherwise be read as the new run's: a stale base_model/ loaded in place of
    a pretrained base, adapt/round-N/ taken as a finished round, eval_*.json shown beside the new model.
    """
    for target in run_files(path):
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()


def check_folder(path: Path, required: tuple[str, ...], what: str) -> None:
    if not path.is_dir():
        raise UserError(f"run folder {path}: not found" if not path.exists() else f"run folder {path}: not a folder")
    for name in required:
        if not (path / name).exists():
            raise UserError(f"run folder {path}: no {name}; is it {what}?")
