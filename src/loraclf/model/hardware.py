"""What this machine is: the CPU features that decide precision, the GPU, Apple's MPS, and measured matmul peaks.

`probe()` is the one place that asks the hardware; everything that chooses a device or a precision goes through
it, so a test can hand it any machine class. oneDNN's own `_is_mkldnn_bf16_supported()` is True on every AVX-512
CPU because it can emulate bf16, which runs at a fraction of fp32's rate there; native bf16 is AVX512-BF16 or AMX.
"""

from __future__ import annotations

import functools
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Machine:
    """The facts device and precision are chosen from."""

    cpu: str
    cores: int
    avx2: bool = False
    avx512: bool = False
    avx512_bf16: bool = False  # native bf16 dot products (Cooper Lake, Sapphire Rapids, AMD Zen 4)
    amx: bool = False  # AMX tiles: native bf16 and int8 matrix multiply (Sapphire Rapids and later)
    vnni: bool = False  # int8 dot products (AVX512-VNNI or AVX-VNNI)
    cuda: str | None = None  # GPU name
    cuda_capability: tuple[int, int] | None = None
    cuda_bf16: bool = False
    mps: bool = False

    @property
    def native_bf16(self) -> bool:
        return self.avx512_bf16 or self.amx

    @property
    def cpu_class(self) -> str:
        """The CPU's precision class, as docs/benchmarks.md groups machines."""
        if self.native_bf16:
            return "native bf16" + (" (AMX)" if self.amx else " (AVX512-BF16)")
        if self.avx512:
            return "AVX-512 without native bf16" + (" (VNNI)" if self.vnni else "")
        return "AVX2" + (" (VNNI)" if self.vnni else "") if self.avx2 else platform.machine() or "unknown"

    def to_dict(self) -> dict:
        return {**asdict(self), "native_bf16": self.native_bf16, "cpu_class": self.cpu_class}


def _flag(name: str) -> bool:
    check = getattr(torch.cpu, f"_is_{name}_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


@functools.lru_cache(maxsize=1)
def probe() -> Machine:
    """This machine, asked once per process."""
    cuda = torch.cuda.is_available()
    name, capability, bf16 = None, None, False
    if cuda:
        name = torch.cuda.get_device_name()
        capability = torch.cuda.get_device_capability()
        bf16 = torch.cuda.is_bf16_supported()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return Machine(cpu=cpu_name(), cores=os.cpu_count() or 1, avx2=_flag("avx2"), avx512=_flag("avx512"),
                   avx512_bf16=_flag("avx512_bf16"), amx=_flag("amx_tile"), vnni=_flag("vnni"), cuda=name,
                   cuda_capability=capability, cuda_bf16=bf16, mps=mps)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def matmul_peak(dtype: torch.dtype, device: torch.device, seconds: float = 0.5, size: int = 1024) -> float:
    """FLOP/s of a square fp32/bf16/fp16 matmul of `size`, timed for about `seconds`: the practical peak.
    torch.int8 (CPU): int8 products with int32 sums (`torch._int_mm`), in operations per second."""
    if dtype is torch.int8:
        a, b = (torch.randint(-127, 128, (size, size), dtype=torch.int8) for _ in range(2))
        multiply = torch._int_mm
    else:
        a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
        multiply = torch.matmul
    _sync(device, multiply(a, b))
    count, started = 0, time.perf_counter()
    while count < 3 or time.perf_counter() - started < seconds:
        _sync(device, multiply(a, b))
        count += 1
    return 2 * size**3 * count / (time.perf_counter() - started)


def _sync(device: torch.device, _: torch.Tensor) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
