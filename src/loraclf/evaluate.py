"""Classification metrics (scikit-learn) and the confusion-matrix plot (matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


def metrics(labels: np.ndarray, logits: np.ndarray, label_names: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, loss, per-class precision/recall/F1/support and the confusion matrix."""
    preds = logits.argmax(axis=1)
    ids = list(range(len(label_names)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, preds, labels=ids, zero_division=0)
    loss = torch.nn.functional.cross_entropy(torch.from_numpy(logits).float(), torch.from_numpy(labels)).item()
    return {
        "accuracy": float(accuracy_score(labels, preds)),
        "macro_f1": float(f1_score(labels, preds, labels=ids, average="macro", zero_division=0)),
        "loss": loss,
        "count": int(len(labels)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(label_names)
        },
        "labels": list(label_names),
        "confusion_matrix": confusion_matrix(labels, preds, labels=ids).tolist(),
    }


def confident_mistakes(texts: list[str], labels: np.ndarray, logits: np.ndarray, label_names: list[str],
                       count: int = 20) -> list[dict[str, Any]]:
    """The `count` wrong predictions made with the highest probability, most confident first."""
    probs = torch.softmax(torch.from_numpy(logits).float(), dim=-1).numpy()
    preds = probs.argmax(axis=1)
    wrong = np.flatnonzero(preds != labels)
    order = wrong[np.argsort(-probs[wrong, preds[wrong]], kind="stable")][:count]
    return [{"index": int(i), "text": texts[i], "label": label_names[labels[i]], "predicted": label_names[preds[i]],
             "confidence": round(float(probs[i, preds[i]]), 4)} for i in order]


def confusion_figure(matrix: list[list[int]], label_names: list[str], title: str):
    """The confusion matrix as a matplotlib figure (the caller saves or embeds it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(4.0, 0.9 * len(label_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(np.array(matrix), display_labels=label_names).plot(
        ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45
    )
    ax.set_title(title)
    fig.tight_layout()
    return fig


def evaluate_files(run_dir: str | Path, files: list[str], output: str | None = None, batch_size: int = 32,
                   precision: str = "auto", quantized: bool = True, allow_pickle: bool = False) -> list[dict[str, Any]]:
    """Metrics of a run (or export) on each labelled file, written to RUN_DIR/eval_<file>.json with its confusion
    matrix beside; every file is read and checked before the model loads. Returns the results in order."""
    from loraclf import run
    from loraclf.classifier import Classifier, describe
    from loraclf.data import encode_labels, read_file
    from loraclf.errors import UserError

    if output and len(files) > 1:
        raise UserError(f"evaluate --output: names one file; with {len(files)} --data files, leave it out "
                        "(each is written to RUN_DIR/eval_<data>.json)")
    stems = [Path(f).stem for f in files]
    twice = sorted({stem for stem in stems if stems.count(stem) > 1})
    if twice:
        raise UserError(f"evaluate --data: two files are named {twice[0]!r}; their results would overwrite each "
                        "other in RUN_DIR/eval_<data>.json (rename one)")
    about = describe(run_dir)
    tables = [read_file(f, about.text_column, about.label_column, allow_pickle) for f in files]
    labels = [encode_labels(table, about.labels, about.label_column) for table in tables]
    clf = Classifier.load(run_dir, precision=precision, quantized=quantized)
    results = []
    for name, table, truth in zip(files, tables, labels):
        result = metrics(truth, clf.logits(table.texts, batch_size), clf.labels)
        result |= {"data": str(name), "run": str(about.path)}
        path = Path(output) if output else about.path / f"eval_{Path(name).stem}.json"
        run.write_json(path, result)
        plot_confusion(result["confusion_matrix"], clf.labels, path.with_suffix(".png"), Path(name).name)
        results.append(result | {"written": str(path)})
    return results


def plot_confusion(matrix: list[list[int]], label_names: list[str], path: Path, title: str) -> None:
    fig = confusion_figure(matrix, label_names, title)  # selects the Agg backend before pyplot loads
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
