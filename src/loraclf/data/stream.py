"""Texts to predict, read a shard at a time: memory follows the shard, not the file.

CSV and JSON Lines are read record by record from the file's bytes (Python's csv module over decoded lines:
the row-exact messages need each record's line, which pyarrow's CSV reader does not report), Parquet through
pyarrow's batch reader. A JSON array or a pickle is one object: it is read whole, then cut like the others.

`scan` reads the file once and marks where each shard starts (row, byte offset, line), so a shard can be read
on its own: a resumed job starts at its first unfinished shard without parsing what came before, and each Ray
actor reads just the shards it is given.

Each row is checked as `sources.read_file` checks it; a bad row is a `Row` with a `problem` (the same one-line
message), and the caller decides whether it stops the file or is answered with an error.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Iterator

from loraclf.data.sources import (
    agnews_layout,
    agnews_text,
    check_text_columns,
    csv_records,
    file_format,
    jsonl_records,
    read_table,
    record_problem,
    text_problem,
)
from loraclf.data.tables import Schema, Text
from loraclf.errors import UserError

DEFAULT_ID = "id"


@dataclass
class Row:
    text: Text | None  # None where the row is bad
    id: Any = None
    problem: str | None = None  # what is wrong with the row, naming file, row, line and column


@dataclass(frozen=True)
class Mark:
    """Where a row starts: its number (from 0), and for CSV and JSON Lines its byte offset and the lines before it."""

    row: int = 0
    offset: int = 0
    line: int = 0


@dataclass
class Shard:
    index: int
    start: int  # the input row (from 0) of its first row
    rows: list[Row]


@dataclass
class Scan:
    rows: int
    first_problem: str | None  # the first bad row's message
    marks: list[Mark]  # where each shard starts


class Corpus:
    """A file of texts (CSV, JSON Lines, Parquet; JSON and pickle read whole), its id column and its rows."""

    def __init__(self, path: str | Path, schema: Schema = Schema(), id_column: str | None = None,
                 allow_pickle: bool = False):
        self.path, self.schema, self.allow_pickle = Path(path), schema, allow_pickle
        self.kind = file_format(self.path)
        if self.kind == "json" and not self._json_array():
            self.kind = "jsonl"
        self.header = self._header()
        columns = self._columns()
        self.id_column = id_column if id_column is not None else (DEFAULT_ID if DEFAULT_ID in columns else None)
        if self.id_column is not None and self.kind in ("json", "pickle"):
            raise UserError(f"{self.path}: --id-column reads CSV, JSON Lines and Parquet files; a JSON array or "
                            "a pickle is answered in row order")
        if self.id_column is not None and self.id_column not in columns:
            raise UserError(f"{self.path}: no id column {self.id_column!r} (has {columns}); set --id-column")

    def scan(self, rows_per_shard: int) -> Scan:
        """Every row read once, none kept: how many, the first bad one, and where each shard starts."""
        count, first, marks = 0, None, []
        for mark, row in self._rows(Mark()):
            if count % rows_per_shard == 0:
                marks.append(mark)
            count += 1
            if first is None and row.problem is not None:
                first = row.problem
        if count == 0:
            raise UserError(f"{self.path}: no rows")
        return Scan(count, first, marks)

    def shard(self, index: int, mark: Mark, rows_per_shard: int) -> Shard:
        """The shard that starts at `mark` (from `scan`), read on its own."""
        return Shard(index, mark.row, [row for _, row in islice(self._rows(mark), rows_per_shard)])

    def shards(self, marks: list[Mark], rows_per_shard: int, skip: int = 0) -> Iterator[Shard]:
        """The shards from shard `skip` on, read one after another from its mark."""
        if skip >= len(marks):
            return
        rows = (row for _, row in self._rows(marks[skip]))
        for index in range(skip, len(marks)):
            yield Shard(index, marks[index].row, list(islice(rows, rows_per_shard)))

    def id_type(self):
        """The Arrow type of the id column in a Parquet output: the input's own for Parquet, else that of the
        first row's id (JSON Lines may hold numbers), else string."""
        import pyarrow as pa

        if self.id_column is None:
            return None
        if self.kind == "parquet":
            return self._parquet().schema_arrow.field(self.id_column).type
        first = next((row.id for _, row in self._rows(Mark())), None)
        return pa.int64() if isinstance(first, int) and not isinstance(first, bool) else \
            pa.float64() if isinstance(first, float) else pa.string()

    # -- formats ---------------------------------------------------------------------------------------------

    def _header(self) -> list[str] | None:
        """A CSV file's header (None for the AG News layout, which has none)."""
        if self.kind != "csv":
            return None
        first = next(csv_records(self.path, schema=self.schema), ([],))[0]
        if agnews_layout(first, dataclasses.replace(self.schema, task="single_label")):
            return None
        names = [h.strip() for h in first]
        check_text_columns(str(self.path), names, self.schema)
        return names

    def _columns(self) -> list[str]:
        if self.kind == "csv":
            return self.header or []
        if self.kind == "jsonl":
            first = next((row for _, row in self._jsonl_rows(Mark(), raw=True)), None)
            return sorted(first) if isinstance(first, dict) else []
        if self.kind == "parquet":
            names = list(self._parquet().schema_arrow.names)
            check_text_columns(str(self.path), names, self.schema)
            return names
        return []  # JSON arrays and pickles: answered in row order

    def _rows(self, mark: Mark) -> Iterator[tuple[Mark, Row]]:
        """(where the row starts, the row) from `mark` on."""
        if self.kind == "csv":
            return self._csv_rows(mark)
        if self.kind == "jsonl":
            return self._jsonl_rows(mark)
        if self.kind == "parquet":
            return self._parquet_rows(mark)
        return self._whole_rows(mark)

    def _csv_rows(self, mark: Mark) -> Iterator[tuple[Mark, Row]]:
        records = csv_records(self.path, mark.offset, mark.line, self.schema)
        if mark.offset == 0 and self.header is not None:
            _, line, offset = next(records)
            mark = Mark(0, offset, line)
        row = mark.row
        for fields, line, offset in records:
            yield mark, self._csv_row(row, fields, line)
            row += 1
            mark = Mark(row, offset, line)

    def _csv_row(self, i: int, fields: list[str], line: int) -> Row:
        width = 3 if self.header is None else len(self.header)  # AG News layout: class, title, description
        problem = record_problem(f"{self.path}: row {i + 1} (line {line})", fields, width, self.header)
        if problem:
            return Row(None, None, problem)
        if self.header is None:
            return self._record_row(i, {"text": agnews_text(fields[1], fields[2])}, line)
        return self._record_row(i, dict(zip(self.header, fields)), line)

    def _record_row(self, i: int, record: Any, line: int | None = None) -> Row:
        where = f"{self.path}: row {i + 1}" + (f" (line {line})" if line else "")
        if not isinstance(record, dict):
            return Row(None, None, f"{where}: expected an object with {self.schema.text!r}, got "
                                   f"{type(record).__name__}")
        ident = record.get(self.id_column) if self.id_column else None
        parts = []
        for column in (self.schema.text, self.schema.pair):
            if column is None:
                continue
            if column not in record:
                return Row(None, ident, f"{where}: missing column {column!r} (has {sorted(record)})")
            value = record[column]
            problem = text_problem(where, column, value)
            if problem:
                return Row(None, ident, problem)
            parts.append(value)
        return Row(parts[0] if len(parts) == 1 else tuple(parts), ident)

    def _jsonl_rows(self, mark: Mark, raw: bool = False) -> Iterator[tuple[Mark, Any]]:
        row = mark.row
        for record, line, offset in jsonl_records(self.path, mark.offset, mark.line, self.schema):
            yield mark, record if raw else self._record_row(row, record, line)
            row += 1
            mark = Mark(row, offset, line)

    def _json_array(self) -> bool:
        with self.path.open(encoding=self.schema.encoding or "utf-8-sig", errors="replace") as handle:
            return handle.read(4096).lstrip().startswith("[")

    def _parquet(self):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(self.path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise UserError(f"{self.path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None

    def _parquet_rows(self, mark: Mark) -> Iterator[tuple[Mark, Row]]:
        wanted = [c for c in (self.schema.text, self.schema.pair, self.id_column) if c is not None]
        i = 0
        for batch in self._parquet().iter_batches(batch_size=8192, columns=list(dict.fromkeys(wanted))):
            if i + batch.num_rows <= mark.row:  # before the mark: skipped without converting a value
                i += batch.num_rows
                continue
            columns = {name: batch.column(name).to_pylist() for name in batch.schema.names}
            for values in zip(*columns.values()):
                if i >= mark.row:
                    yield Mark(i), self._record_row(i, dict(zip(columns, values)))
                i += 1

    @functools.cached_property
    def _whole_table(self):
        """A JSON array or a pickle is one object: read (unpickled) once, for the scan and the shards alike."""
        return read_table(self.path, self.schema, self.allow_pickle)

    def _whole_rows(self, mark: Mark) -> Iterator[tuple[Mark, Row]]:
        """A JSON array or a pickle, read whole (one object); its rows checked one by one."""
        table = self._whole_table
        columns = [c for c in (self.schema.text, self.schema.pair) if c]
        for i in range(mark.row, len(table.texts)):
            text = table.texts[i]
            parts = text if isinstance(text, tuple) else (text,)
            yield Mark(i), self._record_row(i, dict(zip(columns, parts)), table.lines[i] if table.lines else None)
