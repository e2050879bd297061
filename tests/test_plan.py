import json

import pytest

from loraclf.cli import main
from loraclf.config.loading import load_config
from loraclf.config.schema import AG_NEWS_LABELS, Config
from loraclf.model.plan import candidates, exact

from conftest import ROBERTA, needs_shared, write_csv


@needs_shared
def test_plan_for_roberta_base_lists_configurations_under_a_million(capsys):
    assert main(["plan", "--budget", "1000000", "--model.name_or_path", str(ROBERTA), "--json", "--top", "12"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 12
    assert all(row["trainable"] < 1_000_000 and row["trainable"] == row["adapter"] + row["head"] for row in rows)
    assert [row["adapter"] for row in rows] == sorted((row["adapter"] for row in rows), reverse=True)


def test_every_candidate_is_under_budget_and_counted_exactly(tiny_model_dir):
    config = Config()
    config.model.name_or_path = str(tiny_model_dir)
    found = candidates(config, AG_NEWS_LABELS, 20_000)
    assert found and all(c.trainable < 20_000 for c in found)
    methods = {c.method for c in found}
    assert methods == {"lora", "dora", "vera", "ia3", "adalora"}
    # The analytic counts agree with building each configuration, for one of every method and head.
    seen = set()
    for candidate in found:
        if (candidate.method, candidate.head) in seen:
            continue
        seen.add((candidate.method, candidate.head))
        counted = exact(config, candidate, AG_NEWS_LABELS)
        assert (counted.lora, counted.head) == (candidate.adapter, candidate.head_params), candidate


def test_three_planned_configurations_train_as_printed(tmp_path, tiny_model_dir, agnews_rows, capsys):
    texts, labels = agnews_rows
    data = write_csv(tmp_path / "train.csv", texts[:48], labels[:48])
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""
model: {{name_or_path: {tiny_model_dir}, init: random}}
data: {{dataset: null, train_file: {data}, max_length: 48, label_names: [World, Sports, Business, Sci/Tech]}}
train: {{epochs: 1, max_steps: 2, batch_size: 8, progress: false}}
""")
    assert main(["plan", "--config", str(recipe), "--budget", "20000", "--json", "--top", "400"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # The best of three different methods, as printed.
    picked, methods = [], set()
    for row in rows:
        method = row["overrides"][1] + ("+dora" if "--lora.use_dora" in row["overrides"] else "")
        if method not in methods and len(picked) < 3:
            methods.add(method)
            picked.append(row)
    assert len(picked) == 3
    for i, row in enumerate(picked):
        out = tmp_path / f"run{i}"
        assert main(["train", "--config", str(recipe), "--output-dir", str(out), *row["overrides"]]) == 0
        trained = json.loads((out / "budget.json").read_text())
        assert trained["trainable"] == row["trainable"] < 20_000
        assert load_config(out / "config.yaml").lora.method == row["overrides"][1]


def test_plan_with_no_room_says_so(tiny_model_dir, capsys):
    assert main(["plan", "--budget", "10", "--model.name_or_path", str(tiny_model_dir)]) == 2
    assert "no enumerated configuration" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["--budget", "0"], ["--top", "0"]])
def test_plan_rejects_non_positive_numbers(bad, tiny_model_dir, capsys):
    assert main(["plan", *bad, "--model.name_or_path", str(tiny_model_dir)]) == 2


@pytest.mark.parametrize("family", ["modernbert", "albert", "deberta-v2", "distilbert"])
def test_the_planner_counts_every_family_exactly(tmp_path, family):
    from families import tiny_config

    tiny_config(family).save_pretrained(tmp_path)
    config = Config()
    config.model.name_or_path = str(tmp_path)
    found = candidates(config, AG_NEWS_LABELS, 50_000)
    # Only the model's own head where it has no linear/lowrank form; no layer ranges where layers are shared.
    assert {c.head for c in found} == {"default"}
    assert all(c.layers is None for c in found) == (family == "albert")
    for roles in {c.targets for c in found}:
        candidate = next(c for c in found if c.targets == roles and c.method == "lora")
        counted = exact(config, candidate, AG_NEWS_LABELS)
        assert (counted.lora, counted.head) == (candidate.adapter, candidate.head_params), candidate
