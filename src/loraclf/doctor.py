"""`loraclf doctor`: this machine, what loraclf will run on it, its measured peaks, and the rates to expect.

    loraclf doctor            # a page to read, or to paste into a bug report
    loraclf doctor --json     # the same as one JSON object

The peaks are measured here and now (a square matmul per precision, about half a second each); the expected
rates divide a share of the peak by each recipe's useful FLOPs per item: 4·N per real token for a training item
(forward 2N, backward through the frozen weights 2N, no weight gradients), 2·N for a prediction, N the encoder's
non-embedding parameters, at AG News's 54 real tokens per item (roberta-base's tokenizer). The shares are what
loraclf reached on its own bench (docs/benchmarks.md): about half the peak in training, two thirds in prediction.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

from loraclf.config.loading import load_config
from loraclf.config.recipes import resolve
from loraclf.model import hardware, int8, runtime
from loraclf.model.hub import resolve_model_path
from loraclf.rundir.versions import versions

TOKENS_PER_ITEM = 54  # AG News, title + " " + description, roberta-base's tokenizer: the mean over 5,000 items
TRAIN_SHARE, PREDICT_SHARE = 0.5, 0.65  # of the measured peak, as reached on the bench (docs/benchmarks.md)
RECIPES = ("quickstart", "paper")


def report(seconds: float = 0.5) -> dict[str, Any]:
    """Everything `loraclf doctor` shows, as one dict."""
    machine = hardware.probe()
    device = runtime.pick_device("auto")
    train_dtype = runtime.autocast_dtype("auto", device)
    peaks = measured_peaks(device, seconds)
    train_peak = peaks[_name(train_dtype)]["tflops"]
    return {
        "machine": machine.to_dict() | {"memory_gb": _memory_gb(), "os": platform.platform()},
        "versions": {k: v for k, v in versions().items() if k not in ("git_dirty",)},
        "uses": {"device": str(device), "train_precision": _name(train_dtype),
                 "inference_precision": "fp32 (or a run's own bf16/fp16 where it gave fp32's labels and runs "
                                        "natively here)",
                 "int8": "available (--int8)" if device.type == "cpu" and int8.supported() else
                         "slow here (no VNNI or AMX)" if device.type == "cpu" else "CPU only",
                 "attention": "loraclf fast: SDPA, with its math path and geometric dropout while training on CPU",
                 "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads()},
        "peaks": peaks,
        "expected": {name: expected(name, train_peak, peaks["fp32"]["tflops"]) for name in RECIPES},
        "warnings": _warnings(machine, device, peaks),
    }


def measured_peaks(device: torch.device, seconds: float) -> dict[str, dict[str, Any]]:
    """TFLOP/s of a 1024-square matmul in each precision this device can run (CPU: fp32, bf16, int8)."""
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if device.type == "cuda":
        dtypes["fp16"] = torch.float16
    peaks = {name: {"tflops": round(hardware.matmul_peak(dtype, device, seconds) / 1e12, 3),
                    "native": runtime.native(None if dtype is torch.float32 else dtype, device)}
             for name, dtype in dtypes.items()}
    if device.type == "cpu":
        peaks["int8"] = {"tflops": round(hardware.matmul_peak(torch.int8, device, seconds) / 1e12, 3), "native": int8.supported(),
                         "note": "tera-ops/s of int8 products with int32 sums"}
    return peaks


def expected(recipe: str, train_tflops: float, fp32_tflops: float) -> dict[str, Any]:
    """A recipe's expected training and (exact, fp32) prediction rates on this machine, from its model's size."""
    config = load_config(resolve(recipe))
    try:
        n = encoder_parameters(config.model.name_or_path, config.model.trust_remote_code)
    except (OSError, ValueError):  # not in the local cache: doctor downloads nothing
        return {"model": config.model.name_or_path, "unavailable": "its config is not in the local cache"}
    return {"model": config.model.name_or_path, "non_embedding_parameters": n,
            "train_samples_per_s": round(TRAIN_SHARE * train_tflops * 1e12 / (4 * n * TOKENS_PER_ITEM), 1),
            "predict_texts_per_s": round(PREDICT_SHARE * fp32_tflops * 1e12 / (2 * n * TOKENS_PER_ITEM), 1)}


def encoder_parameters(name_or_path: str, trust_remote_code: bool = False) -> int:
    """The model's parameters outside its embeddings, counted on the meta device from a locally available config."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(resolve_model_path(name_or_path), local_files_only=True,
                                        trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    embedded = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters())
    return sum(p.numel() for p in model.parameters()) - embedded


def _warnings(machine: hardware.Machine, device: torch.device, peaks: dict[str, dict[str, Any]]) -> list[str]:
    found = []
    if device.type == "cpu" and machine.native_bf16 and peaks["bf16"]["tflops"] < 1.1 * peaks["fp32"]["tflops"]:
        found.append("this CPU reports native bf16 but ran bf16 no faster than fp32: train with "
                     "--train.precision fp32")
    if device.type == "cpu" and torch.get_num_threads() < (os.cpu_count() or 1) // 2:
        found.append(f"torch uses {torch.get_num_threads()} threads of {os.cpu_count()} cores (OMP_NUM_THREADS?)")
    return found


def _name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def _memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def render(found: dict[str, Any]) -> str:
    """The report as lines to read."""
    m, uses = found["machine"], found["uses"]
    gpu = f"{m['cuda']} (compute capability {'.'.join(map(str, m['cuda_capability']))})" if m["cuda"] else \
        "Apple MPS" if m["mps"] else "none"
    flags = [f for f in ("avx2", "avx512", "avx512_bf16", "amx", "vnni") if m[f]]
    lines = [f"machine:  {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB; {m['cpu_class']}",
             f"          CPU flags that matter: {', '.join(flags) or 'none'}; GPU: {gpu}",
             f"          {m['os']}",
             "versions: " + ", ".join(f"{k} {v}" for k, v in found["versions"].items() if v is not None),
             f"uses:     device {uses['device']}, training in {uses['train_precision']}, {uses['threads']} threads",
             f"          inference in {uses['inference_precision']}; int8: {uses['int8']}",
             f"          attention: {uses['attention']}",
             "peaks:    " + ", ".join(f"{k} {v['tflops']:.3f} TFLOP/s{'' if v['native'] else ' (emulated)'}"
                                      for k, v in found["peaks"].items())]
    for name, rates in found["expected"].items():
        if "unavailable" in rates:
            lines.append(f"expected: {name} ({rates['model']}): unknown, {rates['unavailable']} (doctor downloads "
                         "nothing)")
        else:
            lines.append(f"expected: {name} ({rates['model']}, {rates['non_embedding_parameters']:,} encoder "
                         f"parameters): about {rates['train_samples_per_s']} training samples/s, "
                         f"{rates['predict_texts_per_s']} texts/s predicted (fp32)")
    lines += [f"warning:  {w}" for w in found["warnings"]]
    return "\n".join(lines) + "\n"
