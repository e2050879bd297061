"""Class names and label ids: inferred or configured names, raw labels (ids, names, lists, 0/1 columns) to arrays."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from loraclf.config.schema import DataConfig
from loraclf.data.sources import is_int, load_hub, missing_text, read_table, row_text_problem
from loraclf.data.tables import Schema, Table, pick
from loraclf.errors import UserError

# How many bad rows a run records by number and reason (all are counted).
FIRST_BAD_ROWS = 10


@dataclass
class Dropped:
    """The bad rows data.on_bad_row skip dropped from one source: how many, and the first ones' messages."""

    source: str
    count: int
    first: list[str]

    def describe(self) -> str:
        return f"{self.source}: skipped {self.count:,} bad row{'s' * (self.count != 1)} (data.on_bad_row skip); " \
               f"the first: {self.first[0]}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def usable_rows(table: Table, schema: Schema, label_names: list[str] | None,
                on_bad_row: str = "error") -> tuple[Table, Dropped | None]:
    """The rows of `table` with a usable text and label (a class of `label_names` where given). on_bad_row error:
    the first bad row is the error; skip: bad rows are dropped and counted."""
    if not table.texts:
        raise UserError(f"{table.source}: no rows")
    by_name = None if label_names is None else {name: k for k, name in enumerate(label_names)}
    bad, keep = [], []
    for i in range(len(table.texts)):
        problem = row_text_problem(table, i, schema) or label_problem(table, i, schema, by_name)
        if problem and on_bad_row == "error":
            raise UserError(f"{problem} ({schema.option('on_bad_row')} skip drops such rows)")
        if problem:
            bad.append(problem)
        else:
            keep.append(i)
    if not bad:
        return table, None
    if not keep:
        raise UserError(f"{table.source}: every one of its {len(table.texts):,} rows is bad; the first: {bad[0]}")
    kept = Table(table.source, pick(table.texts, keep), pick(table.raw_labels, keep), table.label_names,
                 pick(table.lines, keep))
    return kept, Dropped(table.source, len(bad), bad[:FIRST_BAD_ROWS])


def label_problem(table: Table, i: int, schema: Schema, by_name: dict[str, int] | None) -> str | None:
    """What is wrong with row i's label (None: nothing, or no label column at all): missing, negative, or not one
    of the classes (`by_name`: class name -> id) where they are known."""
    if table.raw_labels is None:
        return None
    try:
        values = _row_labels(table, i, schema)
    except UserError as exc:  # a 0/1 column's cell that is neither
        return str(exc)
    raw, where = table.raw_labels[i], f"{table.where(i)}, column {schema.label_where!r}"
    if None in values:
        return f"{where}: missing label ({raw!r})"
    if schema.task == "multi_label" and not values and not schema.allow_empty:
        return f"{where}: no label ({raw!r}); set data.allow_empty_labels true if a text may belong to no class"
    for value in values:
        if by_name is None:
            if isinstance(value, int) and value < 0:
                return f"{where}: negative label {value}"
            continue
        label = by_name.get(value) if isinstance(value, str) else value
        if label is None or not 0 <= label < len(by_name):
            return f"{where}: label {value if schema.task == 'multi_label' else raw!r} is not {_classes(list(by_name))}"
    return None


def _classes(label_names: list[str]) -> str:
    shown = label_names if len(label_names) <= 12 else [*label_names[:10], "..."]
    return f"a class id 0-{len(label_names) - 1} or one of the {len(label_names)} classes {shown}"


def label_names_of(data: DataConfig) -> list[str]:
    """Class names without tokenizing: from the config, or read off the training data."""
    if data.label_names:
        return list(data.label_names)
    if data.label_columns:
        return list(data.label_columns)
    schema = Schema.of(data)
    if data.train_file:
        table = read_table(data.train_file, schema, data.allow_pickle)
    else:
        table = load_hub(data.dataset, schema)["train"]
    table, _ = usable_rows(table, schema, None, data.on_bad_row)
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
    if isinstance(raw, (bool, np.bool_)) or missing_text(raw):
        return None
    if isinstance(raw, (int, np.integer)):
        return int(raw)
    if isinstance(raw, (float, np.floating)):
        return int(raw) if float(raw).is_integer() else None
    value = str(raw).strip()
    return int(value) if is_int(value) else value


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
    return [] if raw is None or missing_text(raw) else [_label_value(raw)]


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
