"""The labelled files a run or export folder is evaluated on, read and checked before any model loads.

This module loads neither torch nor PEFT, so a bad file is a one-line error at once, not after the model's
libraries have loaded (the command line imports the classifier only once the inputs checked out).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loraclf.config.schema import check_reading
from loraclf.data.labels import Dropped, encode_labels, usable_rows
from loraclf.data.sources import read_table
from loraclf.data.tables import Table
from loraclf.errors import UserError
from loraclf.inference.manifest import Description


@dataclass
class LabelledFile:
    name: str  # as the caller gave it
    table: Table
    labels: np.ndarray  # class ids, or (n, classes) 0/1 for multi_label
    dropped: Dropped | None = None  # the bad rows --on-bad-row skip dropped


def labelled_files(about: Description, files: list[str], output: str | None = None, allow_pickle: bool = False,
                   on_bad_row: str = "error", delimiter: str | None = None,
                   encoding: str | None = None, text_column: str | None = None) -> list[LabelledFile]:
    """Each file read with the folder's schema (`delimiter`, `encoding` and `text_column` where given) and its
    labels encoded with the folder's classes; a bad row stops it, or with `on_bad_row` skip is dropped
    (LabelledFile.dropped)."""
    check_reading(delimiter, encoding, "evaluate --")
    schema = dataclasses.replace(about.schema, options="flags", text=text_column or about.schema.text,
                                 delimiter=delimiter or about.schema.delimiter,
                                 encoding=encoding or about.schema.encoding)
    if output and len(files) > 1:
        raise UserError(f"evaluate --output: names one file; with {len(files)} --data files, leave it out "
                        "(each is written to RUN_DIR/eval_<data>.json)")
    stems = [Path(f).stem for f in files]
    twice = sorted({stem for stem in stems if stems.count(stem) > 1})
    if twice:
        raise UserError(f"evaluate --data: two files are named {twice[0]!r}; their results would overwrite each "
                        "other in RUN_DIR/eval_<data>.json (rename one)")
    read = []
    for name in files:
        table, dropped = usable_rows(read_table(name, schema, allow_pickle), schema, about.labels, on_bad_row)
        read.append(LabelledFile(str(name), table, encode_labels(table, about.labels, schema), dropped))
    return read
