"""Long documents: truncation against windows, and three ways to join a document's windows, on one run.

    python benchmarks/long_texts.py runs/quickstart [--docs 400] [--seed 0]

Documents are built from the run's own held-out test stories (never trained on), so every word is real:
  digest    3-6 stories of the document's class, one after another
  lead-off  one story of another class first, then 3-5 of the document's class (the first max_length tokens
            are mostly the wrong story)
Each document's windows are predicted once; truncation is its first window. Aggregations: mean of the windows'
logits (what loraclf does), mean of their probabilities, and the single most confident window.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import yaml

from loraclf.config.loading import load_config
from loraclf.config.schema import window_stride
from loraclf.data.splits import load_splits
from loraclf.inference.classifier import Classifier
from loraclf.metrics.classification import softmax
from loraclf.model.logits import predict_logits


def documents(texts: list[str], labels: np.ndarray, count: int, kind: str, rng) -> tuple[list[str], np.ndarray]:
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    docs, doc_labels = [], []
    for _ in range(count):
        label = int(rng.choice(list(by_class)))
        own = list(rng.choice(by_class[label], size=int(rng.integers(3, 7 if kind == "digest" else 6)),
                              replace=False))
        if kind == "lead-off":
            other = int(rng.choice([c for c in by_class if c != label]))
            own = [int(rng.choice(by_class[other]))] + own
        docs.append(" ".join(texts[i] for i in own))
        doc_labels.append(label)
    return docs, np.array(doc_labels)


def scores(classifier: Classifier, docs: list[str], labels: np.ndarray) -> dict[str, float]:
    tokens = classifier.tokens(docs)
    logits = predict_logits(classifier.model, tokens, 32, classifier.tokenizer.pad_token_id, classifier.device,
                            classifier.dtype)
    owners = tokens.documents
    first = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
    probs = softmax(logits)
    out = {"truncate": logits[first].argmax(1)}
    out["windows: mean logits"] = np.array([logits[owners == d].mean(0).argmax() for d in range(len(docs))])
    out["windows: mean probabilities"] = np.array([probs[owners == d].mean(0).argmax() for d in range(len(docs))])
    out["windows: most confident"] = np.array([probs[owners == d][probs[owners == d].max(1).argmax()].argmax()
                                              for d in range(len(docs))])
    assert (out["windows: mean logits"] == classifier.logits(docs).argmax(1)).all()  # what loraclf predicts
    return {name: float((pred == labels).mean()) for name, pred in out.items()} | {
        "windows per document": len(tokens) / len(docs), "documents cut": tokens.cut / len(docs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--docs", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = load_config(tree=yaml.safe_load(open(f"{args.run}/config.yaml", encoding="utf-8")))
    classifier = Classifier.load(args.run, long_texts="windows")
    splits = load_splits(config.data, classifier.tokenizer, log=lambda _: None)
    if splits.test is None:
        sys.exit("the run has no held-out test split to build documents from")
    texts, labels = splits.test.texts, splits.test.labels
    stride = window_stride(classifier.description.window_stride, config.data.max_length)
    print(f"{args.run}: max_length {config.data.max_length}, windows sharing {stride} tokens; {args.docs} documents "
          f"of each kind from {len(texts)} test stories")
    rows = {}
    for kind in ("digest", "lead-off"):
        docs, doc_labels = documents(texts, labels, args.docs, kind, np.random.default_rng(args.seed))
        rows[kind] = scores(classifier, docs, doc_labels)
    names = list(rows["digest"])
    print("| documents | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for kind, row in rows.items():
        counts = ("windows per document", "documents cut")
        print(f"| {kind} | " + " | ".join(f"{row[n]:.2f}" if n in counts else f"{row[n]:.4f}" for n in names) + " |")


if __name__ == "__main__":
    main()
