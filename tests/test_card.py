"""The adapter folder stands alone: PEFT loads it with the labels its card gives, and the card is a real one."""

import json
import re
import shutil

import numpy as np
import pytest

from loraclf.config.schema import Config
from loraclf.inference.classifier import Classifier
from loraclf.rundir import card
from loraclf.training.recipe import train

from conftest import ROBERTA, tiny_roberta_config, write_csv
from test_training import tiny_config


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory, agnews_rows):
    """A run on a local pretrained-style base: encoder weights only, a config without labels (like roberta-base)."""
    from transformers import AutoModel

    if not ROBERTA.is_dir():
        pytest.skip(f"needs the roberta-base tokenizer in {ROBERTA}")
    folder = tmp_path_factory.mktemp("card")
    AutoModel.from_config(tiny_roberta_config()).save_pretrained(folder / "base")
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(ROBERTA / name, folder / "base" / name)
    texts, labels = agnews_rows
    config = tiny_config(folder / "base", write_csv(folder / "train.csv", texts[:80], labels[:80]), epochs=1)
    config.model.init = "pretrained"
    train(config, folder / "run", log=lambda _: None, command="loraclf train --config recipe.yaml --output-dir run")
    return folder / "run", texts[1000:1012]


def test_peft_loads_the_adapter_folder_alone_with_the_labels_its_card_gives(pretrained_run):
    run_dir, texts = pretrained_run
    adapter = run_dir / "adapter"
    settings = json.loads((adapter / "adapter_config.json").read_text())
    assert settings["modules_to_save"] == ["classifier"]  # once, and no `score` (the model has none)
    assert settings["base_model_name_or_path"] == str((run_dir.parent / "base").resolve())
    # The card's own snippet, run as written.
    snippet = re.search(r"```python\n(.*?)```", (adapter / "README.md").read_text(), re.S).group(1)
    namespace = {"ADAPTER_FOLDER": str(adapter)}
    exec(snippet, namespace)
    model, tokenizer = namespace["model"].eval(), namespace["tokenizer"]
    assert model.config.id2label == {0: "World", 1: "Sports", 2: "Business", 3: "Sci/Tech"}
    import torch

    with torch.no_grad():
        logits = model(**tokenizer(texts, return_tensors="pt", padding=True, truncation=True)).logits.numpy()
    reference = Classifier.load(run_dir, device="cpu", precision="fp32", merge=False).logits(texts)
    assert np.abs(logits - reference).max() < 1e-5


def test_the_card_names_base_labels_budget_metrics_and_command(pretrained_run):
    run_dir, _ = pretrained_run
    text = (run_dir / "adapter" / "README.md").read_text()
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert "More Information Needed" not in text
    assert "| 3 | Sci/Tech |" in text
    assert f"Trainable {summary['parameters']['trainable']:,}" in text
    assert f"accuracy {summary['best']['val_accuracy']:.4f}" in text
    assert f"accuracy {summary['test']['accuracy']:.4f}" in text
    versions = json.loads((run_dir / "versions.json").read_text())
    assert versions["command"] == "loraclf train --config recipe.yaml --output-dir run"  # as the caller gave it
    assert versions["command"] in text and versions["torch"] and versions["peft"] and versions["loraclf"]


def test_a_hub_base_is_recorded_by_its_hub_id(tmp_path):
    config = Config()
    assert card.base_reference(config, tmp_path) == "FacebookAI/roberta-base"
    front_matter = card.render(config, ["a", "b"], {"trainable": 1, "total": 2, "max_trainable": 3, "lora": 1,
                                                    "head": 0, "other": 0}, {}, "FacebookAI/roberta-base")
    assert "base_model: FacebookAI/roberta-base" in front_matter.split("---")[1]
