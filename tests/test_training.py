import json

import numpy as np
import pytest
import torch
import yaml

from loraclf.config.schema import Config
from loraclf.data.encoding import encode
from loraclf.errors import UserError
from loraclf.inference.classifier import Classifier
from loraclf.metrics.classification import metrics
from loraclf.model.logits import predict_logits
from loraclf.rundir import layout, readers
from loraclf.training import checkpoint
from loraclf.training.loop import param_groups
from loraclf.training.recipe import train

from conftest import write_csv


def tiny_config(model_dir, train_file, **train_overrides) -> Config:
    config = Config()
    config.model.name_or_path, config.model.init = str(model_dir), "random"
    config.data.dataset, config.data.train_file = None, str(train_file)
    config.data.label_names = ["World", "Sports", "Business", "Sci/Tech"]
    config.data.max_length, config.data.test_size, config.data.val_fraction = 64, 16, 0.25
    config.lora.r, config.lora.alpha = 4, 8
    config.train.epochs, config.train.batch_size, config.train.lr = 2, 8, 5e-3
    config.train.progress, config.train.log_every = False, 2
    for key, value in train_overrides.items():
        setattr(config.train, key, value)
    return config


def test_train_writes_a_complete_run_folder(tmp_path, tiny_model_dir, small_csv):
    out = tmp_path / "run"
    summary = train(tiny_config(tiny_model_dir, small_csv, eval_every=3), out, log=lambda _: None)
    for name in (layout.CONFIG, layout.LABELS, layout.BUDGET, layout.METRICS_LOG, layout.SUMMARY, "test_metrics.json",
                 "test_confusion_matrix.png", "adapter/adapter_model.safetensors", "adapter/adapter_config.json",
                 "tokenizer", "base_model/model.safetensors"):
        assert (out / name).exists(), name
    assert not list(out.glob(".*")), "temporary files left behind"
    events = [json.loads(line) for line in (out / layout.METRICS_LOG).read_text().splitlines()]
    evals = [e for e in events if e["event"] == "eval"]
    per_epoch = -(-summary["train_items"] // 8)
    expected = sorted({s for s in range(3, 2 * per_epoch + 1, 3)} | {per_epoch, 2 * per_epoch})
    assert [e["step"] for e in evals] == expected  # every 3 steps, and once at each epoch end
    assert all(np.isfinite(e["loss"]) for e in events if e["event"] == "train")
    assert summary["parameters"]["trainable"] == json.loads((out / layout.BUDGET).read_text())["trainable"]
    assert yaml.safe_load((out / layout.CONFIG).read_text())["lora"]["r"] == 4
    assert summary["test"]["count"] == 16


@pytest.mark.parametrize("head", ["default", "linear", "lowrank"])
def test_saved_best_adapter_reproduces_the_best_validation(tmp_path, tiny_model_dir, small_csv, head):
    out = tmp_path / "run"
    # fp32, unmerged: the reload must reproduce the recorded loss to 1e-5, whatever the head.
    config = tiny_config(tiny_model_dir, small_csv, metric_for_best="loss", precision="fp32")
    config.model.head, config.model.head_rank = head, 3
    summary = train(config, out, log=lambda _: None)
    trained = Classifier.load(out, device="cpu", precision="fp32", merge=False)
    from loraclf.data.splits import load_splits

    splits = load_splits(readers.read_config(out).data, trained.tokenizer, log=lambda _: None)
    val = encode(trained.tokenizer, splits.val.texts, None, config.data.max_length)
    result = metrics(splits.val.labels, predict_logits(trained.model, val, 16, 1, "cpu"), trained.labels)
    assert result["loss"] == pytest.approx(summary["best"]["val_loss"], abs=1e-5)
    assert summary["best"]["val_loss"] == min(
        json.loads(line)["val_loss"] for line in (out / layout.METRICS_LOG).read_text().splitlines()
        if '"eval"' in line)


def test_training_is_seeded(tmp_path, tiny_model_dir, small_csv):
    a = train(tiny_config(tiny_model_dir, small_csv, epochs=1), tmp_path / "a", log=lambda _: None)
    b = train(tiny_config(tiny_model_dir, small_csv, epochs=1), tmp_path / "b", log=lambda _: None)
    assert a["best"] == b["best"]


def test_training_learns_a_separable_task(tmp_path, tiny_model_dir):
    words = ["football", "election", "stocks", "software"]
    texts = [f"{words[i % 4]} {words[i % 4]} news item {i}" for i in range(96)]
    labels = [i % 4 for i in range(96)]
    data = write_csv(tmp_path / "easy.csv", texts, labels)
    config = tiny_config(tiny_model_dir, data, epochs=10, lr=2e-2)
    config.data.length_filter = None
    summary = train(config, tmp_path / "run", log=lambda _: None)
    assert summary["test"]["accuracy"] >= 0.9


def test_over_budget_refuses_before_writing_weights(tmp_path, tiny_model_dir, small_csv):
    config = tiny_config(tiny_model_dir, small_csv)
    config.budget.max_trainable = 100
    with pytest.raises(UserError, match="over budget by"):
        train(config, tmp_path / "run", log=lambda _: None)
    assert not (tmp_path / "run" / "adapter").exists()


def test_existing_run_folder_needs_overwrite(tmp_path, tiny_model_dir, small_csv):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(UserError, match="not empty; pass --overwrite"):
        train(tiny_config(tiny_model_dir, small_csv), out, log=lambda _: None)
    assert (out / "keep.txt").read_text() == "precious"


def test_no_weight_decay_on_bias_and_layernorm(tiny_model_dir):
    from loraclf.model.adapter import build_model

    config = Config()
    config.model.name_or_path, config.model.init = str(tiny_model_dir), "random"
    config.lora.bias = "all"
    model = build_model(config.model, config.lora, ["a", "b"])
    decay, plain = param_groups(model, 0.1, 1e-3)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].endswith("weight") and "LayerNorm" not in names[id(p)] for p in decay["params"])
    assert any(names[id(p)].endswith("bias") for p in plain["params"])
    assert plain["weight_decay"] == 0.0 and decay["weight_decay"] == 0.1
    assert len(decay["params"]) + len(plain["params"]) == sum(1 for p in model.parameters() if p.requires_grad)


def test_overwrite_replaces_the_earlier_run(tmp_path, tiny_model_dir, small_csv):
    out = tmp_path / "run"
    train(tiny_config(tiny_model_dir, small_csv, epochs=1), out, log=lambda _: None)
    (out / "notes.txt").write_text("mine")
    config = tiny_config(tiny_model_dir, small_csv, epochs=1)
    config.data.test_size = 0
    train(config, out, overwrite=True, log=lambda _: None)
    assert not (out / "test_metrics.json").exists(), "a stale result of the earlier run survived"
    assert (out / "notes.txt").read_text() == "mine"


def test_merged_inference_matches_the_unmerged_model(tmp_path, tiny_model_dir, small_csv, agnews_rows):
    out = tmp_path / "run"
    train(tiny_config(tiny_model_dir, small_csv, epochs=1, lr=5e-2, precision="fp32"), out, log=lambda _: None)
    merged, unmerged = Classifier.load(out, device="cpu", precision="fp32"), Classifier.load(out, device="cpu", precision="fp32", merge=False)
    assert not any("lora_" in n for n, _ in merged.model.named_parameters())
    data = encode(merged.tokenizer, agnews_rows[0][:64], None, 64)
    a = predict_logits(merged.model, data, 16, 1, "cpu")
    b = predict_logits(unmerged.model, data, 16, 1, "cpu")
    assert np.abs(a - b).max() < 1e-4
    assert (a.argmax(1) == b.argmax(1)).all()


def test_bf16_autocast_stays_close_to_fp32(tmp_path, tiny_model_dir, small_csv, agnews_rows):
    out = tmp_path / "run"
    train(tiny_config(tiny_model_dir, small_csv, epochs=1, precision="fp32"), out, log=lambda _: None)
    trained = Classifier.load(out, device="cpu", precision="fp32")
    data = encode(trained.tokenizer, agnews_rows[0][:64], None, 64)
    fp32 = predict_logits(trained.model, data, 16, 1, "cpu")
    bf16 = predict_logits(trained.model, data, 16, 1, "cpu", torch.bfloat16)
    assert np.abs(fp32 - bf16).max() < 0.05


def test_max_steps_stops_early_and_validates_once_at_the_end(tmp_path, tiny_model_dir, small_csv):
    out = tmp_path / "run"
    summary = train(tiny_config(tiny_model_dir, small_csv, epochs=3, max_steps=4), out, log=lambda _: None)
    events = [json.loads(line) for line in (out / layout.METRICS_LOG).read_text().splitlines()]
    assert summary["steps"] == 4
    assert [e["step"] for e in events if e["event"] == "eval"] == [4]
    assert summary["train_seconds"] > 0 and summary["eval_seconds"] > 0


def test_bf16_merged_weights_agree_with_fp32(tmp_path, tiny_model_dir, small_csv, agnews_rows):
    out = tmp_path / "run"
    train(tiny_config(tiny_model_dir, small_csv, epochs=1, precision="fp32"), out, log=lambda _: None)
    fp32 = Classifier.load(out, device="cpu", precision="fp32")
    bf16 = Classifier.load(out, device="cpu", precision="bf16")
    linears = [m for m in bf16.model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.weight.dtype == torch.bfloat16 for m in linears)
    # The rest (embeddings, layer norms) stays fp32 under autocast, as in training.
    assert all(m.weight.dtype == torch.float32 for m in bf16.model.modules() if isinstance(m, torch.nn.LayerNorm))
    data = encode(fp32.tokenizer, agnews_rows[0][:64], None, 64)
    a = predict_logits(fp32.model, data, 16, 1, "cpu")
    b = predict_logits(bf16.model, data, 16, 1, "cpu", torch.bfloat16)
    assert np.abs(a - b).max() < 0.05


def test_gradient_checkpointing_recomputes_the_same_steps(tmp_path, tiny_model_dir, small_csv, monkeypatch):
    import torch.utils.checkpoint
    import transformers.modeling_utils

    calls = []
    original = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(transformers.modeling_utils, "checkpoint", lambda *a, **k: calls.append(1) or original(*a, **k))
    losses = {}
    for checkpointing in (False, True):
        config = tiny_config(tiny_model_dir, small_csv, epochs=1, precision="fp32", log_every=1,
                             gradient_checkpointing=checkpointing)
        config.model.dropout, config.lora.dropout = 0.0, 0.0  # recomputation redraws dropout masks
        train(config, tmp_path / str(checkpointing), log=lambda _: None)
        losses[checkpointing] = [json.loads(line)["loss"] for line in
                                 (tmp_path / str(checkpointing) / layout.METRICS_LOG).read_text().splitlines()
                                 if '"train"' in line]
    assert len(losses[True]) > 3 and calls  # the layers did run through activation checkpointing
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)


def test_length_chunks_give_the_whole_batch_loss(tmp_path, tiny_model_dir, small_csv, monkeypatch):
    """Chunked batches (cost 1: nearly every length its own chunk) train as the whole padded batches do."""
    from loraclf.training import loop

    sizes = []
    split = loop.length_chunks
    monkeypatch.setattr(loop, "length_chunks", lambda *a: sizes.append(len(split(*a))) or split(*a))
    losses = {}
    for chunked in (False, True):
        config = tiny_config(tiny_model_dir, small_csv, epochs=1, precision="fp32", log_every=1,
                             length_chunks=chunked, chunk_cost=1, group_by_length=False)
        config.model.dropout, config.lora.dropout = 0.0, 0.0
        train(config, tmp_path / str(chunked), log=lambda _: None)
        losses[chunked] = [json.loads(line)["loss"] for line in
                           (tmp_path / str(chunked) / layout.METRICS_LOG).read_text().splitlines() if '"train"' in line]
    assert len(losses[True]) > 3 and min(sizes) > 1  # every batch did run in several chunks
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)


@pytest.mark.parametrize("grouped", [False, True])
def test_accumulated_micro_batches_make_the_large_batch_update(tmp_path, tiny_model_dir, small_csv, grouped):
    """4 micro-batches of 2 = one batch of 8: the same losses and weights, with class weights, whose mean divides by
    the whole batch's summed weights (a per-micro-batch mean would not)."""
    from safetensors.torch import load_file



    losses, final = {}, {}
    for accum in (1, 4):
        config = tiny_config(tiny_model_dir, small_csv, epochs=1, precision="fp32", log_every=1, grad_accum_steps=accum,
                             group_by_length=grouped, class_weights="balanced", chunk_cost=1)
        config.model.dropout, config.lora.dropout = 0.0, 0.0
        out = tmp_path / str(accum)
        train(config, out, log=lambda _: None)
        losses[accum] = [json.loads(line)["loss"] for line in (out / layout.METRICS_LOG).read_text().splitlines()
                         if '"train"' in line]
        final[accum] = load_file(str(checkpoint.latest(out) / "trainable.safetensors"))
    assert len(losses[1]) > 3 and losses[4] == pytest.approx(losses[1], rel=1e-5)
    for key, value in final[1].items():
        torch.testing.assert_close(final[4][key], value, rtol=1e-5, atol=1e-5)
    assert any(not torch.equal(final[1][k], final[4][k]) for k in final[1])  # two computations, not one twice


def test_early_stopping_stops_after_patience_evaluations_and_says_why(tmp_path, tiny_model_dir, small_csv):
    # A learning rate too small to move the predictions: accuracy never improves after the first evaluation.
    config = tiny_config(tiny_model_dir, small_csv, epochs=3, lr=1e-12, eval_every=1, early_stopping_patience=2)
    summary = train(config, tmp_path / "run", log=lambda _: None)
    evals = [line for line in (tmp_path / "run" / layout.METRICS_LOG).read_text().splitlines() if '"eval"' in line]
    assert summary["steps"] == 3 and len(evals) == 3
    assert summary["stopped_early"].startswith("early stopping at step 3: val accuracy not better")
    assert summary["best"]["step"] == 1


def test_class_weights_of_the_wrong_length_are_a_config_error(tmp_path, tiny_model_dir, small_csv):
    config = tiny_config(tiny_model_dir, small_csv, class_weights=[1.0, 2.0])
    with pytest.raises(UserError, match=r"train.class_weights: 2 weights for 4 classes"):
        train(config, tmp_path / "run", log=lambda _: None)


def test_a_failed_run_is_marked_incomplete_and_the_same_command_reuses_it(tmp_path, tiny_model_dir, small_csv):
    out, notes = tmp_path / "run", []
    # A model folder without weights fails after the run folder was started.
    config = tiny_config(tiny_model_dir, small_csv, epochs=3)
    config.model.init = "pretrained"
    with pytest.raises(Exception):
        train(config, out, log=lambda _: None)
    assert (out / layout.INCOMPLETE).is_file() and (out / layout.CONFIG).is_file()

    # The same folder, no --overwrite: started over. Stopped at its second validation, after epoch 1's checkpoint.
    config.model.init = "random"
    evaluations = []

    def stop_at_the_second(record):
        evaluations.append(record)
        if len(evaluations) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, out, log=notes.append, on_eval=stop_at_the_second)
    assert any("incomplete run" in n and "starting it over" in n for n in notes)
    assert (out / layout.INCOMPLETE).is_file()

    # Again the same command: resumed from the checkpoint, finished, no longer marked.
    notes.clear()
    summary = train(config, out, log=notes.append)
    assert any("resuming it from" in n for n in notes) and summary["steps"] == 3 * -(-summary["train_items"] // 8)
    assert not (out / layout.INCOMPLETE).exists()
    with pytest.raises(UserError, match="--overwrite"):  # a finished run is not reused
        train(config, out, log=lambda _: None)


def test_min_steps_gives_a_small_file_more_epochs(tmp_path, tiny_model_dir, small_csv):
    notes = []
    config = tiny_config(tiny_model_dir, small_csv, epochs=1, min_steps=20)
    summary = train(config, tmp_path / "run", log=notes.append)
    per_epoch = -(-summary["train_items"] // 8)
    epochs = -(-20 // per_epoch)
    assert summary["steps"] == epochs * per_epoch >= 20
    assert any(f"so {epochs} epochs instead of 1" in n for n in notes)
