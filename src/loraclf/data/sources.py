"""Reading data sources into a Table: CSV, JSON Lines / JSON, Parquet, pickle (only when allowed), a hub dataset.

CSV is the Hugging Face layout with a header, or the original AG News layout (no header; class 1-4, title,
description). Every bad row fails with the file, row, column and value in one line.
"""

from __future__ import annotations

import csv
import io
import json
import math
import pickle
from pathlib import Path
from typing import Any, Callable

from loraclf.config.schema import AG_NEWS_LABELS
from loraclf.data.tables import Schema, Table
from loraclf.errors import UserError

FORMATS = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".pkl": "pickle",
    ".pickle": "pickle",
}


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise UserError(f"{path}: line {line}: NUL byte at offset {nul}; a binary file, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.start + 4]
        raise UserError(f"{path}: line {line}: not UTF-8 text (bytes {bad!r} at offset {exc.start})") from None


def missing_text(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


# Longer fields are almost always a quote that never closes, swallowing the rest of the file.
MAX_FIELD_CHARS = 2**20


def _csv_rows(path: Path) -> tuple[list[list[str]], list[int]]:
    text = _read_text(path)
    rows, lines = [], []
    reader = csv.reader(io.StringIO(text, newline=""))
    previous_limit = csv.field_size_limit(MAX_FIELD_CHARS)
    try:
        for row in reader:
            if row:
                rows.append(row)
                lines.append(reader.line_num)
    except csv.Error as exc:
        if "field larger than field limit" in str(exc):
            raise UserError(f"{path}: line {reader.line_num}: a field of more than {MAX_FIELD_CHARS:,} characters "
                            "(a quote that never closes?)") from None
        raise UserError(f"{path}: line {reader.line_num}: not a readable CSV ({exc})") from None
    finally:
        csv.field_size_limit(previous_limit)
    return rows, lines


def is_int(value: str) -> bool:
    return value.strip().lstrip("-").isdigit()


def _read_csv(path: Path, schema: Schema) -> Table:
    rows, lines = _csv_rows(path)
    if not rows:
        raise UserError(f"{path}: empty file, no rows")
    # A header never starts with a number; the AG News layout (no header) always does.
    if len(rows[0]) == 3 and is_int(rows[0][0]) and schema.pair is None and schema.task == "single_label":
        return _read_agnews_csv(path, rows, lines)
    header = [h.strip() for h in rows[0]]
    if schema.text in header:
        width = len(header)
        for i, row in enumerate(rows[1:]):
            if len(row) != width:
                raise UserError(
                    f"{path}: row {i + 1} (line {lines[i + 1]}): expected {width} fields like the header, got {len(row)}"
                )
        def column(name: str) -> list[str]:
            at = header.index(name)
            return [row[at] for row in rows[1:]]

        return _columns_table(str(path), header, column, schema, lines=lines[1:])
    raise UserError(
        f"{path}: no column {schema.text!r} in the header {header} and not the AG News layout "
        "(no header; class, title, description); set --data.text_column"
    )


def _read_agnews_csv(path: Path, rows: list[list[str]], lines: list[int]) -> Table:
    texts, labels = [], []
    for i, row in enumerate(rows):
        if len(row) != 3:
            raise UserError(
                f"{path}: row {i + 1} (line {lines[i]}): expected 3 fields (class, title, description), got {len(row)}"
            )
        klass, title, description = row
        if not is_int(klass):
            raise UserError(f"{path}: row {i + 1} (line {lines[i]}), column class: {klass!r} is not a class number")
        # Joined as the hub's ag_news builds `text`, backslashes kept: the same text the study trained on.
        texts.append(f"{title} {description}")
        labels.append(int(klass) - 1)
    return Table(str(path), texts, labels, label_names=list(AG_NEWS_LABELS), lines=lines)


def _records_table(source: str, records: list[Any], schema: Schema, lines=None) -> Table:
    """Records (JSON objects) checked row by row, then read as columns."""
    first = records[0] if records and isinstance(records[0], dict) else {}
    labels = list(schema.label_columns) if schema.label_columns else [schema.label]
    # Labels are read where the first row has them; then every row must.
    required = [schema.text] + ([schema.pair] if schema.pair else []) + [c for c in labels if c in first]
    for i, record in enumerate(records):
        where = f"{source}: row {i + 1}" + (f" (line {lines[i]})" if lines else "")
        if not isinstance(record, dict):
            raise UserError(f"{where}: expected an object with {schema.text!r}, got {type(record).__name__}")
        for column in required:
            if column not in record:
                hint = "; set --data.text_pair_column" if column == schema.pair else ""
                raise UserError(f"{where}: missing column {column!r} (has {sorted(record)}){hint}")
    return _columns_table(source, required, lambda name: [record[name] for record in records], schema,
                          lines=lines)


def _read_jsonl(path: Path, schema: Schema) -> Table:
    records, lines = [], []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: line {number}: not valid JSON ({exc.msg})") from None
        lines.append(number)
    return _records_table(str(path), records, schema, lines)


def _read_json(path: Path, schema: Schema) -> Table:
    text = _read_text(path)
    if not text.lstrip().startswith("["):
        return _read_jsonl(path, schema)
    try:
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
    return _records_table(str(path), records, schema)


def _hf_label_names(features: Any, label_column: str) -> list[str] | None:
    feature = features.get(label_column) if hasattr(features, "get") else None
    names = getattr(feature, "names", None)
    if names is None:
        # A multi-label column: a Sequence (or list) of ClassLabel.
        inner = getattr(feature, "feature", None) or (feature[0] if isinstance(feature, list) and feature else None)
        names = getattr(inner, "names", None)
    if names is None and isinstance(feature, dict):
        names = feature.get("names")
    return list(names) if names else None


def _read_parquet(path: Path, schema: Schema) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    return _columns_table(str(path), table.column_names, lambda name: table.column(name).to_pylist(), schema,
                          _parquet_label_names(table.schema.metadata or {}, schema.label))


def _parquet_label_names(metadata: dict, label_column: str) -> list[str] | None:
    # Hugging Face datasets store ClassLabel names in the schema metadata.
    raw = metadata.get(b"huggingface")
    if not raw:
        return None
    try:
        features = json.loads(raw).get("info", {}).get("features", {})
    except (ValueError, AttributeError):
        return None
    return _hf_label_names(features, label_column)


def _columns_table(source: str, columns: list[str], get: Callable[[str], list[Any]], schema: Schema,
                   label_names: list[str] | None = None, lines: list[int] | None = None) -> Table:
    """The schema's columns out of a source read column by column (`get(name)` lists a column)."""
    for column, key in ((schema.text, "text_column"), (schema.pair, "text_pair_column")):
        if column is not None and column not in columns:
            raise UserError(f"{source}: missing column {column!r} (has {list(columns)}); set --data.{key}")
    texts = get(schema.text)
    if schema.pair is not None:
        texts = list(zip(texts, get(schema.pair)))
    labels = None
    if schema.label_columns:
        present = [c for c in schema.label_columns if c in columns]
        if present and len(present) < len(schema.label_columns):
            missing = next(c for c in schema.label_columns if c not in columns)
            raise UserError(f"{source}: missing label column {missing!r} of data.label_columns (has {list(columns)})")
        if present:
            labels = list(zip(*(get(c) for c in schema.label_columns)))
        label_names = list(schema.label_columns)
    elif schema.label in columns:
        labels = get(schema.label)
    return Table(source, texts, labels, label_names=label_names, lines=lines)


def _read_pickle(path: Path, schema: Schema, allow_pickle: bool) -> Table:
    if not allow_pickle:
        raise UserError(
            f"{path}: refusing to unpickle: loading a pickle runs code from the file; "
            "pass --allow-pickle if you trust where it came from"
        )
    try:
        with path.open("rb") as handle:
            obj = pickle.load(handle)  # noqa: S301 - the user opted in with --allow-pickle
    except Exception as exc:  # any failure inside unpickling is the file's fault
        raise UserError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from None
    return _object_table(str(path), obj, schema)


def _object_table(source: str, obj: Any, schema: Schema) -> Table:
    """A datasets.Dataset, pandas DataFrame, dict of columns, or list of texts/records."""
    if hasattr(obj, "column_names") and hasattr(obj, "features"):  # datasets.Dataset
        return _columns_table(source, obj.column_names, lambda name: list(obj[name]), schema,
                              _hf_label_names(obj.features, schema.label))
    if hasattr(obj, "columns") and hasattr(obj, "to_dict"):  # pandas.DataFrame
        return _columns_table(source, list(obj.columns), lambda name: obj[name].tolist(), schema)
    if isinstance(obj, dict):
        return _columns_table(source, list(obj), lambda name: list(obj[name]), schema)
    if isinstance(obj, list) and all(isinstance(x, str) for x in obj) and schema.pair is None:
        return Table(source, list(obj), None)
    if isinstance(obj, list):
        return _records_table(source, obj, schema)
    raise UserError(
        f"{source}: unsupported object {type(obj).__name__}; expected a datasets.Dataset, a DataFrame, "
        "a dict of columns or a list"
    )


def read_file(path: str | Path, schema: Schema = Schema(), allow_pickle: bool = False) -> Table:
    """Read a local file into a Table, checking that it exists and that its texts are present."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file")
    kind = FORMATS.get(path.suffix.lower())
    if kind == "pickle":
        table = _read_pickle(path, schema, allow_pickle)
    elif kind is not None:
        table = {"csv": _read_csv, "jsonl": _read_jsonl, "json": _read_json, "parquet": _read_parquet}[kind](path,
                                                                                                            schema)
    else:
        raise UserError(f"{path}: unknown format {path.suffix!r}; use one of {', '.join(sorted(FORMATS))}")
    check_texts(table, schema)
    return table


def check_texts(table: Table, schema: Schema = Schema()) -> None:
    if not table.texts:
        raise UserError(f"{table.source}: no rows")
    for i, text in enumerate(table.texts):
        for column, part in zip((schema.text, schema.pair), text if isinstance(text, tuple) else (text,)):
            if missing_text(part):
                raise UserError(f"{table.where(i)}, column {column!r}: empty or missing text ({part!r})")
            if not isinstance(part, str):
                raise UserError(f"{table.where(i)}, column {column!r}: expected text, got {part!r}")


def load_hub(dataset: str, schema: Schema) -> dict[str, Table]:
    """All splits of a hub dataset (needs the network, or the local `datasets` cache)."""
    import datasets

    try:
        splits = datasets.load_dataset(dataset)
    except Exception as exc:  # connection, auth, missing-dataset errors all mean: cannot get it
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise UserError(
            f"cannot load dataset {dataset!r} from the hub ({reason}); offline, use local files: "
            "--data.train_file FILE [--data.test_file FILE]"
        ) from None
    tables = {}
    for name, split in splits.items():
        table = _object_table(f"{dataset}[{name}]", split, schema)
        check_texts(table, schema)
        tables[name] = table
    return tables
