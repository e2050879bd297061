"""Files of any size through `loraclf predict`: peak memory and texts/s against N, before and after side by side;
kill -9 and --resume; the Ray engine against the local one; a 1,000,000-row training file.

    python benchmarks/bench_corpus.py --before-src /tmp/old/src           # tiny model, N = 10k, 100k, 1M
    python benchmarks/bench_corpus.py --run runs/quickstart --sizes 10000 --skip resume,ray,train

Each command runs as its own process (peak RSS is that process's own, from wait4). The corpus repeats the 5,000
real AG News texts of ../shared with ids doc-0, doc-1, ...; `--before-src` runs the same command on another
checkout's src (e.g. `git worktree add /tmp/old <commit>`), up to `--before-max` rows. Without `--run` a tiny random
RoBERTa (hidden 32, 2 layers, the real tokenizer) is trained for one epoch on the 5,000 texts first.
"""

from __future__ import annotations

import argparse
import csv
import filecmp
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TEXTS = SHARED / "data" / "agnews-5k" / "train.csv"


def run(command: list[str], src: Path | None = None, kill_when=None) -> dict:
    """Seconds and peak RSS (MB) of `python -m loraclf.cli COMMAND`; `kill_when()` true: SIGKILL it."""
    env = os.environ | {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "loraclf.cli", *command], env=env, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while kill_when is not None and process.poll() is None:
        if kill_when():
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.2)
    _, status, usage = os.wait4(process.pid, 0)
    err = process.stderr.read().decode()
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, -9):
        sys.exit(f"failed ({code}): {' '.join(command)}\n{err}")
    return {"seconds": time.perf_counter() - started, "peak_mb": usage.ru_maxrss / 1024, "code": code, "stderr": err}


def corpus(work: Path, rows: int) -> Path:
    path = work / f"corpus-{rows}.csv"
    if not path.exists():
        texts = [r["text"] for r in csv.DictReader(TEXTS.open(encoding="utf-8", newline=""))]
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "text"])
            writer.writerows([f"doc-{i}", texts[i % len(texts)]] for i in range(rows))
    return path


def tiny_run(work: Path, src: Path | None) -> Path:
    """A tiny random RoBERTa trained one epoch, by `src`'s loraclf when given (an older loraclf cannot read the
    config keys a newer one writes; a newer one reads an older run)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import ROBERTA, tiny_roberta_config

    model = work / "tiny-model"
    model.mkdir(parents=True, exist_ok=True)
    tiny_roberta_config().save_pretrained(model)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(ROBERTA / name, model / name)
    out = work / "tiny-run"
    run(["train", "--config", str((src.parent if src else ROOT) / "configs" / "quickstart.yaml"),
         "--model.name_or_path", str(model), "--model.init", "random", "--train.epochs", "1", "--output-dir", str(out),
         "--overwrite"], src)
    return out


def sizes_table(args, run_dir: Path, work: Path) -> dict[int, tuple[Path, float]]:
    """N against seconds and peak memory; returns each N's output and seconds (this checkout)."""
    outputs = {}
    print("| N | code | seconds | texts/s | peak RSS MB |\n|---|---|---|---|---|")
    for n in args.sizes:
        source = corpus(work, n)
        arms = [("after", None)] + ([("before", args.before_src)] if args.before_src and n <= args.before_max else [])
        for name, src in arms:
            out = work / f"{name}-{n}.csv"
            extra = ["--overwrite"] if name == "after" else []
            r = run(["predict", str(run_dir), "--input", str(source), "--output", str(out), *extra], src)
            print(f"| {n:,} | {name} | {r['seconds']:.1f} | {n / r['seconds']:,.0f} | {r['peak_mb']:,.0f} |",
                  flush=True)
            if name == "after":
                outputs[n] = out, r["seconds"]
    return outputs


def first_rows_alone(run_dir: Path, work: Path, whole: Path, rows: int = 2000) -> None:
    out = work / f"first-{rows}.csv"
    run(["predict", str(run_dir), "--input", str(corpus(work, rows)), "--output", str(out), "--overwrite"])
    with whole.open(encoding="utf-8", newline="") as handle:
        ids = [row["id"] for row in csv.DictReader(handle)]
    with whole.open(encoding="utf-8") as handle:
        head = [line for _, line in zip(range(rows + 1), handle)]
    print(f"{whole.name}: {len(ids):,} rows, ids in input order: {ids == [f'doc-{i}' for i in range(len(ids))]}; "
          f"its first {rows:,} rows equal predicting them alone: {head == out.open(encoding='utf-8').readlines()}")


def resume(run_dir: Path, work: Path, n: int, whole: Path, full_seconds: float, at: float = 0.4) -> None:
    source, out = corpus(work, n), work / f"resumed-{n}.csv"
    partial = out.with_name(out.name + ".partial")
    shards = -(-n // 10_000)
    shutil.rmtree(partial, ignore_errors=True)
    out.unlink(missing_ok=True)
    first = run(["predict", str(run_dir), "--input", str(source), "--output", str(out)],
                kill_when=lambda: len(list(partial.glob("*.part"))) >= at * shards)
    done = len(list(partial.glob("*.part")))
    second = run(["predict", str(run_dir), "--input", str(source), "--output", str(out), "--resume"])
    print(f"kill -9 after {first['seconds']:.1f} s ({done}/{shards} shards kept); --resume took "
          f"{second['seconds']:.1f} s = {second['seconds'] / full_seconds:.0%} of a full run ({full_seconds:.1f} s), "
          f"peak {second['peak_mb']:,.0f} MB; file identical: {filecmp.cmp(out, whole, shallow=False)}")


def ray_engine(run_dir: Path, work: Path, n: int) -> None:
    source = corpus(work, n)
    local = run(["predict", str(run_dir), "--input", str(source), "--output", str(work / "local.csv"),
                 "--overwrite"])
    ray = run(["predict", str(run_dir), "--input", str(source), "--output", str(work / "ray.csv"), "--overwrite",
               "--engine", "ray"])
    same = filecmp.cmp(work / "local.csv", work / "ray.csv", shallow=False)
    print(f"{n:,} rows: local {local['seconds']:.1f} s ({n / local['seconds']:,.0f} texts/s), ray "
          f"{ray['seconds']:.1f} s ({n / ray['seconds']:,.0f} texts/s, cluster start included); identical: {same}")


def training(work: Path, n: int) -> None:
    source = work / f"train-{n}.csv"
    if not source.exists():
        rows = list(csv.DictReader(TEXTS.open(encoding="utf-8", newline="")))
        with source.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows([rows[i % len(rows)]["text"], rows[i % len(rows)]["label"]] for i in range(n))
    r = run(["train", "--config", "configs/quickstart.yaml", "--model.name_or_path", str(work / "tiny-model"),
             "--model.init", "random", "--data.train_file", str(source), "--train.max_steps", "20",
             "--train.calibrate", "none", "--output-dir", str(work / "train-run"), "--overwrite"])
    print(f"training on {n:,} rows, 20 steps: {r['seconds']:.1f} s, peak {r['peak_mb']:,.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="run folder (default: a tiny random RoBERTa trained here)")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--before-src", type=Path, help="another checkout's src, run side by side")
    parser.add_argument("--before-max", type=int, default=100_000, help="largest N for --before-src")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-corpus"))
    parser.add_argument("--skip", default="", help="comma-separated: resume, ray, train")
    args = parser.parse_args()
    args.sizes = [int(x) for x in args.sizes.split(",")]
    skip = set(args.skip.split(","))
    args.work.mkdir(parents=True, exist_ok=True)
    run_dir = Path(args.run) if args.run else tiny_run(args.work, args.before_src)
    outputs = sizes_table(args, run_dir, args.work)
    largest = max(args.sizes)
    first_rows_alone(run_dir, args.work, outputs[largest][0])
    if "resume" not in skip:
        resume(run_dir, args.work, largest, *outputs[largest])
    if "ray" not in skip:
        ray_engine(run_dir, args.work, 20_000)
    if "train" not in skip:
        training(args.work, 1_000_000)


if __name__ == "__main__":
    main()
