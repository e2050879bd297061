"""Texts to token ids, once: truncated where training truncates (or cut into windows), padded later per batch.

numpy only (no torch): the ONNX predictor tokenizes and pads with this module without loading torch.

Token ids live in flat arrays (int32 ids with int64 offsets), not Python lists of ints: a list holds an
8-byte pointer and, above 256, a 28-byte int object per token, an array 4 bytes. A million texts of 60
tokens are 240 MB this way instead of about 2 GB.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from loraclf.config.schema import window_stride
from loraclf.data.tables import Text
from loraclf.errors import UserError

# Texts tokenized per call: the tokenizer's Python lists exist for one chunk at a time.
CHUNK = 4096
LONG_TEXTS = ("truncate", "windows")


class Encoded:
    """Token ids of many items; items are (ids, label, segment ids or None), ids as int32 arrays.

    A label is a class id (-1 without labels), or a 0/1 row of the classes (multi_label). `documents`, where
    long texts were cut into windows, maps each item (a window) to the text it came from; `cut` counts the
    texts longer than max_length (truncated, or split into windows).
    """

    def __init__(self, input_ids: list | None = None, labels: np.ndarray | None = None,
                 token_type_ids: list | None = None):
        self.ids, self.offsets = _flat(input_ids or [])
        self.types = None if token_type_ids is None else _flat(token_type_ids)[0]
        self.labels = labels
        self.documents: np.ndarray | None = None
        self.cut = 0

    @classmethod
    def from_arrays(cls, ids: np.ndarray, offsets: np.ndarray, labels: np.ndarray | None = None,
                    types: np.ndarray | None = None, documents: np.ndarray | None = None, cut: int = 0) -> Encoded:
        data = cls(None, labels)
        data.ids, data.offsets, data.types, data.documents, data.cut = ids, offsets, types, documents, cut
        return data

    @functools.cached_property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def count(self) -> int:
        """How many texts: items, or the documents their windows came from."""
        return len(self) if self.documents is None else (int(self.documents[-1]) + 1 if len(self) else 0)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def tokens(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]

    def __getitem__(self, i: int) -> tuple[np.ndarray, int | np.ndarray, np.ndarray | None]:
        if self.labels is None:
            label = -1
        else:
            label = self.labels[i] if self.labels.ndim > 1 else int(self.labels[i])
        types = None if self.types is None else self.types[self.offsets[i] : self.offsets[i + 1]]
        return self.tokens(i), label, types

    def subset(self, index) -> Encoded:
        index = np.asarray(index, dtype=np.int64)
        starts, lengths = self.offsets[:-1][index], self.lengths[index]
        offsets = np.zeros(len(index) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # Position j of the new flat array reads old position starts[item] + (j - offsets[item]).
        gather = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        return Encoded.from_arrays(self.ids[gather], offsets, None if self.labels is None else self.labels[index],
                                   None if self.types is None else self.types[gather],
                                   None if self.documents is None else self.documents[index])

    @staticmethod
    def concat(parts: list[Encoded], labels: np.ndarray | None = None) -> Encoded:
        """Items of `parts` one after another, with `labels` (default: the parts' own, where each has them)."""
        offsets = [np.zeros(1, dtype=np.int64)]
        for part in parts:
            offsets.append(part.offsets[1:] + offsets[-1][-1])
        if labels is None and all(p.labels is not None for p in parts):
            labels = np.concatenate([p.labels for p in parts])
        types = None if any(p.types is None for p in parts) else np.concatenate([p.types for p in parts])
        return Encoded.from_arrays(np.concatenate([p.ids for p in parts]), np.concatenate(offsets), labels, types,
                                   cut=sum(p.cut for p in parts))


def pad_items(items: list[tuple], pad_id: int, multiple: int = 1) -> dict[str, np.ndarray]:
    """Items (`Encoded[i]`) as one batch: ids padded to the longest item, rounded up to a multiple of `multiple`,
    its attention mask, segment ids where the items have them, and labels (int64 class ids, or float32 0/1 rows
    for multi_label)."""
    lengths = np.array([len(item[0]) for item in items], dtype=np.int64)
    width = -(-int(lengths.max()) // multiple) * multiple
    input_ids = np.full((len(items), width), pad_id, dtype=np.int64)
    for row, item in enumerate(items):
        input_ids[row, : lengths[row]] = item[0]
    batch = {"input_ids": input_ids, "attention_mask": (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)}
    if isinstance(items[0][1], np.ndarray):  # multi_label: 0/1 rows, the float targets of BCE
        batch["labels"] = np.stack([item[1] for item in items]).astype(np.float32)
    else:
        batch["labels"] = np.array([item[1] for item in items], dtype=np.int64)
    if items[0][2] is not None:
        types = np.zeros((len(items), width), dtype=np.int64)
        for row, item in enumerate(items):
            types[row, : len(item[2])] = item[2]
        batch["token_type_ids"] = types
    return batch


def in_length_order(data: Encoded, batch_size: int, pad_id: int,
                    forward: Callable[[dict[str, np.ndarray]], np.ndarray]) -> np.ndarray:
    """`forward`'s rows (a model's logits) for every item, in input order. Items run in batches of similar
    length (`pad_items`, without labels), so padding stays small."""
    order = np.argsort(data.lengths, kind="stable")
    chunks = []
    for start in range(0, len(order), batch_size):
        batch = pad_items([data[i] for i in order[start : start + batch_size]], pad_id)
        batch.pop("labels")
        chunks.append(forward(batch))
    rows = np.concatenate(chunks)
    out = np.empty_like(rows)
    out[order] = rows
    return out


def document_logits(logits: np.ndarray, documents: np.ndarray | None) -> np.ndarray:
    """One row per text from one per window (data.long_texts windows): the mean of its windows' logits.

    The mean of logits is the log of the windows' geometric-mean probabilities (up to a constant), so a window
    that is sure of a class outweighs several unsure ones less than a max would, and more than a mean of
    probabilities would; docs/benchmarks.md compares the three on long documents.
    """
    if documents is None:
        return logits
    count = int(documents[-1]) + 1 if len(documents) else 0
    sums = np.zeros((count, logits.shape[1]), dtype=np.float64)
    np.add.at(sums, documents, logits)
    return (sums / np.bincount(documents, minlength=count)[:, None]).astype(np.float32)


def _flat(lists: list) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(lists) + 1, dtype=np.int64)
    np.cumsum([len(x) for x in lists], out=offsets[1:])
    ids = np.fromiter((t for x in lists for t in x), dtype=np.int32, count=int(offsets[-1]))
    return ids, offsets


def encode(tokenizer, texts: list[Text], labels: np.ndarray | None, max_length: int,
           long_texts: str = "truncate", stride: int | None = None) -> Encoded:
    """Token ids of `texts`, tokenized once, `CHUNK` texts per tokenizer call.

    truncate: each text's first max_length tokens (pairs: the tokenizer's longest_first, the longer text loses
    tokens first). windows: a text longer than max_length becomes overlapping windows of max_length tokens,
    consecutive windows sharing `stride` tokens (the tokenizer's own `stride`; None: a quarter of max_length);
    `documents` maps them back.
    """
    stride = window_stride(stride, max_length)
    parts = [_encode_chunk(tokenizer, texts[i : i + CHUNK], max_length, long_texts, stride)
             for i in range(0, len(texts), CHUNK)]
    if not parts:
        return Encoded(labels=labels)
    data = Encoded.concat(parts, labels)
    if long_texts == "windows":
        starts = np.cumsum([0] + [p.count for p in parts[:-1]])
        data.documents = np.concatenate([p.documents + start for p, start in zip(parts, starts)])
    return data


def _encode_chunk(tokenizer, texts: list[Text], max_length: int, long_texts: str, stride: int) -> Encoded:
    if isinstance(texts[0], tuple):
        # Overflowing windows of a pair are every window of one text with every window of the other: only
        # the lengths are asked for, to count what longest_first cuts.
        first, second = (list(part) for part in zip(*texts))
        full = tokenizer(first, second, return_length=True, return_attention_mask=False)["length"]
        encoded = tokenizer(first, second, truncation="longest_first", max_length=max_length,
                            return_attention_mask=False)
        ids, types = _flat(encoded["input_ids"]), encoded.get("token_type_ids")
        return Encoded.from_arrays(*ids, types=None if types is None else _flat(types)[0],
                                   cut=int((np.asarray(full) > max_length).sum()))
    encoded = tokenizer(texts, truncation=True, max_length=max_length, return_overflowing_tokens=True,
                        stride=stride if long_texts == "windows" else 0, return_attention_mask=False)
    if "overflow_to_sample_mapping" not in encoded:  # a slow (Python) tokenizer keeps one item per text
        if long_texts == "windows":
            raise UserError("data.long_texts windows: needs the model's fast tokenizer (tokenizer.json)")
        return Encoded.from_arrays(*_flat(encoded["input_ids"]),
                                   cut=sum(1 for rest in encoded.get("overflowing_tokens", []) if rest))
    owner = np.asarray(encoded["overflow_to_sample_mapping"], dtype=np.int64)
    cut = int(len(owner) - len(texts))  # each text cut adds at least one window
    cut = int((np.bincount(owner, minlength=len(texts)) > 1).sum()) if cut else 0
    if long_texts == "windows":
        return Encoded.from_arrays(*_flat(encoded["input_ids"]), documents=owner, cut=cut)
    first = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])  # each text's first window: its truncation
    return Encoded.from_arrays(*_flat([encoded["input_ids"][i] for i in first]), cut=cut)


def cut_note(cut: int, count: int, max_length: int, long_texts: str) -> str:
    """What is said once about texts longer than max_length ('' when none was)."""
    if not cut:
        return ""
    if long_texts == "windows":
        return f"; {cut:,} of {count:,} texts were longer than {max_length} tokens and were read as windows"
    return (f"; {cut:,} of {count:,} texts were longer than {max_length} tokens and were truncated "
            "(--long-texts windows reads them whole)")
