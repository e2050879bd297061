"""Adaptation: pseudo-label selection (threshold, per-class cap, seeded), resumable rounds, and the entropy and
consistency methods' rounds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.torch import load_file

from loraclf.config.schema import AdaptConfig
from loraclf.errors import UserError
from loraclf.rundir import layout
from loraclf.training import adapt
from loraclf.training.recipe import train

from conftest import write_csv
from test_training import tiny_config


def _probs(rows):
    return np.array(rows, dtype=float)


def test_select_keeps_confident_rows_and_caps_each_class_at_the_smallest():
    probs = _probs([[0.97, 0.03], [0.96, 0.04], [0.99, 0.01], [0.5, 0.5], [0.02, 0.98], [0.1, 0.9]])
    assert adapt.select(probs, 0.95, 0, seed=0).tolist() == [0, 1, 2, 4]        # no cap
    kept = adapt.select(probs, 0.95, 1.0, seed=0)
    assert len(kept) == 2 and 4 in kept and set(kept) - {4} <= {0, 1, 2}       # class 0 capped at 1
    assert adapt.select(probs, 0.95, 2.0, seed=0).tolist().count(4) == 1 and len(adapt.select(probs, 0.95, 2.0, 0)) == 3
    assert adapt.select(probs, 0.85, 1.0, seed=0).tolist().count(5) + adapt.select(probs, 0.85, 1.0, 0).tolist().count(4) == 2


def test_select_is_seeded():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet([0.2, 0.2, 0.2], size=500)
    a, b = adapt.select(probs, 0.8, 1.0, seed=3), adapt.select(probs, 0.8, 1.0, seed=3)
    assert np.array_equal(a, b) and not np.array_equal(a, adapt.select(probs, 0.8, 1.0, seed=4))
    counts = np.bincount(probs[a].argmax(1), minlength=3)
    assert counts.min() == counts.max() > 0  # balanced
    assert (probs[a].max(1) >= 0.8).all()


def test_threshold_schedule_runs_linearly_from_first_to_last_round():
    cfg = AdaptConfig(method="self_training", rounds=3, threshold=0.95, final_threshold=0.75)
    assert [round(adapt.threshold_for(cfg, i), 6) for i in range(3)] == [0.95, 0.85, 0.75]
    assert adapt.threshold_for(AdaptConfig(rounds=3, threshold=0.9, final_threshold=None), 2) == 0.9


def _adapt_config(tiny_model_dir, tmp_path, agnews_rows):
    texts, labels = agnews_rows
    config = tiny_config(tiny_model_dir, write_csv(tmp_path / "train.csv", texts[:80], labels[:80]), epochs=1)
    config.data.unlabelled_file = str(write_csv(tmp_path / "target.csv", texts[200:260], labels[200:260]))
    config.adapt.method, config.adapt.rounds, config.adapt.threshold = "self_training", 2, 0.0
    config.adapt.class_ratio, config.adapt.final_threshold, config.adapt.epochs = 0, None, 1
    return config


def test_rounds_log_counts_and_pseudo_label_accuracy_and_resume_from_the_last_round(tmp_path, tiny_model_dir,
                                                                                      agnews_rows):
    config = _adapt_config(tiny_model_dir, tmp_path, agnews_rows)
    out = tmp_path / "run"
    summary = train(config, out, log=lambda _: None)
    rounds = summary["adapt"]
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        pseudo = np.loadtxt(out / "adapt" / f"round-{r['round']}" / "pseudo_labels.csv", delimiter=",", skiprows=1)
        assert r["kept"] == len(pseudo) == 60 and sum(r["kept_per_class"].values()) == 60  # threshold 0, no cap
        truth = np.array(agnews_rows[1][200:260])[pseudo[:, 0].astype(int)]
        assert r["pseudo_accuracy"] == pytest.approx(float((pseudo[:, 1] == truth).mean()))
    # The shipped adapter is the last round's weights.
    last = load_file(str(out / "adapt" / "round-2" / "trainable.safetensors"))
    adapter = load_file(str(out / layout.ADAPTER / "adapter_model.safetensors"))
    some = next(k for k in adapter if "lora_A" in k)
    assert np.allclose(adapter[some].numpy(), last[next(k for k in last if k.endswith(some.replace(".weight", ".default.weight")))].numpy())

    # Interrupted after round 1: resuming trains round 2 only and ends where the whole run did.
    import shutil

    shutil.rmtree(out / "adapt" / "round-2")
    resumed = train(config, out, resume=True, log=lambda _: None)
    def untimed(records):
        return [{k: v for k, v in r.items() if k != "train_seconds"} for r in records]

    assert untimed(resumed["adapt"]) == untimed(rounds)
    again = load_file(str(out / "adapt" / "round-2" / "trainable.safetensors"))
    assert all(np.array_equal(again[k].numpy(), last[k].numpy()) for k in last)


def test_adapt_needs_an_unlabelled_file():
    from loraclf.config.loading import load_config

    with pytest.raises(UserError, match="adapt.method self_training: needs data.unlabelled_file"):
        load_config(tree={"data": {"train_file": "x.csv"}, "adapt": {"method": "self_training"}})


def test_entropy_loss_is_labelled_cross_entropy_plus_weighted_unlabelled_entropy():
    import torch

    torch.manual_seed(0)
    logits = torch.randn(5, 3)
    labels = torch.tensor([2, adapt.IGNORE, 0, adapt.IGNORE, adapt.IGNORE])
    p = torch.softmax(logits[[1, 3, 4]], -1)
    expected = torch.nn.functional.cross_entropy(logits[[0, 2]], labels[[0, 2]]) \
        + 0.5 * (-(p * p.log()).sum(-1)).mean()
    torch.testing.assert_close(adapt.entropy_loss(0.5)(logits, labels), expected)
    only_unlabelled = torch.full((5,), adapt.IGNORE)
    assert torch.isfinite(adapt.entropy_loss(1.0)(logits, only_unlabelled))


def test_entropy_rounds_train_on_every_unlabelled_text(tmp_path, tiny_model_dir, agnews_rows):
    config = _adapt_config(tiny_model_dir, tmp_path, agnews_rows)
    config.adapt.method, config.adapt.rounds = "entropy", 1
    config.train.metric_for_best = "micro_f1"  # the round's record carries every metric a run can keep by
    summary = train(config, tmp_path / "run", log=lambda _: None)
    assert summary["best"]["val_micro_f1"] == summary["adapt"][0]["val_micro_f1"]
    (record,) = summary["adapt"]
    assert record["method"] == "entropy" and record["unlabelled"] == 60 and "target_accuracy" in record
    assert not (tmp_path / "run" / "adapt" / "round-1" / "pseudo_labels.csv").read_text().splitlines()[1:]


@pytest.mark.parametrize("method", ["consistency", "self_training+consistency"])
def test_consistency_rounds_train_on_every_unlabelled_text(tmp_path, tiny_model_dir, agnews_rows, method):
    config = _adapt_config(tiny_model_dir, tmp_path, agnews_rows)
    config.adapt.method, config.adapt.rounds = method, 1
    summary = train(config, tmp_path / "run", log=lambda _: None)
    (record,) = summary["adapt"]
    assert record["method"] == method and record["unlabelled"] == 60
    assert record["consistency_confident"] == 1.0  # threshold 0: every unlabelled text has a target
    pseudo = (tmp_path / "run" / "adapt" / "round-1" / "pseudo_labels.csv").read_text().splitlines()[1:]
    assert len(pseudo) == (60 if method == "self_training+consistency" else 0) == record.get("kept", 0)


def test_overwrite_leaves_nothing_of_the_earlier_run(tmp_path, tiny_model_dir, agnews_rows, capsys):
    """A run with adaptation rounds, evaluations and a report, then --overwrite with another seed and adapt lr:
    the new run trains its own round (it once loaded the old one's weights) and no file of the old run stays."""
    from loraclf.cli import main
    from loraclf.config.loading import save_config
    from loraclf.inference.evaluate import evaluate_files

    config = _adapt_config(tiny_model_dir, tmp_path, agnews_rows)
    config.adapt.rounds = 1
    out = tmp_path / "run"
    first = train(config, out, log=lambda _: None)
    evaluate_files(out, [str(tmp_path / "target.csv")])
    old_round = load_file(str(layout.round_folder(out, 1) / layout.ROUND_STATE))
    (out / "notes.txt").write_text("the user's own file", encoding="utf-8")
    assert (out / "eval_target.json").is_file() and (out / "eval_target.png").is_file()

    save_config(config, tmp_path / "recipe.yaml")
    capsys.readouterr()
    code = main(["train", "--config", str(tmp_path / "recipe.yaml"), "--output-dir", str(out), "--overwrite",
                 "--train.seed", "7", "--adapt.lr", "0.002", "--train.progress", "false"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "adapt round 1: threshold" in printed and "loaded from" not in printed
    new_round = load_file(str(layout.round_folder(out, 1) / layout.ROUND_STATE))
    assert any(not np.array_equal(new_round[k].numpy(), old_round[k].numpy()) for k in old_round)
    summary = json.loads((out / layout.SUMMARY).read_text(encoding="utf-8"))
    assert summary["adapt"][0]["train_loss"] != first["adapt"][0]["train_loss"]
    assert not list(out.glob("eval_*")), "the earlier run's evaluations were left beside the new model"
    assert (out / "notes.txt").is_file()  # only loraclf's own files are cleared
    command = json.loads((out / layout.VERSIONS).read_text(encoding="utf-8"))["command"]
    assert command.startswith("loraclf train --config") and "--overwrite" in command
