"""Engines that predict a file's shards: here, one after another, or on Ray Data actors (`--engine ray`).

Both run `corpus.predict_shard` on each shard and hand the results back in input order, so the file is the same
whichever engine made it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from loraclf.errors import UserError
from loraclf.inference import corpus
from loraclf.inference.ray_engine import ray_engine


def local_engine(classifier, batch_size: int) -> corpus.Predict:
    """Shards predicted here, one after another, by `classifier`, read from the file in one pass."""

    def predict(plan: corpus.Plan, indices: list[int]):
        shards = plan.corpus.shards(plan.marks, plan.job.shard_rows, indices[0]) if indices else iter(())
        for shard in shards:
            yield shard.index, *corpus.predict_shard(classifier, plan.layout, shard, batch_size)

    return predict


ENGINES = ("local", "ray")


def engine(name: str, batch_size: int, load: Callable[..., Any], folder: Path, options: dict[str, Any],
           ray_address: str | None = None, ray_actors: int | None = None) -> corpus.Predict:
    """The local engine on `load(folder, **options)` (Classifier.load), or the Ray engine, whose actors each
    call it (nothing is loaded here)."""
    if name == "local":
        return local_engine(load(folder, **options), batch_size)
    if name == "ray":
        return ray_engine(load, str(folder), options, batch_size, ray_address, ray_actors)
    raise UserError(f"--engine: expected one of {', '.join(ENGINES)}, got {name!r}")
