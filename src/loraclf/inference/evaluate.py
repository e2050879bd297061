"""`loraclf evaluate`: metrics of a run (or export) on labelled files, each written beside the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from loraclf.inference.classifier import Classifier
from loraclf.inference.inputs import LabelledFile, labelled_files
from loraclf.inference.manifest import Description, describe
from loraclf.metrics.classification import metrics
from loraclf.metrics.plots import plot_confusion
from loraclf.rundir import atomic, layout, report


def evaluate_files(run_dir: str | Path, files: list[str], output: str | None = None, batch_size: int = 32,
                   precision: str = "auto", quantized: bool = True, allow_pickle: bool = False) -> list[dict[str, Any]]:
    """Metrics of a run (or export) on each labelled file, written to RUN_DIR/eval_<file>.json with its confusion
    matrix beside; every file is read and checked before the model loads. Returns the results in order."""
    about = describe(run_dir)
    return evaluate(about, labelled_files(about, files, output, allow_pickle), output, batch_size, precision,
                    quantized)


def evaluate(about: Description, inputs: list[LabelledFile], output: str | None = None, batch_size: int = 32,
             precision: str = "auto", quantized: bool = True,
             log: Callable[[str], None] | None = None, int8: bool = False) -> list[dict[str, Any]]:
    """Metrics of the folder `about` describes on files already read and checked (inputs.labelled_files);
    `log` gets the line saying where and in what precision the model runs; `int8`: see Classifier.load."""
    clf = Classifier.load(about.path, precision=precision, quantized=quantized, long_texts=about.long_texts,
                          window_stride=about.window_stride, int8=int8)
    if log is not None:
        log(clf.runs_in)
    results = []
    for item in inputs:
        tokens = clf.tokens(item.table.texts)
        result = metrics(item.labels, clf.logits_of(tokens, batch_size), clf.labels, about.thresholds)
        result |= {"data": item.name, "run": str(about.path), "long_texts": about.long_texts,
                   "texts_cut": tokens.cut, "precision": clf.precision,
                   "bad_rows": item.dropped.to_dict() if item.dropped else None}
        path = Path(output) if output else layout.eval_file(about.path, item.name)
        atomic.write_json(path, result)
        plot_confusion(result["confusion_matrix"], clf.labels, path.with_suffix(".png"), Path(item.name).name)
        results.append(result | {"written": str(path)})
    if about.kind == "run" and output is None:
        report.write(about.path)  # the run's report lists what was evaluated in it
    return results
