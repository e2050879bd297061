"""Where should a fixed budget go? Arms at the same trainable-parameter budget, 3 seeds each.

    python benchmarks/ablation.py                  # MiniLM quickstart recipe, 2 epochs, seeds 1-3
    python benchmarks/ablation.py --epochs 4 --seeds 1,2,3,4,5

Every arm trains the quickstart recipe (MiniLM encoder, ../shared/data/agnews-5k, the same
seeded train/validation/test split, lr, schedule and epochs); only the adapter and head change:
- paper: the study's shape scaled to MiniLM: LoRA r=7, alpha=77, query/key/value, default head;
- the other arms spend at most the paper arm's trainable parameters, with the linear head,
  on query/key/value: LoRA, DoRA, VeRA, IA3 and AdaLoRA, each at the largest rank that fits
  (chosen by `loraclf.plan`). LoRA keeps alpha/r = 11, as in the paper arm.
Prints a markdown table: mean and standard deviation of test accuracy over the seeds,
trainable parameters, training seconds, and each arm's count on roberta-base (4 classes).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROBERTA = ROOT.parent / "shared" / "models" / "roberta-base"


def arms(config, labels) -> dict[str, list[str]]:
    from loraclf.model import accounting
    from loraclf.model.plan import candidates

    paper = ["--lora.r", "7", "--lora.alpha", "77", "--lora.target_modules", "query,key,value",
             "--model.head", "default"]
    limit = accounting.estimate(with_overrides(config, paper), labels).trainable + 1
    found = {}
    for c in candidates(config, labels, limit):
        if c.targets == ("attention_qkv",) and c.layers is None and c.head == "linear":
            found.setdefault(c.method, c)  # best first: the largest adapter of each method
    chosen = {"paper (r=7, alpha=77, default head)": paper}
    for method in ("lora", "dora", "vera", "ia3", "adalora"):
        c = found[method]
        extra = ["--lora.alpha", str(11 * c.r)] if method in ("lora", "dora", "adalora") else []
        chosen[f"{method} r={c.r}, linear head" if method != "ia3" else "ia3, linear head"] = c.overrides(config) + extra
    return chosen


def with_overrides(config, args):
    import dataclasses

    from loraclf.config.loading import load_config, parse_overrides

    return load_config(tree=dataclasses.asdict(config), overrides=parse_overrides(args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seeds", default="1,2,3")
    args = parser.parse_args()

    import warnings

    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    from loraclf.config.loading import load_config, parse_overrides
    from loraclf.config.schema import AG_NEWS_LABELS
    from loraclf.model import accounting
    from loraclf.training.recipe import train

    base = load_config(args.config, parse_overrides(["--train.epochs", str(args.epochs), "--train.progress", "false"]))
    labels = list(AG_NEWS_LABELS)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for name, overrides in arms(base, labels).items():
        accuracies, seconds, trainable = [], [], None
        for seed in seeds:
            config = with_overrides(base, [*overrides, "--train.seed", str(seed)])
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                summary = train(config, Path(tmp) / "run", log=lambda _: None)
                seconds.append(time.perf_counter() - start)
            accuracies.append(summary["test"]["accuracy"])
            trainable = summary["parameters"]["trainable"]
            print(f"{name} seed {seed}: test accuracy {accuracies[-1]:.4f}", file=sys.stderr, flush=True)
        on_roberta = "-"
        if ROBERTA.is_dir():
            big = with_overrides(base, [*overrides, "--model.name_or_path", str(ROBERTA)])
            b = accounting.estimate(big, labels)
            on_roberta = f"{b.trainable:,} = {b.lora:,} + {b.head:,}"
        rows.append((name, statistics.mean(accuracies), statistics.stdev(accuracies) if len(seeds) > 1 else 0.0,
                     trainable, statistics.mean(seconds), " ".join(overrides), on_roberta))
    print(f"\n{len(seeds)} seeds ({args.seeds}), {args.epochs} epochs, recipe {Path(args.config).name}\n")
    print("| arm | test accuracy, mean ± sd | trainable (MiniLM) | s per run | overrides | "
          "roberta-base count (adapter + head) |")
    print("|---|---|---|---|---|---|")
    for name, mean, sd, trainable, secs, overrides, big in rows:
        print(f"| {name} | {mean:.4f} ± {sd:.4f} | {trainable:,} | {secs:.0f} | `{overrides}` | {big} |")
    best = max(rows, key=lambda r: r[1])
    print(f"\nbest: {best[0]}, {100 * (best[1] - rows[0][1]):+.2f} points over the paper arm")


if __name__ == "__main__":
    main()
