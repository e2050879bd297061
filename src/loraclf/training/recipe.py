"""Training a recipe: setup -> fit -> (adapt) -> finish, in the shape of litgpt's finetune scripts.

`setup` checks the folder, the data and the exact budget (weights-free) before it builds the model,
optimizer and schedule; `fit` (training/loop.py) is the loop; `adapt` (training/adapt.py) continues on
unlabelled text where the recipe asks; `finish` (training/results.py) evaluates the best model on the test
split and writes the summary and report. `train` runs them and always releases what they opened.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from loraclf.config.loading import save_config
from loraclf.config.schema import Config
from loraclf.data.splits import load_splits
from loraclf.errors import UserError
from loraclf.model import accounting, geometric_dropout, quantize, runtime
from loraclf.model.adapter import wrap_with_lora
from loraclf.model.build import build_base, load_tokenizer, set_task
from loraclf.model.runtime import autocast_dtype, describe, grad_scaler, pick_device
from loraclf.rundir import atomic, layout, readers, versions
from loraclf.training import checkpoint, distributed, tracking
from loraclf.training.adapt import adapt
from loraclf.training.averaging import Average
from loraclf.training.distributed import Processes
from loraclf.training.keep import Keeper
from loraclf.training.loop import fit, optimization, plan_epochs, seed_everything
from loraclf.training.losses import Objective
from loraclf.training.results import finish
from loraclf.training.state import EpochPlan, RunContext, Trainable, TrainData, TrainState


@dataclass
class Setup:
    """What `setup` builds, by the stage that uses it: the run, its data, what trains, and the passes."""

    run: RunContext
    data: TrainData
    trainable: Trainable
    plan: EpochPlan


def train(config: Config, output_dir: str | Path, overwrite: bool = False,
          log: Callable[[str], None] = print, resume: bool = False,
          on_eval: Callable[[dict[str, Any]], None] | None = None, command: str | None = None) -> dict[str, Any]:
    """Train per `config` into the run folder `output_dir`; return the summary that metrics.json holds.

    `on_eval` receives each validation record (a search prunes a trial by raising from it). `command` is the
    command line that made the run, for versions.json and the model card (the CLI passes its own).
    With `resume`, `output_dir` is an interrupted run: training continues from
    its latest complete checkpoint and ends exactly as the uninterrupted run would.
    """
    started = time.perf_counter()
    seed_everything(config.train.seed)
    procs, device = distributed.start(pick_device(config.train.device))
    trackers = None
    try:
        s = setup(config, output_dir, overwrite, resume, procs, device, log if procs.main else lambda _: None,
                  command)
        state, best_state = initial_state(s)
        trackers = tracking.Trackers(config.train.log_to if procs.main else [], s.run.out, config.to_dict(),
                                     config.train.mlflow_uri)
        keeper = Keeper(s.data, trackers, best_state, s.run.resume_from, on_eval)
        fit(s.run, s.trainable, s.plan, state, keeper)
        best_state = keeper.best_state
        if config.adapt.method != "none":
            best_state = adapt(s.run, s.data, s.trainable, state, best_state, trackers)
        summary = finish(s.run, s.data, s.trainable, state, best_state, started)
        trackers.close(summary)
        procs.barrier()
        if procs.main:
            (s.run.out / layout.INCOMPLETE).unlink(missing_ok=True)
        return summary
    finally:
        if trackers is not None:
            trackers.close(failed=True)  # no-op after a clean close
        distributed.stop(procs)


def setup(config: Config, output_dir: str | Path, overwrite: bool, resume: bool, procs: Processes,
          device: torch.device, log: Callable[[str], None], command: str | None = None) -> Setup:
    """Check the folder, the data and the budget, then build the model, optimizer and schedule."""
    tc = config.train
    dtype = autocast_dtype(tc.precision, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    out, resume_from = _open_folder(procs.broadcast(str(output_dir)), overwrite, resume, config, log)
    run = RunContext(config, out, procs, device, dtype, log, resume_from)
    log(describe(device, dtype))
    tracking.check_available(tc.log_to)
    # Data, then the exact budget check on the meta device before any weights load.
    tokenizer = load_tokenizer(config.model)
    splits = load_splits(config.data, tokenizer, log)
    planned = accounting.estimate(config, splits.label_names)
    accounting.enforce(planned)
    log(f"data: train {len(splits.train):,}, validation {len(splits.val):,}, "
        f"test {len(splits.test) if splits.test else 0:,}; {_classes(splits.label_names)}")
    log(planned.describe())
    if procs.world > 1:
        log(f"data parallel: {procs.world} processes, global batch {tc.batch_size} split between them")
    procs.barrier()  # every process has checked the folder before rank 0 creates it

    data = TrainData(tokenizer, splits, splits.train.encoded(), splits.val.encoded())
    plan = plan_epochs(config, data.train_set, data.pad_id, tc.seed, tc.epochs, tc.max_steps)
    if tc.min_steps and not tc.max_steps and plan.total_steps < tc.min_steps:
        epochs = math.ceil(tc.min_steps / plan.steps_per_epoch)
        log(f"train.min_steps {tc.min_steps}: {plan.steps_per_epoch} steps an epoch, so {epochs} epochs instead of "
            f"{tc.epochs}")
        plan = plan_epochs(config, data.train_set, data.pad_id, tc.seed, epochs)
    if resume_from is None and procs.main:
        _write_run_files(config, out, splits.label_names, tokenizer, command)
    model, base_bytes, initial_adapter = build_model(config, out, splits.label_names, plan.total_steps, procs,
                                                     device, dtype, fresh=resume_from is None)
    actual = accounting.count(model, config.budget.max_trainable)
    assert actual == planned, f"meta-device count {planned} differs from the built model {actual}"
    quant = config.quantization
    log(f"base weights in memory: {base_bytes / 2**20:.1f} MiB"
        + (f" ({quant.bits}-bit linear layers{', int8 embeddings' if quant.embeddings else ''})" if quant.bits else ""))
    if resume_from is None and procs.main:
        atomic.write_json(out / layout.BUDGET, actual.to_dict())
    optimizer, scheduler = optimization(model, tc, config.lora.plus_ratio, tc.lr, tc.scheduler, plan.total_steps,
                                        device)
    forward = procs.wrap(torch.compile(model) if tc.compile else model, device)
    objective = Objective.build(config.data.task, tc.class_weights, tc.label_smoothing, splits.train.labels,
                                splits.label_names)
    average = Average(model, tc.ema) if tc.ema else None
    trainable = Trainable(model, forward, optimizer, scheduler, grad_scaler(device, dtype), objective, actual,
                          base_bytes, initial_adapter, average)
    return Setup(run, data, trainable, plan)


def _classes(names: list[str]) -> str:
    """The classes for the log: all of them where they fit on a line, else their count and the first few."""
    if len(names) <= 12:
        return f"classes {names}"
    return f"{len(names)} classes: {', '.join(names[:8])}, ... (all in {layout.LABELS})"


def _open_folder(output_dir: str, overwrite: bool, resume: bool, config: Config,
                 log: Callable[[str], None]) -> tuple[Path, Path | None]:
    """The run folder (checked, not yet created) and, when resuming, its latest complete checkpoint. An
    incomplete run's folder (training started and failed) is reused: resumed where it has a checkpoint and the
    same config, else started over."""
    out = Path(output_dir)
    if not resume and not overwrite and layout.incomplete(out):
        latest = checkpoint.latest(out)
        if latest is not None and _saved_config(out) == config.to_dict():
            log(f"{out}: an interrupted run of this config; resuming it from {latest.name}")
            return out, latest
        log(f"{out}: an incomplete run (it failed or was stopped before finishing); starting it over")
    if not resume:
        return layout.prepare(output_dir, overwrite), None
    resume_from = checkpoint.latest(out)
    if resume_from is None:
        raise UserError(f"resume {out}: no complete checkpoint in {out / layout.CHECKPOINTS}; "
                        "nothing to resume (start a new run with --config)")
    return out, resume_from


def _saved_config(out: Path) -> dict[str, Any] | None:
    try:
        return readers.read_config(out).to_dict()
    except UserError:
        return None


def _write_run_files(config: Config, out: Path, label_names: list[str], tokenizer, command: str | None) -> None:
    layout.create(out)
    layout.clear(out)
    (out / layout.INCOMPLETE).write_text("training started; removed when the run finishes\n", encoding="utf-8")
    save_config(config, out / layout.CONFIG)
    atomic.write_json(out / layout.LABELS, {"label_names": label_names})
    atomic.write_json(out / layout.VERSIONS, versions.versions() | {"command": command})
    # Exported and reloaded tokenizers then truncate where training did.
    tokenizer.model_max_length = config.data.max_length
    atomic.replace_folder(out / layout.TOKENIZER, tokenizer.save_pretrained)


def build_model(config: Config, out: Path, label_names: list[str], total_steps: int, procs: Processes,
                 device: torch.device, dtype: torch.dtype | None, fresh: bool):
    """Base (quantized or not) + adapter on `device`; returns (model, base weight bytes, initial adapter folder)."""
    quant = config.quantization
    if quant.bits:
        quantize.check_available(device)
    # A quantized base loads quantized from its weights: a random one from the run's saved base_model/.
    base = None
    if fresh and (not quant.bits or config.model.init == "random"):
        base = build_base(config.model, label_names)  # the same seeded weights in every process
        if config.model.init == "random" and procs.main:
            # Random weights are part of the result: evaluate and predict need the same ones.
            atomic.replace_folder(out / layout.BASE_MODEL, base.save_pretrained)
        procs.barrier()
    if base is None or quant.bits:
        saved_base = out / layout.BASE_MODEL
        base = build_base(config.model, label_names, base_folder=saved_base if saved_base.is_dir() else None,
                          quantization=quant, device=device, autocast=dtype)
    set_task(base, config.data.task)
    if quant.bits:
        base = quantize.prepare(base)
    if config.train.gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = wrap_with_lora(base, config.lora, total_steps)
    if not quant.bits:  # a quantized base was loaded onto the device, and bitsandbytes weights stay there
        model = model.to(device)
    if config.train.fast_dropout and device.type == "cpu":
        geometric_dropout.use_fast_dropout(model)
    if dtype is not None and not quant.bits:
        runtime.frozen_linears_to(model, dtype)
    base_bytes = quantize.weight_bytes(model, frozen_only=True)
    initial_adapter = out / layout.INITIAL_ADAPTER if config.lora.init != "default" else None
    if initial_adapter is not None and fresh and procs.main:
        # PiSSA/OLoRA move part of W into the adapter; saving needs the adapter as initialised.
        atomic.replace_folder(initial_adapter, model.save_pretrained)
    return model, base_bytes, initial_adapter


def initial_state(s: Setup) -> tuple[TrainState, dict[str, torch.Tensor]]:
    """A fresh state, or the checkpoint's when resuming (metrics.jsonl cut back to it)."""
    run, trainable = s.run, s.trainable
    log_path = run.out / layout.METRICS_LOG
    if run.resume_from is None:
        if run.procs.main:
            log_path.write_text("", encoding="utf-8")
        return TrainState(), checkpoint.trainable_state(trainable.model)
    loop, best_state = checkpoint.restore(run.resume_from, trainable.model, trainable.optimizer, trainable.scheduler,
                                          trainable.scaler, run.procs.rank)
    state = TrainState(**loop)
    if trainable.average is not None:
        trainable.average.load(checkpoint.load_average(run.resume_from))
    if run.procs.main:
        # Drop log lines written after the checkpoint: the resumed run writes them again.
        with log_path.open("r+b") as handle:
            handle.truncate(state.log_bytes)
    run.log(f"resuming from {run.resume_from.name}: epoch {state.epoch + 1}, step {state.step}")
    return state, best_state
