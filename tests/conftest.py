"""Shared fixtures: tiny random models with the real roberta-base tokenizer from ../shared."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# The suite runs offline: set before anything imports huggingface_hub, which reads it once.
os.environ["HF_HUB_OFFLINE"] = "1"
# Under `pytest -n 2` (README) each worker, and each process it starts, computes on its share of the cores: two
# processes of two threads each on two cores would fight over them.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

SHARED = Path(__file__).resolve().parents[2] / "shared"
ROBERTA = SHARED / "models" / "roberta-base"
# `loraclf ARGS...` in a fresh interpreter (python -c IMPORTS_PROBE ARGS...): prints its exit code and whether torch
# was imported.
IMPORTS_PROBE = "import sys; from loraclf.cli import main; code = main(sys.argv[1:]); print(code, 'torch' in sys.modules)"
AGNEWS_5K = SHARED / "data" / "agnews-5k" / "train.csv"
AGNEWS_CANONICAL = SHARED / "data" / "agnews-canonical-sample" / "train.csv"

needs_shared = pytest.mark.skipif(
    not ROBERTA.is_dir() or not AGNEWS_5K.is_file(),
    reason="needs ../shared (real roberta-base tokenizer/config and AG News samples) beside the checkout",
)


def tiny_roberta_config(**overrides):
    from transformers import RobertaConfig

    settings = dict(
        vocab_size=50265, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=514, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        type_vocab_size=1,
    )
    return RobertaConfig(**(settings | overrides))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A model folder (config + real tokenizer, no weights) for `model.init: random`."""
    if not ROBERTA.is_dir():
        pytest.skip(f"needs the roberta-base tokenizer in {ROBERTA}")
    folder = tmp_path_factory.mktemp("tiny-roberta")
    tiny_roberta_config().save_pretrained(folder)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(ROBERTA / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def tokenizer():
    if not ROBERTA.is_dir():
        pytest.skip(f"needs the roberta-base tokenizer in {ROBERTA}")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ROBERTA)


@pytest.fixture(scope="session")
def agnews_rows():
    """The first 5,000-item sample from ../shared as (texts, labels)."""
    if not AGNEWS_5K.is_file():
        pytest.skip(f"needs {AGNEWS_5K}")
    import csv

    with AGNEWS_5K.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [r["text"] for r in rows], [int(r["label"]) for r in rows]


def write_csv(path: Path, texts, labels) -> Path:
    import csv

    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(zip(texts, labels))
    return path


@pytest.fixture
def small_csv(tmp_path, agnews_rows):
    """80 real AG News items as a training CSV."""
    texts, labels = agnews_rows
    return write_csv(tmp_path / "train.csv", texts[:80], labels[:80])


ROOT = Path(__file__).resolve().parents[1]


def cli(*args, stdin=None, process=False, cwd=None):
    """`loraclf ARGS` as a user's shell sees it: (exit code, stdout, stderr), stdin a pipe.

    By default in this process, through the console script's own `main`: a fresh interpreter pays seconds of
    torch/transformers/peft imports per command, which the suite's few dozen commands would pay again and
    again. Library logging is restored afterwards, as the next process would start with it. `process=True` runs
    `python -m loraclf` for what only a process shows (the entry point, a traceback's absence on stderr). `cwd`:
    where it runs (default: the checkout's root)."""
    argv = [str(a) for a in args]
    if process:
        env = os.environ | {"TOKENIZERS_PARALLELISM": "false"}
        done = subprocess.run([sys.executable, "-m", "loraclf", *argv], capture_output=True, text=True,
                              input=stdin, env=env, cwd=cwd or ROOT)
        return done.returncode, done.stdout, done.stderr
    import contextlib
    import io
    import warnings

    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as hf_logging

    from loraclf.cli import main

    verbosity, hub_verbosity = hf_logging.get_verbosity(), hub_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    out, err, previous_stdin, previous_cwd = io.StringIO(), io.StringIO(), sys.stdin, os.getcwd()
    try:
        sys.stdin = io.StringIO(stdin or "")
        os.chdir(cwd or ROOT)  # where the console script runs in the process form, so relative paths agree
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # --help and --version exit from argparse
                code = exc.code
    finally:
        sys.stdin = previous_stdin
        os.chdir(previous_cwd)
        hf_logging.set_verbosity(verbosity)
        hub_logging.set_verbosity(hub_verbosity)
        (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()
    return code, out.getvalue(), err.getvalue()


def assert_user_error(code, err, *fragments):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("loraclf: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tiny_model_dir, agnews_rows):
    """One tiny run through `loraclf train`, shared by the command-line tests."""
    folder = tmp_path_factory.mktemp("e2e")
    texts, labels = agnews_rows
    train_csv = write_csv(folder / "train.csv", texts[:64], labels[:64])
    test_csv = write_csv(folder / "test.csv", texts[64:88], labels[64:88])
    config = folder / "tiny.yaml"
    config.write_text(f"""
model: {{name_or_path: {tiny_model_dir}, init: random}}
data: {{dataset: null, train_file: {train_csv}, test_file: {test_csv}, max_length: 64,
        label_names: [World, Sports, Business, Sci/Tech]}}
lora: {{r: 4, alpha: 8}}
train: {{epochs: 1, batch_size: 16, log_every: 1}}
""")
    code, out, err = cli("train", "--config", config, "--output-dir", folder / "run", "--train.lr", "1e-3")
    assert code == 0, err
    return {"folder": folder, "run": folder / "run", "config": config, "test": test_csv, "texts": texts[64:88],
            "output": out, "stderr": err}
