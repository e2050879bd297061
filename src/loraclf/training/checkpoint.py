"""Training checkpoints: written atomically, found by step, restored exactly. No pickle.

    RUN_DIR/checkpoints/step-000120/
      trainable.safetensors   every trainable tensor (LoRA + head), by parameter name
      best.safetensors        the trainable tensors of the best evaluation so far
      average.safetensors     train.ema's moving average of them (only with train.ema)
      optimizer.safetensors   optimizer state tensors, keyed "<param index>.<name>"
      rng.safetensors         torch CPU (and CUDA) generator states
      state.json              loop position, best metric, optimizer param groups,
                              scheduler and scaler state, numpy and Python RNG states

A checkpoint is written into a hidden temporary folder, each file fsynced, and
then renamed into place: a folder named step-* is always complete, and a crash
mid-write leaves only a hidden folder that is ignored and cleaned up later.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from loraclf.errors import UserError
from loraclf.rundir import atomic
from loraclf.rundir.layout import CHECKPOINTS

PREFIX = "step-"
STATE = "state.json"
AVERAGE = "average.safetensors"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))
    _fsync(path)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy `tensors` (as `trainable_state` returns them) into the model's parameters of the same names."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in tensors:
                param.copy_(tensors[name])


def rng_tensors() -> dict[str, torch.Tensor]:
    """This process's torch generator states (CPU, and each CUDA device)."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors |= {f"torch_cuda_{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    return tensors


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = rng_tensors()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return tensors, {"numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
                     "python": [version, list(internal), gauss_next]}


def _set_rng_state(tensors: dict[str, torch.Tensor], states: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))


def _optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    state = optimizer.state_dict()
    tensors = {f"{index}.{key}": value for index, entry in state["state"].items() for key, value in entry.items()}
    return tensors, state["param_groups"]


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                    groups: list[dict[str, Any]]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def step_folders(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    folder = run_dir / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name.removeprefix(PREFIX)))


def latest(run_dir: Path) -> Path | None:
    folders = step_folders(run_dir)
    return folders[-1] if folders else None


def save(run_dir: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler,
         scaler: torch.amp.GradScaler, best_state: dict[str, torch.Tensor], loop_state: dict[str, Any],
         keep: int, keep_step: int | None = None,
         rng_by_rank: list[dict[str, torch.Tensor]] | None = None,
         average: dict[str, torch.Tensor] | None = None) -> Path:
    """Write checkpoint `step` atomically, then prune to the last `keep` (plus `keep_step`, the best).

    `rng_by_rank`: in data-parallel training, every process's `rng_tensors()`,
    saved as "rank<N>.<name>" beside this process's own.
    """
    root = run_dir / CHECKPOINTS
    root.mkdir(exist_ok=True)
    target = root / f"{PREFIX}{step:06d}"
    tmp = atomic.temp_folder(target)
    try:
        _save_tensors(trainable_state(model), tmp / "trainable.safetensors")
        _save_tensors(best_state, tmp / "best.safetensors")
        if average is not None:
            _save_tensors(average, tmp / AVERAGE)
        optimizer_tensors, groups = _optimizer_state(optimizer)
        _save_tensors(optimizer_tensors, tmp / "optimizer.safetensors")
        rng, rng_states = _rng_state()
        for rank, tensors in enumerate(rng_by_rank or []):
            rng |= {f"rank{rank}.{name}": value for name, value in tensors.items()}
        _save_tensors(rng, tmp / "rng.safetensors")
        state = {"step": step, "loop": loop_state, "optimizer_groups": groups, "scheduler": scheduler.state_dict(),
                 "scaler": scaler.state_dict(), "rng": rng_states}
        (tmp / STATE).write_text(json.dumps(state), encoding="utf-8")
        _fsync(tmp / STATE)
        _fsync(tmp)
        if target.exists():  # a step re-reached after resuming from an earlier checkpoint
            shutil.rmtree(target)
        os.replace(tmp, target)
        _fsync(root)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"checkpoint {target}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune(root, keep, keep_step)
    return target


def _prune(root: Path, keep: int, keep_step: int | None) -> None:
    folders = step_folders(root.parent)
    keep_names = {p.name for p in folders[-keep:]}
    if keep_step is not None:
        keep_names.add(f"{PREFIX}{keep_step:06d}")
    for folder in folders:
        if folder.name not in keep_names:
            shutil.rmtree(folder, ignore_errors=True)
    for leftover in root.glob(f".{PREFIX}*"):  # temporary folders of writes that crashed
        shutil.rmtree(leftover, ignore_errors=True)


def load_average(folder: Path) -> dict[str, torch.Tensor]:
    """The moving average saved in checkpoint `folder` (train.ema)."""
    try:
        return load_file(str(folder / AVERAGE))
    except (OSError, ValueError) as exc:
        raise UserError(f"checkpoint {folder}: no readable moving average for train.ema ({exc}); was it "
                        "written by a run without train.ema?") from None


def restore(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler,
            scaler: torch.amp.GradScaler, rank: int = 0) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Load checkpoint `folder` into the objects; return (loop state, best trainable tensors).

    `rank`: the data-parallel process restoring, whose own generator states are restored.
    """
    try:
        state = json.loads((folder / STATE).read_text(encoding="utf-8"))
        trainable = load_file(str(folder / "trainable.safetensors"))
        best = load_file(str(folder / "best.safetensors"))
        optimizer_tensors = load_file(str(folder / "optimizer.safetensors"))
        rng_tensors = load_file(str(folder / "rng.safetensors"))
    except (OSError, ValueError) as exc:
        raise UserError(f"checkpoint {folder}: unreadable ({exc})") from None
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    if set(trainable) != expected:
        raise UserError(f"checkpoint {folder}: its tensors do not match this model's trainable parameters")
    with torch.no_grad():
        for name, value in trainable.items():
            if value.shape != params[name].shape:
                raise UserError(f"checkpoint {folder}: {name} has shape {tuple(value.shape)}, "
                                f"the model has {tuple(params[name].shape)}")
            params[name].copy_(value)
    device = next(iter(params.values())).device
    _load_optimizer(optimizer, {k: v.to(device) for k, v in optimizer_tensors.items()}, state["optimizer_groups"])
    scheduler.load_state_dict(state["scheduler"])
    if state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    own = {name.removeprefix(f"rank{rank}."): value for name, value in rng_tensors.items()
           if name.startswith(f"rank{rank}.")}
    _set_rng_state(rng_tensors | own, state["rng"])
    return state["loop"], {k: v.to(device) for k, v in best.items()}
