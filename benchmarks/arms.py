"""Arms of a recipe side by side, same seeds, same seeded split: which setting should a config carry?

    python benchmarks/arms.py --seeds 42,43,44 --arm plain= --arm ema="--train.ema 0.99"
    python benchmarks/arms.py --arm cls="--model.pooling cls" --arm mean="--model.pooling mean"
    python benchmarks/arms.py --config configs/competition.yaml --after-labelled \\
        --shared "--data.dataset null --data.train_file ../shared/data/agnews-5k/train.csv --data.test_size 1000" \\
        --arm none= --arm self_training="--adapt.method self_training" --arm consistency="--adapt.method consistency"

Each run trains `--config` with `--shared` and the arm's overrides and `--train.seed SEED`, then is scored on its
held-out test items and on ../shared/data/competition/shifted_dev.csv (150 LLM-written texts labelled by
reading). With `--after-labelled`, each seed's labelled training runs once (with `--adapt.method none`; scored
as the arm `labelled`) and each arm continues a copy of it (`train --resume` with the arm's settings): adaptation
arms that differ only after the labelled stage share it, as an uninterrupted run would have trained it. An arm
without overrides continues with the config's own `adapt:` settings. Runs are appended to `--log` (JSON lines) as
they finish; a restarted command skips the runs it finds there, and with `--work DIR` it also reuses the labelled
runs kept there. Prints a line per run and a
markdown table of mean and standard deviation per arm; a difference inside the seed spread is none.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIFTED = ROOT.parent / "shared" / "data" / "competition" / "shifted_dev.csv"


def parse_arms(specs: list[str]) -> dict[str, list[str]]:
    arms = {}
    for spec in specs:
        name, _, overrides = spec.partition("=")
        arms[name] = shlex.split(overrides)
    return arms


def score(run: Path, summary: dict, seconds: float) -> dict:
    from loraclf.inference.evaluate import evaluate_files

    shifted = evaluate_files(run, [str(SHIFTED)])[0]["accuracy"] if SHIFTED.is_file() else None
    test = summary.get("test") or {}
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    curve = [[e["step"], e.get("trained_val_accuracy", e.get("val_accuracy")), e.get("ema_val_accuracy")]
             for e in evals]
    return {"val": summary["best"].get("val_accuracy"), "weights": summary["best"].get("weights", "trained"),
            "test": test.get("accuracy"), "shifted": shifted, "seconds": round(seconds, 1),
            "curve": curve}  # each validation: step, trained weights' accuracy, the average's (train.ema)


def run_arm(config_path: str, overrides: list[str], out: Path, resume_from: Path | None = None) -> dict:
    from loraclf.config.loading import load_config, parse_overrides, save_config
    from loraclf.training.recipe import train

    config = load_config(config_path, parse_overrides(overrides))
    start = time.perf_counter()
    shutil.rmtree(out, ignore_errors=True)  # a run a killed command left half done
    if resume_from is not None:
        shutil.copytree(resume_from, out)
        save_config(config, out / "config.yaml")
    summary = train(config, out, resume=resume_from is not None, log=lambda _: None)
    return score(out, summary, time.perf_counter() - start)


def record(done: list[dict], log: Path, result: dict) -> None:
    done.append(result)
    with log.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(result) + "\n")
    print(json.dumps(result), file=sys.stderr, flush=True)


def table(results: list[dict], arms: dict[str, list[str]]) -> None:
    print("| arm | held-out accuracy, mean ± sd | shifted_dev accuracy, mean ± sd | per seed (held-out / shifted) |")
    print("|---|---|---|---|")
    for arm in arms:
        runs = [r for r in results if r["arm"] == arm]
        if not runs:
            continue
        cells = []
        for key in ("test", "shifted"):
            values = [r[key] for r in runs if r[key] is not None]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.4f} ± {sd:.4f}" if values else "")
        each = ", ".join(f"{r['seed']}: {r['test'] or float('nan'):.4f} / {r['shifted'] or float('nan'):.4f}"
                         for r in runs)
        print(f"| {arm} | {cells[0]} | {cells[1]} | {each} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--arm", action="append", required=True, help='NAME="--key value ..." (may be empty)')
    parser.add_argument("--shared", default="", help="overrides every arm gets")
    parser.add_argument("--after-labelled", action="store_true", help="arms continue one labelled run per seed")
    parser.add_argument("--log", default=None, help="JSON lines of finished runs (default: a temporary file)")
    parser.add_argument("--work", default=None, help="where runs are written and kept (default: a temporary folder)")
    args = parser.parse_args()

    import warnings

    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    arms, shared = parse_arms(args.arm), ["--train.progress", "false", *shlex.split(args.shared)]
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(args.work or scratch)
        log = Path(args.log or tmp / "arms.jsonl")
        done = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
        for seed in [int(s) for s in args.seeds.split(",")]:
            seeded = [*shared, "--train.seed", str(seed)]
            labelled = tmp / f"labelled-{seed}" if args.after_labelled else None
            for arm, overrides in arms.items():
                if any(r["seed"] == seed and r["arm"] == arm for r in done):
                    continue
                if labelled is not None and not (labelled / "metrics.json").is_file():
                    shutil.rmtree(labelled, ignore_errors=True)
                    first = run_arm(args.config, [*seeded, "--adapt.method", "none"], labelled)
                    record(done, log, first | {"arm": "labelled", "seed": seed, "overrides": "--adapt.method none"})
                result = run_arm(args.config, [*seeded, *overrides], tmp / f"{arm}-{seed}", labelled)
                record(done, log, result | {"arm": arm, "seed": seed, "overrides": " ".join(overrides)})
    print(f"\n{Path(args.config).name}, seeds {args.seeds}, shared overrides: {' '.join(shared)}\n")
    table(done, {"labelled": [], **arms} if args.after_labelled else arms)


if __name__ == "__main__":
    main()
