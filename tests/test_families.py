"""Each encoder family end to end, with the real roberta-base tokenizer: train (the meta-device budget equals
what PEFT trains), then the adapter card's plain-PEFT snippet, the merged export under `transformers.pipeline`
and the ONNX export all give loraclf's own answers."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from loraclf.deploy import export
from loraclf.inference.classifier import Classifier
from loraclf.training.recipe import train

from conftest import write_csv
from families import tiny_config as family_config
from test_export import keyed
from test_training import tiny_config

pytest.importorskip("onnxruntime", reason="needs the export extra (pip install 'loraclf[export]')")

# The families the bar names, each with the run shape it is most particular about.
SHAPES = {"modernbert": dict(pooling="mean", targets=["all-linear"]),  # fused Wqkv; its head pools natively
          "albert": dict(pooling="mean", targets=["all-linear"]),  # one shared layer; a bare linear pooler
          "electra": dict(pooling="cls", targets=["attention_qkv"]),
          "xlm-roberta": dict(pooling="cls", targets=["attention_qkv"]),
          "deberta-v2": dict(pooling="cls", targets=["attention_qkv"])}  # its pooler travels with the head

# In a Python where loraclf cannot be imported: each run's card snippet (PEFT) and its merged export under
# transformers.pipeline (with its own modeling code where it has some), on the same texts; one JSON line of {family: [snippet logits, pipeline scores]}.
PLAIN_PROBE = """
import json, os, sys, torch
sys.modules['loraclf'] = None
from transformers import pipeline
out = {}
for family, (ADAPTER_FOLDER, snippet, merged) in json.loads(sys.argv[1]).items():
    exec(snippet)
    with torch.no_grad():
        batch = tokenizer(sys.argv[2:], return_tensors='pt', padding=True, truncation=True)
        logits = model(**batch).logits.tolist()
    remote = os.path.exists(os.path.join(merged, 'modeling_loraclf.py'))  # a mean-pooled stock class
    classify = pipeline('text-classification', model=merged, top_k=None, device='cpu', truncation=True,
                        trust_remote_code=remote)
    scores = [{s['label']: s['score'] for s in row} for row in classify(sys.argv[2:])]
    out[family] = [logits, scores]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def family_runs(tmp_path_factory, agnews_rows, tokenizer):
    texts, _ = agnews_rows
    root = tmp_path_factory.mktemp("families")
    data = write_csv(root / "train.csv", *keyed(texts[:96]))
    runs = {}
    for family, shape in SHAPES.items():
        model_dir = root / family
        family_config(family, vocab_size=tokenizer.vocab_size, max_position_embeddings=130, pad_token_id=1,
                      bos_token_id=0, eos_token_id=2, num_labels=4, hidden_size=32,
                      intermediate_size=64).save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        config = tiny_config(model_dir, data, epochs=3, lr=2e-2, precision="fp32")
        config.model.pooling, config.lora.target_modules = shape["pooling"], shape["targets"]
        config.data.length_filter, config.data.test_size = None, 0
        summary = train(config, root / "runs" / family, log=lambda _: None)  # asserts budget == PEFT's count
        run = root / "runs" / family
        runs[family] = dict(run=run, summary=summary,
                            merged=export.export(run, "merged", root / "merged" / family, log=lambda _: None),
                            onnx=export.export(run, "onnx", root / "onnx" / family, log=lambda _: None))
    return runs, keyed(texts[1000:1008], offset=1)[0]


@pytest.fixture(scope="module")
def plain(family_runs):
    runs, texts = family_runs
    given = {}
    for family, made in runs.items():
        card = (made["run"] / "adapter" / "README.md").read_text()
        snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
        given[family] = (str(made["run"] / "adapter"), snippet, str(made["merged"]))
    done = subprocess.run([sys.executable, "-c", PLAIN_PROBE, json.dumps(given), *texts], capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("family", SHAPES)
def test_every_path_gives_loraclfs_logits_within_1e_5(family_runs, plain, family):
    runs, texts = family_runs
    made = runs[family]
    reference = Classifier.load(made["run"], device="cpu", precision="fp32", merge=False)
    logits = reference.logits(texts)
    assert made["summary"]["parameters"]["trainable"] == json.loads((made["run"] / "budget.json").read_text())[
        "trainable"]
    snippet_logits, pipeline_scores = plain[family]
    assert np.abs(np.array(snippet_logits) - logits).max() < 1e-5
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    names = ["World", "Sports", "Business", "Sci/Tech"]
    assert np.abs(np.array([[row[n] for n in names] for row in pipeline_scores]) - probabilities).max() < 1e-5
    onnx = Classifier.load(made["onnx"], device="cpu").logits(texts)
    assert np.abs(onnx - logits).max() < 1e-5
    assert np.ptp(logits, axis=0).max() > 1e-3  # answers that differ from text to text, far beyond the tolerance


def test_modernbert_pools_in_its_own_head_and_its_export_needs_no_remote_code(family_runs):
    runs, _ = family_runs
    merged = runs["modernbert"]["merged"]
    settings = json.loads((merged / "config.json").read_text())
    assert settings["classifier_pooling"] == "mean" and settings["model_type"] == "modernbert"
    assert not (merged / export.REMOTE_CODE).exists()
    assert "classifier_pooling='mean'" in (runs["modernbert"]["run"] / "adapter" / "README.md").read_text()
