"""`--engine ray`: a file's shards predicted by Ray Data actors, each holding one loaded model.

The driver scans the file once (marks where each shard starts) and hands Ray a dataset of those marks; each
actor opens the file itself, reads its shard from its mark, and runs the same `predict_shard` as the local
engine. Ray Data keeps the input order, and the driver writes each shard as it arrives, so the file is the
local engine's byte for byte. Without `--ray-address` a local cluster starts on this machine; with one, every
node must see the input file at the same path and have loraclf installed.
"""

from __future__ import annotations

import logging
import os
import pickle
from typing import Any, Callable

import numpy as np

from loraclf.data.stream import Corpus, Mark
from loraclf.errors import UserError
from loraclf.inference.corpus import Predict, predict_shard


class ShardPredictor:
    """A Ray Data actor: loads the model once, then predicts the shards whose marks it is given."""

    def __init__(self, load: Callable[..., Any], folder: str, options: dict[str, Any], corpus: dict[str, Any],
                 layout, shard_rows: int, batch_size: int):
        self.classifier = load(folder, **options)
        self.corpus = Corpus(**corpus)
        self.layout, self.shard_rows, self.batch_size = layout, shard_rows, batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {"index": [], "result": []}
        for index, row, offset, line in zip(batch["index"], batch["row"], batch["offset"], batch["line"]):
            shard = self.corpus.shard(int(index), Mark(int(row), int(offset), int(line)), self.shard_rows)
            out["index"].append(int(index))
            out["result"].append(pickle.dumps(predict_shard(self.classifier, self.layout, shard, self.batch_size)))
        return out


def start_ray(address: str | None, actors: int | None) -> None:
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    try:
        ray.init(address=address, num_cpus=None if address else actors, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.ERROR, configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UserError(f"--engine ray: cannot start or reach a Ray cluster at {address or 'this machine'} "
                        f"({str(exc).splitlines()[0][:200]})") from None


def ray_engine(load: Callable[..., Any], folder: str, options: dict[str, Any], batch_size: int,
               address: str | None = None, actors: int | None = None) -> Predict:
    """Shards predicted by `actors` Ray Data actors (default: one per CPU of the cluster), in input order; each
    actor loads the model with `load(folder, **options)` (Classifier.load)."""

    def predict(plan, indices: list[int]):
        import ray

        start_ray(address, actors)
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False  # loraclf's own progress line counts the texts
        marks = [plan.marks[i] for i in indices]
        if not marks:
            return
        items = [{"index": i, "row": m.row, "offset": m.offset, "line": m.line} for i, m in zip(indices, marks)]
        size = actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
        corpus = {"path": str(plan.corpus.path), "schema": plan.corpus.schema, "id_column": plan.corpus.id_column,
                  "allow_pickle": plan.corpus.allow_pickle}
        results = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            ShardPredictor, batch_size=1, concurrency=min(size, len(items)), num_cpus=1,
            fn_constructor_args=(load, folder, options, corpus, plan.layout, plan.job.shard_rows, batch_size))
        for row in results.iter_rows():
            yield int(row["index"]), *pickle.loads(row["result"])

    return predict
