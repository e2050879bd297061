"""Hostile inputs: each ends with exit code 2, one line naming the problem and where, no traceback,
and no file in the working folder changed, deleted or added.

    python tests/test_hostile.py     # prints the table in docs/hostile-inputs.md from the real messages
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import stat
from pathlib import Path

import pytest

from loraclf.cli import main

from conftest import tiny_roberta_config, write_csv

LABELS = "[World, Sports, Business, Sci/Tech]"


def recipe(folder: Path, model_dir: Path, train_file: Path | str, extra: str = "") -> Path:
    path = folder / "recipe.yaml"
    path.write_text(f"""
model: {{name_or_path: {model_dir}, init: random}}
data: {{dataset: null, train_file: {train_file}, max_length: 64, label_names: {LABELS}}}
lora: {{r: 4, alpha: 8}}
train: {{epochs: 1, batch_size: 16, progress: false}}
{extra}""")
    return path


def rows(n: int = 40) -> list[tuple[str, int]]:
    return [(f"Item {i}: stocks, games and elections", i % 4) for i in range(n)]


def train_on(folder: Path, model_dir: Path, body: bytes | str, name: str = "train.csv", *args) -> list[str]:
    data = folder / name
    data.write_bytes(body if isinstance(body, bytes) else body.encode("utf-8"))
    return ["train", "--config", str(recipe(folder, model_dir, data)), "--output-dir", str(folder / "run"), *args]


def csv_text(header: list[str], records: list[list]) -> str:
    lines = [",".join(header)] + [",".join(f'"{v}"' if isinstance(v, str) else str(v) for v in r) for r in records]
    return "\n".join(lines) + "\n"


def good_csv() -> str:
    return csv_text(["text", "label"], [[t, y] for t, y in rows()])


def with_cell(f, m, row: int, column: int, value, labels_as_names: bool = False) -> list[str]:
    """Train on the good CSV with one cell (0-based data row, column) replaced."""
    names = ["World", "Sports", "Business", "Sci/Tech"]
    records = [[t, names[y] if labels_as_names else y] for t, y in rows()]
    records[row][column] = value
    return train_on(f, m, csv_text(["text", "label"], records))


def with_line(f, m, line: int, text: str) -> list[str]:
    """Train on the good CSV with one whole line (0-based, the header is line 0) replaced."""
    body = good_csv().splitlines()
    body[line] = text
    return train_on(f, m, "\n".join(body) + "\n")


# Each case: (id, what the user did, setup(folder, model_dir, finished_run) -> argv, fragments of the message).
def _missing_file(f, m, r):
    return ["train", "--config", str(recipe(f, m, f / "nowhere.csv")), "--output-dir", str(f / "run")]


def _empty_file(f, m, r):
    return train_on(f, m, b"")


def _directory(f, m, r):
    (f / "data.csv").mkdir()
    return ["train", "--config", str(recipe(f, m, f / "data.csv")), "--output-dir", str(f / "run")]


def _wrong_columns(f, m, r):
    return train_on(f, m, csv_text(["body", "category"], [[t, y] for t, y in rows()]))


def _missing_label_column(f, m, r):
    return train_on(f, m, csv_text(["text"], [[t] for t, _ in rows()]))


def _canonical_extra_column(f, m, r):
    return train_on(f, m, "".join(f'"{y + 1}","Title {i}","Description {i}","extra"\n'
                                  for i, (_, y) in enumerate(rows())))


def _label_out_of_range(f, m, r):
    return with_cell(f, m, 7, 1, 7)


def _unknown_label_string(f, m, r):
    return with_cell(f, m, 5, 1, "Politics", labels_as_names=True)


def _nan_text(f, m, r):
    return with_line(f, m, 4, ",2")


def _empty_text(f, m, r):
    return with_cell(f, m, 9, 0, "   ")


def _non_utf8(f, m, r):
    body = good_csv().encode("utf-8")
    return train_on(f, m, body.replace(b"Item 3:", b"Item \xff\xfe3:"))


def _huge_row(f, m, r):
    return with_cell(f, m, 2, 0, "x" * (10 * 2**20))


def _unclosed_quote(f, m, r):
    return with_line(f, m, 3, '"An unclosed quote, 1')


def _binary_csv(f, m, r):
    return train_on(f, m, bytes(range(256)) * 40)


def _pickle_without_flag(f, m, r):
    with (f / "train.pkl").open("wb") as handle:
        pickle.dump({"text": [t for t, _ in rows()], "label": [y for _, y in rows()]}, handle)
    return ["train", "--config", str(recipe(f, m, f / "train.pkl")), "--output-dir", str(f / "run")]


def _unknown_format(f, m, r):
    return train_on(f, m, "text,label\n", "train.xlsx")


def _unknown_config_key(f, m, r):
    return train_on(f, m, good_csv(), "train.csv", "--train.lrr", "1")


def _mistyped_config_value(f, m, r):
    return train_on(f, m, good_csv(), "train.csv",
                    "--train.epochs", "three")


def _unsupported_bits(f, m, r):
    return train_on(f, m, good_csv(), "train.csv", "--quantization.bits", "3")


def _quantized_pissa(f, m, r):
    return train_on(f, m, good_csv(), "train.csv", "--quantization.bits", "4", "--lora.init", "pissa")


def _unknown_key_in_yaml(f, m, r):
    data = write_csv(f / "train.csv", *zip(*rows()))
    return ["train", "--config", str(recipe(f, m, data, "optimizer: {lr: 1}")), "--output-dir", str(f / "run")]


def _broken_yaml(f, m, r):
    (f / "recipe.yaml").write_text("model: {name_or_path: [unclosed\n")
    return ["train", "--config", str(f / "recipe.yaml")]


def _over_budget(f, m, r):
    return train_on(f, m, good_csv(), "train.csv",
                    "--budget.max_trainable", "1000")


def _another_base_model(f, m, r):
    copy = f / "run-copy"
    shutil.copytree(r, copy)
    other = f / "other-model"
    tiny_roberta_config(hidden_size=48, num_attention_heads=2).save_pretrained(other)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(m / name, other / name)
    shutil.rmtree(copy / "base_model")
    text = (copy / "config.yaml").read_text().replace(str(m), str(other))
    (copy / "config.yaml").write_text(text)
    return ["predict", str(copy), "some text"]


def _unwritable_output(f, m, r):
    data = write_csv(f / "train.csv", *zip(*rows()))
    locked = f / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    # root writes through permission bits; /proc refuses new folders even to root.
    target = Path("/proc/locked/run") if os.geteuid() == 0 else locked / "run"
    return ["train", "--config", str(recipe(f, m, data)), "--output-dir", str(target)]


def _output_under_a_file(f, m, r):
    data = write_csv(f / "train.csv", *zip(*rows()))
    return ["train", "--config", str(recipe(f, m, data)), "--output-dir", str(data / "run")]


def _existing_run_folder(f, m, r):
    copy = f / "run-copy"
    shutil.copytree(r, copy)
    data = write_csv(f / "train.csv", *zip(*rows()))
    return ["train", "--config", str(recipe(f, m, data)), "--output-dir", str(copy)]


def _resume_without_checkpoint(f, m, r):
    copy = f / "run-copy"
    shutil.copytree(r, copy)
    shutil.rmtree(copy / "checkpoints")
    return ["train", "--resume", str(copy)]


def _not_a_run_folder(f, m, r):
    (f / "notes").mkdir()
    return ["evaluate", str(f / "notes"), "--data", str(write_csv(f / "test.csv", *zip(*rows())))]


def _predict_missing_text_column(f, m, r):
    (f / "texts.csv").write_text(csv_text(["sentence"], [[t] for t, _ in rows(5)]))
    return ["predict", str(r), "--input", str(f / "texts.csv")]


def _bad_output_extension(f, m, r):
    return ["predict", str(r), "hello", "--output", str(f / "predictions.xlsx")]


def _multi_label_unknown_label(f, m, r):
    lines = [f'{{"text": "{t}", "labels": ["World", "{"Politics" if i == 5 else "Sports"}"]}}' for i, (t, _) in
             enumerate(rows())]
    return train_on(f, m, "\n".join(lines) + "\n", "train.jsonl", "--data.task", "multi_label",
                    "--data.label_column", "labels")


def _multi_label_empty(f, m, r):
    records = [[t, "" if i == 6 else "World;Sports"] for i, (t, _) in enumerate(rows())]
    return train_on(f, m, csv_text(["text", "label"], records), "train.csv", "--data.task", "multi_label")


def _missing_pair_column(f, m, r):
    return train_on(f, m, good_csv(), "train.csv", "--data.text_pair_column", "hypothesis")


def _label_columns_not_01(f, m, r):
    names = ["World", "Sports", "Business", "Sci/Tech"]
    records = [[t] + [2 if (i, c) == (9, 1) else int(c == y) for c in range(4)] for i, (t, y) in enumerate(rows())]
    return train_on(f, m, csv_text(["text", *names], records), "train.csv", "--data.task", "multi_label",
                    "--data.label_columns", ",".join(names))


CASES = [
    ("missing-file", "training file does not exist", _missing_file, ["nowhere.csv", "not found"]),
    ("empty-file", "training file of 0 bytes", _empty_file, ["train.csv", "empty file"]),
    ("directory", "a directory given as the training file", _directory, ["data.csv", "directory"]),
    ("wrong-columns", "CSV with columns body,category", _wrong_columns, ["train.csv", "'text'", "body"]),
    ("missing-label-column", "CSV without a label column", _missing_label_column, ["train.csv", "'label'"]),
    ("canonical-extra-column", "AG News layout with a 4th column", _canonical_extra_column,
     ["train.csv", "AG News layout"]),
    ("label-out-of-range", "label 7 with 4 classes", _label_out_of_range, ["train.csv", "row 8", "7"]),
    ("unknown-label", "label 'Politics' not among the classes", _unknown_label_string,
     ["train.csv", "row 6", "Politics"]),
    ("nan-text", "empty text field (NaN)", _nan_text, ["train.csv", "row 4", "'text'"]),
    ("blank-text", "text of spaces only", _empty_text, ["train.csv", "row 10", "'text'"]),
    ("non-utf8", "bytes that are not UTF-8", _non_utf8, ["train.csv", "UTF-8", "line 5"]),
    ("huge-row", "one 10 MB text", _huge_row,
     ["train.csv", "line 4", "10,485,760 characters, over the limit of 1,048,576", "--data.on_bad_row skip"]),
    ("unclosed-quote", "a quote that never closes", _unclosed_quote, ["train.csv", "row 3"]),
    ("binary-csv", "a binary file named .csv", _binary_csv, ["train.csv", "binary"]),
    ("pickle", "a pickle without --allow-pickle", _pickle_without_flag, ["train.pkl", "--allow-pickle"]),
    ("unknown-format", "a .xlsx file", _unknown_format, ["train.xlsx", "unknown format"]),
    ("unknown-key", "--train.lrr on the command line", _unknown_config_key, ["train.lrr", "train.lr"]),
    ("mistyped-value", "--train.epochs three", _mistyped_config_value, ["train.epochs", "three"]),
    ("quantization-bits", "--quantization.bits 3", _unsupported_bits, ["quantization.bits", "3"]),
    ("quantized-pissa", "PiSSA on a 4-bit base", _quantized_pissa, ["lora.init pissa", "quantization.bits"]),
    ("unknown-yaml-key", "an unknown section in the recipe", _unknown_key_in_yaml, ["optimizer"]),
    ("broken-yaml", "a recipe that is not valid YAML", _broken_yaml, ["recipe.yaml", "line 2"]),
    ("over-budget", "--budget.max_trainable 1000", _over_budget, ["budget", "1,000"]),
    ("another-base", "a run folder whose base model was swapped", _another_base_model, ["run-copy", "adapter"]),
    ("unwritable-output", "output inside a read-only folder", _unwritable_output, ["locked", "cannot write"]),
    ("output-under-file", "output path under a file", _output_under_a_file, ["train.csv", "not a folder"]),
    ("existing-run", "an existing run folder without --overwrite", _existing_run_folder, ["run-copy", "--overwrite"]),
    ("resume-no-checkpoint", "--resume on a folder without checkpoints", _resume_without_checkpoint,
     ["run-copy", "no complete checkpoint"]),
    ("not-a-run", "evaluate on a folder that is not a run", _not_a_run_folder, ["notes", "config.yaml"]),
    ("predict-no-text-column", "predict --input without the text column", _predict_missing_text_column,
     ["texts.csv", "'text'"]),
    ("bad-output-extension", "predict --output predictions.xlsx", _bad_output_extension, ["predictions.xlsx"]),
    ("multi-label-unknown-label", "a multi-label row with an unknown label", _multi_label_unknown_label,
     ["train.jsonl", "row 6", "'Politics'"]),
    ("multi-label-empty", "a multi-label row without labels", _multi_label_empty,
     ["train.csv", "row 7", "no label", "allow_empty_labels"]),
    ("missing-pair-column", "--data.text_pair_column naming no column", _missing_pair_column,
     ["train.csv", "'hypothesis'", "text_pair_column"]),
    ("label-columns-not-01", "a 2 in a 0/1 label column", _label_columns_not_01,
     ["train.csv", "row 10", "'Sports'", "not 0 or 1"]),
]


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under `folder` with a hash of its content."""
    found = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        found[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("finished")
    data = write_csv(folder / "train.csv", *zip(*rows(48)))
    assert main(["train", "--config", str(recipe(folder, tiny_model_dir, data)), "--output-dir",
                 str(folder / "run")]) == 0
    return folder / "run"


def run_case(setup, folder: Path, model_dir: Path, finished: Path, capsys) -> tuple[int, str, dict, dict]:
    argv = setup(folder, model_dir, finished)
    capsys.readouterr()
    before = snapshot(folder)
    code = main(argv)
    err = capsys.readouterr().err
    return code, err, before, snapshot(folder)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_input(case, tmp_path, tiny_model_dir, finished_run, capsys):
    _, _, setup, fragments = case
    code, err, before, after = run_case(setup, tmp_path, tiny_model_dir, finished_run, capsys)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("loraclf: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert after == before, "files changed, deleted or added"


def print_table() -> None:
    """The docs table, from the real messages (paths shortened to the case's own files)."""
    import contextlib
    import io
    import tempfile

    from conftest import ROBERTA

    root = Path(tempfile.mkdtemp())
    try:
        model = root / "tiny-roberta"
        tiny_roberta_config().save_pretrained(model)
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(ROBERTA / name, model / name)
        (root / "finished").mkdir()
        data = write_csv(root / "finished" / "train.csv", *zip(*rows(48)))
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            main(["train", "--config", str(recipe(root / "finished", model, data)), "--output-dir",
                  str(root / "finished" / "run")])
        print("| case | input | message (every one exits with code 2) |\n|---|---|---|")
        for name, what, setup, _ in CASES:
            folder = Path(tempfile.mkdtemp(dir=root))
            argv = setup(folder, model, root / "finished" / "run")
            stderr = io.StringIO()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
                code = main(argv)
            message = stderr.getvalue().strip().removeprefix("loraclf: error: ")
            message = message.replace(f"{folder}/", "").replace(f"{root}/", "")
            print(f"| {name} | {what} | `{message}`{'' if code == 2 else f' (exit {code})'} |")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    print_table()
