"""Exports against the run they come from: merged weights, ONNX fp32 and ONNX int8 logits on the same texts."""

import json
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest

from loraclf.cli import main
from loraclf.deploy import export
from loraclf.errors import UserError
from loraclf.inference import manifest
from loraclf.inference.classifier import Classifier
from loraclf.inference.onnx_runtime import OnnxExport
from loraclf.metrics.probabilities import softmax
from loraclf.training.recipe import train

from conftest import IMPORTS_PROBE, write_csv
from test_training import tiny_config

pytest.importorskip("onnxruntime", reason="needs the export extra (pip install 'loraclf[export]')")


KEYWORDS = ["football", "election", "stocks", "software"]


def keyed(texts, offset=0):
    """A class keyword twice, then the first words of an AG News text: a tiny random model learns it."""
    return [f"{KEYWORDS[(i + offset) % 4]} {KEYWORDS[(i + offset) % 4]} {' '.join(t.split()[:4])}"
            for i, t in enumerate(texts)], \
        [(i + offset) % 4 for i in range(len(texts))]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir, agnews_rows):
    """Runs with each head, trained until their predictions differ from text to text."""
    texts, _ = agnews_rows
    folder = tmp_path_factory.mktemp("export")
    data = write_csv(folder / "train.csv", *keyed(texts[:240]))
    runs = {}
    for head in ("default", "lowrank", "linear", "mean"):
        config = tiny_config(tiny_model_dir, data, epochs=6, lr=2e-2, precision="fp32")
        # "mean": the default head reading the masked mean of the tokens (model.pooling).
        config.model.pooling = "mean" if head == "mean" else "cls"
        config.model.head = "default" if head == "mean" else head
        config.model.head_rank, config.data.length_filter = 4, None
        train(config, folder / head, log=lambda _: None)
        runs[head] = folder / head
    return runs, keyed(texts[1000:1400], offset=1)[0]


def logits_of(folder, texts):
    return Classifier.load(folder, device="cpu", precision="fp32").logits(texts, 16)


def unmerged_logits(run_dir, texts):
    return Classifier.load(run_dir, device="cpu", precision="fp32", merge=False).logits(texts, 16)


# A plain transformers load of each folder given, in a fresh interpreter with peft and loraclf unimportable:
# a folder's logits on the texts as one JSON line, or the error a load without remote code raised.
PLAIN_PROBE = """
import json, sys
sys.modules['peft'] = sys.modules['loraclf'] = None
from transformers import AutoModelForSequenceClassification, AutoTokenizer
folders, texts = json.loads(sys.argv[1]), sys.argv[2:]
for folder, remote in folders:
    try:
        model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=remote).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=remote)
        print(json.dumps(model(**tokenizer(texts, return_tensors='pt', padding=True)).logits.tolist()))
    except ValueError as exc:
        print(json.dumps(str(exc)))
"""


@pytest.fixture(scope="module")
def merged(trained, tmp_path_factory):
    """Each head's merged export, and what one plain-transformers process made of it."""
    runs, texts = trained
    folder = tmp_path_factory.mktemp("merged")
    out = {head: export.export(runs[head], "merged", folder / head, log=lambda _: None)
           for head in ("default", "lowrank", "mean")}
    # The mean-pooled export twice: without its own modeling code (refused), then with it.
    loads = [[str(out["mean"]), False], *[[str(out[head]), head == "mean"] for head in out]]
    done = subprocess.run([sys.executable, "-c", PLAIN_PROBE, json.dumps(loads), *texts[:3]], capture_output=True,
                          text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-1500:]
    refused, *plain = [json.loads(line) for line in done.stdout.strip().splitlines()[-4:]]
    return out, refused, dict(zip(out, plain))


@pytest.mark.parametrize("head", ["default", "lowrank", "mean"])
def test_merged_export_matches_the_unmerged_adapter_and_loads_without_peft(trained, merged, head):
    runs, texts = trained
    out, refused, plain = merged
    reference = unmerged_logits(runs[head], texts)
    assert np.abs(logits_of(out[head], texts) - reference).max() < 1e-4
    assert len(set(reference.argmax(1))) == 4  # a model that tells the classes apart
    if head == "mean":
        # The stock class reads the first token: without the export's own modeling code, loading refuses.
        assert json.loads((out[head] / manifest.MANIFEST).read_text())["pooling"] == "mean"
        assert "trust_remote_code" in refused
    assert np.abs(np.array(plain[head]) - reference[:3]).max() < 1e-4


@pytest.mark.parametrize("head", ["default", "linear", "mean"])
def test_onnx_export_matches_within_1e_3_and_int8_agrees_on_labels(tmp_path, trained, head, capfd):
    runs, texts = trained
    reference = unmerged_logits(runs[head], texts)
    fp32 = export.export(runs[head], "onnx", tmp_path / "onnx", log=lambda _: None)
    assert np.abs(logits_of(fp32, texts) - reference).max() < 1e-3
    capfd.readouterr()
    int8 = tmp_path / "int8"
    assert main(["export", str(runs[head]), "--format", "onnx", "--int8", "--output", str(int8)]) == 0
    out, err = capfd.readouterr()  # the quantizer's chatter stays hidden: one line, ours
    assert out.splitlines() == [f"exported {runs[head]} as onnx-int8 to {int8}"] and not err, (out, err)
    assert json.loads((int8 / manifest.MANIFEST).read_text())["format"] == "onnx-int8"
    assert not (int8 / "fp32").exists()
    quantized = Classifier.load(int8, device="cpu")
    batched = quantized.logits(texts, 32)
    agreement = (batched.argmax(1) == reference.argmax(1)).mean()
    assert agreement >= 0.99, agreement
    # Static scales: a text's int8 logits do not depend on what else is in its batch.
    alone = np.stack([quantized.logits(text) for text in texts[:40]])
    assert np.abs(alone - batched[:40]).max() < 1e-5
    assert json.loads((int8 / "config.json").read_text())["id2label"]["0"] == "World"  # for ONNX loaders


def test_exported_files_follow_the_umask(tmp_path, trained):
    old = os.umask(0o022)
    try:
        out = export.export(trained[0]["mean"], "merged", tmp_path / "shared", log=lambda _: None)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [out, *out.iterdir()]}
    assert modes.pop(out.name) == 0o755 and set(modes.values()) == {0o644}, modes


def test_predict_reads_every_export_folder(tmp_path, trained, capfd):
    runs, texts = trained
    folders = {"run": runs["default"]}
    folders["merged"] = export.export(runs["default"], "merged", tmp_path / "m", log=lambda _: None)
    # The exporter's own chatter (skipped torchvision ops and the like) stays hidden: one line, ours.
    capfd.readouterr()
    assert main(["export", str(runs["default"]), "--format", "onnx", "--output", str(tmp_path / "o")]) == 0
    out, err = capfd.readouterr()
    assert out.splitlines() == [f"exported {runs['default']} as onnx to {tmp_path / 'o'}"] and not err, (out, err)
    folders["onnx"] = tmp_path / "o"
    labels, files = {}, {}
    for name, folder in folders.items():
        out = tmp_path / f"{name}.csv"
        assert main(["predict", str(folder), *texts[:20], "--output", str(out)]) == 0
        files[name] = out.read_text()
        labels[name] = [line.split(",")[0] for line in files[name].splitlines()[1:]]
    assert labels["merged"] == labels["run"] and labels["onnx"] == labels["run"]
    # An ONNX export predicts in a fresh process without importing torch, and writes the same file.
    out = tmp_path / "fresh.csv"
    done = subprocess.run([sys.executable, "-c", IMPORTS_PROBE, "predict", str(folders["onnx"]), *texts[:20],
                           "--output", str(out)], capture_output=True, text=True)
    assert done.stdout.split() == ["0", "False"], done.stderr
    assert out.read_text() == files["onnx"]


def test_exports_that_cannot_be_made_are_one_line_errors(tmp_path, trained):
    runs, _ = trained
    with pytest.raises(UserError, match="model.head linear has no transformers counterpart"):
        export.export(runs["linear"], "merged", tmp_path / "x")
    with pytest.raises(UserError, match="--int8: applies to --format onnx"):
        export.export(runs["default"], "merged", tmp_path / "x", int8=True)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="pass --overwrite or choose another --output$"):
        export.export(runs["default"], "merged", tmp_path / "taken")
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("head", ["default", "mean"])
def test_plain_pipeline_on_a_merged_export_matches_loraclf_predict_on_long_texts(tmp_path, trained, agnews_rows,
                                                                                 head):
    from transformers import pipeline

    runs, _ = trained
    texts, _ = agnews_rows
    # Three AG News texts in one: far past the run's max_length (64 tokens), where truncation decides.
    long_texts = [f"{KEYWORDS[i % 4]} " + " ".join(texts[2000 + 3 * i: 2003 + 3 * i]) for i in range(12)]
    out = export.export(runs[head], "merged", tmp_path / "merged", log=lambda _: None)
    classify = pipeline("text-classification", model=str(out), truncation=True, top_k=None, device="cpu",
                        trust_remote_code=head == "mean")
    assert classify.tokenizer.model_max_length == 64
    assert min(len(ids) for ids in classify.tokenizer(long_texts)["input_ids"]) > 64
    csv_path = tmp_path / "predicted.csv"
    assert main(["predict", str(runs[head]), *long_texts, "--output", str(csv_path), "--precision",
                 "fp32"]) == 0
    rows = [line.split(",") for line in csv_path.read_text().splitlines()[1:]]
    for row, scores in zip(rows, classify(long_texts)):
        by_label = {s["label"]: s["score"] for s in scores}
        assert max(by_label, key=by_label.get) == row[1]
        assert [by_label[name] for name in ("World", "Sports", "Business", "Sci/Tech")] == \
            pytest.approx([float(p) for p in row[2:]], abs=1e-5)


def test_a_start_up_export_answers_for_its_run_without_torch_while_it_matches(tmp_path, trained, capfd):
    """`export RUN --start-up` writes RUN/onnx; the run then loads from it where it answers as the run's torch
    model does (fp32, CPU, merged), predicts in a fresh process without importing torch, and is left aside once
    the run's adapter changes."""
    runs, texts = trained
    run = tmp_path / "run"
    shutil.copytree(runs["default"], run)
    reference = unmerged_logits(run, texts)  # unmerged: always the torch model
    assert main(["export", str(run), "--start-up", "--format", "onnx"]) == 2
    for _ in range(2):  # made again over the first, which is not read to make it
        assert main(["export", str(run), "--start-up"]) == 0
        assert capfd.readouterr().out.splitlines() == [f"exported {run} as onnx to {run / 'onnx'}"]
    for device in (None, "cpu"):
        fast = Classifier.load(run, device=device)
        assert isinstance(fast.backend, OnnxExport) and "(export --start-up;" in fast.runs_in
    # A run that answers in bf16 where it is native answers from it in fp32 too, unless bf16 is asked for.
    summary = run / "metrics.json"
    summary.write_text(json.dumps(json.loads(summary.read_text()) | {"inference_precision": "bfloat16"}))
    assert isinstance(Classifier.load(run).backend, OnnxExport)
    assert np.abs(fast.logits(texts, 16) - reference).max() < 1e-5
    out = tmp_path / "fast.csv"
    done = subprocess.run([sys.executable, "-c", IMPORTS_PROBE, "predict", str(run), *texts[:20], "--output",
                           str(out)], capture_output=True, text=True)
    assert done.stdout.split() == ["0", "False"], done.stderr
    rows = [line.split(",") for line in out.read_text().splitlines()[1:]]
    assert [int(row[0]) for row in rows] == reference[:20].argmax(1).tolist()
    assert np.abs(np.array([row[2:] for row in rows], dtype=float) - softmax(reference[:20])).max() < 1e-5
    # Where the run would answer otherwise, or has changed since, torch answers.
    for options in ({"precision": "bf16"}, {"int8": True}, {"merge": False}, {"start_up": False}):
        assert not isinstance(Classifier.load(run, **options).backend, OnnxExport), options
    config = run / "adapter" / "adapter_config.json"
    config.write_text(config.read_text() + "\n")
    assert not isinstance(Classifier.load(run).backend, OnnxExport)
