"""Data-parallel training: 2 CPU processes (gloo, started by torchrun) against one process, same global batch."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.torch import load_file

from loraclf.rundir import layout
from loraclf.training.distributed import Processes

from conftest import cli, write_csv


def test_shards_cover_the_batch_and_weight_the_global_mean():
    indices = [7, 3, 9, 1, 4]
    shards = [Processes(rank, 2).shard(indices) for rank in range(2)]
    assert [s[0] for s in shards] == [[7, 3, 9], [1, 4]]
    # DDP averages: sum over processes of weight * local mean / world = the mean over the global batch.
    losses = np.array([0.5, 1.0, 2.0, 4.0, 8.0])
    local_means = [losses[:3].mean(), losses[3:].mean()]
    assert sum(w * m for (_, w), m in zip(shards, local_means)) / 2 == pytest.approx(losses.mean())
    # A process left without items runs one at weight 0 (every process must take part in backward).
    assert Processes(2, 3).shard([5, 6]) == ([5], 0.0)
    assert [list(Processes(r, 3).part(10)) for r in range(3)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]


@pytest.fixture
def recipe(tmp_path, tiny_model_dir, agnews_rows):
    texts, labels = agnews_rows
    data = write_csv(tmp_path / "train.csv", texts[:90], labels[:90])

    def write(dropout: float):
        # fp32 for a tight comparison; 90 items in batches of 8 leave a last batch of 2 to split.
        tree = {"model": {"name_or_path": str(tiny_model_dir), "init": "random", "dropout": dropout},
                "data": {"dataset": None, "train_file": str(data), "label_names": ["World", "Sports", "Business",
                                                                                    "Sci/Tech"],
                         "max_length": 64, "test_size": 16, "val_fraction": 0.25},
                "lora": {"r": 4, "alpha": 8, "dropout": dropout},
                "train": {"epochs": 2, "batch_size": 8, "lr": 5e-3, "precision": "fp32", "progress": False,
                          "log_every": 1, "checkpoint_every": 4, "group_by_length": False,
                          "chunk_cost": 16}}  # several forward passes per DDP backward
        path = tmp_path / f"recipe-{dropout}.yaml"
        path.write_text(yaml.safe_dump(tree), encoding="utf-8")
        return path

    return write


def launch(args, crash_at: str | None = None) -> subprocess.CompletedProcess:
    """`loraclf train ARGS` as 2 processes started by torchrun."""
    program = [str(Path(__file__).with_name("kill_at.py")), crash_at] if crash_at else ["-m", "loraclf.cli"]
    prefix = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone"]
    return subprocess.run(prefix + program + ["train", *args], capture_output=True, text=True, timeout=300)


def events(folder, kind):
    return [e for e in map(json.loads, (folder / layout.METRICS_LOG).read_text().splitlines()) if e["event"] == kind]


def test_two_processes_follow_the_single_process_run(tmp_path, recipe):
    config = recipe(0.0)  # no dropout: the processes' random draws would differ from one process's
    runs = tmp_path / "runs"
    code, _, err = cli("train", "--config", config, "--output-dir", runs / "one")  # one process: this one
    assert code == 0, err[-2000:]
    two = launch(["--config", str(config), "--output-dir", str(runs / "two")])
    assert two.returncode == 0, two.stderr[-2000:]
    assert sorted(p.name for p in runs.iterdir()) == ["one", "two"]  # one folder for both processes
    assert two.stdout.count("run folder:") == 1 and "data parallel: 2 processes" in two.stdout

    single, parallel = events(runs / "one", "train"), events(runs / "two", "train")
    assert [e["step"] for e in single] == [e["step"] for e in parallel] and len(single) > 10
    assert [e["seen"] for e in single] == [e["seen"] for e in parallel]
    # Tolerance: the two runs differ in summation order and padding widths (fp32 rounding), which
    # 18 Adam steps carry forward; measured differences are near 2e-5.
    for a, b in zip(single, parallel):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4), a["step"]
    for a, b in zip(events(runs / "one", "eval"), events(runs / "two", "eval")):
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
    summary = json.loads((runs / "two" / layout.SUMMARY).read_text())
    assert summary["processes"] == 2 and summary["test"]["count"] == 16


def test_two_processes_resume_exactly_after_a_kill(tmp_path, recipe):
    config = recipe(0.1)  # with dropout: each process's generator state must come back
    full, crashed = tmp_path / "full", tmp_path / "crashed"
    assert launch(["--config", str(config), "--output-dir", str(full)]).returncode == 0
    killed = launch(["--config", str(config), "--output-dir", str(crashed)], crash_at="after-step:7")
    assert killed.returncode != 0
    assert [p.name for p in sorted((crashed / "checkpoints").iterdir())] == ["step-000004"]
    resumed = launch(["--resume", str(crashed)])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = load_file(str(full / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(crashed / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    strip = lambda e: {k: v for k, v in e.items() if not k.endswith("_s")}  # noqa: E731  timings differ
    assert [strip(e) for e in events(full, "train")] == [strip(e) for e in events(crashed, "train")]
