"""A recipe's choices on several data sets side by side: arms x data sets x seeds, with TF-IDF + LR beside them.

    python benchmarks/bench_datasets.py --seeds 42,43,44 --arm shipped= --arm mean="--model.pooling mean"
    python benchmarks/bench_datasets.py --datasets banking77 --seeds 42 --arm e6="--train.epochs 6"
    python benchmarks/bench_datasets.py --table --log runs.jsonl       # the table of the runs logged so far

Each data set is a file of ../shared trained with `--config` (default: the quickstart recipe), `--shared`, the data
set's own overrides (its file, `--data.test_size 1000`: a held-out test part, seeded by data.split_seed and so the
same for every arm and seed) and the arm's overrides, then scored on that held-out part. TF-IDF + logistic
regression is trained on the same file minus the same held-out part and scored on it. Runs are appended to `--log`
(JSON lines) as they finish; a restarted command skips the runs it finds there. Prints one markdown table: per data
set and arm, mean ± sd over the seeds of held-out accuracy and macro-F1, and the mean training time.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
HELD_OUT = 1000

# name -> the overrides that point the recipe at the data set (the quickstart's own data is AG News 5k).
DATASETS = {
    "agnews5k": ["--data.train_file", str(SHARED / "agnews-5k" / "train.csv")],
    "banking77": ["--data.train_file", str(SHARED / "banking77" / "train.csv"), "--data.on_bad_row", "skip"],
    "sst2-10k": ["--data.train_file", "{sst2_10k}"],
}


def sst2_sample(folder: Path) -> str:
    """The first 10,000 rows of the shared SST-2 train file, as the issue's bar trains on."""
    lines = (SHARED / "sst2" / "train.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    path = folder / "sst2-10k.csv"
    path.write_text("".join(lines[:10_001]), encoding="utf-8")
    return str(path)


def held_out(config) -> tuple[list, list, list, list]:
    """(train texts, train labels, test texts, test labels): loraclf's own seeded test split of the file."""
    from loraclf.data.splits import read_labelled, split

    rest, test = split(read_labelled(config.data).train, config.data.test_size, config.data.split_seed, "test part")
    return rest.texts, rest.labels, test.texts, test.labels


def tfidf(config) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline

    train_x, train_y, test_x, test_y = held_out(config)
    start = time.perf_counter()
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True),
                          LogisticRegression(C=10, max_iter=2000))
    model.fit(train_x, train_y)
    predicted = model.predict(test_x)
    return {"test": accuracy_score(test_y, predicted), "macro_f1": f1_score(test_y, predicted, average="macro"),
            "seconds": round(time.perf_counter() - start, 1)}


def run(config, out: Path) -> dict:
    from loraclf.training.recipe import train

    start = time.perf_counter()
    summary = train(config, out, overwrite=True, log=lambda _: None)
    test = summary["test"]
    return {"test": test["accuracy"], "macro_f1": test["macro_f1"], "val": summary["best"].get("val_accuracy"),
            "seconds": round(time.perf_counter() - start, 1)}


def table(results: list[dict]) -> None:
    print("| data set | arm | held-out accuracy | macro-F1 | seconds | per seed |")
    print("|---|---|---|---|---|---|")
    keys = list(dict.fromkeys((r["dataset"], r["arm"]) for r in results))
    for dataset, arm in sorted(keys, key=lambda k: (list(DATASETS).index(k[0]), k[1] != "tfidf+lr")):
        runs = [r for r in results if r["dataset"] == dataset and r["arm"] == arm]
        cells = []
        for key in ("test", "macro_f1"):
            values = [r[key] for r in runs]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.4f} ± {sd:.4f}")
        seconds = statistics.mean(r["seconds"] for r in runs)
        each = ", ".join(f"{r['seed']}: {r['test']:.4f}" for r in runs)
        print(f"| {dataset} | {arm} | {cells[0]} | {cells[1]} | {seconds:.0f} | {each} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="quickstart", help="a shipped recipe's name or a YAML path")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--arm", action="append", default=[], help='NAME="--key value ..." (may be empty)')
    parser.add_argument("--shared", default="", help="overrides every arm gets")
    parser.add_argument("--log", default=None, help="JSON lines of finished runs (default: a temporary file)")
    parser.add_argument("--table", action="store_true", help="print the table of the runs in --log, run nothing")
    args = parser.parse_args()
    if args.table:
        table([json.loads(line) for line in Path(args.log).read_text().splitlines()])
        return
    if not args.arm:
        parser.error("give at least one --arm (or --table --log FILE)")

    import warnings

    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    from loraclf.config.loading import load_config, parse_overrides

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    arms = {name: shlex.split(o) for name, _, o in (spec.partition("=") for spec in args.arm)}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        log = Path(args.log or tmp / "datasets.jsonl")
        done = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
        sample = sst2_sample(tmp)

        def finished(result: dict) -> None:
            done.append(result)
            with log.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(result) + "\n")
            print(json.dumps(result), file=sys.stderr, flush=True)

        for seed in [int(s) for s in args.seeds.split(",")]:
            for dataset in args.datasets.split(","):
                data = [o.format(sst2_10k=sample) for o in DATASETS[dataset]]
                common = ["--train.progress", "false", *data, "--data.test_size", str(HELD_OUT),
                          *shlex.split(args.shared), "--train.seed", str(seed)]
                if not any(r["dataset"] == dataset and r["arm"] == "tfidf+lr" for r in done):
                    finished(tfidf(load_config(args.config, parse_overrides(common))) |
                             {"dataset": dataset, "arm": "tfidf+lr", "seed": seed})
                for arm, overrides in arms.items():
                    if any(r["dataset"] == dataset and r["arm"] == arm and r["seed"] == seed for r in done):
                        continue
                    config = load_config(args.config, parse_overrides([*common, *overrides]))
                    finished(run(config, tmp / f"{dataset}-{arm}-{seed}") |
                             {"dataset": dataset, "arm": arm, "seed": seed, "overrides": " ".join(overrides)})
    print(f"\n{args.config}, seeds {args.seeds}, shared overrides: {args.shared}\n")
    table(done)


if __name__ == "__main__":
    main()
