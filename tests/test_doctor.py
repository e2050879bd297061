"""`loraclf doctor`: the machine, what loraclf will use on it, and measured peaks, as text and as JSON."""

import json

import pytest

from conftest import cli
from loraclf.model import hardware
from test_hardware import MACHINES


@pytest.mark.parametrize("name, precision", [("bf16-cpu", "bf16"), ("avx512-no-bf16", "fp32"), ("avx2", "fp32")])
def test_doctor_json_names_the_precision_train_uses(monkeypatch, name, precision):
    monkeypatch.setattr(hardware, "probe", lambda: MACHINES[name])
    code, out, err = cli("doctor", "--json")
    assert code == 0, err
    found = json.loads(out)
    assert found["uses"]["device"] == "cpu" and found["uses"]["train_precision"] == precision
    assert found["machine"]["cpu_class"] == MACHINES[name].cpu_class
    assert found["peaks"]["bf16"]["native"] is (precision == "bf16")
    assert all(found["peaks"][p]["tflops"] > 0 for p in ("fp32", "bf16", "int8"))
    quickstart = found["expected"]["quickstart"]
    assert quickstart["non_embedding_parameters"] > 0 and quickstart["train_samples_per_s"] > 0


def test_doctor_reads_as_text():
    code, out, err = cli("doctor")
    assert code == 0, err
    for fragment in ("machine:", "versions:", "uses:", "peaks:", "expected: quickstart"):
        assert fragment in out
