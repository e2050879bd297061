"""End to end through the command line: train, evaluate, predict, budget, and bad input."""

import csv
import json
import pickle
import re
from pathlib import Path

import pytest

from loraclf.cli import main

from conftest import IMPORTS_PROBE, ROBERTA, assert_user_error, cli, needs_shared

ROOT = Path(__file__).resolve().parents[1]


def test_progress_on_a_redirected_stderr_is_plain_lines(trained):
    # stderr is a pipe here, as in a log file or a batch job: no carriage-return bar updates.
    assert "\r" not in trained["stderr"]
    steps = [line for line in trained["stderr"].splitlines() if re.match(r"step \d+/\d+ ", line)]
    assert len(steps) == 4 and steps[-1].startswith("step 4/4 (100%): loss ") and "ETA 00:00" in steps[-1]


def test_train_reports_and_writes(trained):
    # The log lines on stdout, the progress lines on stderr (as the README says).
    assert "length filter: kept" in trained["output"] and "test: accuracy" in trained["output"]
    assert "length filter" not in trained["stderr"]
    summary = json.loads((trained["run"] / "metrics.json").read_text())
    assert summary["test"]["count"] == 24
    assert (trained["run"] / "adapter" / "adapter_model.safetensors").is_file()


def test_adapter_loads_with_plain_peft(trained):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(trained["run"] / "base_model")
    model = PeftModel.from_pretrained(base, trained["run"] / "adapter")
    assert any("lora_A" in n for n, _ in model.named_parameters())


def test_evaluate(trained, tmp_path):
    out = tmp_path / "m.json"
    code, stdout, err = cli("evaluate", trained["run"], "--data", trained["test"], "--output", out)
    assert code == 0, err
    result = json.loads(out.read_text())
    assert 0 <= result["accuracy"] <= 1 and 0 <= result["macro_f1"] <= 1
    assert set(result["per_class"]) == {"World", "Sports", "Business", "Sci/Tech"}
    assert sum(map(sum, result["confusion_matrix"])) == 24
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((trained["run"] / "test_metrics.json").read_text())
    assert result["accuracy"] == pytest.approx(saved["accuracy"])  # the same best model, reloaded


def test_evaluate_scores_each_of_several_data_files(trained, tmp_path):
    half = tmp_path / "half.csv"
    rows = list(csv.reader(Path(trained["test"]).open()))
    with half.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows[:13])
    code, stdout, err = cli("evaluate", trained["run"], "--data", trained["test"], "--data", half)
    assert code == 0, err
    whole = json.loads((trained["run"] / f"eval_{Path(trained['test']).stem}.json").read_text())
    part = json.loads((trained["run"] / "eval_half.json").read_text())
    assert (whole["count"], part["count"]) == (24, 12)
    lines = stdout.splitlines()
    assert lines[0].split() == ["data", "items", "accuracy", "macro-F1"]
    assert lines[2].split()[1:] == ["12", f"{part['accuracy']:.4f}", f"{part['macro_f1']:.4f}"]
    code, _, err = cli("evaluate", trained["run"], "--data", trained["test"], "--data", half, "--output", "x.json")
    assert_user_error(code, err, "--output: names one file")


def test_predict_csv_jsonl_and_order(trained, tmp_path):
    code, _, err = cli("predict", trained["run"], "--input", trained["test"], "--output", tmp_path / "p.csv")
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert len(rows) == 24
    assert list(rows[0]) == ["label", "label_name", "p_World", "p_Sports", "p_Business", "p_Sci/Tech"]
    for row in rows:
        probs = [float(row[k]) for k in list(row)[2:]]
        assert sum(probs) == pytest.approx(1, abs=1e-4)
        assert int(row["label"]) == max(range(4), key=probs.__getitem__)
    code, _, err = cli("predict", trained["run"], "--input", trained["test"], "--output", tmp_path / "p.jsonl")
    assert code == 0, err
    lines = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [x["label"] for x in lines] == [int(r["label"]) for r in rows]
    # Texts one at a time, as arguments, give the same labels as the batched, length-sorted file run.
    code, out, err = cli("predict", trained["run"], trained["texts"][0], trained["texts"][5])
    assert code == 0, err
    single = list(csv.DictReader(out.splitlines()))
    assert [s["label"] for s in single] == [rows[0]["label"], rows[5]["label"]]
    code, out, err = cli("predict", trained["run"], stdin="first text\nsecond text\n")
    assert code == 0 and len(out.strip().splitlines()) == 3, err


def test_submission_from_pickled_dataset(trained, tmp_path):
    import datasets

    texts = trained["texts"][:10]
    path = tmp_path / "test.pkl"
    path.write_bytes(pickle.dumps(datasets.Dataset.from_dict({"text": texts})))
    out = tmp_path / "submission.csv"
    code, _, err = cli("predict", trained["run"], "--input", path, "--output", out, "--submission")
    assert_user_error(code, err, str(path), "--allow-pickle")
    assert not out.exists()
    code, _, err = cli("predict", trained["run"], "--input", path, "--output", out, "--submission",
                       "--allow-pickle")
    assert code == 0, err
    lines = out.read_text().splitlines()
    assert lines[0] == "ID,Label" and len(lines) == 11
    assert [int(x.split(",")[0]) for x in lines[1:]] == list(range(10))
    assert all(x.split(",")[1] in {"0", "1", "2", "3"} for x in lines[1:])


def test_bad_inputs_exit_2_with_one_line(trained, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nok,1\nfine,9\n")
    code, _, err = cli("evaluate", trained["run"], "--data", bad, process=True)  # the console script itself
    assert_user_error(code, err, str(bad), "row 2", "'label'", "9")
    code, _, err = cli("predict", tmp_path / "no-run", "hello")
    assert_user_error(code, err, "no-run")
    code, _, err = cli("predict", trained["run"], "hello", "--output", tmp_path / "p.txt")
    assert_user_error(code, err, "p.txt")
    code, _, err = cli("train", "--config", trained["config"], "--train.epohcs", "2")
    assert_user_error(code, err, "train.epohcs", "epochs")
    code, _, err = cli("budget", "--config", trained["config"], "--budget.max_trainable", "10")
    assert code == 0 and "OVER budget" in _
    code, _, err = cli("train", "--config", trained["config"], "--output-dir", trained["run"])
    assert_user_error(code, err, "--overwrite")
    code, _, err = cli("frobnicate", process=True)
    assert_user_error(code, err, "frobnicate")


def test_existing_output_is_kept_on_failure(trained, tmp_path):
    out = tmp_path / "submission.csv"
    out.write_text("ID,Label\n0,1\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    code, _, err = cli("predict", trained["run"], "--input", empty, "--output", out, "--submission")
    assert_user_error(code, err, "empty file")
    assert out.read_text() == "ID,Label\n0,1\n"


@needs_shared
def test_budget_json_for_the_paper_recipe():
    code, out, err = cli("budget", "--config", ROOT / "configs" / "paper.yaml", "--model.name_or_path", ROBERTA,
                         "--json")
    assert code == 0, err
    result = json.loads(out)
    assert (result["trainable"], result["lora"], result["head"], result["max_trainable"]) == (
        980_740, 387_072, 593_668, 1_000_000)


def test_main_returns_2_for_user_errors(capsys):
    assert main(["budget", "--config", "does-not-exist.yaml"]) == 2
    assert "does-not-exist.yaml: not found" in capsys.readouterr().err


@needs_shared
def test_hub_unreachable_says_how_to_use_local_files(tmp_path):
    code, _, err = cli("train", "--config", ROOT / "configs" / "paper.yaml", "--model.name_or_path", ROBERTA,
                       "--output-dir", tmp_path / "run")
    assert_user_error(code, err, "cannot load dataset 'fancyzhx/ag_news' from the hub", "--data.train_file")
    code, _, err = cli("budget", "--config", ROOT / "configs" / "paper.yaml")
    assert_user_error(code, err, "'FacebookAI/roberta-base'", "--model.name_or_path")


def test_evaluate_takes_input_like_predict_and_precision_fp32(trained, tmp_path):
    out = tmp_path / "m.json"
    assert main(["evaluate", str(trained["run"]), "--input", str(trained["test"]), "--output", str(out),
                 "--precision", "fp32"]) == 0
    assert json.loads(out.read_text())["count"] == 24


def test_verbose_keeps_library_logging(trained):
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_warning()
    assert main(["budget", "--config", str(trained["config"]), "--verbose"]) == 0
    assert hf_logging.get_verbosity() == hf_logging.WARNING
    assert main(["budget", "--config", str(trained["config"])]) == 0
    assert hf_logging.get_verbosity() == hf_logging.ERROR


def test_a_missing_extra_is_a_one_line_error_naming_it(tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    missing = {"fastapi", "onnx", "onnxruntime"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a))
    for argv, extra in ((["serve", str(tmp_path)], "serve"),
                        (["export", str(tmp_path), "--format", "onnx", "--output", str(tmp_path / "o")], "export")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"pip install 'loraclf[{extra}]'" in err, err


def test_recipes_are_listed_and_shown():
    code, out, err = cli("recipes")
    assert code == 0, err
    for name in ("quickstart", "paper", "base", "competition", "competition-base", "best"):
        assert any(line.startswith(f"{name} ") for line in out.splitlines()), out
    code, shown, _ = cli("recipes", "show", "paper")
    assert code == 0 and shown == (ROOT / "configs" / "paper.yaml").read_text(encoding="utf-8")
    assert_user_error(*cli("recipes", "show", "papr")[::2], "no recipe 'papr'", "quickstart")
    code, helped, _ = cli("train", "--help")
    assert code == 0 and "quickstart" in helped and "--section.key VALUE" in helped


def test_evaluate_reads_a_semicolon_file_and_skips_its_bad_rows_when_asked(trained, tmp_path):
    rows = [f"{t.replace(';', ',')};{y}" for t, y in zip(trained["texts"][:6], [0, 1, 2, 3, 0, 1])]
    path = tmp_path / "semi.csv"
    path.write_text("text;label\n" + "\n".join(rows[:3] + ["a text with no label;"] + rows[3:]) + "\n")
    code, _, err = cli("evaluate", trained["run"], "--data", path, "--output", tmp_path / "semi.json")
    assert_user_error(code, err, "semi.csv: row 4 (line 5), column 'label': missing label", "--on-bad-row skip")
    code, out, err = cli("evaluate", trained["run"], "--data", path, "--output", tmp_path / "semi.json",
                         "--on-bad-row", "skip")
    assert code == 0, err
    result = json.loads((tmp_path / "semi.json").read_text())
    assert result["count"] == 6 and result["bad_rows"]["count"] == 1 and "skipped 1 bad row (" in err


# `loraclf ARGS` in a fresh Python: its exit code, and whether torch was imported on the way.
def test_a_base_out_of_reach_fails_in_one_line_before_torch_loads(trained, tmp_path):
    """Offline (the suite sets HF_HUB_OFFLINE), a hub id that is not in the cache fails at once: named by a
    config, or as the base of a run folder that does not hold it. torch never loads, and nothing is written."""
    import shutil
    import subprocess
    import sys

    import yaml

    run = tmp_path / "run"
    shutil.copytree(trained["run"], run, ignore=shutil.ignore_patterns("base_model"))
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"]["name_or_path"] = "nobody/no-such-model"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    for args in (["train", "--config", trained["config"], "--model.name_or_path", "nobody/no-such-model",
                  "--output-dir", tmp_path / "new"],
                 ["predict", run, "hello"], ["evaluate", run, "--data", trained["test"]]):
        done = subprocess.run([sys.executable, "-c", IMPORTS_PROBE, *map(str, args)], capture_output=True, text=True)
        assert done.stdout.split() == ["2", "False"], (args[0], done.stdout, done.stderr)
        assert_user_error(2, done.stderr, "cannot load the model 'nobody/no-such-model'", "the hub is out of reach")
    assert not (tmp_path / "new").exists()
