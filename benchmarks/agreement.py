"""One model, one answer: a run against its plain-HF loading, its merged export and its int8 ONNX export.

    python benchmarks/agreement.py runs/quickstart            # writes exports into a temporary folder

For a finished run with a test split, on its held-out test texts, on
../shared/data/competition/shifted_dev.csv and on long texts (three held-out texts joined, past
max_length), it prints how often each path gives `loraclf predict`'s label:
- plain PEFT: the adapter card's own snippet, run in a Python where loraclf cannot be imported (on a
  copy of the adapter folder whose base_model_name_or_path names the local base, when its hub id does
  not load here: the card's advice for offline use);
- pipeline: `pipeline("text-classification", model=<merged export>, truncation=True)`, no loraclf;
- int8: the static int8 ONNX export, and whether each text's label is the same alone as in a batch of 32;
plus accuracy of the run and of int8 on the labelled sets, and the run's calibration record.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHIFTED = ROOT.parent / "shared" / "data" / "competition" / "shifted_dev.csv"

PLAIN = """
import json, sys, torch
sys.modules["loraclf"] = None  # the plain path: nothing of loraclf's
texts = json.loads(open(sys.argv[1]).read())
ADAPTER_FOLDER = sys.argv[2]
{snippet}
out = []
with torch.no_grad():
    for i in range(0, len(texts), 32):
        batch = tokenizer(texts[i:i + 32], return_tensors="pt", padding=True, truncation=True)
        out += model(**batch).logits.argmax(-1).tolist()
print(json.dumps(out))
"""

PIPELINE = """
import json, sys
sys.modules["loraclf"] = None
from transformers import pipeline
texts = json.loads(open(sys.argv[1]).read())
classify = pipeline("text-classification", model=sys.argv[2], truncation=True, trust_remote_code=True)
print(json.dumps([r["label"] for r in classify(texts, batch_size=32)]))
"""


def run_plain(code: str, texts: list[str], folder: Path, tmp: Path) -> list:
    path = tmp / "texts.json"
    path.write_text(json.dumps(texts))
    done = subprocess.run([sys.executable, "-c", code, str(path), str(folder)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def offline_copy(adapter: Path, local_base: str, tmp: Path) -> Path:
    """The adapter folder with base_model_name_or_path pointing at the local copy of its base."""
    copy = tmp / "adapter"
    shutil.copytree(adapter, copy)
    settings = json.loads((copy / "adapter_config.json").read_text())
    if Path(local_base).is_dir():
        settings["base_model_name_or_path"] = local_base
    (copy / "adapter_config.json").write_text(json.dumps(settings))
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    args = parser.parse_args()
    import warnings

    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    import pandas as pd

    from loraclf.data.splits import load_splits
    from loraclf.deploy.export import export
    from loraclf.inference.classifier import Classifier
    from loraclf.model.build import load_tokenizer
    from loraclf.model.hub import resolve_model_path
    from loraclf.rundir import readers

    run = Path(args.run_dir)
    _, config, names = readers.read_run_config(run)
    test = load_splits(config.data, load_tokenizer(config.model), log=lambda _: None).test
    shifted = pd.read_csv(SHIFTED) if SHIFTED.is_file() else None
    held = list(test.texts)
    long = [" ".join(held[i:i + 3]) for i in range(0, min(len(held) - 2, 600), 3)]
    sets = {"held-out": (held, test.labels), "long (3 joined)": (long, None)}
    if shifted is not None:
        sets["shifted_dev"] = (shifted["text"].tolist(), shifted["label"].to_numpy())
    clf = Classifier.load(run)
    card = (run / "adapter" / "README.md").read_text(encoding="utf-8")
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        adapter = offline_copy(run / "adapter", resolve_model_path(config.model.name_or_path), tmp)
        merged = export(run, "merged", tmp / "merged", log=lambda _: None)
        int8 = Classifier.load(export(run, "onnx", tmp / "int8", int8=True, log=lambda _: None))
        print(f"run {run} ({config.model.name_or_path}, pooling {config.model.pooling}, max_length "
              f"{config.data.max_length})\n")
        print("| texts | n | plain PEFT = predict | pipeline(merged) = predict | int8 = predict | "
              "int8 alone = batch | accuracy run / int8 |")
        print("|---|---|---|---|---|---|---|")
        for name, (texts, labels) in sets.items():
            ours = clf.predict_proba(texts).argmax(1)
            plain = np.array(run_plain(PLAIN.format(snippet=snippet), texts, adapter, tmp))
            piped = np.array([names.index(x) for x in run_plain(PIPELINE, texts, merged, tmp)])
            batched = int8.logits(texts, 32).argmax(1)
            alone = np.array([int8.logits(t).argmax() for t in texts])
            accuracy = "-" if labels is None else f"{(ours == labels).mean():.4f} / {(batched == labels).mean():.4f}"
            print(f"| {name} | {len(texts)} | {(plain == ours).mean():.4f} | {(piped == ours).mean():.4f} | "
                  f"{(batched == ours).mean():.4f} | {(alone == batched).mean():.4f} | {accuracy} |")
    calibration = json.loads((run / "metrics.json").read_text()).get("calibration")
    if calibration:
        print(f"\ncalibration: temperature {calibration['temperature']:.3f}; ECE before -> after: " + ", ".join(
            f"{split} {calibration[split]['ece_before']:.4f} -> {calibration[split]['ece_after']:.4f}"
            for split in ("validation", "test") if split in calibration))


if __name__ == "__main__":
    main()
