"""Every command block of README.md and docs/usage.md runs as written, on tiny data, so an example cannot rot.

Each `loraclf` command runs in a folder laid out as a checkout is (configs/, ../shared/data/...) with tiny
files under the names the docs use. Training commands get a tiny random model and one epoch (no minimum step
count) appended (later
overrides win), and the hub data set is replaced by the tiny local file where the recipe would download it;
`search` runs one trial in one worker. Nothing else of a command changes. Commands that cannot run here are
listed with the reason (a download, a server that runs until stopped, the suite itself).
"""

from __future__ import annotations

import csv
import json
import pickle
import re
import shlex
from pathlib import Path

import pytest

from conftest import ROOT, cli, write_csv

DOCS = [ROOT / "README.md", ROOT / "docs" / "usage.md"]
# First words of the commands that are not run here, and why.
NOT_RUN = {
    "bash scripts/setup.sh": "makes .venv: the suite runs inside it",
    ".venv/bin/python -m pytest": "the suite itself",
    "bash ../shared/scripts/get-mpnet-base.sh": "installs a 420 MB encoder",
    "loraclf serve": "a server that runs until stopped: tests/test_serve.py serves the same folder",
    "curl": "talks to `loraclf serve`",
    "pip install": "downloads",
    "hf download": "downloads from the hub",
    "python -c": "downloads AG News from the hub",
    "bash benchmarks/gpu_check.sh": "a GPU machine's check: tests/test_gpu_check.py runs its dry run",
}
TRAINS = ("train", "search")


def commands(path: Path) -> list[list[str]]:
    """The shell commands of `path`'s bash blocks as argument lists: continuation lines joined, comments dropped,
    `a && b` as two commands."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(encoding="utf-8"), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words:
                cut = words.index("&&") if "&&" in words else len(words)
                found.append(words[:cut])
                words = words[cut + 1:]
    return found


def skipped(words: list[str]) -> bool:
    return any(" ".join(words).startswith(start) for start in NOT_RUN)


def as_run_here(words: list[str], model: Path) -> list[str]:
    """The command's arguments after `loraclf`, with what this test appends or replaces."""
    from loraclf.config.loading import load_config

    args = words[1:]
    if args[0] == "search":
        args = [("1" if prev in ("--trials", "--workers") else a) for prev, a in zip(["", *args], args)]
    if args[0] in TRAINS or args[0] in ("budget", "plan"):
        args += ["--model.name_or_path", str(model), "--model.init", "random"]
    if args[0] in TRAINS:
        args += ["--train.epochs", "1", "--train.min_steps", "0", "--data.max_length", "32"]
        recipe = load_config(args[args.index("--config") + 1])
        if recipe.data.train_file is None and "--data.train_file" not in args:
            args += ["--data.dataset", "null", "--data.train_file", "../shared/data/agnews-5k/train.csv"]
    return args


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, agnews_rows):
    """A working folder beside a tiny ../shared, holding every file the docs' commands name."""
    texts, labels = agnews_rows
    root = tmp_path_factory.mktemp("docs")
    work, shared = root / "work", root / "shared" / "data"
    for folder in (work, shared / "agnews-5k", shared / "competition", shared / "banking77"):
        folder.mkdir(parents=True)
    (work / "configs").symlink_to(ROOT / "configs")
    write_csv(shared / "agnews-5k" / "train.csv", texts[:72], labels[:72])
    write_csv(shared / "competition" / "shifted_dev.csv", texts[200:220], labels[200:220])
    with (shared / "competition" / "test_unlabelled.csv").open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["text"], *([t] for t in texts[300:330])])
    for name, start in (("train.csv", 0), ("test.csv", 100), ("held_out.csv", 130), ("other.csv", 160)):
        write_csv(work / name, texts[start:start + (72 if name == "train.csv" else 24)],
                  labels[start:start + (72 if name == "train.csv" else 24)])
    write_csv(work / "corpus.csv", texts[400:440], labels[400:440])
    names = ["World", "Sports", "Business", "Sci/Tech"]
    (work / "tags.jsonl").write_text("".join(
        json.dumps({"text": t, "labels": sorted({names[y], names[(y + i) % 4]})}) + "\n"
        for i, (t, y) in enumerate(zip(texts[:64], labels[:64]))), encoding="utf-8")
    with (work / "pairs.csv").open("w", newline="", encoding="utf-8") as handle:
        rows = [[texts[i], texts[i + (i % 2)], "same" if i % 2 == 0 else "other"] for i in range(64)]
        csv.writer(handle).writerows([["premise", "hypothesis", "label"], *rows])
    intents = [("card_arrival", "where is my new card"), ("pin_blocked", "my pin is blocked"),
               ("top_up_failed", "the top up did not go through")]
    rows = [[f"{text} ({i})", name] for i in range(20) for name, text in intents]
    write_csv(work / "mine.csv", *zip(*rows))
    with (shared / "banking77" / "train.csv").open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["text", "label"], *rows[:30], ["a text without a label", ""],
                                      ["", "card_arrival"], *rows[30:]])
    import pandas as pd

    with (work / "test_unlabelled.pkl").open("wb") as handle:
        pickle.dump(pd.DataFrame({"text": texts[500:520]}), handle)
    return work


def test_every_command_block_runs_as_written(workspace, tiny_model_dir):
    ran = []
    for doc in DOCS:
        for words in commands(doc):
            if skipped(words):
                continue
            assert Path(words[0]).name == "loraclf", f"{doc.name}: no rule for {shlex.join(words)}"
            args = as_run_here(words, tiny_model_dir)
            if "--resume" in args and "--output" in args:  # "after kill -9": the output was never finished
                (workspace / args[args.index("--output") + 1]).unlink(missing_ok=True)
            code, out, err = cli(*args, cwd=workspace)
            assert code == 0, f"{doc.name}: {shlex.join(words)}\n{err[-2000:]}"
            if "--data.on_bad_row" in args:
                assert "skipped 2 bad rows" in out, out
            ran.append(args[0])
    assert ran.count("train") >= 8 and {"evaluate", "predict", "export", "budget", "plan", "search"} <= set(ran)
