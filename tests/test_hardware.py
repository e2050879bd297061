"""Device and precision per machine class, with the hardware probes mocked: no test needs the hardware."""

import json

import numpy as np
import pytest
import torch

from conftest import write_csv
from loraclf.inference.classifier import Classifier
from loraclf.inference.evaluate import evaluate_files
from loraclf.model import hardware, runtime
from loraclf.rundir import layout
from loraclf.training.recipe import train
from test_training import tiny_config

MACHINES = {
    "bf16-cpu": hardware.Machine("AMD EPYC 9R14", 2, avx2=True, avx512=True, avx512_bf16=True, vnni=True),
    "avx512-no-bf16": hardware.Machine("Intel Xeon Platinum 8259CL", 2, avx2=True, avx512=True, vnni=True),
    "avx2": hardware.Machine("Intel Xeon E5-2686 v4", 2, avx2=True),
    "cuda-ampere": hardware.Machine("x", 8, avx2=True, cuda="NVIDIA A100", cuda_capability=(8, 0), cuda_bf16=True),
    "cuda-turing": hardware.Machine("x", 8, avx2=True, cuda="Tesla T4", cuda_capability=(7, 5)),
    "mps": hardware.Machine("Apple M2", 8, mps=True),
}
CPU_CLASSES = ("bf16-cpu", "avx512-no-bf16", "avx2")


def on(monkeypatch, name: str) -> None:
    monkeypatch.setattr(hardware, "probe", lambda: MACHINES[name])


# machine: (device auto picks, training's auto dtype, inference dtype of a run checked in bf16, ... in fp16)
EXPECTED = {
    "bf16-cpu": ("cpu", torch.bfloat16, torch.bfloat16, None),
    "avx512-no-bf16": ("cpu", None, None, None),  # emulated bf16 ran at 0.42x fp32 on such a Xeon
    "avx2": ("cpu", None, None, None),
    "cuda-ampere": ("cuda", torch.bfloat16, torch.bfloat16, torch.float16),
    "cuda-turing": ("cuda", torch.float16, None, torch.float16),
    "mps": ("mps", None, None, None),
}


@pytest.mark.parametrize("name", list(MACHINES))
def test_device_and_precision_follow_what_the_hardware_runs_natively(monkeypatch, name):
    on(monkeypatch, name)
    device_type, train_dtype, from_bf16, from_fp16 = EXPECTED[name]
    device = runtime.pick_device("auto")
    assert device.type == device_type
    assert runtime.autocast_dtype("auto", device) is train_dtype
    assert runtime.autocast_dtype("fp32", device) is None
    assert runtime.inference_dtype("auto", "float32", device) is None  # an fp32 run answers in fp32 everywhere
    assert runtime.inference_dtype("auto", "bfloat16", device) is from_bf16
    assert runtime.inference_dtype("auto", "float16", device) is from_fp16
    assert runtime.inference_dtype("bf16", "float32", device) is torch.bfloat16  # asked for, it is used
    line = runtime.describe(device, runtime.autocast_dtype("auto", device))
    assert line.startswith(f"device: {device_type}") and "emulated" not in line


def test_forced_bf16_on_a_cpu_without_it_says_emulated(monkeypatch):
    on(monkeypatch, "avx512-no-bf16")
    line = runtime.describe(torch.device("cpu"), runtime.autocast_dtype("bf16", torch.device("cpu")))
    assert "precision: bf16 (emulated" in line and "AVX-512 without native bf16 (VNNI)" in line


def test_missing_devices_are_one_line_errors(monkeypatch):
    on(monkeypatch, "avx2")
    for name, fragment in (("cuda", "no CUDA device"), ("mps", "MPS is not available")):
        with pytest.raises(Exception, match=fragment):
            runtime.pick_device(name)


def test_the_real_probe_reads_native_flags_not_onednn_emulation():
    machine = hardware.probe()
    assert machine.native_bf16 == (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    assert machine.cores >= 1 and machine.cpu


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory, tiny_model_dir, agnews_rows):
    """A tiny run trained on a (mocked) native-bf16 CPU, so in bf16, with a test file."""
    folder = tmp_path_factory.mktemp("bf16run")
    texts, labels = agnews_rows
    train_csv = write_csv(folder / "train.csv", texts[:80], labels[:80])
    test_csv = write_csv(folder / "test.csv", texts[100:160], labels[100:160])
    config = tiny_config(tiny_model_dir, train_csv, epochs=1)
    config.data.test_size, config.data.test_file = 0, str(test_csv)
    with pytest.MonkeyPatch.context() as patch:
        on(patch, "bf16-cpu")
        summary = train(config, folder / "run", log=lambda _: None)
    return folder / "run", test_csv, texts[100:160], summary


def test_a_bf16_run_records_what_its_answers_were_checked_in(bf16_run):
    run, _, _, summary = bf16_run
    assert summary["precision"] == "bfloat16"
    agreement = summary["label_agreement_with_fp32"]
    assert set(agreement) == {"validation", "test"} and all(0 <= v <= 1 for v in agreement.values())
    same = all(v == 1.0 for v in agreement.values())
    assert summary["inference_precision"] == ("bfloat16" if same else "float32")
    assert json.loads((run / layout.TEST_METRICS).read_text())["precision"] == "float32"  # scored in fp32


@pytest.mark.parametrize("name", CPU_CLASSES)
def test_one_answer_whatever_the_machine(bf16_run, monkeypatch, name, tmp_path):
    run, test_csv, texts, summary = bf16_run
    reference = Classifier.load(run, device="cpu", precision="fp32")
    on(monkeypatch, name)
    clf = Classifier.load(run, device="cpu")
    checked_in = summary["inference_precision"]
    expected = torch.bfloat16 if checked_in == "bfloat16" and name == "bf16-cpu" else None
    assert clf.dtype is expected
    assert clf.predict(texts) == reference.predict(texts)
    # fp32 is the reference itself; bf16 (kept only where it gave fp32's labels) rounds: 1.1e-4 measured here.
    tolerance = 1e-6 if expected is None else 5e-4
    np.testing.assert_allclose(clf.predict_proba(texts), reference.predict_proba(texts), atol=tolerance)
    [result] = evaluate_files(run, [str(test_csv)], output=str(tmp_path / "eval.json"))
    assert result["accuracy"] == summary["test"]["accuracy"]  # the recorded test accuracy, on every machine
