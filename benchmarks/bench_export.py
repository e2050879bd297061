"""A run and its exports side by side: test accuracy and CPU inference speed for each format.

    python benchmarks/bench_export.py RUN_DIR [--batch-size 32] [--repeat 2]

RUN_DIR is a finished run with a held-out test part (e.g. the quickstart:
loraclf train --config configs/quickstart.yaml --output-dir runs/quickstart).
Formats: the run folder as `loraclf predict` loads it (adapter merged, the run's
precision: bf16 autocast on CPUs with native bf16), the merged transformers
folder (fp32), ONNX fp32 and ONNX int8 (onnxruntime, CPU). Each predicts the
same test texts; texts/s is the best of --repeat passes, tokenization included.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    import warnings

    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from loraclf.data.splits import load_splits
    from loraclf.deploy.export import export
    from loraclf.inference.classifier import Classifier
    from loraclf.metrics.classification import metrics
    from loraclf.rundir import layout, readers

    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    config = readers.read_config(args.run_dir)
    tokenizer = AutoTokenizer.from_pretrained(Path(args.run_dir) / layout.TOKENIZER)
    splits = load_splits(config.data, tokenizer, log=lambda _: None)
    if splits.test is None:
        raise SystemExit(f"{args.run_dir}: its config holds out no test part")
    texts, labels = splits.test.texts, splits.test.labels
    print(f"{args.run_dir}: {len(texts):,} test texts, batch {args.batch_size}, {torch.get_num_threads()} threads")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folders = {"run (adapter merged)": Path(args.run_dir)}
        for name, fmt, int8 in (("merged (transformers)", "merged", False), ("onnx fp32", "onnx", False),
                                ("onnx int8", "onnx", True)):
            folders[name] = export(args.run_dir, fmt, Path(tmp) / name.split()[0] / fmt / str(int8), int8=int8,
                                   log=lambda _: None)
        for name, folder in folders.items():
            # A run in its training precision, its torch model even where it has a start-up export; exports: fp32.
            classifier = Classifier.load(folder, device="cpu", start_up=False)
            dtype = classifier.dtype
            best = float("inf")
            for _ in range(args.repeat):
                start = time.perf_counter()
                logits = classifier.logits(texts, args.batch_size)
                best = min(best, time.perf_counter() - start)
            result = metrics(labels, logits, classifier.labels)
            # The run folder holds only the adapter; its base weights live elsewhere.
            size = None if folder == Path(args.run_dir) else sum(
                f.stat().st_size for f in Path(folder).rglob("*") if f.suffix in (".onnx", ".data", ".safetensors"))
            rows.append((name, result["accuracy"], result["macro_f1"], len(texts) / best,
                         str(dtype).removeprefix("torch.") if dtype else "float32", size))
            print(f"{name}: accuracy {result['accuracy']:.4f}, {len(texts) / best:.1f} texts/s", flush=True)
    print("\n| format | test accuracy | macro-F1 | texts/s | precision | weight files MB |\n|---|---|---|---|---|---|")
    for name, acc, f1, speed, precision, size in rows:
        shown = "-" if size is None else f"{size / 1e6:.1f}"
        print(f"| {name} | {acc:.4f} | {f1:.4f} | {speed:.1f} | {precision} | {shown} |")


if __name__ == "__main__":
    main()
