"""First token or mean over the tokens: which pooling should a config default to? Both arms, same seeds.

    python benchmarks/pooling.py                                  # quickstart (MiniLM), seeds 42,43,44
    python benchmarks/pooling.py --config configs/base.yaml --train-items 1500 --epochs 1 \
        --overrides --data.test_size 1000                          # MPNet-base on a subset

Every arm trains the given recipe with the same seeded train/validation/test split; only
`model.pooling` and `train.seed` change. Each run is scored on its held-out test items and on
../shared/data/competition/shifted_dev.csv (150 LLM-written texts labelled by reading). Prints one
line per run and a markdown table of mean and standard deviation per arm; a default should move
only when one arm wins by more than the seed spread.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIFTED = ROOT.parent / "shared" / "data" / "competition" / "shifted_dev.csv"


def subset(train_file: str, items: int, folder: Path) -> str:
    """The first `items` rows of a CSV, written to `folder`: a smaller run of the same data."""
    import pandas as pd

    path = folder / "subset.csv"
    pd.read_csv(train_file).head(items).to_csv(path, index=False)
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--epochs", type=int, default=None, help="default: the config's")
    parser.add_argument("--train-items", type=int, default=None, help="train on the first N rows only")
    parser.add_argument("--overrides", nargs=argparse.REMAINDER, default=[])
    args = parser.parse_args()

    import warnings

    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    from loraclf.config.loading import load_config, parse_overrides
    from loraclf.inference.evaluate import evaluate_files
    from loraclf.training.recipe import train

    extra = ["--train.progress", "false", *args.overrides]
    if args.epochs:
        extra += ["--train.epochs", str(args.epochs)]
    seeds = [int(s) for s in args.seeds.split(",")]
    scores: dict[str, list[tuple[float, float]]] = {"cls": [], "mean": []}
    with tempfile.TemporaryDirectory() as tmp:
        if args.train_items:
            base = load_config(args.config, parse_overrides(extra))
            extra += ["--data.train_file", subset(base.data.train_file, args.train_items, Path(tmp))]
        for seed in seeds:
            for pooling in scores:
                config = load_config(args.config, parse_overrides(
                    [*extra, "--model.pooling", pooling, "--train.seed", str(seed)]))
                run = Path(tmp) / f"{pooling}-{seed}"
                start = time.perf_counter()
                summary = train(config, run, log=lambda _: None)
                seconds = time.perf_counter() - start
                shifted = evaluate_files(run, [str(SHIFTED)])[0]["accuracy"] if SHIFTED.is_file() else float("nan")
                scores[pooling].append((summary["test"]["accuracy"], shifted))
                print(f"{pooling} seed {seed}: held-out {scores[pooling][-1][0]:.4f}, shifted_dev {shifted:.4f}, "
                      f"{seconds:.0f} s", file=sys.stderr, flush=True)
    print(f"\n{Path(args.config).name}, seeds {args.seeds}, train items {args.train_items or 'all'}, "
          f"overrides {' '.join(extra)}\n")
    print("| pooling | held-out accuracy, mean ± sd | shifted_dev accuracy, mean ± sd | per seed (held-out / shifted) |")
    print("|---|---|---|---|")
    for pooling, runs in scores.items():
        held, shift = [r[0] for r in runs], [r[1] for r in runs]
        sd = statistics.stdev if len(runs) > 1 else (lambda _: 0.0)
        each = ", ".join(f"{h:.4f} / {s:.4f}" for h, s in runs)
        print(f"| {pooling} | {statistics.mean(held):.4f} ± {sd(held):.4f} | "
              f"{statistics.mean(shift):.4f} ± {sd(shift):.4f} | {each} |")


if __name__ == "__main__":
    main()
