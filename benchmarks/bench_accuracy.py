"""Does the fast path learn as well? The quickstart recipe, fast path vs plain fp32 path, same seed.

    python benchmarks/bench_accuracy.py [--config configs/quickstart.yaml]

fast:  loraclf's defaults (length-grouped batches, bf16 autocast where the hardware has it,
       geometric-gap dropout masks and the fast attention path on CPU)
plain: fp32, batches in plain shuffled order, eager attention, PyTorch's own dropout
Both train on the same split with the same seed; test accuracy is on the 1,000 held-out items.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ARMS = {
    "fast": [],
    "plain fp32": ["--train.precision", "fp32", "--train.group_by_length", "false",
                   "--model.attn_implementation", "eager", "--train.fast_dropout", "false"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    args = parser.parse_args()

    import warnings

    from transformers.utils import logging as hf_logging

    from loraclf.config.loading import load_config, parse_overrides
    from loraclf.training.recipe import train

    warnings.filterwarnings("ignore", category=FutureWarning)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    results = {}
    for name, overrides in ARMS.items():
        config = load_config(args.config, parse_overrides([*overrides, "--train.progress", "false"]))
        with tempfile.TemporaryDirectory() as tmp:
            results[name] = train(config, Path(tmp) / "run", log=lambda _: None)
        r = results[name]
        print(f"{name}: test accuracy {r['test']['accuracy']:.4f}, macro-F1 {r['test']['macro_f1']:.4f}, "
              f"{r['train_samples_per_s']:.1f} samples/s, {r['train_seconds']:.0f} s training, "
              f"precision {r['precision']}", flush=True)
    fast, plain = results["fast"]["test"]["accuracy"], results["plain fp32"]["test"]["accuracy"]
    print("\n| path | test accuracy | macro-F1 | train samples/s | training s |\n|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['test']['accuracy']:.4f} | {r['test']['macro_f1']:.4f} | "
              f"{r['train_samples_per_s']:.1f} | {r['train_seconds']:.0f} |")
    print(f"\ndifference fast - plain: {100 * (fast - plain):+.2f} points (bar: within 0.5)")


if __name__ == "__main__":
    main()
