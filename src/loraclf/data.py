"""Load, validate, filter, split, tokenize and batch labelled text.

Sources: a hub dataset (through `datasets`), or a local file: CSV (Hugging Face
layout with a header, or the original AG News layout: no header; class 1-4,
title, description), JSON Lines / JSON, Parquet, and pickle (only when
allowed: unpickling runs code from the file). Every bad row fails with the
file, row, column and value in one line.
"""

from __future__ import annotations

import csv
import io
import json
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from loraclf.config import AG_NEWS_LABELS, DataConfig
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


@dataclass(frozen=True)
class Schema:
    """How the rows of a data source map to texts and labels (the data section's column and task keys)."""

    text: str = "text"
    label: str = "label"
    pair: str | None = None  # the second text's column: texts are (text, pair) tuples
    task: str = "single_label"
    label_columns: tuple[str, ...] | None = None  # multi_label: one 0/1 column per class
    separator: str = ";"  # multi_label: what joins labels in one string field
    allow_empty: bool = False  # multi_label: rows without labels are allowed

    @classmethod
    def of(cls, cfg: DataConfig) -> "Schema":
        return cls(cfg.text_column, cfg.label_column, cfg.text_pair_column, cfg.task,
                   tuple(cfg.label_columns) if cfg.label_columns else None, cfg.label_separator,
                   cfg.allow_empty_labels)

    @property
    def label_where(self) -> str:
        """The label's column(s), for messages."""
        return ", ".join(self.label_columns) if self.label_columns else self.label


# A text is a string, or a (first, second) pair of strings where the data has data.text_pair_column.
Text = str | tuple[str, str]


@dataclass
class Table:
    """Texts with raw labels (as found in the source) and where each row came from."""

    source: str
    texts: list[Text]
    raw_labels: list[Any] | None
    label_names: list[str] | None = None
    # File line of each row where the format has lines (CSV, JSONL), for error messages.
    lines: list[int] | None = None

    def where(self, i: int) -> str:
        line = f" (line {self.lines[i]})" if self.lines else ""
        return f"{self.source}: row {i + 1}{line}"


def _pick(values: list | None, index) -> list | None:
    """The items of `values` at `index` (None stays None): what subsets carry along."""
    return None if values is None else [values[i] for i in index]


@dataclass
class Labelled:
    texts: list[Text]
    labels: np.ndarray  # (n,) class ids, or (n, classes) 0/1 for multi_label
    # Token ids (and the pair encoding's segment ids, where the tokenizer makes them), once tokenized; subsets
    # carry them along.
    input_ids: list[list[int]] | None = None
    token_type_ids: list[list[int]] | None = None

    def subset(self, index: np.ndarray) -> "Labelled":
        return Labelled(_pick(self.texts, index), self.labels[index], _pick(self.input_ids, index),
                        _pick(self.token_type_ids, index))

    def encoded(self) -> "Encoded":
        return Encoded(self.input_ids, self.labels, self.token_type_ids)

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class FilterReport:
    low: float
    high: float
    percentiles: list[float]
    kept: int
    dropped: int

    def describe(self) -> str:
        return (
            f"length filter: kept {self.kept:,} training items with {self.low:g} <= tokens <= {self.high:g} "
            f"(percentiles {self.percentiles[0]:g}-{self.percentiles[1]:g}); dropped {self.dropped:,}"
        )


@dataclass
class Splits:
    label_names: list[str]
    train: Labelled
    val: Labelled
    test: Labelled | None
    filter_report: FilterReport | None
    sources: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------- reading files


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


def _missing_text(value: Any) -> bool:
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


def _is_int(value: str) -> bool:
    return value.strip().lstrip("-").isdigit()


def _read_csv(path: Path, schema: Schema) -> Table:
    rows, lines = _csv_rows(path)
    if not rows:
        raise UserError(f"{path}: empty file, no rows")
    # A header never starts with a number; the AG News layout (no header) always does.
    if len(rows[0]) == 3 and _is_int(rows[0][0]) and schema.pair is None and schema.task == "single_label":
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
        if not _is_int(klass):
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
            if _missing_text(part):
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


# ---------------------------------------------------------------- labels


def label_names_of(data: DataConfig) -> list[str]:
    """Class names without tokenizing: from the config, or read off the training data."""
    if data.label_names:
        return list(data.label_names)
    if data.label_columns:
        return list(data.label_columns)
    schema = Schema.of(data)
    if data.train_file:
        table = read_file(data.train_file, schema, data.allow_pickle)
    else:
        table = load_hub(data.dataset, schema)["train"]
    return infer_label_names(table, None, schema)


def infer_label_names(table: Table, configured: list[str] | None, schema: Schema = Schema()) -> list[str]:
    """Class names in id order: from the config, the source, or the sorted distinct labels."""
    if configured:
        return list(configured)
    if table.label_names:
        return list(table.label_names)
    if table.raw_labels is None:
        raise UserError(f"{table.source}: no label column {schema.label!r}")
    values = set()
    for i, raw in enumerate(table.raw_labels):
        found = _row_labels(table, i, schema)
        if None in found:
            raise UserError(f"{table.where(i)}, column {schema.label!r}: missing label ({raw!r})")
        values.update(found)
    if not values:
        raise UserError(f"{table.source}, column {schema.label!r}: no row has a label")
    if all(isinstance(v, int) for v in values):
        if min(values) < 0:
            bad = next(i for i in range(len(table.raw_labels)) if min(values) in _row_labels(table, i, schema))
            raise UserError(f"{table.where(bad)}, column {schema.label!r}: negative label {min(values)}")
        return [str(i) for i in range(max(values) + 1)]
    return sorted(str(v) for v in values)


def _label_value(raw: Any) -> int | str | None:
    """An integer id where the label is one (7, 7.0, "7"), else the stripped name; None if missing."""
    if isinstance(raw, (bool, np.bool_)) or _missing_text(raw):
        return None
    if isinstance(raw, (int, np.integer)):
        return int(raw)
    if isinstance(raw, (float, np.floating)):
        return int(raw) if float(raw).is_integer() else None
    value = str(raw).strip()
    return int(value) if _is_int(value) else value


def _zero_one(value: Any) -> int | None:
    """1 or 0 for a 0/1 cell (1, 0.0, "1", true), else None."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, str):
        try:
            value = float(value.strip())  # CSV cells: "1", "0.0"
        except ValueError:
            return None
    number = _label_value(value)
    return number if number in (0, 1) and not isinstance(number, str) else None


def _row_labels(table: Table, i: int, schema: Schema) -> list[int | str | None]:
    """Row i's labels as ids or names (None: one is missing). single_label: its one label. multi_label: from a list,
    a joined string, or the row's 0/1 columns (then class ids)."""
    raw = table.raw_labels[i]
    if schema.task != "multi_label":
        return [_label_value(raw)]
    if schema.label_columns:
        ids = []
        for column, value in zip(schema.label_columns, raw):
            bit = _zero_one(value)
            if bit is None:
                raise UserError(f"{table.where(i)}, column {column!r}: {value!r} is not 0 or 1")
            if bit:
                ids.append(schema.label_columns.index(column))
        return ids
    if isinstance(raw, str):
        return [_label_value(part) for part in raw.split(schema.separator) if part.strip()]
    if isinstance(raw, (list, tuple, np.ndarray)):
        return [_label_value(value) for value in raw]
    return [] if raw is None or _missing_text(raw) else [_label_value(raw)]


def encode_labels(table: Table, label_names: list[str], schema: Schema = Schema()) -> np.ndarray:
    """Map raw labels (ids or names) to ids in [0, len(label_names)), failing on the first bad one; multi_label:
    a (rows, classes) 0/1 matrix."""
    if table.raw_labels is None:
        raise UserError(f"{table.source}: no label column {schema.label_where!r}")
    by_name = {name: i for i, name in enumerate(label_names)}
    multi = schema.task == "multi_label"
    ids = np.zeros((len(table.raw_labels), len(label_names)), np.float32) if multi else \
        np.empty(len(table.raw_labels), dtype=np.int64)
    for i, raw in enumerate(table.raw_labels):
        values = _row_labels(table, i, schema)
        if multi and not values and not schema.allow_empty:
            raise UserError(f"{table.where(i)}, column {schema.label_where!r}: no label ({raw!r}); set "
                            "data.allow_empty_labels true if a text may belong to no class")
        for value in values:
            label = by_name.get(value) if isinstance(value, str) else value
            if label is None or not 0 <= label < len(label_names):
                shown = value if multi else raw
                raise UserError(
                    f"{table.where(i)}, column {schema.label!r}: label {shown!r} is not a class id "
                    f"0-{len(label_names) - 1} or one of {label_names}"
                )
            if multi:
                ids[i, label] = 1
            else:
                ids[i] = label
    return ids


# ---------------------------------------------------------------- splits


def _stratify(labels: np.ndarray) -> np.ndarray | None:
    if labels.ndim > 1:
        return None  # label sets: a random split (stratifying every combination would leave most unsplittable)
    counts = np.bincount(labels)
    return labels if counts[counts > 0].min() >= 2 else None


def split(data: Labelled, fraction_or_count: float, seed: int, what: str) -> tuple[Labelled, Labelled]:
    """Seeded, stratified (when every class has two items) split into (rest, part)."""
    size = int(fraction_or_count) if fraction_or_count >= 1 else fraction_or_count
    n = len(data)
    wanted = size if isinstance(size, int) else math.ceil(size * n)
    if wanted < 1 or wanted >= n:
        raise UserError(f"cannot split {what}: {n} items is too few to set aside {fraction_or_count}")
    index = np.arange(n)
    stratify = _stratify(data.labels)
    if stratify is not None and wanted < len(np.unique(data.labels)):
        stratify = None
    rest, part = train_test_split(index, test_size=size, random_state=seed, stratify=stratify)
    return data.subset(np.sort(rest)), data.subset(np.sort(part))


def tokenize(tokenizer, texts: list[Text], max_length: int) -> tuple[list[list[int]], list[list[int]] | None]:
    """Token ids, and segment ids for pairs where the tokenizer makes them; once, truncated, padded per batch.

    Pairs are the tokenizer's pair encoding, cut longest_first: the longer text loses tokens first.
    """
    if not texts or not isinstance(texts[0], tuple):
        return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"], None
    first, second = (list(part) for part in zip(*texts))
    encoded = tokenizer(first, second, truncation="longest_first", max_length=max_length)
    return encoded["input_ids"], encoded.get("token_type_ids")


def length_filter(data: Labelled, lengths: np.ndarray, percentiles: list[float]) -> tuple[Labelled, FilterReport]:
    low, high = np.percentile(lengths, percentiles)
    keep = np.flatnonzero((lengths >= low) & (lengths <= high))
    report = FilterReport(float(low), float(high), list(percentiles), len(keep), len(data) - len(keep))
    return data.subset(keep), report


def load_splits(cfg: DataConfig, tokenizer, log: Callable[[str], None] = print) -> Splits:
    """Train / validation (tokenized) / optional test (text), labels encoded, length filter applied."""
    if cfg.test_size and cfg.test_file:
        raise UserError("config: data.test_size and data.test_file are both set; choose one test set")
    test_table, schema = None, Schema.of(cfg)
    if cfg.train_file:
        train_table = read_file(cfg.train_file, schema, cfg.allow_pickle)
    else:
        hub = load_hub(cfg.dataset, schema)
        if "train" not in hub:
            raise UserError(f"dataset {cfg.dataset!r} has no train split (has {sorted(hub)})")
        train_table = hub["train"]
        if cfg.test_split is not None:
            if cfg.test_split not in hub and cfg.test_split != "test":  # the default may be absent: no test set
                raise UserError(f"config data.test_split: dataset {cfg.dataset!r} has no {cfg.test_split!r} split "
                                f"(has {sorted(hub)}); set data.test_split null for none")
            test_table = hub.get(cfg.test_split)
    if cfg.test_file:
        test_table = read_file(cfg.test_file, schema, cfg.allow_pickle)

    label_names = infer_label_names(train_table, cfg.label_names, schema)
    train = Labelled(train_table.texts, encode_labels(train_table, label_names, schema))
    test = None
    sources = {"train": train_table.source}
    if cfg.test_size:
        train, test = split(train, cfg.test_size, cfg.split_seed, f"test part of {train_table.source}")
        sources["test"] = f"{train_table.source} (held out {len(test)})"
    elif test_table is not None:
        test = Labelled(test_table.texts, encode_labels(test_table, label_names, schema))
        sources["test"] = test_table.source

    train.input_ids, train.token_type_ids = tokenize(tokenizer, train.texts, cfg.max_length)
    report = None
    if cfg.length_filter is not None:  # a pair's length is both texts' tokens together
        lengths = np.array([len(ids) for ids in train.input_ids])
        train, report = length_filter(train, lengths, cfg.length_filter)
        log(report.describe())
    train, val = split(train, cfg.val_fraction, cfg.split_seed, f"validation part of {train_table.source}")
    return Splits(label_names, train, val, test, report, sources)


# ---------------------------------------------------------------- batches


class Encoded(torch.utils.data.Dataset):
    """Token ids computed once; items are (ids, label, segment ids or None).

    A label is a class id (-1 without labels), or a 0/1 row of the classes (multi_label).
    """

    def __init__(self, input_ids: list[list[int]], labels: np.ndarray | None = None,
                 token_type_ids: list[list[int]] | None = None):
        self.input_ids = input_ids
        self.labels = labels
        self.token_type_ids = token_type_ids

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> tuple[list[int], int | np.ndarray, list[int] | None]:
        if self.labels is None:
            label = -1
        else:
            label = self.labels[i] if self.labels.ndim > 1 else int(self.labels[i])
        return self.input_ids[i], label, None if self.token_type_ids is None else self.token_type_ids[i]

    def subset(self, index) -> "Encoded":
        return Encoded(_pick(self.input_ids, index), None if self.labels is None else self.labels[index],
                       _pick(self.token_type_ids, index))


def encode(tokenizer, texts: list[Text], labels: np.ndarray | None, max_length: int) -> Encoded:
    input_ids, token_type_ids = tokenize(tokenizer, texts, max_length)
    return Encoded(input_ids, labels, token_type_ids)


def collate(pad_id: int, multiple: int = 1) -> Callable[[list[tuple[list[int], int]]], dict[str, torch.Tensor]]:
    """Pad each batch to its own longest item, rounded up to a multiple of `multiple`."""

    def pad(batch):
        ids = [torch.tensor(item[0], dtype=torch.long) for item in batch]
        lengths = torch.tensor([len(x) for x in ids])
        input_ids = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=pad_id)
        extra = -input_ids.shape[1] % multiple
        if extra:
            input_ids = torch.nn.functional.pad(input_ids, (0, extra), value=pad_id)
        attention_mask = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()
        if isinstance(batch[0][1], np.ndarray):  # multi_label: 0/1 rows, the float targets of BCE
            labels = torch.from_numpy(np.stack([item[1] for item in batch])).float()
        else:
            labels = torch.tensor([item[1] for item in batch], dtype=torch.long)
        padded = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if batch[0][2] is not None:
            types = [torch.tensor(item[2], dtype=torch.long) for item in batch]
            types = torch.nn.utils.rnn.pad_sequence(types, batch_first=True, padding_value=0)
            padded["token_type_ids"] = torch.nn.functional.pad(types, (0, input_ids.shape[1] - types.shape[1]))
        return padded

    return pad


def length_grouped_batches(lengths: np.ndarray, batch_size: int, seed: int, group: int = 50) -> list[list[int]]:
    """Shuffled batches of similar-length items, so per-batch padding stays small.

    Shuffle everything, cut it into chunks of `group` batches, sort each chunk
    by length, cut it into batches, then shuffle the batches: the order stays
    random across the data while each batch is tight (the HF Trainer's
    `group_by_length` does the same).
    """
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(lengths))
    batches = []
    for start in range(0, len(perm), batch_size * group):
        chunk = perm[start : start + batch_size * group]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size].tolist() for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def length_chunks(lengths: list[int], chunk_cost: int) -> list[list[int]]:
    """Cut one batch into chunks of similar length that together cost the fewest tokens.

    Returns positions into `lengths`, grouped, each chunk in batch order (one
    chunk is the batch as it was). A chunk pads to its own longest
    item, and each chunk also costs `chunk_cost` tokens (a forward pass's fixed
    overhead), so the result minimises sum(len(chunk) * longest in chunk) +
    chunk_cost * number of chunks. Sorting by length makes the best chunks
    contiguous runs of the sorted order, found exactly by dynamic programming
    over the end of the last chunk.
    """
    order = np.argsort(lengths, kind="stable")
    sorted_lengths = np.asarray(lengths)[order]
    best = np.zeros(len(order) + 1)  # best[e]: cost of the first e sorted items
    start = np.zeros(len(order) + 1, dtype=int)
    for end in range(1, len(order) + 1):
        # Every start of the last chunk at once: this runs once per training step, for batches in the hundreds.
        costs = best[:end] + (end - np.arange(end)) * sorted_lengths[end - 1] + chunk_cost
        start[end] = int(costs.argmin())  # the first minimum, as a scan with `<` finds
        best[end] = costs[start[end]]
    chunks, end = [], len(order)
    while end > 0:
        chunks.append(sorted(order[start[end] : end].tolist()))
        end = start[end]
    return chunks[::-1]


class Batches:
    """Batches of item indices over `data`, padded as they are drawn.

    A plain list of index lists, not a torch DataLoader: iterating it draws
    nothing from the global random generators, and `iterate(start)` skips the
    batches a resumed run has already trained on without loading them.
    """

    def __init__(self, data: Encoded, batches: list[list[int]], pad: Callable):
        self.data, self.batches, self.pad = data, batches, pad

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return self.iterate()

    def iterate(self, start: int = 0):
        for indices in self.batches[start:]:
            yield self.collate(indices)

    def collate(self, indices: list[int]) -> dict:
        return self.pad([self.data[i] for i in indices])


def loader(data: Encoded, batch_size: int, pad_id: int, shuffle: bool = False, seed: int = 0,
           group_by_length: bool = False, pad_to_multiple_of: int = 1) -> Batches:
    """Batches in input order, or shuffled by `seed` alone (length-grouped if asked)."""
    pad = collate(pad_id, max(1, pad_to_multiple_of))
    if shuffle and group_by_length:
        lengths = np.array([len(ids) for ids in data.input_ids])
        return Batches(data, length_grouped_batches(lengths, batch_size, seed), pad)
    order = np.random.default_rng(seed).permutation(len(data)) if shuffle else np.arange(len(data))
    return Batches(data, [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)], pad)
