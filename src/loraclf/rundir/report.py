"""report.html: one self-contained page on how a run went (plots embedded, no network, no files beside it).

Learning curves, the test confusion matrix, per-class scores, the most confident
mistakes with their texts, the parameter breakdown, timings and throughput, and
the resolved config. Written at the end of every training run, and by `loraclf report`.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from loraclf.errors import UserError
from loraclf.metrics.plots import calibration_figure, confusion_figure
from loraclf.rundir import atomic, layout

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 70rem; padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2rem;
  border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .5rem 0; } td, th { padding: .25rem .6rem; border-bottom: 1px solid #eee;
  text-align: left; vertical-align: top; } th { background: #f6f6f6; } td.num { text-align: right;
  font-variant-numeric: tabular-nums; }
.cards { display: flex; gap: 1rem; flex-wrap: wrap; } .card { background: #f6f8fa; border-radius: 6px;
  padding: .6rem 1rem; } .card b { display: block; font-size: 1.3rem; }
img { max-width: 100%; } pre { background: #f6f8fa; padding: .8rem; overflow-x: auto; font-size: 13px; }
.muted { color: #777; } td.text { max-width: 40rem; }
"""

# Marks on <body> how many embedded plots the browser decoded, so a headless check can tell.
IMAGE_CHECK = """
window.addEventListener("load", function () {
  var images = Array.from(document.images);
  var ok = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.dataset.imagesLoaded = ok + "/" + images.length;
});
"""


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UserError(f"run folder {path.parent}: unreadable {path.name} ({exc})") from None


def _events(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curves_png(events: list[dict[str, Any]]) -> str | None:
    train = [e for e in events if e.get("event") == "train"]
    evals = [e for e in events if e.get("event") == "eval"]
    if not train and not evals:
        return None
    plt = _pyplot()
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 3.8))
    if train:
        loss_ax.plot([e["step"] for e in train], [e["loss"] for e in train], label="train loss", color="#4c72b0")
    if evals:
        steps = [e["step"] for e in evals]
        loss_ax.plot(steps, [e["val_loss"] for e in evals], "o-", label="validation loss", color="#dd8452")
        acc_ax.plot(steps, [e["val_accuracy"] for e in evals], "o-", label="validation accuracy", color="#55a868")
        acc_ax.plot(steps, [e["val_macro_f1"] for e in evals], "s--", label="validation macro-F1", color="#8172b3")
    for ax, title in ((loss_ax, "loss"), (acc_ax, "validation accuracy and macro-F1")):
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return _png(fig)


def _joined(value, separator: str = ", "):
    """A multi-label row's label list or a text pair, as one cell."""
    return separator.join(value) if isinstance(value, (list, tuple)) else value


def confusion_png(matrix: list[list[int]], label_names: list[str]) -> str:
    return _png(confusion_figure(matrix, label_names, "test"))


def _table(header: list[str], rows: list[list[Any]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(
        f'<td class="{"num" if i in numeric else "text"}">{html.escape(str(v))}</td>' for i, v in enumerate(r))
        + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _card(label: str, value: str) -> str:
    return f'<div class="card">{html.escape(label)}<b>{html.escape(value)}</b></div>'


def render(run_dir: Path) -> str:
    """The report's HTML for the run folder `run_dir`."""
    config_text = (run_dir / layout.CONFIG).read_text(encoding="utf-8")
    summary = _read_json(run_dir / layout.SUMMARY) or {}
    test = _read_json(run_dir / layout.TEST_METRICS)
    budget = _read_json(run_dir / layout.BUDGET)
    events = _events(run_dir / layout.METRICS_LOG)
    best = summary.get("best") or {}

    cards = []
    if best:
        cards += [_card("best validation accuracy", f"{best['val_accuracy']:.4f}"),
                  _card("at step", str(best["step"]))]
    if test:
        cards += [_card("test accuracy", f"{test['accuracy']:.4f}"), _card("test macro-F1", f"{test['macro_f1']:.4f}")]
    if budget:
        cards.append(_card("trainable parameters", f"{budget['trainable']:,}"))
    if summary.get("train_samples_per_s"):
        cards.append(_card("training samples/s", f"{summary['train_samples_per_s']:,}"))

    parts = [f"<h1>loraclf run: {html.escape(run_dir.resolve().name)}</h1>",
             f'<p class="muted">{html.escape(str(run_dir.resolve()))}</p>',
             f'<div class="cards">{"".join(cards)}</div>', "<h2>Learning curves</h2>"]
    curves = curves_png(events)
    parts.append(f'<img alt="learning curves" src="data:image/png;base64,{curves}">' if curves
                 else '<p class="muted">no training events recorded</p>')

    parts += data_section(summary.get("bad_rows")) + test_section(test)
    parts += calibration_section(summary.get("calibration")) + evaluations_section(run_dir)
    if budget:
        parts.append("<h2>Parameters</h2>")
        parts.append(_table(["part", "count"], [
            ["trainable", f"{budget['trainable']:,}"], ["adapter (LoRA etc.)", f"{budget['lora']:,}"],
            ["head", f"{budget['head']:,}"], ["other trainable", f"{budget['other']:,}"],
            ["frozen", f"{budget['frozen']:,}"], ["budget", f"{budget['max_trainable']:,}"]], {1}))

    timing_keys = [("train_items", "training items"), ("val_items", "validation items"), ("steps", "steps"),
                   ("train_seconds", "training seconds"), ("eval_seconds", "validation seconds"),
                   ("total_seconds", "total seconds"), ("train_samples_per_s", "training samples/s"),
                   ("train_tokens_per_s", "training tokens/s"), ("device", "device"), ("processes", "processes"),
                   ("precision", "precision"), ("quantization", "quantization"),
                   ("base_weight_bytes", "base weights (bytes)"), ("peak_memory_mb", "peak memory (MB)")]
    rows = [[label, summary[key]] for key, label in timing_keys if summary.get(key) is not None]
    if test and test.get("texts_per_s"):
        rows.append(["test prediction texts/s", test["texts_per_s"]])
    if rows:
        parts.append("<h2>Timings and throughput</h2>")
        parts.append(_table(["", ""], rows, {1}))
    parts.append(f"<h2>Resolved config</h2><pre>{html.escape(config_text)}</pre>")
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>loraclf report: "
            f"{html.escape(run_dir.resolve().name)}</title><style>{STYLE}</style></head><body>{''.join(parts)}"
            f"<script>{IMAGE_CHECK}</script></body></html>\n")


# Up to this many classes the report shows the whole confusion matrix; past it, the most confused pairs.
MATRIX_CLASSES = 20


def test_section(test: dict[str, Any] | None) -> list[str]:
    """The confusion matrix (or its most confused pairs, at many classes), per-class scores worst first, and the
    most confident mistakes."""
    parts = ["<h2>Test set</h2>"]
    if not test:
        return parts + ['<p class="muted">this run had no test set (set data.test_file or data.test_size)</p>']
    pairs = test.get("confused_pairs")
    if len(test["labels"]) <= MATRIX_CLASSES or pairs is None:
        parts.append(f'<img alt="confusion matrix" src="data:image/png;base64,'
                     f'{confusion_png(test["confusion_matrix"], test["labels"])}">')
    else:
        parts.append(f"<h3>Most confused pairs ({len(test['labels'])} classes; the full matrix is in "
                     f"{layout.TEST_METRICS})</h3>")
        parts.append(_table(["true", "predicted", "texts"], [[p["label"], p["predicted"], p["count"]] for p in pairs],
                            {2}))
    by_f1 = sorted(test["per_class"].items(), key=lambda item: (item[1]["f1"], item[0]))
    rows = [[name, f"{c['precision']:.4f}", f"{c['recall']:.4f}", f"{c['f1']:.4f}", c["support"]]
            + ([f"{c['threshold']:g}"] if "threshold" in c else []) for name, c in by_f1]
    thresholds = ["threshold"] if "thresholds" in test else []  # multi_label
    parts.append("<h3>Per class, lowest F1 first</h3>")
    parts.append(_table(["class", "precision", "recall", "F1", "support", *thresholds], rows, {1, 2, 3, 4, 5}))
    mistakes = test.get("confident_mistakes") or []
    parts.append(f"<h2>Most confident mistakes ({len(mistakes)})</h2>")
    if not mistakes:
        return parts + ['<p class="muted">none</p>']
    return parts + [_table(["#", "true", "predicted", "confidence", "text"],
                           [[m["index"], _joined(m["label"]), _joined(m["predicted"]), f"{m['confidence']:.3f}",
                             _joined(m["text"], " || ")] for m in mistakes], {0, 3})]


def data_section(bad_rows: list[dict[str, Any]] | None) -> list[str]:
    """The bad rows data.on_bad_row skip dropped: how many per source, and the first ones' reasons."""
    if not bad_rows:
        return []
    rows = [[d["source"], f"{d['count']:,}", "; ".join(d["first"])] for d in bad_rows]
    return ["<h2>Bad rows skipped</h2>", _table(["source", "rows", "the first ones"], rows, {1})]


def calibration_section(record: dict[str, Any] | None) -> list[str]:
    """train.calibrate: the temperature, ECE before and after per split, and the reliability diagram."""
    if not record:
        return []
    splits = [split for split in ("validation", "test") if split in record]
    rows = [[split, f"{record[split]['ece_before']:.4f}", f"{record[split]['ece_after']:.4f}"] for split in splits]
    figure = _png(calibration_figure(record))
    t = record["temperature"]
    title = f"{len(t)} per-class temperatures, {min(t):.3f}-{max(t):.3f}" if isinstance(t, list) else \
        f"temperature {t:.3f}"
    ece = "mean per-class ECE" if isinstance(t, list) else "ECE"
    return [f"<h2>Calibration ({title})</h2>",
            _table(["split", f"{ece} before", f"{ece} after"], rows, {1, 2}),
            f'<img alt="reliability diagram" src="data:image/png;base64,{figure}">']


def evaluations_section(run_dir: Path) -> list[str]:
    """What `loraclf evaluate` wrote into the run: one row per labelled file."""
    rows = []
    for path in sorted(run_dir.glob(f"{layout.EVAL_PREFIX}*.json")):
        result = _read_json(path) or {}
        if "accuracy" in result:
            rows.append([result.get("data", path.name), f"{result['accuracy']:.4f}",
                         f"{result.get('macro_f1', float('nan')):.4f}", result.get("count", "")])
    if not rows:
        return []
    return ["<h2>Evaluations</h2>", _table(["data", "accuracy", "macro-F1", "items"], rows, {1, 2, 3})]


def write(run_dir: str | Path, output: str | Path | None = None) -> Path:
    path = Path(run_dir)
    layout.check_folder(path, (layout.CONFIG,), "a loraclf run folder")
    target = Path(output) if output else path / layout.REPORT
    atomic.write_text(target, render(path))
    return target
