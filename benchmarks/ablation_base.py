"""Which recipe for a base-size encoder? Arms on MPNet-base (../mpnet-base), same data, split and step count.

    bash ../shared/scripts/get-mpnet-base.sh              # once: ../mpnet-base
    python benchmarks/ablation_base.py                     # every arm, 200 steps, seed 42
    python benchmarks/ablation_base.py --arms C-mean,F-mean-lr2e-3 --steps 200 --seeds 1,2

Every arm is `configs/base.yaml` with 1,000 of the 5,000 AG News items held out as test,
one epoch cut at --steps optimizer steps (the cosine schedule spans them), and these changes:
- A-study: the study's recipe (r=7, alpha=77, dropout 0.01 on q/k/v, lr 3e-5, batch 64,
  weight decay 0.1, no warmup), for the same number of training samples (steps / 4);
- B-cls: r=7, alpha=14 on attention_qkv, lr 1e-3, batch 16, the first token (the issue's run);
- C-mean: B with mean pooling;
- D-mean-linear-r18: C with the linear head, the budget moved into LoRA (r=18);
- E-mean-alllinear-r2: C with LoRA r=2 on every linear layer;
- F-mean-lr2e-3: C at lr 2e-3.
Prints a markdown table: validation and test accuracy, training seconds and samples/s,
trainable parameters. Run folders go to --root (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MPNET = ROOT.parent / "mpnet-base"

# The recipe's own values are restated so an arm means the same thing if configs/base.yaml changes.
COMMON = ["--model.name_or_path", str(MPNET), "--data.test_size", "1000", "--train.epochs", "1",
          "--lora.target_modules", "attention_qkv", "--lora.r", "7", "--lora.alpha", "14", "--lora.dropout", "0.05",
          "--model.head", "default", "--train.lr", "1e-3", "--train.batch_size", "16", "--train.weight_decay", "0.01",
          "--train.warmup_ratio", "0.06", "--model.pooling", "cls", "--adapt.method", "none"]
ARMS = {
    "A-study": ["--lora.alpha", "77", "--lora.dropout", "0.01", "--train.lr", "3e-5", "--train.batch_size", "64",
                "--train.weight_decay", "0.1", "--train.warmup_ratio", "0"],
    "B-cls": [],
    "C-mean": ["--model.pooling", "mean"],
    "D-mean-linear-r18": ["--model.pooling", "mean", "--model.head", "linear", "--lora.r", "18", "--lora.alpha", "36"],
    "E-mean-alllinear-r2": ["--model.pooling", "mean", "--lora.target_modules", "all-linear", "--lora.r", "2",
                            "--lora.alpha", "4"],
    "F-mean-lr2e-3": ["--model.pooling", "mean", "--train.lr", "2e-3"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "base.yaml"))
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", default="42")
    parser.add_argument("--root", help="folder for the run folders (default: temporary)")
    args = parser.parse_args()
    if not (MPNET / "config.json").is_file():
        sys.exit(f"needs MPNet-base in {MPNET}: bash ../shared/scripts/get-mpnet-base.sh")

    from loraclf.config.loading import load_config, parse_overrides
    from loraclf.training.recipe import train

    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="ablation-base-"))
    print("| arm | seed | val acc | test acc | train s | samples/s | trainable |")
    print("|---|---|---|---|---|---|---|")
    for name in args.arms.split(","):
        for seed in args.seeds.split(","):
            # The study's batch is 4x larger: the same number of training samples in a quarter of the steps.
            steps = args.steps // 4 if name == "A-study" else args.steps
            overrides = COMMON + ARMS[name] + ["--train.max_steps", str(steps), "--train.seed", seed,
                                               "--train.progress", "false"]
            config = load_config(args.config, parse_overrides(overrides))
            summary = train(config, root / f"{name}-{seed}", overwrite=True, log=lambda _: None)
            print(f"| {name} | {seed} | {summary['best']['val_accuracy']:.4f} | {summary['test']['accuracy']:.4f} | "
                  f"{summary['train_seconds']:.0f} | {summary['train_samples_per_s']:.1f} | "
                  f"{summary['parameters']['trainable']:,} |", flush=True)


if __name__ == "__main__":
    main()
