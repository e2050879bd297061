"""Prediction files: per-class probabilities (CSV, JSON Lines or Parquet), or the competition's `ID,Label`.

One `Layout` says what a row holds; a file is written whole (`write_predictions`, `render` for stdout) or a
shard at a time (`shard_bytes` / `shard_table`, joined by `join_shards`), and both give the same bytes.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loraclf.errors import UserError
from loraclf.rundir.atomic import write_file, write_text

SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


@dataclass(frozen=True)
class Layout:
    """The columns of a prediction file.

    Single-label: label, label_name, p_<class>. multi_label: labels (a list in JSONL and Parquet, joined by
    `;` in CSV), p_<class> (one independent probability per class). `id_column` first where the input had
    ids; `error` last where bad rows are answered instead of stopping the file. A submission is `ID,Label`.
    """

    label_names: tuple[str, ...]
    fmt: str
    submission: bool = False
    multi_label: bool = False
    id_column: str | None = None
    errors: bool = False

    @property
    def columns(self) -> list[str]:
        if self.submission:
            return ["ID", "Label"]
        chosen = ["labels"] if self.multi_label else ["label", "label_name"]
        return ([self.id_column] if self.id_column else []) + chosen + [f"p_{n}" for n in self.label_names] + \
            (["error"] if self.errors else [])

    def records(self, probs: np.ndarray, decided: list, start: int = 0, ids: list | None = None,
                problems: list[str | None] | None = None) -> list[dict[str, Any]]:
        """One dict per row, in `columns` order, from `Classifier.predict_proba` and `.decide`; row i is input
        row start + i. A row with a problem (its numbers are ignored) gets no prediction and its `error`."""
        problems = problems or [None] * len(probs)
        if self.submission:
            return [{"ID": start + i, "Label": None if bad else int(row.argmax())}
                    for i, (row, bad) in enumerate(zip(probs, problems))]
        names = self.label_names
        out = []
        for i, (row, picked, bad) in enumerate(zip(probs, decided, problems)):
            record = {self.id_column: ids[i]} if self.id_column else {}
            if self.multi_label:
                record["labels"] = None if bad else ";".join(picked) if self.fmt == "csv" else picked
            else:
                record |= {"label": None if bad else int(row.argmax()), "label_name": None if bad else picked}
            record |= {f"p_{n}": None if bad else round(float(p), 6) for n, p in zip(names, row)}
            if self.errors:
                record["error"] = bad
            out.append(record)
        return out

    def text(self, records: list[dict[str, Any]], header: bool) -> str:
        """CSV or JSON Lines text of `records` (CSV with its header line if `header`)."""
        if self.fmt == "jsonl":
            return "".join(json.dumps(record) + "\n" for record in records)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, lineterminator="\n")
        if header:
            writer.writeheader()
        writer.writerows(records)
        return buffer.getvalue()

    def arrow_schema(self, id_type=None):
        import pyarrow as pa

        if self.submission:
            return pa.schema([("ID", pa.int64()), ("Label", pa.int64())])
        fields = [(self.id_column, id_type or pa.string())] if self.id_column else []
        fields += [("labels", pa.list_(pa.string()))] if self.multi_label else \
            [("label", pa.int64()), ("label_name", pa.string())]
        fields += [(f"p_{n}", pa.float64()) for n in self.label_names]
        return pa.schema(fields + ([("error", pa.string())] if self.errors else []))


def layout_for(path: Path | None, label_names: list[str], submission: bool = False, multi_label: bool = False,
               id_column: str | None = None, errors: bool = False) -> Layout:
    """The layout of an output file named `path` (None: CSV on stdout); a bad name fails before any work."""
    check_submission(submission, multi_label)
    fmt = output_format(path, submission) if path is not None else "csv"
    return Layout(tuple(label_names), fmt, submission, multi_label, None if submission else id_column,
                  errors and not submission)


def check_submission(submission: bool, multi_label: bool) -> None:
    if submission and multi_label:
        raise UserError("predict --submission: the ID,Label file has one label per text; this model is multi_label")


def output_format(path: Path, submission: bool) -> str:
    suffix = path.suffix.lower()
    if submission:
        if suffix != ".csv":
            raise UserError(f"output {path}: a submission is a .csv file")
        return "csv"
    if suffix not in SUFFIXES:
        raise UserError(f"output {path}: use a .csv, .jsonl or .parquet file name")
    return SUFFIXES[suffix]


def render(layout: Layout, probs: np.ndarray, decided: list) -> str:
    """A whole CSV or JSON Lines file's text (what stdout gets)."""
    return layout.text(layout.records(probs, decided), header=True)


def write_predictions(path: Path, layout: Layout, probs: np.ndarray, decided: list) -> None:
    """A whole prediction file, written atomically."""
    if path.is_dir():
        raise UserError(f"output {path}: is a directory, expected a file name")
    write_shard(path, layout, layout.records(probs, decided), header=True)


def shard_table(layout: Layout, records: list[dict[str, Any]], id_type=None):
    import pyarrow as pa

    return pa.Table.from_pylist(records, schema=layout.arrow_schema(id_type))


def _write_parquet(path: str, tables) -> None:  # each table one row group
    import pyarrow.parquet as pq

    writer = None
    try:
        for table in tables:
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def join_shards(output: Path, layout: Layout, parts: list[Path]) -> None:
    """The output file from its shards' files (in order), written atomically: CSV and JSON Lines shards are
    copied byte for byte after the header; Parquet shards become the file's row groups, one at a time."""
    if layout.fmt == "parquet":
        import pyarrow.parquet as pq

        write_file(output, lambda tmp: _write_parquet(tmp, (pq.read_table(part) for part in parts)))
        return

    def fill(tmp: str) -> None:
        with open(tmp, "wb") as out:
            out.write(layout.text([], header=True).encode("utf-8"))
            for part in parts:
                with part.open("rb") as handle:
                    shutil.copyfileobj(handle, out, 1 << 20)

    write_file(output, fill)


def write_shard(path: Path, layout: Layout, records: list[dict[str, Any]], id_type=None,
                header: bool = False) -> None:
    """Rows as a file of their own (CSV with its header line only if `header`), written atomically."""
    if layout.fmt == "parquet":
        import pyarrow.parquet as pq

        table = shard_table(layout, records, id_type)
        write_file(path, lambda tmp: pq.write_table(table, tmp))
    else:
        write_text(path, layout.text(records, header))
