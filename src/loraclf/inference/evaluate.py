"""`loraclf evaluate`: metrics of a run (or export) on labelled files, each written beside the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loraclf.data.labels import encode_labels
from loraclf.data.sources import read_file
from loraclf.errors import UserError
from loraclf.inference.classifier import Classifier
from loraclf.inference.manifest import describe
from loraclf.metrics.classification import metrics
from loraclf.metrics.plots import plot_confusion
from loraclf.rundir import atomic, layout


def evaluate_files(run_dir: str | Path, files: list[str], output: str | None = None, batch_size: int = 32,
                   precision: str = "auto", quantized: bool = True, allow_pickle: bool = False) -> list[dict[str, Any]]:
    """Metrics of a run (or export) on each labelled file, written to RUN_DIR/eval_<file>.json with its confusion
    matrix beside; every file is read and checked before the model loads. Returns the results in order."""
    if output and len(files) > 1:
        raise UserError(f"evaluate --output: names one file; with {len(files)} --data files, leave it out "
                        "(each is written to RUN_DIR/eval_<data>.json)")
    stems = [Path(f).stem for f in files]
    twice = sorted({stem for stem in stems if stems.count(stem) > 1})
    if twice:
        raise UserError(f"evaluate --data: two files are named {twice[0]!r}; their results would overwrite each "
                        "other in RUN_DIR/eval_<data>.json (rename one)")
    about = describe(run_dir)
    tables = [read_file(f, about.schema, allow_pickle) for f in files]
    labels = [encode_labels(table, about.labels, about.schema) for table in tables]
    clf = Classifier.load(run_dir, precision=precision, quantized=quantized)
    results = []
    for name, table, truth in zip(files, tables, labels):
        result = metrics(truth, clf.logits(table.texts, batch_size), clf.labels, about.thresholds)
        result |= {"data": str(name), "run": str(about.path)}
        path = Path(output) if output else layout.eval_files(about.path, name)[0]
        atomic.write_json(path, result)
        plot_confusion(result["confusion_matrix"], clf.labels, path.with_suffix(".png"), Path(name).name)
        results.append(result | {"written": str(path)})
    return results
