"""report.html: its content from a real run folder, and that a browser shows its plots."""

import json
import re
import shutil
import subprocess

import pytest

from loraclf.cli import main
from loraclf.inference.evaluate import evaluate_files
from loraclf.rundir import layout
from loraclf.training.recipe import train

from conftest import write_csv
from test_training import tiny_config

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir, agnews_rows):
    texts, labels = agnews_rows
    # Every text carries markup, so whichever test items end up among the confident mistakes, the report
    # must show markup as text and never run it.
    texts = [f"<script>alert('x')</script> & <b>bold</b> {t}" for t in texts[:80]]
    folder = tmp_path_factory.mktemp("report")
    data = write_csv(folder / "train.csv", texts, labels[:80])
    config = tiny_config(tiny_model_dir, data)
    config.data.length_filter = None
    config.data.test_size = 40
    train(config, folder / "run", log=lambda _: None)
    return folder / "run"


def test_training_writes_a_self_contained_report(finished):
    page = (finished / layout.REPORT).read_text(encoding="utf-8")
    for section in ("Learning curves", "Test set", "Most confident mistakes", "Parameters",
                    "Timings and throughput", "Resolved config"):
        assert section in page
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,', page)) == 2
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing loaded from beside it or the network
    test = json.loads((finished / "test_metrics.json").read_text())
    mistakes = test["confident_mistakes"]
    assert mistakes and [m["confidence"] for m in mistakes] == sorted((m["confidence"] for m in mistakes),
                                                                     reverse=True)
    assert all(m["label"] != m["predicted"] for m in mistakes)
    assert f"{test['accuracy']:.4f}" in page
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page  # shown, escaped
    budget = json.loads((finished / layout.BUDGET).read_text())
    assert f"{budget['trainable']:,}" in page


def test_evaluate_lists_its_results_in_the_report(finished, tmp_path, agnews_rows):
    texts, labels = agnews_rows
    data = write_csv(tmp_path / "extra.csv", texts[200:230], labels[200:230])
    [result] = evaluate_files(finished, [str(data)])
    page = (finished / layout.REPORT).read_text(encoding="utf-8")
    assert "<h2>Evaluations</h2>" in page and f"{result['accuracy']:.4f}" in page and "extra.csv" in page


def test_report_command_rewrites_it(finished, tmp_path):
    target = tmp_path / "copy.html"
    assert main(["report", str(finished), "--output", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == (finished / layout.REPORT).read_text(encoding="utf-8")


@pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium (apt-get install chromium)")
def test_chromium_loads_every_plot(finished, tmp_path):
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                           f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                           (finished / layout.REPORT).resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-1500:]
    # The page marks how many of its images the browser decoded once it had loaded.
    assert 'data-images-loaded="2/2"' in done.stdout
    assert "&lt;script&gt;alert" in done.stdout  # the hostile text shown as text
