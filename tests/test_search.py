"""Optuna search on a tiny model: workers sharing a SQLite study, a worker killed mid-trial, budget first."""

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from loraclf.config.loading import load_config

from conftest import assert_user_error, cli, write_csv

optuna = pytest.importorskip("optuna", reason="needs the search extra (pip install 'loraclf[search]')")


@pytest.fixture
def recipe(tmp_path, tiny_model_dir, agnews_rows):
    texts, labels = agnews_rows
    data = write_csv(tmp_path / "train.csv", texts[:64], labels[:64])
    tree = {"model": {"name_or_path": str(tiny_model_dir), "init": "random"},
            "data": {"dataset": None, "train_file": str(data), "label_names": ["World", "Sports", "Business",
                                                                               "Sci/Tech"],
                     "max_length": 48, "test_size": 16, "val_fraction": 0.25},
            "train": {"batch_size": 8, "progress": False},
            "search": {"r": [2, 4], "epochs": [1, 2], "batch_size": [8], "heartbeat_s": 1, "grace_s": 3}}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return path


def command(recipe, study, trials, *extra):
    return [sys.executable, "-m", "loraclf.cli", "search", "--config", str(recipe), "--trials", str(trials),
            "--study-dir", str(study), *extra]


def trials_of(study_dir):
    storage = f"sqlite:///{study_dir / 'study.db'}"
    return optuna.load_study(study_name="loraclf", storage=storage).get_trials()


def test_two_workers_share_one_study(tmp_path, recipe):
    study = tmp_path / "study"
    done = subprocess.run(command(recipe, study, 4, "--workers", "2"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    trials = trials_of(study)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    states = [t.state.name for t in trials]
    assert "RUNNING" not in states and "WAITING" not in states  # none lost
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert 4 <= len(finished) <= 5  # the second worker may finish one it had started
    for t in trials:
        if t.state.name == "COMPLETE":
            assert json.loads((study / "trials" / f"trial-{t.number:04d}" / "metrics.json").read_text())
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    config = load_config(study / "best.yaml")
    assert config.lora.r == best.params["r"] and config.train.epochs == best.params["epochs"]
    for name in ("summary.md", "history.png", "accuracy_vs_parameters.png"):
        assert (study / name).is_file()
    assert "complete" in done.stdout and "rejected over budget" in done.stdout


def test_a_killed_worker_leaves_its_trial_failed_and_the_study_completes(tmp_path, recipe):
    study = tmp_path / "study"
    # Worker A kills itself (SIGKILL) after the second step of its first trial.
    kill_at = [sys.executable, str(Path(__file__).with_name("kill_at.py")), "after-step:2"]
    killed = subprocess.Popen(kill_at + command(recipe, study, 3)[3:], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    survivor = subprocess.run(command(recipe, study, 3), capture_output=True, text=True, timeout=600)
    assert killed.wait(timeout=120) == -9
    assert survivor.returncode == 0, survivor.stderr[-2000:]
    trials = trials_of(study)
    states = {t.number: t.state.name for t in trials}
    assert "RUNNING" not in states.values()
    assert sum(s == "COMPLETE" or s == "PRUNED" for s in states.values()) >= 3
    assert list(states.values()).count("FAIL") >= 1  # the killed worker's trial, marked failed


def test_a_space_entirely_over_budget_is_one_line_and_trains_nothing(tmp_path, recipe):
    study = tmp_path / "study"
    code, _, err = cli(*command(recipe, study, 3, "--budget.max_trainable", "100")[3:])
    assert_user_error(code, err, "every configuration of the space is over budget")
    assert not (study / "trials").exists() and not (study / "study.db").exists()


def test_over_budget_samples_are_rejected_untrained_and_not_counted(tmp_path, recipe):
    # Budget 700 on the tiny model: every default head (1,188) is over it, and so is a linear head (132)
    # with most adapters; a linear head with rank 2 on query,value (644) fits.
    study = tmp_path / "study"
    code, out, err = cli(*command(recipe, study, 2, "--budget.max_trainable", "700")[3:])
    assert code == 0, err[-2000:]
    trials = trials_of(study)
    rejected = [t for t in trials if t.user_attrs.get("rejected") == "over budget"]
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert rejected and len(finished) == 2
    for t in rejected:
        assert t.state.name == "FAIL" and t.user_attrs["trainable"] > 700
        assert not (study / "trials" / f"trial-{t.number:04d}").exists()  # no training, no folder
    assert all(t.user_attrs["trainable"] < 700 for t in finished)
    assert f"{len(rejected)} rejected over budget" in out.splitlines()[-2]


def test_the_recipe_itself_is_the_first_trial_when_the_space_holds_it(tmp_path, recipe):
    from loraclf.tuning.search import recipe_params

    config = load_config(recipe)
    config.lora.r, config.lora.alpha, config.train.epochs, config.train.lr = 4, 8, 1, 1e-3
    start = recipe_params(config, 2)
    assert start["r"] == 4 and start["alpha_ratio"] == 2 and start["layers"] == "all" and start["method"] == "lora"
    config.train.lr = 1.0  # outside search.lr
    assert recipe_params(config, 2) is None


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None or importlib.util.find_spec("mlflow") is None,
                    reason="needs the tracking extra (pip install 'loraclf[tracking]')")
def test_pruned_trials_close_their_trackers_and_the_next_trial_logs(tmp_path, recipe, monkeypatch):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from loraclf.tuning import search

    class PruneEvenTrials(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            return trial.number % 2 == 0

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(search, "_pruner", lambda space: PruneEvenTrials())
    config = load_config(recipe)
    config.train.log_to = ["jsonl", "tensorboard", "mlflow"]
    config.search.epochs = [1, 1]
    study = tmp_path / "study"
    search.search(config, 3, study, log=lambda _: None)
    states = {t.number: t.state.name for t in trials_of(study)}
    assert states == {0: "PRUNED", 1: "COMPLETE", 2: "PRUNED"}
    for number, state in states.items():
        folder = study / "trials" / f"trial-{number:04d}"
        [experiment] = [e for e in MlflowClient((folder / "mlruns").as_uri()).search_experiments()]
        [logged] = MlflowClient((folder / "mlruns").as_uri()).search_runs([experiment.experiment_id])
        assert logged.info.status == ("FINISHED" if state == "COMPLETE" else "FAILED")
        assert "eval_val_accuracy" in logged.data.metrics
        board = EventAccumulator(str(folder / "tensorboard"))
        board.Reload()
        assert "eval/val_accuracy" in board.Tags()["scalars"]


def test_poolings_are_searched_when_listed_and_the_recipe_point_keeps_its_own(recipe):
    from loraclf.tuning.search import _structure, recipe_params, sample

    config = load_config(recipe)
    fixed = {"method": "lora", "r": 2, "alpha_ratio": 1.0, "target_modules": "attention_qkv", "layers": "all",
             "head": "default", "lr": 1e-3, "dropout": 0.0, "warmup_ratio": 0.0, "epochs": 1, "batch_size": 8}
    assert "pooling" not in sample(optuna.trial.FixedTrial(fixed), config.search)  # not listed: not sampled
    config.search.poolings = ["cls", "mean"]
    params = sample(optuna.trial.FixedTrial(fixed | {"pooling": "mean"}), config.search)
    assert params["pooling"] == "mean" and _structure(config, params, 2).model.pooling == "mean"
    config.train.epochs, config.train.batch_size, config.lora.r, config.lora.alpha = 1, 8, 2, 2
    assert recipe_params(config, 2)["pooling"] == "cls"


def test_weight_decay_and_ema_are_searched_when_given_and_the_recipe_point_keeps_its_own(recipe):
    from loraclf.tuning.search import _structure, recipe_params, sample

    config = load_config(recipe)
    fixed = {"method": "lora", "r": 2, "alpha_ratio": 1.0, "target_modules": "attention_qkv", "layers": "all",
             "head": "default", "lr": 1e-3, "dropout": 0.0, "warmup_ratio": 0.0, "epochs": 1, "batch_size": 8}
    assert not {"weight_decay", "ema"} & set(sample(optuna.trial.FixedTrial(fixed), config.search))
    config.search.weight_decay, config.search.ema = [0.0, 0.1], [0.0, 0.995]
    params = sample(optuna.trial.FixedTrial(fixed | {"weight_decay": 0.05, "ema": 0.995}), config.search)
    trial = _structure(config, params, 2)
    assert (trial.train.weight_decay, trial.train.ema) == (0.05, 0.995)
    config.train.epochs, config.train.batch_size, config.lora.r, config.lora.alpha = 1, 8, 2, 2
    assert (recipe_params(config, 2)["weight_decay"], recipe_params(config, 2)["ema"]) == (0.01, 0.0)
    config.train.ema = 0.9  # not among the choices
    assert recipe_params(config, 2) is None
