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


def plot_confusion(matrix: list[list[int]], label_names: list[str], path: Path, title: str) -> None:
    fig = confusion_figure(matrix, label_names, title)  # selects the Agg backend before pyplot loads
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
