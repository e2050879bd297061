"""Texts to token ids, once: truncated where training truncates, padded later per batch."""

from __future__ import annotations

import numpy as np
import torch

from loraclf.data.tables import Text, pick


def tokenize(tokenizer, texts: list[Text], max_length: int) -> tuple[list[list[int]], list[list[int]] | None]:
    """Token ids, and segment ids for pairs where the tokenizer makes them; once, truncated, padded per batch.

    Pairs are the tokenizer's pair encoding, cut longest_first: the longer text loses tokens first.
    """
    if not texts or not isinstance(texts[0], tuple):
        return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"], None
    first, second = (list(part) for part in zip(*texts))
    encoded = tokenizer(first, second, truncation="longest_first", max_length=max_length)
    return encoded["input_ids"], encoded.get("token_type_ids")


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
        return Encoded(pick(self.input_ids, index), None if self.labels is None else self.labels[index],
                       pick(self.token_type_ids, index))


def encode(tokenizer, texts: list[Text], labels: np.ndarray | None, max_length: int) -> Encoded:
    input_ids, token_type_ids = tokenize(tokenizer, texts, max_length)
    return Encoded(input_ids, labels, token_type_ids)
