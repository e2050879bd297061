"""Batches of token ids: shuffled or length-grouped index lists, padding per batch, and length chunks."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from loraclf.data.encoding import Encoded, pad_items


def collate(pad_id: int, multiple: int = 1) -> Callable[[list[tuple]], dict[str, torch.Tensor]]:
    """Pad each batch to its own longest item, rounded up to a multiple of `multiple` (`pad_items`), as tensors."""

    def pad(batch):
        return {name: torch.from_numpy(array) for name, array in pad_items(batch, pad_id, multiple).items()}

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
        lengths = data.lengths
        return Batches(data, length_grouped_batches(lengths, batch_size, seed), pad)
    order = np.random.default_rng(seed).permutation(len(data)) if shuffle else np.arange(len(data))
    return Batches(data, [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)], pad)
