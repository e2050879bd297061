"""What a data source is read into: the schema that maps its columns, and its rows (texts, raw labels)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loraclf.config.schema import DataConfig


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
    delimiter: str | None = None  # CSV: None = sniffed (a tab for .tsv, else what splits the header into columns)
    encoding: str | None = None  # None = UTF-8 (a byte-order mark is skipped)
    # How messages name the settings above: `config` (--data.text_column, for train and budget) or `flags`
    # (--text-column, for predict and evaluate).
    options: str = "config"

    @classmethod
    def of(cls, cfg: DataConfig) -> "Schema":
        return cls(cfg.text_column, cfg.label_column, cfg.text_pair_column, cfg.task,
                   tuple(cfg.label_columns) if cfg.label_columns else None, cfg.label_separator,
                   cfg.allow_empty_labels, cfg.delimiter, cfg.encoding)

    def option(self, key: str) -> str:
        """The setting `key` of the data section (text_column, delimiter, encoding, ...) as the command that
        reads this source takes it."""
        return f"--data.{key}" if self.options == "config" else f"--{key.replace('_', '-')}"

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
    # Rows that could not be read as rows at all (a CSV record with the wrong number of fields, an oversized
    # field): row index -> the one-line message. Their text and label are None.
    problems: dict[int, str] = field(default_factory=dict)

    def where(self, i: int) -> str:
        line = f" (line {self.lines[i]})" if self.lines else ""
        return f"{self.source}: row {i + 1}{line}"


def pick(values: list | None, index) -> list | None:
    """The items of `values` at `index` (None stays None): what subsets carry along."""
    return None if values is None else [values[i] for i in index]
