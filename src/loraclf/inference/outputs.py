"""Prediction files: per-class probabilities (CSV or JSON Lines), or the competition's `ID,Label`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from loraclf.errors import UserError
from loraclf.rundir.atomic import write_text


def render(probs: np.ndarray, label_names: list[str], fmt: str, submission: bool,
           label_sets: list[list[str]] | None = None) -> str:
    """The output file's text: CSV or JSONL rows of label, label_name and p_<class>, or `ID,Label`.

    multi_label (`label_sets`: each row's predicted class names): rows of `labels` (a list in JSONL, joined by
    `;` in CSV) and p_<class>, one independent probability per class.
    """
    prob_columns = [f"p_{name}" for name in label_names]
    if label_sets is not None:
        check_submission(submission, multi_label=True)
        rows = ({"labels": chosen if fmt == "jsonl" else ";".join(chosen)}
                | {column: round(float(p), 6) for column, p in zip(prob_columns, row)}
                for chosen, row in zip(label_sets, probs))
        return _rows_text(rows, ["labels", *prob_columns], fmt)
    labels = probs.argmax(axis=1)
    if submission:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["ID", "Label"])
        writer.writerows(enumerate(labels.tolist()))
        return buffer.getvalue()
    rows = (
        {"label": int(label), "label_name": label_names[label]}
        | {column: round(float(p), 6) for column, p in zip(prob_columns, row)}
        for label, row in zip(labels, probs)
    )
    return _rows_text(rows, ["label", "label_name", *prob_columns], fmt)


def _rows_text(rows, columns: list[str], fmt: str) -> str:
    if fmt == "jsonl":
        return "".join(json.dumps(row) + "\n" for row in rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def check_submission(submission: bool, multi_label: bool) -> None:
    if submission and multi_label:
        raise UserError("predict --submission: the ID,Label file has one label per text; this model is multi_label")


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


def write_predictions(path: Path, probs: np.ndarray, label_names: list[str], submission: bool,
                      label_sets: list[list[str]] | None = None) -> None:
    fmt = output_format(path, submission)
    if path.is_dir():
        raise UserError(f"output {path}: is a directory, expected a file name")
    write_text(path, render(probs, label_names, fmt, submission, label_sets))
