"""The GPU check: what no CPU machine can show, in one short run on one GPU, written to one JSON file.

    bash benchmarks/gpu_check.sh OUT.json             # on a GPU machine: at most 8 minutes
    bash benchmarks/gpu_check.sh --dry-run OUT.json   # the same steps on the CPU with a tiny model (the suite runs it)

Steps, each recorded with its seconds, or skipped with the reason (a missing package, no GPU):
1. the suite's CUDA tests (`pytest -m cuda`; they skip without CUDA);
2. the paper recipe (configs/paper.yaml as shipped, roberta-base's architecture with random weights) for a few
   steps in bf16 and in fp16 with loss scaling: training samples/s and peak GPU memory;
3. prediction texts/s through loraclf's one predictor (merged adapter, length-sorted batches);
4. data-parallel training through torchrun on one GPU (NCCL).
It needs nothing from the network, nor `datasets` or `bitsandbytes`: without ../shared (roberta-base's tokenizer and
config, AG News) it builds roberta-base's architecture from transformers' defaults, a word-level tokenizer and
texts of AG News's lengths, which time the same.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = next((p for p in (ROOT.parent / "shared", ROOT / "shared") if (p / "models" / "roberta-base").is_dir()), None)
ROBERTA_BASE = dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072, max_position_embeddings=514, pad_token_id=1, bos_token_id=0,
                    eos_token_id=2, type_vocab_size=1)
TINY = ROBERTA_BASE | dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def stand_in(folder: Path, dry_run: bool) -> Path:
    """A model folder for `model.init: random`: roberta-base's architecture (tiny for a dry run) and a tokenizer."""
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    RobertaConfig(**(TINY if dry_run else ROBERTA_BASE)).save_pretrained(folder)
    if SHARED is not None:
        RobertaTokenizerFast.from_pretrained(SHARED / "models" / "roberta-base").save_pretrained(folder)
        return folder
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3} | {f"w{i}": i + 4 for i in range(5000)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(folder)
    return folder


def texts_file(path: Path, count: int) -> Path:
    """AG News from ../shared, else `count` texts of its lengths (about 54 tokens, 20 to 140) with 4 labels."""
    source = SHARED / "data" / "agnews-5k" / "train.csv" if SHARED is not None else None
    if source is not None and source.is_file():
        return source
    rng = random.Random(0)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for i in range(count):
            length = min(140, max(20, int(rng.gauss(52, 16))))
            writer.writerow([" ".join(f"w{rng.randrange(5000)}" for _ in range(length)), i % 4])
    return path


def train_arm(model: Path, data: Path, out: Path, device: str, precision: str, steps: int) -> dict:
    """configs/paper.yaml as shipped, only the model, the data, the steps and the precision replaced."""
    from loraclf.config.loading import load_config, parse_overrides
    from loraclf.rundir import layout
    from loraclf.training.recipe import train

    config = load_config(ROOT / "configs" / "paper.yaml", parse_overrides([
        "--model.name_or_path", str(model), "--model.init", "random", "--data.dataset", "null",
        "--data.train_file", str(data), "--data.val_fraction", "0.02", "--data.test_size", "0",
        "--train.max_steps", str(steps), "--train.epochs", "1", "--train.progress", "false",
        "--train.log_every", "1", "--train.device", device, "--train.precision", precision]))
    summary = train(config, out, log=lambda _: None)
    events = [json.loads(x) for x in (out / layout.METRICS_LOG).read_text().splitlines()]
    steps_log = [e for e in events if e["event"] == "train"]
    first, last = steps_log[0], steps_log[-1]  # the first step carries one-off kernel set-up
    seconds = last["elapsed_s"] - first["elapsed_s"]
    return {"precision": summary["precision"], "steps": summary["steps"],
            "samples_per_s": round((last["seen"] - first["seen"]) / seconds, 1) if seconds > 0 else None,
            "peak_memory_mb": summary["peak_memory_mb"], "validation_accuracy": summary["best"].get("val_accuracy")}


def predict_arm(run: Path, data: Path, device: str, count: int) -> dict:
    import torch

    from loraclf.inference.classifier import Classifier

    with data.open(encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    texts = [texts[i % len(texts)] for i in range(count)]
    clf = Classifier.load(run, device=device)
    clf.logits(texts[:64], 64)  # kernels warmed up before timing
    started = time.perf_counter()
    clf.logits(texts, 128)
    if device == "cuda":
        torch.cuda.synchronize()
    return {"texts": count, "texts_per_s": round(count / (time.perf_counter() - started), 1),
            "runs_in": clf.runs_in}


def ddp_arm(model: Path, data: Path, out: Path, device: str, steps: int) -> dict:
    """`loraclf train` under torchrun, one process (NCCL on a GPU, gloo on the CPU)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m",
               "loraclf", "train", "--config", str(ROOT / "configs" / "paper.yaml"), "--output-dir", str(out),
               "--model.name_or_path", str(model), "--model.init", "random", "--data.dataset", "null",
               "--data.train_file", str(data), "--data.val_fraction", "0.02", "--data.test_size", "0",
               "--train.max_steps", str(steps), "--train.epochs", "1", "--train.progress", "false",
               "--train.device", device]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ | {"PYTHONPATH": str(ROOT / "src")})
    if done.returncode:
        return {"ok": False, "error": done.stderr.strip().splitlines()[-1:] or ["(no output)"]}
    summary = json.loads((out / "metrics.json").read_text())
    return {"ok": True, "processes": summary["processes"], "device": summary["device"], "steps": summary["steps"]}


def cuda_tests(tiny: Path, data: Path) -> dict:
    """The suite's CUDA tests, on a tiny model and texts made here (the machine may lack ../shared)."""
    if importlib.util.find_spec("pytest") is None:
        return {"skipped": "pytest is not installed here"}
    env = os.environ | {"LORACLF_TEST_MODEL": str(tiny), "LORACLF_TEST_DATA": str(data)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                           str(ROOT / "tests")], capture_output=True, text=True, cwd=ROOT, env=env)
    return {"exit_code": done.returncode, "summary": (done.stdout.strip().splitlines() or [""])[-1]}


def step(record: dict, name: str, run) -> None:
    """Run one step into record[name], with its seconds; a failure is recorded, and the next step runs."""
    started = time.perf_counter()
    try:
        record[name] = run()
    except Exception as exc:  # the check reports every step's outcome; one failing must not hide the others
        record[name] = {"failed": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
    record[name]["seconds"] = round(time.perf_counter() - started, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="the JSON file to write")
    parser.add_argument("--dry-run", action="store_true", help="the CPU with a tiny model: checks the script")
    parser.add_argument("--steps", type=int, default=12, help="training steps per arm (default 12)")
    parser.add_argument("--predict-texts", type=int, default=7600, help="texts predicted (default 7,600)")
    args = parser.parse_args()
    import torch

    from loraclf.doctor import report

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded: the machine may have no network
    cuda = torch.cuda.is_available() and not args.dry_run
    device = "cuda" if cuda else "cpu"
    steps, count = (3, 64) if args.dry_run else (args.steps, args.predict_texts)
    record: dict = {"dry_run": args.dry_run, "device": device, "shared": str(SHARED) if SHARED else None}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, data = stand_in(work / "model", args.dry_run), texts_file(work / "texts.csv", 3000)
        step(record, "doctor", lambda: report(seconds=0.3 if args.dry_run else 1.0))
        tiny = stand_in(work / "tiny", dry_run=True)
        step(record, "cuda_tests", (lambda: cuda_tests(tiny, data)) if cuda else
             lambda: {"skipped": "no CUDA device (dry run or none)"})
        for precision in ("bf16", "fp16") if cuda else ("fp32",):
            step(record, f"train_{precision}",
                 lambda p=precision: train_arm(model, data, work / f"run-{p}", device, p, steps))
        first = work / ("run-bf16" if cuda else "run-fp32")
        step(record, "predict", lambda: predict_arm(first, data, device, count))
        step(record, "ddp_torchrun", lambda: ddp_arm(model, data, work / "run-ddp", device, steps))
    Path(args.output).write_text(json.dumps(record, indent=1, default=str) + "\n", encoding="utf-8")
    failed = [name for name, value in record.items() if isinstance(value, dict) and "failed" in value]
    print(f"wrote {args.output}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
