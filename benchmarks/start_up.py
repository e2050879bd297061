"""One-shot start-up: `loraclf predict FOLDER "one text"` as a whole process, for a run and its exports.

    python benchmarks/start_up.py RUN_DIR [--repeat 3]

The run's exports are made into a temporary folder (merged, ONNX), and its start-up export (RUN/onnx, what
`loraclf export RUN --start-up` writes) into the run, removed afterwards unless it was there before. Each
command runs --repeat times, each in a fresh process, one after another: wall seconds (best, worst), the
process's peak RSS, and the label and probabilities it printed, against the run's torch model in fp32.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEXT = "Stocks rallied on Wall Street as oil prices fell for a third day"


def timed(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB, from /usr/bin/time: a child forked from this process would count its pages
    until exec) and stdout of one fresh process."""
    with tempfile.NamedTemporaryFile("r") as rss:
        start = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name, *command], capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode:
            raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-500:]}")
        return seconds, int(rss.read().split()[-1]) / 1024, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from loraclf.deploy.export import export, export_start_up
    from loraclf.rundir import layout

    loraclf = [sys.executable, "-m", "loraclf"]
    start_up = args.run_dir / layout.START_UP
    had_start_up = start_up.exists()
    with tempfile.TemporaryDirectory() as tmp:
        exports = {fmt: export(args.run_dir, fmt, Path(tmp) / fmt, log=lambda _: None) for fmt in ("merged", "onnx")}
        shutil.rmtree(start_up, ignore_errors=True)
        commands = {"--help": [*loraclf, "--help"],
                    "run (torch, the run's precision)": [*loraclf, "predict", str(args.run_dir), TEXT],
                    "run --precision fp32 (torch)": [*loraclf, "predict", str(args.run_dir), TEXT,
                                                     "--precision", "fp32"],
                    "merged export (torch, no PEFT)": [*loraclf, "predict", str(exports["merged"]), TEXT],
                    "onnx export (onnxruntime, no torch)": [*loraclf, "predict", str(exports["onnx"]), TEXT]}
        rows = [(name, [timed(command) for _ in range(args.repeat)]) for name, command in commands.items()]
        export_start_up(args.run_dir, log=lambda _: None)
        try:
            for name, extra in (("run with its start-up export", []),
                                ("run with its start-up export, --precision fp32", ["--precision", "fp32"])):
                rows.append((name, [timed([*loraclf, "predict", str(args.run_dir), TEXT, *extra])
                                    for _ in range(args.repeat)]))
        finally:
            if not had_start_up:
                shutil.rmtree(start_up, ignore_errors=True)
    print(f"{args.run_dir}: `loraclf predict FOLDER TEXT`, {args.repeat} fresh processes each, {os.cpu_count()} cores")
    print("| command | wall s (best-worst) | peak RSS MB | label, probabilities |")
    print("|---|---|---|---|")
    for name, runs in rows:
        seconds = [s for s, _, _ in runs]
        answer = runs[0][2].strip().splitlines()[-1] if name != "--help" else "-"
        print(f"| {name} | {min(seconds):.2f}-{max(seconds):.2f} | {max(r for _, r, _ in runs):,.0f} | {answer} |")


if __name__ == "__main__":
    main()
