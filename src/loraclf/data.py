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


@dataclass
class Table:
    """Texts with raw labels (as found in the source) and where each row came from."""

    source: str
    texts: list[str]
    raw_labels: list[Any] | None
    label_names: list[str] | None = None
    # File line of each row where the format has lines (CSV, JSONL), for error messages.
    lines: list[int] | None = None

    def where(self, i: int) -> str:
        line = f" (line {self.lines[i]})" if self.lines else ""
        return f"{self.source}: row {i + 1}{line}"


@dataclass
class Labelled:
    texts: list[str]
    labels: np.ndarray
    # Token ids, once tokenized; subsets carry them along.
    input_ids: list[list[int]] | None = None

    def subset(self, index: np.ndarray) -> "Labelled":
        ids = None if self.input_ids is None else [self.input_ids[i] for i in index]
        return Labelled([self.texts[i] for i in index], self.labels[index], ids)

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


def _read_csv(path: Path, text_column: str, label_column: str) -> Table:
    rows, lines = _csv_rows(path)
    if not rows:
        raise UserError(f"{path}: empty file, no rows")
    # A header never starts with a number; the AG News layout (no header) always does.
    if len(rows[0]) == 3 and _is_int(rows[0][0]):
        return _read_agnews_csv(path, rows, lines)
    header = [h.strip() for h in rows[0]]
    if text_column in header:
        width = len(header)
        for i, row in enumerate(rows[1:]):
            if len(row) != width:
                raise UserError(
                    f"{path}: row {i + 1} (line {lines[i + 1]}): expected {width} fields like the header, got {len(row)}"
                )
        t = header.index(text_column)
        texts = [row[t] for row in rows[1:]]
        labels = [row[header.index(label_column)] for row in rows[1:]] if label_column in header else None
        return Table(str(path), texts, labels, lines=lines[1:])
    raise UserError(
        f"{path}: no column {text_column!r} in the header {header} and not the AG News layout "
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


def _records_table(source: str, records: list[Any], text_column: str, label_column: str, lines=None) -> Table:
    texts, labels = [], []
    has_labels = bool(records) and isinstance(records[0], dict) and label_column in records[0]
    for i, record in enumerate(records):
        where = f"{source}: row {i + 1}" + (f" (line {lines[i]})" if lines else "")
        if not isinstance(record, dict):
            raise UserError(f"{where}: expected an object with {text_column!r}, got {type(record).__name__}")
        if text_column not in record:
            raise UserError(f"{where}: missing column {text_column!r} (has {sorted(record)})")
        texts.append(record[text_column])
        if has_labels:
            if label_column not in record:
                raise UserError(f"{where}: missing column {label_column!r} (has {sorted(record)})")
            labels.append(record[label_column])
    return Table(source, texts, labels if has_labels else None, lines=lines)


def _read_jsonl(path: Path, text_column: str, label_column: str) -> Table:
    records, lines = [], []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: line {number}: not valid JSON ({exc.msg})") from None
        lines.append(number)
    return _records_table(str(path), records, text_column, label_column, lines)


def _read_json(path: Path, text_column: str, label_column: str) -> Table:
    text = _read_text(path)
    if not text.lstrip().startswith("["):
        return _read_jsonl(path, text_column, label_column)
    try:
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
    return _records_table(str(path), records, text_column, label_column)


def _hf_label_names(features: Any, label_column: str) -> list[str] | None:
    feature = features.get(label_column) if hasattr(features, "get") else None
    names = getattr(feature, "names", None)
    if names is None and isinstance(feature, dict):
        names = feature.get("names")
    return list(names) if names else None


def _read_parquet(path: Path, text_column: str, label_column: str) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    return _columns_table(str(path), table.column_names, table.column, text_column, label_column,
                          _parquet_label_names(table.schema.metadata or {}, label_column))


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


def _columns_table(source, columns, get, text_column, label_column, label_names) -> Table:
    if text_column not in columns:
        raise UserError(f"{source}: missing column {text_column!r} (has {list(columns)}); set --data.text_column")

    def as_list(col):
        values = get(col)
        return values.to_pylist() if hasattr(values, "to_pylist") else list(values)

    labels = as_list(label_column) if label_column in columns else None
    return Table(source, as_list(text_column), labels, label_names=label_names)


def _read_pickle(path: Path, text_column: str, label_column: str, allow_pickle: bool) -> Table:
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
    return _object_table(str(path), obj, text_column, label_column)


def _object_table(source: str, obj: Any, text_column: str, label_column: str) -> Table:
    """A datasets.Dataset, pandas DataFrame, dict of columns, or list of texts/records."""
    if hasattr(obj, "column_names") and hasattr(obj, "features"):  # datasets.Dataset
        return _columns_table(source, obj.column_names, obj.__getitem__, text_column, label_column,
                              _hf_label_names(obj.features, label_column))
    if hasattr(obj, "columns") and hasattr(obj, "to_dict"):  # pandas.DataFrame
        return _columns_table(source, list(obj.columns), lambda c: obj[c].tolist(), text_column,
                              label_column, None)
    if isinstance(obj, dict):
        return _columns_table(source, list(obj), obj.__getitem__, text_column, label_column, None)
    if isinstance(obj, list) and all(isinstance(x, str) for x in obj):
        return Table(source, list(obj), None)
    if isinstance(obj, list):
        return _records_table(source, obj, text_column, label_column)
    raise UserError(
        f"{source}: unsupported object {type(obj).__name__}; expected a datasets.Dataset, a DataFrame, "
        "a dict of columns or a list"
    )


def read_file(path: str | Path, text_column: str = "text", label_column: str = "label",
              allow_pickle: bool = False) -> Table:
    """Read a local file into a Table, checking that it exists and that its texts are present."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file")
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise UserError(f"{path}: unknown format {path.suffix!r}; use one of {', '.join(sorted(FORMATS))}")
    if kind == "csv":
        table = _read_csv(path, text_column, label_column)
    elif kind == "jsonl":
        table = _read_jsonl(path, text_column, label_column)
    elif kind == "json":
        table = _read_json(path, text_column, label_column)
    elif kind == "parquet":
        table = _read_parquet(path, text_column, label_column)
    else:
        table = _read_pickle(path, text_column, label_column, allow_pickle)
    check_texts(table, text_column)
    return table


def check_texts(table: Table, text_column: str = "text") -> None:
    if not table.texts:
        raise UserError(f"{table.source}: no rows")
    for i, text in enumerate(table.texts):
        if _missing_text(text):
            raise UserError(f"{table.where(i)}, column {text_column!r}: empty or missing text ({text!r})")
        if not isinstance(text, str):
            raise UserError(f"{table.where(i)}, column {text_column!r}: expected text, got {text!r}")


def load_hub(dataset: str, text_column: str, label_column: str) -> dict[str, Table]:
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
        table = _object_table(f"{dataset}[{name}]", split, text_column, label_column)
        check_texts(table, text_column)
        tables[name] = table
    return tables


# ---------------------------------------------------------------- labels


def label_names_of(data: DataConfig) -> list[str]:
    """Class names without tokenizing: from the config, or read off the training data."""
    if data.label_names:
        return list(data.label_names)
    if data.train_file:
        table = read_file(data.train_file, data.text_column, data.label_column, data.allow_pickle)
    else:
        table = load_hub(data.dataset, data.text_column, data.label_column)["train"]
    return infer_label_names(table, None, data.label_column)


def infer_label_names(table: Table, configured: list[str] | None, label_column: str) -> list[str]:
    """Class names in id order: from the config, the source, or the sorted distinct labels."""
    if configured:
        return list(configured)
    if table.label_names:
        return list(table.label_names)
    if table.raw_labels is None:
        raise UserError(f"{table.source}: no label column {label_column!r}")
    values = set()
    for i, raw in enumerate(table.raw_labels):
        value = _label_value(raw)
        if value is None:
            raise UserError(f"{table.where(i)}, column {label_column!r}: missing label ({raw!r})")
        values.add(value)
    if all(isinstance(v, int) for v in values):
        if min(values) < 0:
            bad = table.raw_labels.index(next(r for r in table.raw_labels if _label_value(r) == min(values)))
            raise UserError(f"{table.where(bad)}, column {label_column!r}: negative label {min(values)}")
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


def encode_labels(table: Table, label_names: list[str], label_column: str) -> np.ndarray:
    """Map raw labels (ids or names) to ids in [0, len(label_names)), failing on the first bad one."""
    if table.raw_labels is None:
        raise UserError(f"{table.source}: no label column {label_column!r}")
    by_name = {name: i for i, name in enumerate(label_names)}
    ids = np.empty(len(table.raw_labels), dtype=np.int64)
    for i, raw in enumerate(table.raw_labels):
        value = _label_value(raw)
        label = by_name.get(value) if isinstance(value, str) else value
        if label is None or not 0 <= label < len(label_names):
            raise UserError(
                f"{table.where(i)}, column {label_column!r}: label {raw!r} is not a class id "
                f"0-{len(label_names) - 1} or one of {label_names}"
            )
        ids[i] = label
    return ids


# ---------------------------------------------------------------- splits


def _stratify(labels: np.ndarray) -> np.ndarray | None:
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


def tokenize(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Tokenize once, truncating; padding happens per batch."""
    return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]


def length_filter(data: Labelled, lengths: np.ndarray, percentiles: list[float]) -> tuple[Labelled, FilterReport]:
    low, high = np.percentile(lengths, percentiles)
    keep = np.flatnonzero((lengths >= low) & (lengths <= high))
    report = FilterReport(float(low), float(high), list(percentiles), len(keep), len(data) - len(keep))
    return data.subset(keep), report


def load_splits(cfg: DataConfig, tokenizer, log: Callable[[str], None] = print) -> Splits:
    """Train / validation (tokenized) / optional test (text), labels encoded, length filter applied."""
    if cfg.test_size and cfg.test_file:
        raise UserError("config: data.test_size and data.test_file are both set; choose one test set")
    test_table = None
    if cfg.train_file:
        train_table = read_file(cfg.train_file, cfg.text_column, cfg.label_column, cfg.allow_pickle)
    else:
        hub = load_hub(cfg.dataset, cfg.text_column, cfg.label_column)
        if "train" not in hub:
            raise UserError(f"dataset {cfg.dataset!r} has no train split (has {sorted(hub)})")
        train_table = hub["train"]
        if cfg.test_split is not None:
            if cfg.test_split not in hub and cfg.test_split != "test":  # the default may be absent: no test set
                raise UserError(f"config data.test_split: dataset {cfg.dataset!r} has no {cfg.test_split!r} split "
                                f"(has {sorted(hub)}); set data.test_split null for none")
            test_table = hub.get(cfg.test_split)
    if cfg.test_file:
        test_table = read_file(cfg.test_file, cfg.text_column, cfg.label_column, cfg.allow_pickle)

    label_names = infer_label_names(train_table, cfg.label_names, cfg.label_column)
    train = Labelled(train_table.texts, encode_labels(train_table, label_names, cfg.label_column))
    test = None
    sources = {"train": train_table.source}
    if cfg.test_size:
        train, test = split(train, cfg.test_size, cfg.split_seed, f"test part of {train_table.source}")
        sources["test"] = f"{train_table.source} (held out {len(test)})"
    elif test_table is not None:
        test = Labelled(test_table.texts, encode_labels(test_table, label_names, cfg.label_column))
        sources["test"] = test_table.source

    train.input_ids = tokenize(tokenizer, train.texts, cfg.max_length)
    report = None
    if cfg.length_filter is not None:
        lengths = np.array([len(ids) for ids in train.input_ids])
        train, report = length_filter(train, lengths, cfg.length_filter)
        log(report.describe())
    train, val = split(train, cfg.val_fraction, cfg.split_seed, f"validation part of {train_table.source}")
    return Splits(label_names, train, val, test, report, sources)


# ---------------------------------------------------------------- batches


class Encoded(torch.utils.data.Dataset):
    """Token ids computed once; items are (ids, label)."""

    def __init__(self, input_ids: list[list[int]], labels: np.ndarray | None = None):
        self.input_ids = input_ids
        self.labels = labels

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> tuple[list[int], int]:
        return self.input_ids[i], (-1 if self.labels is None else int(self.labels[i]))


def encode(tokenizer, texts: list[str], labels: np.ndarray | None, max_length: int) -> Encoded:
    return Encoded(tokenize(tokenizer, texts, max_length), labels)


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
        labels = torch.tensor([item[1] for item in batch], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

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
