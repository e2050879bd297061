"""benchmarks/gpu_check.sh: its CPU dry run goes through every step and writes the one JSON."""

import json
import subprocess

from conftest import ROOT


def test_the_gpu_check_dry_run_writes_every_step(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["dry_run"] and record["device"] == "cpu"
    assert record["doctor"]["uses"]["train_precision"] in ("bf16", "fp32")
    assert record["cuda_tests"]["skipped"]
    assert record["train_fp32"]["steps"] == 3 and record["train_fp32"]["samples_per_s"] > 0
    assert record["predict"]["texts"] == 64 and record["predict"]["texts_per_s"] > 0
    assert record["ddp_torchrun"] == record["ddp_torchrun"] | {"ok": True, "processes": 1, "steps": 3}
