"""Where and in what precision the model runs: device, autocast dtype, the fp16 loss scaler, peak memory."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from loraclf.errors import UserError


def frozen_linears_to(model: nn.Module, dtype: torch.dtype) -> int:
    """Store the frozen linear layers' weights in `dtype`, the autocast dtype; return how many layers.

    Autocast casts a weight anew in every forward pass unless it requires grad (only those casts are cached),
    so a frozen fp32 base is copied to bf16 once per pass, and once per chunk of a length-chunked batch.
    Stored in bf16 it is used as it is; the products are the same, since autocast rounds to the same dtype.
    LoRA's matrices and the head train, and stay fp32.
    """
    frozen = [m for m in model.modules() if type(m) is nn.Linear and not any(p.requires_grad for p in m.parameters())]
    for module in frozen:
        module.to(dtype)
    return len(frozen)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"config train.device: {name} asked for, but no CUDA device is available")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """Native bf16 matmuls (AVX-512 BF16 or AMX), where bf16 runs several times the fp32 rate."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` (auto, bf16, fp16, fp32) on `device`; None means fp32.

    auto: bf16 on CUDA where supported, else fp16; bf16 on CPUs with native
    bf16; fp32 elsewhere (emulated bf16 is slower than fp32).
    """
    if precision == "fp32":
        return None
    if device.type == "cuda":
        if precision == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if precision == "bf16" else torch.float16
    if device.type == "cpu":
        if precision == "auto":
            return torch.bfloat16 if cpu_has_bf16() else None
        if precision == "fp16":
            raise UserError("config train.precision: fp16 is for CUDA; on CPU use bf16 or fp32")
        return torch.bfloat16
    return None if precision == "auto" else {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """Loss scaling for fp16 on CUDA, where gradients underflow without it; a pass-through otherwise."""
    enabled = dtype is torch.float16 and device.type == "cuda"
    return torch.amp.GradScaler(device.type, enabled=enabled)


def peak_memory_mb(device: torch.device) -> float | None:
    """CUDA: the allocator's peak; CPU: the process's peak resident memory (None where unknown)."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    try:
        import resource  # POSIX only
    except ImportError:
        return None
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux reports KiB
