import pytest
import torch

from loraclf.errors import UserError
from loraclf.model import runtime


def test_precision_choices_on_cpu(monkeypatch):
    cpu = torch.device("cpu")
    assert runtime.autocast_dtype("fp32", cpu) is None
    assert runtime.autocast_dtype("bf16", cpu) is torch.bfloat16
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    assert runtime.autocast_dtype("auto", cpu) is torch.bfloat16
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    assert runtime.autocast_dtype("auto", cpu) is None  # emulated bf16 is slower than fp32
    with pytest.raises(UserError, match="fp16 is for CUDA"):
        runtime.autocast_dtype("fp16", cpu)


def test_no_scaling_except_fp16_on_cuda():
    assert not runtime.grad_scaler(torch.device("cpu"), torch.bfloat16).is_enabled()
    assert not runtime.grad_scaler(torch.device("cpu"), None).is_enabled()


def test_cuda_asked_for_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.pick_device("auto").type == "cpu"
    with pytest.raises(UserError, match="no CUDA device"):
        runtime.pick_device("cuda")
