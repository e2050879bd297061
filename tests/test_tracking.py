"""TensorBoard and MLflow receive the same numbers as metrics.jsonl."""

import importlib.util
import json
import os

import pytest

from loraclf.errors import UserError
from loraclf.rundir import layout
from loraclf.training import tracking
from loraclf.training.recipe import train

from conftest import write_csv
from test_training import tiny_config


def same(logged, expected) -> bool:
    """Logged scalars (TensorBoard keeps float32) against metrics.jsonl's (step, value) pairs."""
    return [s.step for s in logged] == [step for step, _ in expected] and \
        [s.value for s in logged] == pytest.approx([value for _, value in expected], rel=1e-6)


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None or importlib.util.find_spec("mlflow") is None,
                    reason="needs the tracking extra (pip install 'loraclf[tracking]')")
def test_tensorboard_and_mlflow_get_what_metrics_jsonl_gets(tmp_path, tiny_model_dir, agnews_rows, monkeypatch):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    texts, labels = agnews_rows
    config = tiny_config(tiny_model_dir, write_csv(tmp_path / "train.csv", texts[:80], labels[:80]))
    config.train.log_to = ["jsonl", "tensorboard", "mlflow"]
    out = tmp_path / "run"
    summary = train(config, out, log=lambda _: None)
    events = [json.loads(line) for line in (out / layout.METRICS_LOG).read_text().splitlines()]
    train_loss = [(e["step"], e["loss"]) for e in events if e["event"] == "train"]
    val_acc = [(e["step"], e["val_accuracy"]) for e in events if e["event"] == "eval"]

    board = EventAccumulator(str(out / "tensorboard"))
    board.Reload()
    assert same(board.Scalars("train/loss"), train_loss)
    assert same(board.Scalars("eval/val_accuracy"), val_acc)

    client = MlflowClient((out / "mlruns").resolve().as_uri())
    (found,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert found.info.run_name == "run" and found.data.params["lora.r"] == "4"
    history = client.get_metric_history(found.info.run_id, "train_loss")
    assert same(sorted(history, key=lambda m: m.step), train_loss)
    assert found.data.metrics["test_accuracy"] == pytest.approx(summary["test"]["accuracy"])
    os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)


def test_a_missing_tracker_package_is_a_one_line_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(UserError, match="train.log_to tensorboard: needs tensorboard"):
        tracking.check_available(["jsonl", "tensorboard"])
