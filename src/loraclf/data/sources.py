"""Reading data sources into a Table: CSV, JSON Lines / JSON, Parquet, pickle (only when allowed), a hub dataset.

CSV is the Hugging Face layout with a header, or the original AG News layout (no header; class 1-4, title,
description). Every bad row fails with the file, row, column and value in one line.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import pickle
from pathlib import Path
from typing import Any, Callable, Iterator

from loraclf.config.schema import AG_NEWS_LABELS
from loraclf.data.tables import Schema, Table
from loraclf.errors import UserError

FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".pkl": "pickle",
    ".pickle": "pickle",
}


def _read_text(path: Path, schema: Schema) -> str:
    data = path.read_bytes()
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise UserError(f"{path}: line {line}: NUL byte at offset {nul}; {_binary(data[:nul + 1])}")
    try:
        return data.decode(schema.encoding or "utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UserError(_not_decoded(path, line, data[exc.start:exc.start + 4], exc.start, schema)) from None


def _binary(head: bytes) -> str:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16 text (its byte-order mark); save it as UTF-8"
    return "a binary file, not text"


def _not_decoded(path: Path, line: int, bad: bytes, offset: int, schema: Schema) -> str:
    encoding = schema.encoding or "UTF-8"
    hint = f"; set {schema.option('encoding')} (e.g. latin-1 or cp1252)" if schema.encoding is None else ""
    return f"{path}: line {line}: not {encoding} text (bytes {bad!r} at offset {offset}){hint}"


def missing_text(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


# A longer field is a bad row (no text is that long): it is read, measured and skipped or refused.
MAX_FIELD_CHARS = 2**20
# A field past this is a quote that never closes, swallowing the rest of the file: the file cannot be read on.
MAX_RECORD_CHARS = 2**28


BOM = b"\xef\xbb\xbf"


class Lines:
    """A binary file's lines decoded as UTF-8, one at a time, from a byte offset, counting the bytes and lines
    handed out: csv.reader pulls lines only as a record needs them, so after each record `offset` is where the
    next one starts. Bad bytes are one-line errors naming the line."""

    def __init__(self, path: Path, handle, offset: int = 0, line: int = 0, schema: Schema = Schema()):
        self.path, self.handle, self.offset, self.line, self.schema = path, handle, offset, line, schema
        head = handle.read(8192) if offset == 0 else b""
        nul = head.find(b"\x00")
        if nul >= 0:  # a binary file says so before its first line fails to parse
            line = head.count(b"\n", 0, nul) + 1
            raise UserError(f"{path}: line {line}: NUL byte at offset {nul}; {_binary(head)}")
        handle.seek(offset)

    def __iter__(self):
        return self

    def __next__(self) -> str:
        raw = self.handle.readline()
        if not raw:
            raise StopIteration
        at, self.offset = self.offset, self.offset + len(raw)
        self.line += 1
        if self.line == 1 and raw.startswith(BOM) and self.schema.encoding is None:
            raw, at = raw[len(BOM):], at + len(BOM)
        nul = raw.find(b"\x00")
        if nul >= 0:
            raise UserError(f"{self.path}: line {self.line}: NUL byte at offset {at + nul}; a binary file, not text")
        try:
            return raw.decode(self.schema.encoding or "utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(_not_decoded(self.path, self.line, raw[exc.start:exc.start + 4], at + exc.start,
                                         self.schema)) from None


DELIMITERS = (",", ";", "\t", "|")


def delimiter_of(path: Path, schema: Schema) -> str:
    """The CSV delimiter: data.delimiter, a tab for .tsv, else the one that splits the header into columns
    holding the text column where exactly one does, else a comma (the AG News layout has no header)."""
    if schema.delimiter is not None:
        return schema.delimiter
    if path.suffix.lower() == ".tsv":
        return "\t"
    with path.open("rb") as handle:
        first = next(iter(Lines(path, handle, 0, 0, schema)), "")
    fits = [d for d in DELIMITERS if schema.text in _header_names(first.rstrip("\r\n"), d)]
    return fits[0] if len(fits) == 1 else ","


def _header_names(line: str, delimiter: str) -> list[str]:
    try:
        return [name.strip() for name in next(csv.reader([line], delimiter=delimiter), [])]
    except csv.Error:  # a quoted field that goes on past this line: not a header
        return []


def csv_records(path: Path, offset: int = 0, line: int = 0,
                schema: Schema = Schema()) -> Iterator[tuple[list[str], int, int]]:
    """(fields, its last line, the byte offset after it) for each non-empty CSV record from `offset` on."""
    delimiter = delimiter_of(path, schema)
    previous_limit = csv.field_size_limit(MAX_RECORD_CHARS)
    try:
        with path.open("rb") as handle:
            lines = Lines(path, handle, offset, line, schema)
            reader = csv.reader(lines, delimiter=delimiter)
            try:
                for fields in reader:
                    if fields:
                        yield fields, lines.line, lines.offset
            except csv.Error as exc:
                if "field larger than field limit" in str(exc):
                    raise UserError(f"{path}: line {lines.line}: a field of more than {MAX_RECORD_CHARS:,} "
                                    "characters: a quote that never closes swallows the rest of the file") from None
                raise UserError(f"{path}: line {lines.line}: not a readable CSV ({exc})") from None
    finally:
        csv.field_size_limit(previous_limit)


def record_problem(where: str, fields: list[str], width: int, header: list[str] | None) -> str | None:
    """What makes a CSV record unusable as a row (None: nothing): the wrong number of fields, or a field over
    MAX_FIELD_CHARS characters. `header`: the columns (None: the AG News layout's)."""
    if len(fields) != width:
        like = "like the header" if header is not None else "(class, title, description)"
        return f"{where}: expected {width} fields {like}, got {len(fields)}"
    for at, value in enumerate(fields):
        if len(value) > MAX_FIELD_CHARS:
            column = repr(header[at]) if header is not None else at + 1
            return (f"{where}, column {column}: a field of {len(value):,} characters, over the limit of "
                    f"{MAX_FIELD_CHARS:,}")
    return None


def is_int(value: str) -> bool:
    return value.strip().lstrip("-").isdigit()


def agnews_layout(first: list[str], schema: Schema) -> bool:
    """The original AG News CSV (no header; class, title, description): a header never starts with a number."""
    return len(first) == 3 and is_int(first[0]) and schema.pair is None and schema.task == "single_label"


def _read_csv(path: Path, schema: Schema) -> Table:
    records = csv_records(path, schema=schema)
    first = next(records, None)
    if first is None:
        raise UserError(f"{path}: empty file, no rows")
    if agnews_layout(first[0], schema):
        return _read_agnews_csv(path, itertools.chain([first], records))
    header = [h.strip() for h in first[0]]
    if schema.text not in header:
        found = "one column" if len(header) == 1 else f"the header {header}"
        raise UserError(f"{path}: no column {schema.text!r} in {found} and not the AG News layout "
                        f"(no header; class, title, description); set {schema.option('text_column')}, or "
                        f"{schema.option('delimiter')} where the columns are not split by "
                        f"{delimiter_of(path, schema)!r}")
    # Only the columns a Table can use are kept: a row's other fields go as it is read.
    used = {schema.text, schema.pair, schema.label, *(schema.label_columns or ())}
    columns = {name: [] for name in header if name in used}
    where = [(name, header.index(name)) for name in columns]
    lines, problems = [], {}
    for i, (fields, line, _) in enumerate(records, start=1):
        problem = record_problem(f"{path}: row {i} (line {line})", fields, len(header), header)
        if problem:
            problems[i - 1] = problem
        for name, at in where:
            columns[name].append(None if problem else fields[at])
        lines.append(line)
    table = _columns_table(str(path), header, columns.__getitem__, schema, lines=lines)
    table.problems = problems
    return table


def agnews_text(title: str, description: str) -> str:
    """Joined as the hub's ag_news builds `text`, backslashes kept: the same text the study trained on."""
    return f"{title} {description}"


def _read_agnews_csv(path: Path, records) -> Table:
    texts, labels, lines, problems = [], [], [], {}
    for i, (row, line, _) in enumerate(records):
        where = f"{path}: row {i + 1} (line {line})"
        problem = record_problem(where, row, 3, None)
        if problem is None and not is_int(row[0]):
            problem = f"{where}, column class: {row[0]!r} is not a class number"
        if problem:
            problems[i] = problem
        texts.append(None if problem else agnews_text(row[1], row[2]))
        labels.append(None if problem else int(row[0]) - 1)
        lines.append(line)
    return Table(str(path), texts, labels, label_names=list(AG_NEWS_LABELS), lines=lines, problems=problems)


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


def jsonl_records(path: Path, offset: int = 0, line: int = 0,
                  schema: Schema = Schema()) -> Iterator[tuple[Any, int, int]]:
    """(the value, its line, the byte offset after it) for each non-blank JSON Lines line from `offset` on."""
    with path.open("rb") as handle:
        lines = Lines(path, handle, offset, line, schema)
        for text in lines:
            if text.strip():
                try:
                    yield json.loads(text), lines.line, lines.offset
                except json.JSONDecodeError as exc:
                    raise UserError(f"{path}: line {lines.line}: not valid JSON ({exc.msg})") from None


def _read_jsonl(path: Path, schema: Schema) -> Table:
    records, lines = [], []
    for record, line, _ in jsonl_records(path, schema=schema):
        records.append(record)
        lines.append(line)
    return _records_table(str(path), records, schema, lines)


def _read_json(path: Path, schema: Schema) -> Table:
    text = _read_text(path, schema)
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


def check_text_columns(source: str, columns: list[str], schema: Schema) -> None:
    """The text column (and the pair's second) must be among a source's `columns`."""
    for column, key in ((schema.text, "text_column"), (schema.pair, "text_pair_column")):
        if column is not None and column not in columns:
            raise UserError(f"{source}: missing column {column!r} (has {list(columns)}); set {schema.option(key)}")


def _columns_table(source: str, columns: list[str], get: Callable[[str], list[Any]], schema: Schema,
                   label_names: list[str] | None = None, lines: list[int] | None = None) -> Table:
    """The schema's columns out of a source read column by column (`get(name)` lists a column)."""
    check_text_columns(source, columns, schema)
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
    table = read_table(path, schema, allow_pickle)
    check_texts(table, schema)
    return table


def file_format(path: Path) -> str:
    """The format of an existing, non-empty data file, from its suffix."""
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file")
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise UserError(f"{path}: unknown format {path.suffix!r}; use one of {', '.join(sorted(FORMATS))}")
    return kind


def read_table(path: str | Path, schema: Schema = Schema(), allow_pickle: bool = False) -> Table:
    """Read a local file into a Table as it is (texts not checked)."""
    path = Path(path)
    kind = file_format(path)
    if kind == "pickle":
        return _read_pickle(path, schema, allow_pickle)
    return {"csv": _read_csv, "jsonl": _read_jsonl, "json": _read_json, "parquet": _read_parquet}[kind](path, schema)


def check_texts(table: Table, schema: Schema = Schema()) -> None:
    if not table.texts:
        raise UserError(f"{table.source}: no rows")
    for i in range(len(table.texts)):
        problem = row_text_problem(table, i, schema)
        if problem:
            raise UserError(problem)


def row_text_problem(table: Table, i: int, schema: Schema = Schema()) -> str | None:
    """What keeps row i of `table` from being read as a text (None: nothing)."""
    if i in table.problems:
        return table.problems[i]
    text = table.texts[i]
    for column, part in zip((schema.text, schema.pair), text if isinstance(text, tuple) else (text,)):
        problem = text_problem(table.where(i), column, part)
        if problem:
            return problem
    return None


def text_problem(where: str, column: str, value: Any) -> str | None:
    """What is wrong with one text field (None: nothing), for the row `where` names: every reader's check."""
    if missing_text(value):
        return f"{where}, column {column!r}: empty or missing text ({value!r})"
    if not isinstance(value, str):
        return f"{where}, column {column!r}: expected text, got {value!r}"
    if len(value) > MAX_FIELD_CHARS:
        return f"{where}, column {column!r}: a text of {len(value):,} characters, over the limit of {MAX_FIELD_CHARS:,}"
    return None


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
        tables[name] = _object_table(f"{dataset}[{name}]", split, schema)
    return tables
