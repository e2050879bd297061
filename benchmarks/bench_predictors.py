"""Every CPU predictor of one run side by side, one after another in one process: texts/s and agreement.

    python benchmarks/bench_predictors.py RUN_DIR [--texts 2000] [--batch-sizes 1,32,256]

Predictors: torch fp32 (the exact one, evaluate's and predict's default on CPU), torch bf16, torch int8
(`predict --int8`: int8 linear layers, per-row activation scales), onnxruntime fp32 and onnxruntime int8
(`export --int8`: MatMulNBits, 8-bit weights in blocks of 32, int8 compute). All go through loraclf's one predictor
(Classifier: length-sorted batches, tokenization included). Texts: the run's held-out test part and the
competition's 8,000 unlabelled texts (a shifted domain), in that order, `--texts` in all; batch 1 runs on the first
200. Agreement: the share of labels equal to the exact predictor's, and for int8 whether each text's label is the
same alone as in its batch. The exact predictor's useful FLOP/s (2·N per real token, N the encoder's non-embedding
parameters) is given as a share of the fp32 matmul peak measured in the same run (loraclf doctor's).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPETITION = ROOT.parent / "shared" / "data" / "competition" / "test_unlabelled.csv"


def held_out(run_dir: Path, count: int) -> list[str]:
    from transformers import AutoTokenizer

    from loraclf.data.splits import load_splits
    from loraclf.rundir import layout, readers

    config = readers.read_config(run_dir)
    splits = load_splits(config.data, AutoTokenizer.from_pretrained(run_dir / layout.TOKENIZER), log=lambda _: None)
    texts = list(splits.test.texts) if splits.test is not None else []
    if COMPETITION.is_file():
        with COMPETITION.open(encoding="utf-8", newline="") as handle:
            texts += [row["text"] for row in csv.DictReader(handle)]
    return texts[:count]


def timed(classifier, texts: list[str], batch_size: int):
    started = time.perf_counter()
    logits = classifier.logits(texts, batch_size)
    return logits, len(texts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--batch-sizes", default="1,32,256")
    args = parser.parse_args()
    import warnings

    import numpy as np
    import torch
    from transformers.utils import logging as hf_logging

    from loraclf.deploy.export import export
    from loraclf.doctor import encoder_parameters
    from loraclf.inference.classifier import Classifier
    from loraclf.model import hardware
    from loraclf.rundir import readers

    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    texts = held_out(args.run_dir, args.texts)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    machine = hardware.probe()
    peak = hardware.matmul_peak(torch.float32, torch.device("cpu"), 2.0, 2048)
    n = encoder_parameters(readers.read_config(args.run_dir).model.name_or_path)
    print(f"{machine.cpu}, {machine.cpu_class}, {torch.get_num_threads()} threads; fp32 peak "
          f"{peak / 1e12:.3f} TFLOP/s; {len(texts):,} texts; N = {n:,}")
    rows, exact = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        arms = {"torch fp32 (exact)": lambda: Classifier.load(args.run_dir, device="cpu", precision="fp32",
                                                              start_up=False),
                "torch bf16": lambda: Classifier.load(args.run_dir, device="cpu", precision="bf16"),
                "torch int8 (--int8)": lambda: Classifier.load(args.run_dir, device="cpu", int8=True),
                "onnx fp32": lambda: Classifier.load(export(args.run_dir, "onnx", Path(tmp) / "fp32",
                                                            log=lambda _: None)),
                "onnx int8 (MatMulNBits)": lambda: Classifier.load(export(args.run_dir, "onnx", Path(tmp) / "int8",
                                                                          int8=True, log=lambda _: None))}
        for name, load in arms.items():
            classifier = load()
            classifier.logits(texts[:32], 32)  # warm-up
            rates, labels = {}, None
            for size in sizes:
                logits, rates[size] = timed(classifier, texts[:200] if size == 1 else texts, size)
                if size == max(sizes):  # every text
                    labels = logits.argmax(1)
            if not exact:
                exact = {"labels": labels, "tokens": int(classifier.tokens(texts).lengths.sum())}
            agree = float(np.mean(labels == exact["labels"]))
            alone = np.array([classifier.logits(t).argmax() for t in texts[:100]])
            rows.append((name, rates, agree, bool((alone == labels[:100]).all())))
            print(f"{name}: " + ", ".join(f"batch {b} {r:.1f} texts/s" for b, r in rates.items())
                  + f"; agreement {100 * agree:.2f}%", flush=True)
    best = 32 if 32 in sizes else max(sizes)  # the default --batch-size
    useful = 2 * n * exact["tokens"] * rows[0][1][best] / len(texts)
    print(f"\nexact predictor at batch {best}: {useful / 1e12:.3f} useful TFLOP/s = {100 * useful / peak:.0f}% of the "
          "fp32 peak")
    print("\n| predictor | " + " | ".join(f"texts/s, batch {b}" for b in sizes)
          + f" | x exact (batch {best}) | labels = exact | same alone and batched |")
    print("|---|" + "---|" * (len(sizes) + 3))
    for name, rates, agree, alone in rows:
        print(f"| {name} | " + " | ".join(f"{rates[b]:.1f}" for b in sizes)
              + f" | {rates[best] / rows[0][1][best]:.2f} | {100 * agree:.2f}% | {'yes' if alone else 'no'} |")


if __name__ == "__main__":
    main()
