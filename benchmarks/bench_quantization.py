"""Quantized bases side by side: weight memory of roberta-base, and the quickstart trained on each.

    python benchmarks/bench_quantization.py [--config configs/quickstart.yaml] [--memory-only]
        [--model ../shared/models/roberta-base] [--device cpu|cuda]

1. Memory: roberta-base's base weights (random values from its config: memory
   depends on the shapes alone) in fp32, bf16, 8-bit and 4-bit, as loraclf
   loads them (head fp32; with and without int8 word embeddings). Bytes count
   every parameter, buffer and quantization scale.
2. Accuracy: the quickstart recipe with quantization.bits 0, 8 and 4, each
   trained in its own process on the same split and seed; test accuracy on
   the 1,000 held-out items, training throughput, base weight memory and the
   process's peak memory (CUDA: peak allocated).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARMS = {"full precision": 0, "8-bit": 8, "4-bit nf4": 4}


def memory_table(model_path: str) -> None:
    import torch

    from loraclf.config.schema import Config, QuantizationConfig
    from loraclf.model.build import build_base
    from loraclf.model.quantize import weight_bytes

    config = Config()
    config.model.name_or_path, config.model.init = model_path, "random"
    labels = ["World", "Sports", "Business", "Sci/Tech"]
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        build_base(config.model, labels).save_pretrained(folder)
        full = build_base(config.model, labels, base_folder=Path(folder))
        rows = {"fp32": weight_bytes(full), "bf16 (head fp32)": None}
        full.to(torch.bfloat16)
        full.classifier.float()
        rows["bf16 (head fp32)"] = weight_bytes(full)
        del full
        for bits in (8, 4):
            for embeddings in (False, True):
                quant = QuantizationConfig(bits=bits, embeddings=embeddings)
                model = build_base(config.model, labels, base_folder=Path(folder), quantization=quant)
                rows[f"{bits}-bit linear" + (", int8 embeddings" if embeddings else ", fp32 embeddings")] = \
                    weight_bytes(model)
    fp32 = rows["fp32"]
    print(f"\nbase weights of {model_path} (4 classes)\n")
    print("| storage | MiB | of fp32 |\n|---|---|---|")
    for name, size in rows.items():
        print(f"| {name} | {size / 2**20:.1f} | {100 * size / fp32:.1f}% |")


def accuracy_table(config: str, device: str) -> None:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, bits in ARMS.items():
            out = Path(tmp) / f"bits{bits}"
            command = [sys.executable, "-m", "loraclf.cli", "train", "--config", config, "--output-dir", str(out),
                       "--quantization.bits", str(bits), "--train.device", device, "--train.progress", "false"]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{name}: failed: {done.stderr.strip().splitlines()[-1:]}", flush=True)
                continue
            results[name] = r = json.loads((out / "metrics.json").read_text())
            print(f"{name}: test accuracy {r['test']['accuracy']:.4f}, {r['train_samples_per_s']:.1f} samples/s, "
                  f"base {r['base_weight_bytes'] / 2**20:.1f} MiB, peak {r['peak_memory_mb']:.0f} MB", flush=True)
    print("\n| base | test accuracy | macro-F1 | train samples/s | training s | base weights MiB | peak MB |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['test']['accuracy']:.4f} | {r['test']['macro_f1']:.4f} | "
              f"{r['train_samples_per_s']:.1f} | {r['train_seconds']:.0f} | "
              f"{r['base_weight_bytes'] / 2**20:.1f} | {r['peak_memory_mb']:.0f} |")
    if "full precision" in results:
        reference = results["full precision"]["test"]["accuracy"]
        for name, r in results.items():
            if name != "full precision":
                print(f"{name} - full precision: {100 * (r['test']['accuracy'] - reference):+.2f} points "
                      "(bar for 4-bit: within 1.5)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    parser.add_argument("--model", default=str(ROOT.parent / "shared" / "models" / "roberta-base"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--memory-only", action="store_true")
    args = parser.parse_args()

    import warnings

    from transformers.utils import logging as hf_logging

    from loraclf.model.quantize import quiet_bitsandbytes

    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    quiet_bitsandbytes()
    memory_table(args.model)
    if not args.memory_only:
        accuracy_table(args.config, args.device)


if __name__ == "__main__":
    main()
