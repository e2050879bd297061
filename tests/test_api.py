"""The README's Python example, run as written (with a tiny model's recipe in place of the quickstart's)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

import loraclf
from loraclf.cli import main

from conftest import write_csv

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    section = README.read_text(encoding="utf-8").split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_python_example_runs_as_written(tmp_path, tiny_model_dir, agnews_rows, monkeypatch):
    texts, labels = agnews_rows
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"name_or_path": str(tiny_model_dir), "init": "random"},
        "data": {"dataset": None, "train_file": str(write_csv(tmp_path / "train.csv", texts[:64], labels[:64])),
                 "label_names": ["World", "Sports", "Business", "Sci/Tech"], "max_length": 64, "test_size": 16},
        "lora": {"r": 4, "alpha": 8}, "train": {"epochs": 3, "batch_size": 16, "progress": False}}))
    code = readme_example()
    assert "configs/quickstart.yaml" in code and "runs/api" in code
    monkeypatch.chdir(tmp_path)  # the example writes runs/api relative to where it runs
    namespace = {}
    exec(code.replace("configs/quickstart.yaml", str(recipe)), namespace)

    run_dir = tmp_path / "runs" / "api"
    assert namespace["config"].train.epochs == 1  # the example's override beat the recipe's 3
    assert namespace["summary"] == json.loads((run_dir / "metrics.json").read_text())
    clf = namespace["clf"]
    assert clf.labels == ["World", "Sports", "Business", "Sci/Tech"]
    [label] = clf.predict(["Stocks rally as oil falls"])
    probs = clf.predict_proba(["Stocks rally as oil falls", "Team wins the cup"])
    assert probs.shape == (2, 4) and np.allclose(probs.sum(axis=1), 1) and label == clf.labels[probs[0].argmax()]
    # Exactly what `loraclf predict` writes (it rounds to 6 decimals).
    out = tmp_path / "p.csv"
    assert main(["predict", str(run_dir), "Stocks rally as oil falls", "Team wins the cup", "--output", str(out)]) == 0
    written = [[float(v) for v in line.split(",")[2:]] for line in out.read_text().splitlines()[1:]]
    assert [[round(float(p), 6) for p in row] for row in probs] == written
    assert loraclf.budget(namespace["config"]) == namespace["summary"]["parameters"] | {"within_budget": True}
    # The API checks its input as the CLI and serve do: one string is one text, [] is nothing to do.
    assert clf.predict("Stocks rally as oil falls") == label
    assert clf.predict_proba("Stocks rally as oil falls").shape == (4,)
    assert clf.predict([]) == [] and clf.predict_proba([]).shape == (0, 4)
    for bad, reason in (([""], r"texts\[0\]: empty or blank"), (["ok", "  "], r"texts\[1\]: empty or blank"),
                        (["ok", None], r"texts\[1\]: .*got None"), ([3], r"texts\[0\]: .*got 3"),
                        (42, "expected a list of texts")):
        with pytest.raises(loraclf.UserError, match=reason):
            clf.predict(bad)
