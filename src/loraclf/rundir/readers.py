"""Reading a run folder back: its resolved config, labels and decision thresholds."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from loraclf.config.loading import load_config
from loraclf.config.schema import Config
from loraclf.errors import UserError
from loraclf.rundir.layout import (
    ADAPTER,
    ADAPTER_CARD,
    CONFIG,
    LABELS,
    ROUND_RECORD,
    SUMMARY,
    THRESHOLDS,
    TOKENIZER,
    check_folder,
    round_folders,
)


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


def read_summary(run_dir: Path) -> dict[str, Any]:
    """A finished run's metrics.json; {} for a run without one (unfinished, or unreadable)."""
    try:
        summary = json.loads((run_dir / SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def read_run_config(run_dir: str | Path) -> tuple[Path, Config, list[str]]:
    path = Path(run_dir)
    check_folder(path, (CONFIG, LABELS, ADAPTER), "a finished loraclf training run")
    config = read_config(path)
    try:
        label_names = json.loads((path / LABELS).read_text(encoding="utf-8"))["label_names"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise UserError(f"run folder {path}: unreadable {LABELS} ({exc})") from None
    return path, config, label_names


def read_round(folder: Path) -> dict[str, Any] | None:
    """The record of the adaptation round in `folder`, or None where the round did not complete."""
    path = folder / ROUND_RECORD
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def read_rounds(run_dir: Path) -> list[dict[str, Any]]:
    """The records of a run's complete adaptation rounds, in order."""
    return [record for record in map(read_round, round_folders(run_dir)) if record is not None]


def fingerprint(run_dir: Path) -> str:
    """sha256 of what a run's answers come from beside its base model: its config, adapter (head included; not
    the model card) and tokenizer files. An export records it; a start-up export whose fingerprint differs from
    its run's is stale and is not used."""
    digest = hashlib.sha256()
    files = [run_dir / CONFIG] + sorted(p for folder in (ADAPTER, TOKENIZER) for p in (run_dir / folder).rglob("*")
                                        if p.is_file() and p != run_dir / ADAPTER / ADAPTER_CARD)
    for path in files:
        digest.update(path.relative_to(run_dir).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()

