"""train.ema: the moving average's arithmetic, its swap in and out, and what a run keeps with it."""

import json

import pytest
import torch

from loraclf.data.encoding import encode
from loraclf.data.splits import load_splits
from loraclf.errors import UserError
from loraclf.inference.classifier import Classifier
from loraclf.metrics.classification import metrics
from loraclf.model.logits import predict_logits
from loraclf.rundir import layout, readers
from loraclf.training.averaging import Average, decay_at
from loraclf.training.recipe import train

from test_training import tiny_config


def two_layers():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 2))
    model[0].requires_grad_(False)  # frozen: not averaged
    return model


def test_average_follows_the_warmed_up_recurrence_and_skips_frozen_parameters():
    model = two_layers()
    average = Average(model, decay=0.9)
    expected = {name: p.detach().clone().double() for name, p in model.named_parameters() if p.requires_grad}
    for step in range(1, 30):
        with torch.no_grad():
            for p in model[1].parameters():
                p.add_(torch.randn_like(p))
        d = decay_at(0.9, step)
        for name, p in model.named_parameters():
            if name in expected:
                expected[name] = d * expected[name] + (1 - d) * p.detach().double()
        average.update(model, step)
    assert set(average.state()) == {"1.weight", "1.bias"}
    for name, value in average.state().items():
        torch.testing.assert_close(value.double(), expected[name], rtol=1e-6, atol=1e-6)
    assert decay_at(0.9, 1) == pytest.approx(2 / 11) and decay_at(0.9, 1000) == 0.9


def test_applied_swaps_the_average_in_and_the_trained_weights_back_bit_for_bit():
    model = two_layers()
    average = Average(model, decay=0.5)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    average.tensors = {k: v + 1 for k, v in average.tensors.items()}
    with average.applied(model):
        assert torch.equal(model[1].weight, average.tensors["1.weight"])
        assert torch.equal(model[0].weight, trained["0.weight"])
    for key, value in model.state_dict().items():
        assert torch.equal(value, trained[key]), key
    with pytest.raises(UserError, match="does not match"):
        average.load({"1.weight": trained["1.weight"]})


def test_a_run_with_ema_trains_the_same_weights_and_keeps_the_better_validated_ones(tmp_path, tiny_model_dir,
                                                                                    small_csv):
    # A high lr makes the trained weights jump about, so the average wins some validations and loses others.
    settings = dict(precision="fp32", metric_for_best="loss", lr=0.1, eval_every=2)
    plain = tmp_path / "plain"
    train(tiny_config(tiny_model_dir, small_csv, **settings), plain, log=lambda _: None)
    out = tmp_path / "ema"
    summary = train(tiny_config(tiny_model_dir, small_csv, ema=0.8, **settings), out, log=lambda _: None)
    events, plain_events = (
        [json.loads(line) for line in (run / layout.METRICS_LOG).read_text().splitlines()] for run in (out, plain))
    # The average never feeds back: every training loss and every trained-weights validation is the plain run's.
    assert [e["loss"] for e in events if e["event"] == "train"] == [
        e["loss"] for e in plain_events if e["event"] == "train"]
    evals = [e for e in events if e["event"] == "eval"]
    assert [e["trained_val_loss"] for e in evals] == [e["val_loss"] for e in plain_events if e["event"] == "eval"]
    for e in evals:  # each record reports the better of the two, and which it was
        assert e["val_loss"] == min(e["trained_val_loss"], e["ema_val_loss"])
        assert e["weights"] == ("ema" if e["ema_val_loss"] < e["trained_val_loss"] else "trained")
    assert {e["weights"] for e in evals} == {"ema", "trained"}
    assert summary["best"]["val_loss"] == min(e["val_loss"] for e in evals)
    assert summary["best"]["weights"] == "ema"
    # The saved adapter is the kept weights: reloaded, it scores the recorded validation loss.
    trained = Classifier.load(out, device="cpu", precision="fp32", merge=False)
    splits = load_splits(readers.read_config(out).data, trained.tokenizer, log=lambda _: None)
    val = encode(trained.tokenizer, splits.val.texts, None, 64)
    result = metrics(splits.val.labels, predict_logits(trained.model, val, 16, 1, "cpu"), trained.labels)
    assert result["loss"] == pytest.approx(summary["best"]["val_loss"], abs=1e-5)


def test_ema_must_be_a_decay_below_one():
    config = tiny_config("unused", "unused", ema=1.0)
    with pytest.raises(UserError, match=r"train.ema: must be in \[0, 1\)"):
        config.validate()
