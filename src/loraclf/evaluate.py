"""Classification metrics (scikit-learn) and the confusion-matrix plot (matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    hamming_loss,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
)

from loraclf.predict import sigmoid


def metrics(labels: np.ndarray, logits: np.ndarray, label_names: list[str],
            thresholds: list[float] | None = None) -> dict[str, Any]:
    """Accuracy, macro- and micro-F1, loss, per-class precision/recall/F1/support and the confusion matrix.

    Labels of shape (n, classes) are multi_label: see `multi_label_metrics` (`thresholds` applies to them).
    """
    if labels.ndim > 1:
        return multi_label_metrics(labels, logits, label_names, thresholds)
    preds = logits.argmax(axis=1)
    ids = list(range(len(label_names)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, preds, labels=ids, zero_division=0)
    loss = torch.nn.functional.cross_entropy(torch.from_numpy(logits).float(), torch.from_numpy(labels)).item()
    return {
        "accuracy": float(accuracy_score(labels, preds)),
        "macro_f1": float(f1_score(labels, preds, labels=ids, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(labels, preds, labels=ids, average="micro", zero_division=0)),
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


def decide(probs: np.ndarray, thresholds: list[float] | None) -> np.ndarray:
    """multi_label: 1 where a class's probability reaches its threshold (0.5 without thresholds)."""
    return (probs >= (0.5 if thresholds is None else np.asarray(thresholds))).astype(np.int64)


def multi_label_metrics(labels: np.ndarray, logits: np.ndarray, label_names: list[str],
                        thresholds: list[float] | None = None) -> dict[str, Any]:
    """Subset accuracy (`accuracy`), micro-, macro- and samples-F1, Hamming loss, the mean binary cross-entropy
    (`loss`), per-class scores and one 2x2 confusion matrix per class ([[TN, FP], [FN, TP]], scikit-learn's
    layout). A text with no true and no predicted class counts as right in samples-F1."""
    truth = labels.astype(np.int64)
    preds = decide(sigmoid(logits), thresholds)
    precision, recall, f1, support = precision_recall_fscore_support(truth, preds, zero_division=0)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(torch.from_numpy(logits).float(),
                                                                torch.from_numpy(labels).float()).item()
    used = [0.5] * len(label_names) if thresholds is None else [float(t) for t in thresholds]
    return {
        "accuracy": float(accuracy_score(truth, preds)),
        "micro_f1": float(f1_score(truth, preds, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(truth, preds, average="macro", zero_division=0)),
        "samples_f1": float(f1_score(truth, preds, average="samples", zero_division=1)),
        "hamming_loss": float(hamming_loss(truth, preds)),
        "loss": loss,
        "count": int(len(labels)),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i]), "threshold": used[i]}
            for i, name in enumerate(label_names)
        },
        "labels": list(label_names),
        "thresholds": used,
        "confusion_matrix": multilabel_confusion_matrix(truth, preds).tolist(),
    }


# Candidate thresholds for tune_thresholds: a grid keeps the choice stable on small validation sets.
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)


def tune_thresholds(labels: np.ndarray, logits: np.ndarray) -> list[float]:
    """Per class, the grid threshold with the best F1 on these (validation) items; ties go to the one nearest 0.5."""
    probs = sigmoid(logits)
    by_nearness = THRESHOLD_GRID[np.argsort(np.abs(THRESHOLD_GRID - 0.5), kind="stable")]
    chosen = []
    for c in range(labels.shape[1]):
        scores = [f1_score(labels[:, c].astype(np.int64), (probs[:, c] >= t).astype(np.int64), zero_division=0)
                  for t in by_nearness]
        chosen.append(float(by_nearness[int(np.argmax(scores))]))
    return chosen


def confident_mistakes(texts: list[str], labels: np.ndarray, logits: np.ndarray, label_names: list[str],
                       count: int = 20, thresholds: list[float] | None = None) -> list[dict[str, Any]]:
    """The `count` wrong predictions made with the highest probability, most confident first (multi_label: the
    texts whose most confident wrong class decision is most confident)."""
    if labels.ndim > 1:
        probs = sigmoid(logits)
        preds = decide(probs, thresholds)
        confidence = np.where(preds != labels, np.where(preds == 1, probs, 1 - probs), -1.0).max(axis=1)
        order = np.argsort(-confidence, kind="stable")[: int((confidence >= 0).sum())][:count]
        return [{"index": int(i), "text": texts[i],
                 "label": [label_names[c] for c in np.flatnonzero(labels[i])],
                 "predicted": [label_names[c] for c in np.flatnonzero(preds[i])],
                 "confidence": round(float(confidence[i]), 4)} for i in order]
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

    if np.ndim(matrix) == 3:  # multi_label: one 2x2 matrix per class
        columns = min(4, len(label_names))
        rows = -(-len(label_names) // columns)
        fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.6 * rows + 0.4), squeeze=False)
        for ax, name, pair in zip(axes.flat, label_names, matrix):
            ConfusionMatrixDisplay(np.array(pair), display_labels=["no", "yes"]).plot(ax=ax, cmap="Blues",
                                                                                       colorbar=False)
            ax.set_title(name, fontsize=9)
        for ax in list(axes.flat)[len(label_names):]:
            ax.axis("off")
        fig.suptitle(title)
        fig.tight_layout()
        return fig
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
    tables = [read_file(f, about.schema, allow_pickle) for f in files]
    labels = [encode_labels(table, about.labels, about.schema) for table in tables]
    clf = Classifier.load(run_dir, precision=precision, quantized=quantized)
    results = []
    for name, table, truth in zip(files, tables, labels):
        result = metrics(truth, clf.logits(table.texts, batch_size), clf.labels, about.thresholds)
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
