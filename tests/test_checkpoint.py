"""Checkpoints and exact resume, down to SIGKILLed training processes."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from loraclf.config.loading import save_config
from loraclf.errors import UserError
from loraclf.rundir import layout, readers
from loraclf.training import checkpoint
from loraclf.training.recipe import train

from conftest import assert_user_error, cli, write_csv
from test_training import tiny_config

# 120 training items in batches of 8: 15 steps an epoch, 3 epochs, a checkpoint every 4 steps.
STEPS_PER_EPOCH = 15


def resumable_config(model_dir, train_file):
    # Accumulated, class-weighted steps with a moving average: their resume must be as exact as plain ones.
    config = tiny_config(model_dir, train_file, epochs=3, checkpoint_every=4, keep_checkpoints=2, log_every=3,
                         grad_accum_steps=2, class_weights="balanced", ema=0.9)
    config.data.test_size, config.data.val_fraction, config.data.length_filter = 16, 0.2, None
    return config


@pytest.fixture
def recipe(tmp_path, tiny_model_dir, agnews_rows):
    texts, labels = agnews_rows
    data = write_csv(tmp_path / "train.csv", texts[:166], labels[:166])
    path = tmp_path / "recipe.yaml"
    save_config(resumable_config(tiny_model_dir, data), path)
    return path


KILL_AT = Path(__file__).with_name("kill_at.py")


def killed_at(crash_at, *args):
    """`loraclf ARGS` in a process that SIGKILLs itself at `crash_at` (kill_at.py)."""
    env = os.environ | {"TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, str(KILL_AT), crash_at, *args], env=env, capture_output=True, text=True,
                          timeout=300)


def weights(folder):
    return load_file(str(folder / "adapter_model.safetensors"))


def assert_bit_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def outcome(run_dir):
    """Everything a run ends with that must not depend on interruptions."""
    events = [json.loads(line) for line in (run_dir / layout.METRICS_LOG).read_text().splitlines()]
    for event in events:
        for timing in ("samples_per_s", "tokens_per_s", "elapsed_s"):
            event.pop(timing, None)
    summary = json.loads((run_dir / layout.SUMMARY).read_text())
    final = load_file(str(checkpoint.latest(run_dir) / "trainable.safetensors"))
    return events, summary["best"], {k: v for k, v in summary["test"].items() if k != "texts_per_s"}, final


def test_sigkilled_runs_resume_to_bit_equal_weights(tmp_path, recipe):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    code, _, err = cli("train", "--config", recipe, "--output-dir", whole)  # uninterrupted, in this process
    assert code == 0, err

    # Killed mid-epoch in epoch 2 (step 21; the last checkpoint is step 20).
    killed = killed_at("after-step:21", "train", "--config", str(recipe), "--output-dir", str(broken))
    assert killed.returncode == -signal.SIGKILL
    assert checkpoint.latest(broken).name == "step-000020"

    # Resumed, then killed halfway through writing the step-36 checkpoint (epoch 3).
    killed = killed_at("checkpoint-write:36", "train", "--resume", str(broken))
    assert killed.returncode == -signal.SIGKILL
    assert checkpoint.latest(broken).name == "step-000032"  # the half-written one is not picked up
    assert list((broken / layout.CHECKPOINTS).glob(".step-000036.*"))

    code, out, err = cli("train", "--resume", broken)
    assert code == 0, err
    assert "resuming from step-000032" in out

    assert_bit_equal(weights(whole / layout.ADAPTER), weights(broken / layout.ADAPTER))
    events_a, best_a, test_a, final_a = outcome(whole)
    events_b, best_b, test_b, final_b = outcome(broken)
    assert_bit_equal(final_a, final_b)
    assert (events_a, best_a, test_a) == (events_b, best_b, test_b)
    assert best_a["step"] % STEPS_PER_EPOCH == 0  # sanity: 3 epoch-end evaluations happened
    # Last two plus the best are kept; no temporary folder is left.
    names = sorted(p.name for p in (broken / layout.CHECKPOINTS).iterdir())
    assert names[-2:] == ["step-000044", "step-000045"] and not [n for n in names if n.startswith(".")]
    assert f"step-{best_a['step']:06d}" in names


def test_resume_without_a_checkpoint_is_a_one_line_error(tmp_path, recipe):
    folder = tmp_path / "empty-run"
    folder.mkdir()
    (folder / layout.CONFIG).write_text(recipe.read_text())
    with pytest.raises(UserError, match="no complete checkpoint"):
        train(readers.read_config(folder), folder, resume=True, log=lambda _: None)
    assert_user_error(*cli("train", "--resume", tmp_path / "nowhere")[::2], "not found")


def test_checkpoint_round_trip_restores_optimizer_scheduler_and_rng(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    model[0].weight.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 / (s + 1))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    for _ in range(3):
        model(torch.randn(5, 4)).sum().backward()
        optimizer.step(), scheduler.step(), optimizer.zero_grad()
    saved = checkpoint.save(tmp_path, 3, model, optimizer, scheduler, scaler, checkpoint.trainable_state(model),
                            {"epoch": 1}, keep=2)
    expected_rng = torch.rand(3)
    expected_state = {k: v.clone() for k, v in optimizer.state_dict()["state"][0].items()}

    fresh = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    fresh[0].weight.requires_grad_(False)
    fresh_opt = torch.optim.AdamW([p for p in fresh.parameters() if p.requires_grad], lr=0.1)
    fresh_sched = torch.optim.lr_scheduler.LambdaLR(fresh_opt, lambda s: 1 / (s + 1))
    loop, best = checkpoint.restore(saved, fresh, fresh_opt, fresh_sched, scaler)
    assert loop == {"epoch": 1}
    assert torch.equal(torch.rand(3), expected_rng)
    for key, value in fresh_opt.state_dict()["state"][0].items():
        assert torch.equal(value, expected_state[key]), key
    assert fresh_sched.get_last_lr() == scheduler.get_last_lr()
    assert torch.equal(fresh[1].weight, model[1].weight) and torch.equal(best["1.weight"], model[1].weight)
    # The frozen weight is not part of a checkpoint.
    assert "0.weight" not in load_file(str(saved / "trainable.safetensors"))


def test_only_the_last_k_and_the_best_are_kept(tmp_path):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    for step in (5, 10, 15, 20):
        checkpoint.save(tmp_path, step, model, optimizer, scheduler, scaler, {}, {}, keep=2, keep_step=5)
    assert [p.name for p in checkpoint.step_folders(tmp_path)] == ["step-000005", "step-000015", "step-000020"]


def test_diverging_training_stops_naming_the_step_and_keeps_the_checkpoint(tmp_path, tiny_model_dir, agnews_rows):
    texts, labels = agnews_rows
    data = write_csv(tmp_path / "train.csv", texts[:166], labels[:166])
    config = resumable_config(tiny_model_dir, data)
    # Adam moves every weight by about lr per step: 1e30 overflows the logits within a few steps.
    config.train.lr, config.train.checkpoint_every, config.train.log_every = 1e30, 1, 1
    config.train.precision = "fp32"
    out = tmp_path / "run"
    with pytest.raises(UserError, match=r"training diverged: .* not finite at step (\d+)") as error:
        train(config, out, log=lambda _: None)
    bad_step = int(error.value.args[0].split("at step ")[1].split()[0])
    kept = checkpoint.latest(out)
    assert kept is not None and int(kept.name.removeprefix("step-")) == bad_step - 1
    for tensor in load_file(str(kept / "trainable.safetensors")).values():
        assert torch.isfinite(tensor).all()
