"""Train / validation / test: labels encoded, the token-length filter, seeded stratified splits."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from sklearn.model_selection import train_test_split

from loraclf.config.schema import DataConfig
from loraclf.data.encoding import Encoded, encode
from loraclf.data.labels import Dropped, encode_labels, infer_label_names, usable_rows
from loraclf.data.sources import load_hub, read_table
from loraclf.data.tables import Schema, Text, pick
from loraclf.errors import UserError


@dataclass
class Labelled:
    texts: list[Text]
    labels: np.ndarray  # (n,) class ids, or (n, classes) 0/1 for multi_label
    # Token ids (and the pair encoding's segment ids, where the tokenizer makes them), once tokenized; subsets
    # carry them along.
    tokens: Encoded | None = None

    def subset(self, index: np.ndarray) -> "Labelled":
        return Labelled(pick(self.texts, index), self.labels[index],
                        None if self.tokens is None else self.tokens.subset(index))

    def encoded(self) -> Encoded:
        return Encoded.from_arrays(self.tokens.ids, self.tokens.offsets, self.labels, self.tokens.types)

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
    dropped: list[Dropped] = field(default_factory=list)  # bad rows data.on_bad_row skip dropped, per source


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
        raise UserError(f"cannot split {what}: {n:,} items is too few to set aside {fraction_or_count:g}")
    index = np.arange(n)
    stratify = _stratify(data.labels)
    if stratify is not None and wanted < len(np.unique(data.labels)):
        stratify = None
    rest, part = train_test_split(index, test_size=size, random_state=seed, stratify=stratify)
    return data.subset(np.sort(rest)), data.subset(np.sort(part))


def length_filter(data: Labelled, lengths: np.ndarray, percentiles: list[float]) -> tuple[Labelled, FilterReport]:
    low, high = np.percentile(lengths, percentiles)
    keep = np.flatnonzero((lengths >= low) & (lengths <= high))
    report = FilterReport(float(low), float(high), list(percentiles), len(keep), len(data) - len(keep))
    return data.subset(keep), report


@dataclass
class Read:
    """A recipe's labelled data as read: class names, the training items, the test items where a test source is
    given (a test file or split), and the bad rows dropped from each source."""

    label_names: list[str]
    train: Labelled
    test: Labelled | None
    sources: dict[str, str]
    dropped: list[Dropped]


def read_labelled(cfg: DataConfig) -> Read:
    """The training data and its test source read, bad rows dropped or refused (data.on_bad_row), labels encoded
    with the classes of the training data (or data.label_names)."""
    if cfg.test_size and cfg.test_file:
        raise UserError("config: data.test_size and data.test_file are both set; choose one test set")
    test_table, schema = None, Schema.of(cfg)
    if cfg.train_file:
        train_table = read_table(cfg.train_file, schema, cfg.allow_pickle)
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
        test_table = read_table(cfg.test_file, schema, cfg.allow_pickle)
    train_table, dropped = usable_rows(train_table, schema, cfg.label_names, cfg.on_bad_row)
    label_names = infer_label_names(train_table, cfg.label_names, schema)
    read = Read(label_names, Labelled(train_table.texts, encode_labels(train_table, label_names, schema)), None,
                {"train": train_table.source}, [dropped] if dropped else [])
    if test_table is not None:
        test_table, dropped = usable_rows(test_table, schema, label_names, cfg.on_bad_row)
        read.test = Labelled(test_table.texts, encode_labels(test_table, label_names, schema))
        read.sources["test"] = test_table.source
        read.dropped += [dropped] if dropped else []
    return read


# A held-out test part of more than half the file leaves too little to train on: it is scaled down to a fifth of
# the file, and a file whose fifth is under MIN_TEST_ITEMS trains without one.
MAX_TEST_SHARE = 0.5
SCALED_TEST_SHARE = 0.2
MIN_TEST_ITEMS = 5


def held_out_size(test_size: float, n: int, source: str, log: Callable[[str], None]) -> float:
    """data.test_size for a file of `n` items: as asked where the file can spare it (at most half of it), else
    scaled down to a fifth of the file, or 0 (no test part) where that is under MIN_TEST_ITEMS; each change noted."""
    wanted = int(test_size) if test_size >= 1 else math.ceil(test_size * n)
    if wanted <= n * MAX_TEST_SHARE:
        return test_size
    cap = int(n * SCALED_TEST_SHARE)
    if cap < MIN_TEST_ITEMS:
        log(f"data.test_size {test_size:g}: {source} has {n:,} items, too few to hold a test part out as well as "
            "validation; training without a test set")
        return 0
    log(f"data.test_size {test_size:g}: {source} has {n:,} items; holding out {cap:,} (a fifth) as the test part")
    return cap


def load_splits(cfg: DataConfig, tokenizer, log: Callable[[str], None] = print) -> Splits:
    """Train / validation (tokenized) / optional test (text), labels encoded, length filter applied."""
    read = read_labelled(cfg)
    for dropped in read.dropped:
        log(dropped.describe())
    train, test, sources = read.train, read.test, read.sources
    test_size = held_out_size(cfg.test_size, len(train), sources["train"], log) if cfg.test_size else 0
    if test_size:
        train, test = split(train, test_size, cfg.split_seed, f"test part of {sources['train']}")
        sources["test"] = f"{sources['train']} (held out {len(test)})"

    train.tokens = encode(tokenizer, train.texts, None, cfg.max_length)
    report = None
    if cfg.length_filter is not None:  # a pair's length is both texts' tokens together
        train, report = length_filter(train, train.tokens.lengths, cfg.length_filter)
        log(report.describe())
    train, val = split(train, cfg.val_fraction, cfg.split_seed, f"validation part of {sources['train']}")
    return Splits(read.label_names, train, val, test, report, sources, read.dropped)
