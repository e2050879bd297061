"""Figures (matplotlib): the confusion matrix (single-label, or one 2x2 matrix per class) and reliability diagrams."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


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


def plot_confusion(matrix: list[list[int]], label_names: list[str], path: Path, title: str) -> None:
    save_figure(confusion_figure(matrix, label_names, title), path)  # the figure selects the Agg backend


def calibration_figure(record: dict[str, Any]):
    """Reliability diagrams of a calibration record (training/calibration.py): for validation and, where
    there is one, test, before and after, accuracy against mean confidence per bin
    (metrics.classification.reliability's tables), beside the diagonal that a calibrated model follows."""
    curves = {f"{split}, {when}": record[split][f"reliability_{when}"]
              for split in ("validation", "test") if split in record for when in ("before", "after")}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="calibrated")
    for (name, table), style in zip(curves.items(), ("o--", "o-", "s--", "s-")):
        kept = [i for i, n in enumerate(table["count"]) if n]
        ax.plot([table["confidence"][i] for i in kept], [table["accuracy"][i] for i in kept], style, label=name,
                markersize=4)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    t = record["temperature"]
    ax.set_title(f"{len(t)} per-class temperatures" if isinstance(t, list) else f"temperature {t:.3f}")
    fig.tight_layout()
    return fig


def save_figure(fig, path: Path) -> None:
    """Write a figure as PNG through a temporary name, so no reader sees half an image."""
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
