"""Where and in what precision the model runs: device, autocast dtype, the fp16 loss scaler, peak memory."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from loraclf.errors import UserError
from loraclf.model import hardware


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


def restore_linears(model: nn.Module, source: nn.Module) -> int:
    """Undo frozen_linears_to: copy `source`'s full-precision weights (the base as loaded) into `model`'s frozen
    linear layers stored in a lower dtype; return how many. PEFT's wrappers name a base layer
    `base_model.model.<name>.base_layer`; a layer `source` does not have (a head's unused original) stays as it is.
    """
    originals = dict(source.named_modules())
    restored = 0
    for name, module in model.named_modules():
        if type(module) is not nn.Linear or module.weight.dtype is torch.float32:
            continue
        key = name.removeprefix("base_model.model.").replace(".base_layer", "").replace(".original_module", "")
        original = originals.get(key)
        if isinstance(original, nn.Linear) and original.weight.shape == module.weight.shape:
            module.to(original.weight.dtype)
            with torch.no_grad():
                module.weight.copy_(original.weight)
                if module.bias is not None and original.bias is not None:
                    module.bias.copy_(original.bias)
            restored += 1
    return restored


def pick_device(name: str) -> torch.device:
    """auto: CUDA, else Apple's MPS, else the CPU."""
    machine = hardware.probe()
    if name == "auto":
        return torch.device("cuda" if machine.cuda else "mps" if machine.mps else "cpu")
    if name.startswith("cuda") and not machine.cuda:
        raise UserError(f"config train.device: {name} asked for, but no CUDA device is available")
    if name == "mps" and not machine.mps:
        raise UserError("config train.device: mps asked for, but Apple's MPS is not available")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """Native bf16 matmuls (AVX512-BF16 or AMX). Emulated bf16 (any other AVX-512 CPU) is slower than fp32."""
    return hardware.probe().native_bf16


def native(dtype: torch.dtype | None, device: torch.device) -> bool:
    """Whether `device` runs `dtype` (None: fp32) at full speed rather than emulating it."""
    if dtype is None:
        return True
    machine = hardware.probe()
    if device.type == "cuda":
        return dtype is torch.float16 or machine.cuda_bf16
    if device.type == "cpu":
        return dtype is torch.bfloat16 and machine.native_bf16
    return False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` (auto, bf16, fp16, fp32) on `device`; None means fp32.

    auto: bf16 on CUDA where supported, else fp16 (with loss scaling); bf16 on CPUs with native bf16; fp32
    on other CPUs (emulated bf16 is slower than fp32) and on MPS (fp32 is what every MPS op runs correctly).
    """
    if precision == "fp32":
        return None
    if device.type == "cuda":
        if precision == "auto":
            return torch.bfloat16 if hardware.probe().cuda_bf16 else torch.float16
        return torch.bfloat16 if precision == "bf16" else torch.float16
    if device.type == "cpu":
        if precision == "auto":
            return torch.bfloat16 if cpu_has_bf16() else None
        if precision == "fp16":
            raise UserError("config train.precision: fp16 is for CUDA; on CPU use bf16 or fp32")
        return torch.bfloat16
    return None if precision == "auto" else {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def inference_dtype(precision: str, recorded: str, device: torch.device) -> torch.dtype | None:
    """The dtype evaluate, predict and serve run in; None means fp32.

    auto: `recorded`, the precision a run's answers were checked in (metrics.json's inference_precision:
    float32, or bfloat16/float16 where they gave the fp32 labels on validation and test), where `device` runs
    it natively; fp32 otherwise. So a run gives the same labels, and its recorded test accuracy, on every
    machine. bf16 or fp32 force one.
    """
    if precision == "fp32":
        return None
    if precision != "auto":
        return autocast_dtype(precision, device)
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(recorded)
    return dtype if native(dtype, device) else None


def dtype_name(dtype: torch.dtype | None) -> str:
    """float32, bfloat16 or float16 (None: fp32), as metrics.json records precisions."""
    return str(dtype).removeprefix("torch.") if dtype is not None else "float32"


def describe(device: torch.device, dtype: torch.dtype | None) -> str:
    """One line for the start of train, evaluate, predict and serve: where and in what precision, and why."""
    machine = hardware.probe()
    name = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    if device.type == "cuda":
        where = f"{machine.cuda} (compute capability {'.'.join(map(str, machine.cuda_capability or ()))})"
    elif device.type == "cpu":
        where = f"{machine.cpu}, {torch.get_num_threads()} threads, {machine.cpu_class}"
    else:
        where = "Apple MPS" if device.type == "mps" else device.type
    emulated = "" if native(dtype, device) else " (emulated: slower than fp32 here)"
    return f"device: {device} ({where}); precision: {name}{emulated}"


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
