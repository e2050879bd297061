"""Files of any size (inference/corpus.py, data/stream.py): shards, ids, bad rows, resume, long texts, Ray."""

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from loraclf.errors import UserError
from loraclf.inference.classifier import Classifier

from conftest import ROOT, assert_user_error, cli

KILL_AT = Path(__file__).with_name("kill_at.py")


@pytest.fixture(scope="module")
def corpus_files(trained, tmp_path_factory):
    """35 texts with ids, as CSV, JSON Lines and Parquet; a blank text in a copy of the CSV."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path_factory.mktemp("corpus")
    texts = (trained["texts"] * 2)[:35]
    ids = [f"doc-{i}" for i in range(35)]
    with (folder / "in.csv").open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["id", "text"], *zip(ids, texts)])
    (folder / "in.jsonl").write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    pq.write_table(pa.table({"id": ids, "text": texts}), folder / "in.parquet")
    with (folder / "bad.csv").open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["id", "text"], *zip(ids, texts[:4] + ["  "] + texts[5:])])
    return {"folder": folder, "texts": texts, "ids": ids}


@pytest.fixture(scope="module")
def classifier(trained):
    # fp32: the shards run in other batches than the whole list, and bf16 rounds by batch (about 2e-5 here).
    return Classifier.load(trained["run"], precision="fp32")


def test_a_file_in_shards_is_the_classifier_on_the_whole_list_in_every_format(classifier, corpus_files, tmp_path):
    folder, texts, ids = corpus_files["folder"], corpus_files["texts"], corpus_files["ids"]
    probs = classifier.predict_proba(texts)
    summary = classifier.predict_file(folder / "in.csv", tmp_path / "p.csv", shard_rows=8, batch_size=3,
                                      progress=False)
    assert summary["rows"] == 35 and summary["bad_rows"] == 0
    rows = list(csv.DictReader((tmp_path / "p.csv").open(encoding="utf-8")))
    assert [r["id"] for r in rows] == ids  # the input's id column, first, in input order
    assert [r["label_name"] for r in rows] == classifier.predict(texts)
    assert np.allclose([[float(r[f"p_{n}"]) for n in classifier.labels] for r in rows], probs, atol=1e-6)
    classifier.predict_file(folder / "in.jsonl", tmp_path / "p.jsonl", shard_rows=5, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == list(range(35)) and [x["label"] for x in lines] == [int(r["label"]) for r in
                                                                                           rows]
    import pyarrow.parquet as pq

    classifier.predict_file(folder / "in.parquet", tmp_path / "p.parquet", shard_rows=16, progress=False)
    table = pq.read_table(tmp_path / "p.parquet")
    assert table.column("id").to_pylist() == ids and table.column("label").to_pylist() == [x["label"] for x in lines]
    assert pq.ParquetFile(tmp_path / "p.parquet").num_row_groups == 3  # one per shard, joined without a copy
    assert not list(tmp_path.glob("*.partial"))


def test_killed_prediction_resumes_to_the_same_bytes_and_nothing_is_replaced_unasked(trained, classifier,
                                                                                     corpus_files, tmp_path):
    source, whole, out = corpus_files["folder"] / "in.csv", tmp_path / "whole.csv", tmp_path / "p.csv"
    options = ["--shard-rows", "6", "--batch-size", "4"]
    code, _, err = cli("predict", trained["run"], "--input", source, "--output", whole, *options)
    assert code == 0 and "35/35 texts (100%)" in err and "\r" not in err, err  # plain progress lines in a log
    killed = subprocess.run([sys.executable, str(KILL_AT), "after-shard:2", "predict", str(trained["run"]),
                             "--input", str(source), "--output", str(out), *options], cwd=ROOT, capture_output=True)
    assert killed.returncode == -9 and not out.exists()
    partial = out.with_name("p.csv.partial")
    assert sorted(p.name for p in partial.glob("*.part")) == ["000000.part", "000001.part", "000002.part"]
    # The refusals come before any model work, so the API (in this process) checks them quickly.
    with pytest.raises(UserError, match=r"p\.csv\.partial holds .*3 shards done.*--resume"):
        classifier.predict_file(source, out, shard_rows=6, batch_size=4)
    with pytest.raises(UserError, match="--resume: .* another shard_rows"):
        classifier.predict_file(source, out, shard_rows=7, batch_size=4, resume=True)
    code, _, err = cli("predict", trained["run"], "--input", source, "--output", out, *options, "--resume")
    assert code == 0 and "resumed at row 18" in err, err
    assert out.read_bytes() == whole.read_bytes() and not partial.exists()
    with pytest.raises(UserError, match="exists; --overwrite replaces it"):
        classifier.predict_file(source, out, shard_rows=6, batch_size=4)
    with pytest.raises(UserError, match="already complete"):
        classifier.predict_file(source, out, shard_rows=6, batch_size=4, resume=True)


def test_a_bad_row_stops_the_file_before_anything_is_written_or_is_answered_with_an_error(trained, corpus_files,
                                                                                        tmp_path):
    bad, out = corpus_files["folder"] / "bad.csv", tmp_path / "p.jsonl"
    code, _, err = cli("predict", trained["run"], "--input", bad, "--output", out)
    assert_user_error(code, err, "bad.csv: row 5 (line 6), column 'text'", "--on-bad-row skip")
    assert not out.exists() and not list(tmp_path.iterdir())
    code, _, err = cli("predict", trained["run"], "--input", bad, "--output", out, "--on-bad-row", "skip")
    assert code == 0 and "1 bad rows answered with an error" in err, err
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 35 and lines[4]["label"] is None and "row 5 (line 6)" in lines[4]["error"]
    assert lines[4]["id"] == "doc-4" and all(x["error"] is None for i, x in enumerate(lines) if i != 4)


def test_windows_read_a_long_text_whole_and_equal_the_mean_of_their_windows(trained, classifier):
    import torch

    long = " ".join(trained["texts"][:6])  # far beyond max_length 64
    short = trained["texts"][6]
    windows = Classifier.load(trained["run"], long_texts="windows", window_stride=8, precision="fp32")
    assert np.allclose(windows.logits(short), classifier.logits(short), atol=1e-5)  # a short text: one window
    tokens = windows.tokens([long])
    assert tokens.cut == 1 and len(tokens) > 3
    with torch.inference_mode():
        each = [windows.model(input_ids=torch.from_numpy(tokens.tokens(i).astype(np.int64))[None]).logits[0].float()
                for i in range(len(tokens))]
    assert np.allclose(windows.logits([long, short])[0], torch.stack(each).mean(0).numpy(), atol=1e-4)


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray (pip install 'loraclf[ray]')")
def test_ray_engine_writes_the_local_engines_file(classifier, corpus_files, tmp_path):
    import ray

    source = corpus_files["folder"] / "in.csv"
    classifier.predict_file(source, tmp_path / "local.csv", shard_rows=9, progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = classifier.predict_file(source, tmp_path / "ray.csv", shard_rows=9, engine="ray", ray_actors=2,
                                          progress=False)
    finally:
        ray.shutdown()
    assert summary["rows"] == 35
    assert (tmp_path / "ray.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()


def test_evaluate_says_how_many_texts_were_cut_and_takes_long_texts_from_the_command_line(trained, tmp_path):
    out = tmp_path / "eval.json"
    code, _, err = cli("evaluate", trained["run"], "--data", trained["test"], "--output", out, "--long-texts",
                       "windows", "--window-stride", "16")
    assert code == 0, err
    result = json.loads(out.read_text())
    assert result["long_texts"] == "windows" and result["texts_cut"] > 0
    assert f"{result['texts_cut']} of 24 texts were longer than 64 tokens and were read as windows" in err
