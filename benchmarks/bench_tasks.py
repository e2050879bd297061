"""Multi-label, imbalanced and text-pair tasks on real text (AG News), each against a TF-IDF baseline.

    python benchmarks/bench_tasks.py [--tasks multi_label,imbalance,pairs] [--keep runs/bench-tasks]

The 5,000 AG News items in ../shared are shuffled (seed 0) and cut into 4,000 training stories and 1,000 test
stories; every task builds its training data from the first and its test data from the second, so no story is
in both. All runs are the quickstart recipe (MiniLM-L6, LoRA on q/k/v, mean pooling) with the task's keys:

multi_label  Items of one story (half of them) or of two stories of different classes joined (the other half);
             the labels are the stories' classes. Tuned thresholds, best model by micro-F1. Baseline: one-vs-rest
             TF-IDF + logistic regression, threshold 0.5.
imbalance    The training stories cut to 1,000 / 300 / 150 / 100 per class (10:1); the test stories as they
             are (about 250 a class). loraclf with and without train.class_weights balanced (each with every
             --seeds), the baseline with and without class_weight="balanced". Macro-F1 on the test stories.
pairs        "Same topic?": two stories, label same when their classes are equal (half the pairs) else
             different; data.text_pair_column. Baseline: logistic regression on the TF-IDF vectors' product
             and absolute difference.

The multi-label and pair runs then go through evaluate, predict (a `loraclf predict` process), serve (in
process) and an ONNX export, and the numbers of each are printed beside training's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
AGNEWS_5K = ROOT.parent / "shared" / "data" / "agnews-5k" / "train.csv"
NAMES = ["World", "Sports", "Business", "Sci/Tech"]


def stories() -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    import csv

    if not AGNEWS_5K.is_file():
        raise SystemExit(f"needs {AGNEWS_5K} (../shared beside the checkout)")
    with AGNEWS_5K.open(encoding="utf-8", newline="") as handle:
        rows = [(r["text"], int(r["label"])) for r in csv.DictReader(handle)]
    order = np.random.default_rng(0).permutation(len(rows))
    return [rows[i] for i in order[:4000]], [rows[i] for i in order[4000:]]


def joined(pool: list[tuple[str, int]], seed: int) -> list[dict]:
    """Half the stories alone, half joined to the next unused story of another class."""
    rng, used, items = np.random.default_rng(seed), set(), []
    for i, (text, label) in enumerate(pool):
        if i in used:
            continue
        used.add(i)
        partner = next((j for j in range(i + 1, len(pool)) if j not in used and pool[j][1] != label), None)
        if rng.random() < 0.5 or partner is None:
            items.append({"text": text, "labels": [NAMES[label]]})
        else:
            used.add(partner)
            items.append({"text": f"{text} {pool[partner][0]}", "labels": sorted([NAMES[label], NAMES[pool[partner][1]]])})
    return items


def same_topic_pairs(pool: list[tuple[str, int]], count: int, seed: int) -> list[dict]:
    rng, items = np.random.default_rng(seed), []
    by_class = {c: [t for t, y in pool if y == c] for c in range(4)}
    for _ in range(count):
        text, label = pool[rng.integers(len(pool))]
        other = label if rng.random() < 0.5 else rng.choice([c for c in range(4) if c != label])
        items.append({"first": text, "second": by_class[other][rng.integers(len(by_class[other]))],
                      "label": "same" if other == label else "different"})
    return items


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def train_run(folder: Path, name: str, train_file: Path, test_file: Path, overrides: dict) -> dict:
    from loraclf.config.loading import load_config
    from loraclf.training.recipe import train

    config = load_config(ROOT / "configs" / "quickstart.yaml", {
        "data.train_file": str(train_file), "data.test_file": str(test_file), "data.test_size": 0,
        "data.label_names": None, "train.progress": False, "train.epochs": 3} | overrides)
    summary = train(config, folder / name, log=lambda _: None)
    print(f"{name}: test {json.dumps(summary['test'])}; {summary['train_samples_per_s']} samples/s, "
          f"{summary['train_seconds']:.0f} s", flush=True)
    return summary


def downstream(run_dir: Path, test_file: Path, request: dict, texts) -> dict:
    """evaluate, a `loraclf predict` process, serve and an ONNX export of a finished run, each checked against the
    run's own predictions."""
    from fastapi.testclient import TestClient

    from loraclf.config.schema import ServeConfig
    from loraclf.deploy import export
    from loraclf.deploy.serve import build_app
    from loraclf.inference.classifier import Classifier
    from loraclf.inference.evaluate import evaluate_files

    result = evaluate_files(run_dir, [str(test_file)])[0]
    clf = Classifier.load(run_dir)
    probs = clf.predict_proba(texts)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "loraclf.cli", "predict", str(run_dir), "--input", str(test_file),
                           "--output", str(run_dir / "predictions.jsonl")], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    written = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    key = "labels" if clf.multi_label else "label_name"
    with TestClient(build_app(clf, ServeConfig())) as client:
        served = client.post("/predict", json=request).json()["predictions"]
    onnx = export.export(run_dir, "onnx", run_dir.parent / f"{run_dir.name}-onnx", overwrite=True,
                         log=lambda _: None)
    exported = Classifier.load(onnx)
    fp32 = Classifier.load(run_dir, precision="fp32").predict_proba(texts)  # exports run in fp32; the run in bf16 here
    return {"evaluate": {k: result[k] for k in ("accuracy", "macro_f1", "micro_f1") if k in result},
            "predict_process_texts_per_s": round(len(written) / seconds, 1),
            "predict_agrees": [row[key] for row in written] == clf.decide(probs),
            "serve_agrees": [p.get("labels", p.get("label")) for p in served] == clf.decide(probs[:len(served)]),
            "onnx_max_prob_diff_vs_fp32_run": float(np.abs(exported.predict_proba(texts) - fp32).max()),
            "onnx_decisions_agree_with_fp32_run": exported.decide(exported.predict_proba(texts)) == clf.decide(fp32)}


def multi_label(folder: Path, train_pool, test_pool, seeds: list[int]) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.multiclass import OneVsRestClassifier

    train_rows, test_rows = joined(train_pool, 1), joined(test_pool, 2)
    train_file, test_file = write_jsonl(folder / "ml-train.jsonl", train_rows), write_jsonl(folder / "ml-test.jsonl", test_rows)
    print(f"multi_label: {len(train_rows)} training items ({sum(len(r['labels']) == 2 for r in train_rows)} with "
          f"two labels), {len(test_rows)} test items", flush=True)
    summary = train_run(folder, "multi_label", train_file, test_file, {
        "data.task": "multi_label", "data.label_column": "labels", "data.max_length": 256,
        "train.tune_thresholds": True, "train.metric_for_best": "micro_f1"})
    truth = np.array([[n in r["labels"] for n in NAMES] for r in train_rows + test_rows], dtype=int)
    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2)
    x_train = vectorizer.fit_transform([r["text"] for r in train_rows])
    baseline = OneVsRestClassifier(LogisticRegression(C=10, max_iter=2000)).fit(x_train, truth[:len(train_rows)])
    preds = baseline.predict(vectorizer.transform([r["text"] for r in test_rows]))
    y = truth[len(train_rows):]
    print(f"| multi_label | loraclf | micro-F1 {summary['test']['micro_f1']:.4f} | macro-F1 "
          f"{summary['test']['macro_f1']:.4f} | subset acc {summary['test']['accuracy']:.4f} |")
    print(f"| multi_label | TF-IDF + LR (one vs rest) | micro-F1 {f1_score(y, preds, average='micro'):.4f} | macro-F1 "
          f"{f1_score(y, preds, average='macro'):.4f} | subset acc {(preds == y).all(axis=1).mean():.4f} |")
    checks = downstream(folder / "multi_label", test_file, {"texts": [r["text"] for r in test_rows[:8]]},
                        [r["text"] for r in test_rows])
    print(f"multi_label downstream: {json.dumps(checks)}", flush=True)


def imbalance(folder: Path, train_pool, test_pool, seeds: list[int]) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score, recall_score

    keep = {0: 1000, 1: 300, 2: 150, 3: 100}
    rows = [(t, y) for y in range(4) for t in [t for t, c in train_pool if c == y][:keep[y]]]
    rows = [rows[i] for i in np.random.default_rng(3).permutation(len(rows))]
    train_file = write_jsonl(folder / "imb-train.jsonl", [{"text": t, "label": NAMES[y]} for t, y in rows])
    test_file = write_jsonl(folder / "imb-test.jsonl", [{"text": t, "label": NAMES[y]} for t, y in test_pool])
    print(f"imbalance: training counts {keep} (10:1), {len(test_pool)} test stories", flush=True)
    table = []
    for weights in ("none", "balanced"):
        scores = []
        for seed in seeds:
            name = f"imbalance-{weights}-{seed}"
            summary = train_run(folder, name, train_file, test_file, {
                "data.label_names": NAMES, "train.class_weights": weights, "train.metric_for_best": "macro_f1",
                "train.seed": seed})
            per_class = json.loads((folder / name / "test_metrics.json").read_text())["per_class"]
            scores.append((summary["test"]["macro_f1"], summary["test"]["accuracy"], per_class["Sci/Tech"]["recall"]))
        table.append((f"loraclf, class_weights {weights}, seeds {seeds}", *_mean_sd(scores)))
    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2)
    x_train = vectorizer.fit_transform([t for t, _ in rows])
    x_test, y_test = vectorizer.transform([t for t, _ in test_pool]), np.array([y for _, y in test_pool])
    for weight in (None, "balanced"):
        preds = LogisticRegression(C=10, max_iter=2000, class_weight=weight).fit(
            x_train, [y for _, y in rows]).predict(x_test)
        table.append((f"TF-IDF + LR, class_weight {weight}", f1_score(y_test, preds, average="macro"),
                      (preds == y_test).mean(), recall_score(y_test, preds, labels=[3], average="macro")))
    print("| imbalance | model | macro-F1 | accuracy | Sci/Tech (100 items) recall |")
    for name, *cells in table:
        print(f"| imbalance | {name} | " + " | ".join(c if isinstance(c, str) else f"{c:.4f}" for c in cells) + " |")


def _mean_sd(scores: list[tuple[float, ...]]) -> list[str]:
    """Each column's mean, with the standard deviation over seeds where there are several."""
    columns = np.array(scores)
    if len(columns) == 1:
        return [f"{v:.4f}" for v in columns[0]]
    return [f"{m:.4f} ± {sd:.4f}" for m, sd in zip(columns.mean(axis=0), columns.std(axis=0, ddof=1))]


def pairs(folder: Path, train_pool, test_pool, seeds: list[int]) -> None:
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    train_rows, test_rows = same_topic_pairs(train_pool, 2000, 4), same_topic_pairs(test_pool, 600, 5)
    train_file, test_file = write_jsonl(folder / "pairs-train.jsonl", train_rows), write_jsonl(folder / "pairs-test.jsonl", test_rows)
    print(f"pairs: {len(train_rows)} training pairs, {len(test_rows)} test pairs (same topic: half)", flush=True)
    summary = train_run(folder, "pairs", train_file, test_file, {
        "data.text_column": "first", "data.text_pair_column": "second", "data.max_length": 256})
    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2).fit([t for t, _ in train_pool])

    def features(rows):
        a, b = vectorizer.transform([r["first"] for r in rows]), vectorizer.transform([r["second"] for r in rows])
        return sp.hstack([a.multiply(b), abs(a - b)]).tocsr()

    def cosine(rows):  # TF-IDF rows are unit vectors: the dot product is the cosine
        a, b = vectorizer.transform([r["first"] for r in rows]), vectorizer.transform([r["second"] for r in rows])
        return np.asarray(a.multiply(b).sum(axis=1)).ravel()

    same_train = np.array([r["label"] == "same" for r in train_rows])
    same_test = np.array([r["label"] == "same" for r in test_rows])
    baseline = LogisticRegression(C=10, max_iter=2000).fit(features(train_rows), [r["label"] for r in train_rows])
    accuracy = (baseline.predict(features(test_rows)) == np.array([r["label"] for r in test_rows])).mean()
    # The cosine threshold that best separates the training pairs.
    scores = cosine(train_rows)
    cut = max(np.unique(scores), key=lambda t: ((scores >= t) == same_train).mean())
    cosine_accuracy = ((cosine(test_rows) >= cut) == same_test).mean()
    print(f"| pairs | loraclf | accuracy {summary['test']['accuracy']:.4f} | macro-F1 {summary['test']['macro_f1']:.4f} |")
    print(f"| pairs | TF-IDF product + difference + LR | accuracy {accuracy:.4f} | |")
    print(f"| pairs | TF-IDF cosine, threshold fit on the training pairs | accuracy {cosine_accuracy:.4f} | |")
    checks = downstream(folder / "pairs", test_file, {"pairs": [[r["first"], r["second"]] for r in test_rows[:8]]},
                        [(r["first"], r["second"]) for r in test_rows])
    print(f"pairs downstream: {json.dumps(checks)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="multi_label,imbalance,pairs")
    parser.add_argument("--keep", help="write the runs here instead of a temporary folder")
    parser.add_argument("--seeds", default="42", help="train.seed of the imbalance arms, comma-separated")
    args = parser.parse_args()

    import warnings

    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    train_pool, test_pool = stories()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for task in args.tasks.split(","):
            {"multi_label": multi_label, "imbalance": imbalance, "pairs": pairs}[task](
                folder, train_pool, test_pool, [int(seed) for seed in args.seeds.split(",")])


if __name__ == "__main__":
    main()
