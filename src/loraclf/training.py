"""Training: setup -> fit -> finish, in the shape of litgpt's finetune scripts.

`setup` checks the data and the exact budget (weights-free) before it builds
the model, optimizer and schedule; `fit` is the loop, read top to bottom;
`finish` evaluates the best model on the test split and writes the summary and
report. `train` runs the three and always releases what they opened.
"""

from __future__ import annotations

import contextlib
import json
import random
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from transformers import get_scheduler

from loraclf import accounting, card, checkpoint, distributed, quantize, report, run, runtime, speed, tracking
from loraclf.config import Config, save_config
from loraclf.data import Batches, Encoded, Splits, encode, length_chunks, load_splits, loader
from loraclf.distributed import Processes
from loraclf.errors import UserError
from loraclf.losses import Objective
from loraclf.evaluate import confident_mistakes, metrics, plot_confusion, tune_thresholds
from loraclf.model import build_base, load_tokenizer, save_adapter, set_task, wrap_with_lora
from loraclf.predict import predict_logits
from loraclf.progress import Progress
from loraclf.runtime import autocast, autocast_dtype, grad_scaler, peak_memory_mb, pick_device


@dataclass
class TrainState:
    """The loop's position and what it carries from step to step; a checkpoint saves and restores it."""

    epoch: int = 0
    batch: int = 0  # batches of `epoch` already trained
    step: int = 0
    seen: int = 0
    tokens: int = 0
    window_loss: float = 0.0  # loss summed since the last train record
    best_value: float | None = None
    best_record: dict[str, Any] = field(default_factory=dict)
    best_step: int | None = None
    stale: int = 0  # evaluations in a row without a better metric_for_best
    stopped: str | None = None  # why training stopped before its last step (early stopping)
    eval_seconds: float = 0.0
    train_seconds: float = 0.0  # training steps only, carried across resumes
    log_bytes: int = 0  # metrics.jsonl's length at the checkpoint


@dataclass
class Setup:
    """What `setup` builds for `fit` and `finish`."""

    config: Config
    out: Path
    procs: Processes
    device: torch.device
    dtype: torch.dtype | None
    tokenizer: Any
    splits: Splits
    train_set: Encoded
    val_set: Encoded
    steps_per_epoch: int
    total_steps: int
    model: torch.nn.Module
    forward: torch.nn.Module  # the model as the training step calls it (compiled, DDP-wrapped)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    parameters: accounting.Breakdown
    objective: Objective
    base_bytes: int
    initial_adapter: Path | None
    resume_from: Path | None
    log: Callable[[str], None]

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0


class Clock:
    """Training time without the validation passes; it accumulates into `state.train_seconds`."""

    def __init__(self, state: TrainState):
        self.state, self.mark = state, time.perf_counter()

    def elapsed(self) -> float:
        return self.state.train_seconds + time.perf_counter() - self.mark

    def stop(self) -> None:
        self.state.train_seconds, self.mark = self.elapsed(), time.perf_counter()

    def restart(self) -> None:
        self.mark = time.perf_counter()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def param_groups(model: torch.nn.Module, weight_decay: float, lr: float,
                 plus_ratio: float = 0.0) -> list[dict[str, Any]]:
    """Weight decay on weight matrices only: not on biases or LayerNorm, as the HF Trainer does.

    With LoRA+ (`plus_ratio` > 0) the B matrices get their own groups at lr * plus_ratio.
    """
    no_decay = set()
    for module_name, module in model.named_modules():
        if isinstance(module, torch.nn.LayerNorm) or "LayerNorm" in type(module).__name__:
            no_decay.update(f"{module_name}.{p}" for p, _ in module.named_parameters(recurse=False))
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            decays = not (name in no_decay or name.endswith("bias"))
            faster = plus_ratio > 0 and ".lora_B." in name
            groups.setdefault((decays, faster), []).append(param)
    return [{"params": params, "weight_decay": weight_decay if decays else 0.0,
             "lr": lr * plus_ratio if faster else lr}
            for (decays, faster), params in sorted(groups.items(), key=lambda item: (not item[0][0], item[0][1]))]


def is_better(metric: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value < best if metric == "loss" else value > best


def train(config: Config, output_dir: str | Path, overwrite: bool = False,
          log: Callable[[str], None] = print, resume: bool = False,
          on_eval: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train per `config` into the run folder `output_dir`; return the summary that metrics.json holds.

    `on_eval` receives each validation record (a search prunes a trial by raising from it).
    With `resume`, `output_dir` is an interrupted run: training continues from
    its latest complete checkpoint and ends exactly as the uninterrupted run would.
    """
    started = time.perf_counter()
    seed_everything(config.train.seed)
    procs, device = distributed.start(pick_device(config.train.device))
    trackers = None
    try:
        s = setup(config, output_dir, overwrite, resume, procs, device, log if procs.main else lambda _: None)
        state, best_state = initial_state(s)
        trackers = tracking.Trackers(config.train.log_to if procs.main else [], s.out, config.to_dict(),
                                     config.train.mlflow_uri)
        best_state = fit(s, state, best_state, trackers, on_eval)
        if config.adapt.method != "none":
            from loraclf.adapt import adapt  # adapt builds on this module's step and validation

            best_state = adapt(s, state, best_state, trackers)
        summary = finish(s, state, best_state, started)
        trackers.close(summary)
        procs.barrier()
        return summary
    finally:
        if trackers is not None:
            trackers.close(failed=True)  # no-op after a clean close
        distributed.stop(procs)


def setup(config: Config, output_dir: str | Path, overwrite: bool, resume: bool, procs: Processes,
          device: torch.device, log: Callable[[str], None]) -> Setup:
    """Check the folder, the data and the budget, then build the model, optimizer and schedule."""
    tc = config.train
    dtype = autocast_dtype(tc.precision, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    out, resume_from = _open_folder(procs.broadcast(str(output_dir)), overwrite, resume)
    tracking.check_available(tc.log_to)
    # Data, then the exact budget check on the meta device before any weights load.
    tokenizer = load_tokenizer(config.model)
    splits = load_splits(config.data, tokenizer, log)
    planned = accounting.estimate(config, splits.label_names)
    accounting.enforce(planned)
    log(f"data: train {len(splits.train):,}, validation {len(splits.val):,}, "
        f"test {len(splits.test) if splits.test else 0:,}; classes {splits.label_names}")
    log(planned.describe())
    if procs.world > 1:
        log(f"data parallel: {procs.world} processes, global batch {tc.batch_size} split between them")
    procs.barrier()  # every process has checked the folder before rank 0 creates it

    train_set = splits.train.encoded()
    steps_per_epoch = len(epoch_batches(config, train_set, 0, epoch=0))
    total_steps = steps_per_epoch * tc.epochs
    if tc.max_steps:
        total_steps = min(total_steps, tc.max_steps)
    if resume_from is None and procs.main:
        _write_run_files(config, out, splits.label_names, tokenizer)
    model, base_bytes, initial_adapter = _build_model(config, out, splits.label_names, total_steps, procs, device,
                                                      dtype, fresh=resume_from is None)
    actual = accounting.count(model, config.budget.max_trainable)
    assert actual == planned, f"meta-device count {planned} differs from the built model {actual}"
    quant = config.quantization
    log(f"base weights in memory: {base_bytes / 2**20:.1f} MiB"
        + (f" ({quant.bits}-bit linear layers{', int8 embeddings' if quant.embeddings else ''})" if quant.bits else ""))
    if resume_from is None and procs.main:
        run.write_json(out / run.BUDGET, actual.to_dict())

    optimizer = torch.optim.AdamW(param_groups(model, tc.weight_decay, tc.lr, config.lora.plus_ratio), lr=tc.lr,
                                  fused=device.type == "cuda")
    scheduler = get_scheduler(tc.scheduler, optimizer, num_warmup_steps=int(tc.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    forward = procs.wrap(torch.compile(model) if tc.compile else model, device)
    return Setup(config, out, procs, device, dtype, tokenizer, splits, train_set,
                 splits.val.encoded(), steps_per_epoch, total_steps, model, forward,
                 optimizer, scheduler, grad_scaler(device, dtype), actual,
                 Objective.build(config.data.task, tc.class_weights, tc.label_smoothing, splits.train.labels,
                                 splits.label_names), base_bytes, initial_adapter, resume_from, log)


def _open_folder(output_dir: str, overwrite: bool, resume: bool) -> tuple[Path, Path | None]:
    """The run folder (checked, not yet created) and, when resuming, its latest complete checkpoint."""
    if not resume:
        return run.prepare(output_dir, overwrite), None
    out = Path(output_dir)
    resume_from = checkpoint.latest(out)
    if resume_from is None:
        raise UserError(f"resume {out}: no complete checkpoint in {out / checkpoint.FOLDER}; "
                        "nothing to resume (start a new run with --config)")
    return out, resume_from


def _write_run_files(config: Config, out: Path, label_names: list[str], tokenizer) -> None:
    run.create(out)
    run.clear(out)
    save_config(config, out / run.CONFIG)
    run.write_json(out / run.LABELS, {"label_names": label_names})
    # The command that made the run, for its model card (a Python caller's script and arguments).
    program = Path(sys.argv[0]).name
    command = shlex.join(["loraclf" if program in ("cli.py", "loraclf") else program, *sys.argv[1:]])
    run.write_json(out / run.VERSIONS, runtime.versions() | {"command": command})
    # Exported and reloaded tokenizers then truncate where training did.
    tokenizer.model_max_length = config.data.max_length
    run.replace_folder(out / run.TOKENIZER, tokenizer.save_pretrained)


def _build_model(config: Config, out: Path, label_names: list[str], total_steps: int, procs: Processes,
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
            run.replace_folder(out / run.BASE_MODEL, base.save_pretrained)
        procs.barrier()
    if base is None or quant.bits:
        saved_base = out / run.BASE_MODEL
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
        speed.use_fast_dropout(model)
    if dtype is not None and not quant.bits:
        speed.frozen_linears_to(model, dtype)
    base_bytes = quantize.weight_bytes(model, frozen_only=True)
    initial_adapter = out / run.INITIAL_ADAPTER if config.lora.init != "default" else None
    if initial_adapter is not None and fresh and procs.main:
        # PiSSA/OLoRA move part of W into the adapter; saving needs the adapter as initialised.
        run.replace_folder(initial_adapter, model.save_pretrained)
    return model, base_bytes, initial_adapter


def initial_state(s: Setup) -> tuple[TrainState, dict[str, torch.Tensor]]:
    """A fresh state, or the checkpoint's when resuming (metrics.jsonl cut back to it)."""
    log_path = s.out / run.METRICS_LOG
    if s.resume_from is None:
        if s.procs.main:
            log_path.write_text("", encoding="utf-8")
        return TrainState(), checkpoint.trainable_state(s.model)
    loop, best_state = checkpoint.restore(s.resume_from, s.model, s.optimizer, s.scheduler, s.scaler, s.procs.rank)
    state = TrainState(**loop)
    if s.procs.main:
        # Drop log lines written after the checkpoint: the resumed run writes them again.
        with log_path.open("r+b") as handle:
            handle.truncate(state.log_bytes)
    s.log(f"resuming from {s.resume_from.name}: epoch {state.epoch + 1}, step {state.step}")
    return state, best_state


def epoch_batches(config: Config, train_set: Encoded, pad_id: int, epoch: int) -> Batches:
    # The data order comes from (seed, epoch) alone, so a resumed run sees the same batches.
    tc = config.train
    # Bucketed widths keep torch.compile from recompiling for every batch length.
    multiple = config.data.pad_to_multiple_of or (16 if tc.compile else 1)
    return loader(train_set, tc.batch_size, pad_id, shuffle=True, seed=tc.seed + epoch,
                  group_by_length=tc.group_by_length, pad_to_multiple_of=multiple)


def fit(s: Setup, state: TrainState, best_state: dict[str, torch.Tensor], trackers: tracking.Trackers,
        on_eval: Callable[[dict[str, Any]], None] | None = None) -> dict[str, torch.Tensor]:
    """The loop: epochs of steps, validation and a checkpoint at each epoch end (and every N steps if asked).

    Returns the trainable tensors of the best validation.
    """
    tc, procs = s.config.train, s.procs
    window_loss = torch.tensor(state.window_loss / procs.world, device=s.device)  # summed on device: no sync per step
    # First step whose loss or gradient norm was not finite (-1: none yet); checked when the host syncs anyway.
    first_bad = torch.tensor(-1, device=s.device)
    last_checkpoint = s.resume_from
    progress = Progress(s.total_steps, state.step, tc.progress and procs.main, s.log)
    clock = Clock(state)
    s.model.train()
    try:
        for epoch in range(state.epoch, tc.epochs):
            if state.step >= s.total_steps or state.stopped:
                break
            batches = epoch_batches(s.config, s.train_set, s.pad_id, epoch)
            for index in range(state.batch, len(batches)):
                indices = batches.batches[index]
                loss, finite = train_step(s, batches, indices, state.step + 1)
                state.step, state.epoch, state.batch = state.step + 1, epoch, index + 1
                state.seen += len(indices)
                state.tokens += sum(len(s.train_set.input_ids[i]) for i in indices)
                first_bad = torch.where((first_bad < 0) & ~finite, state.step, first_bad)
                window_loss += loss / procs.world
                progress.advance()
                if state.step % tc.log_every == 0:
                    check_finite(s, first_bad, last_checkpoint)
                    progress.record(log_train(s, state, window_loss, clock.elapsed(), trackers))
                if state.step == s.total_steps or index + 1 == len(batches):
                    break
                if tc.eval_every and state.step % tc.eval_every == 0:
                    check_finite(s, first_bad, last_checkpoint)
                    best_state = validate_and_keep(s, state, best_state, clock, trackers, progress, on_eval)
                    if state.stopped:
                        break
                if tc.checkpoint_every and state.step % tc.checkpoint_every == 0:
                    check_finite(s, first_bad, last_checkpoint)
                    last_checkpoint = save_checkpoint(s, state, best_state, window_loss, clock)
            check_finite(s, first_bad, last_checkpoint)
            if not state.stopped:  # an early stop has just validated
                best_state = validate_and_keep(s, state, best_state, clock, trackers, progress, on_eval)
            if state.batch == len(batches):
                state.epoch, state.batch = epoch + 1, 0
            last_checkpoint = save_checkpoint(s, state, best_state, window_loss, clock)
    finally:
        progress.close()
    check_finite(s, first_bad, last_checkpoint)
    clock.stop()
    return best_state


# A chunk's fixed cost in tokens where train.chunk_cost is 0: measured on a 2-core CPU (docs/benchmarks.md); on
# CUDA (and other accelerators) a pass's launch overhead outweighs far more padding (not yet measured).
CHUNK_COST = {"cpu": 256, "cuda": 4096}


def train_step(s: Setup, batches: Batches, indices: list[int], step: int,
               loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimizer step number `step` on the global batch `indices`; returns (detached loss, whether it and the norm
    are finite). `loss_fn(logits, labels)`, a mean over items, replaces the training loss.

    The batch runs as `train.grad_accum_steps` micro-batches, one backward pass each, and each micro-batch as
    length chunks (`train.length_chunks`). Every piece's loss is its items' summed loss over the whole global
    batch's normaliser, so the pieces add up to the whole batch's mean loss and gradient.
    """
    local, weight = s.procs.shard(indices)
    tc = s.config.train
    micro = [part.tolist() for part in np.array_split(np.asarray(local), min(tc.grad_accum_steps, len(local)))]
    # A piece of n items (or summed loss) counts n * numerator / denominator. DDP averages gradients over
    # processes, so each process's share is scaled by `world` (0: a process left without items).
    numerator = s.procs.world if weight else 0
    if loss_fn is not None:
        numerator, denominator = weight, len(local)  # a mean over this process's items, weighted by shard()
    elif s.objective.plain:
        denominator = len(indices)  # the model's own loss, a mean per chunk: weighted by its items
    else:
        denominator = s.objective.normaliser(batches.data.labels[indices])
    total = torch.zeros((), device=s.device)
    for number, part in enumerate(micro):
        last = number == len(micro) - 1
        # DDP all-reduces gradients in the backward pass: only once per step, in the last micro-batch's.
        with contextlib.nullcontext() if last or s.procs.world == 1 else s.forward.no_sync():
            loss = micro_batch_loss(s, batches, part, numerator, denominator, loss_fn)
            s.scaler.scale(loss).backward()
        total += loss.detach()
    s.scaler.unscale_(s.optimizer)  # clip the true gradients
    norm = torch.nn.utils.clip_grad_norm_(s.model.parameters(), tc.max_grad_norm or float("inf"))
    s.scaler.step(s.optimizer)
    s.scaler.update()
    s.scheduler.step()
    if s.config.lora.method == "adalora":
        s.model.base_model.update_and_allocate(step)  # prunes ranks on its schedule
    s.optimizer.zero_grad(set_to_none=True)
    finite = torch.isfinite(total)
    if s.dtype != torch.float16:  # fp16 overflow is the loss scaler's business
        finite = finite & torch.isfinite(norm)
    return total, finite


def micro_batch_loss(s: Setup, batches: Batches, part: list[int], numerator: float, denominator: float,
                     loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None) -> torch.Tensor:
    """The loss of the items `part` as their share of the global batch's mean (see train_step), run as chunks."""
    chunks = [part]
    if s.config.train.length_chunks:
        lengths = [len(batches.data.input_ids[i]) for i in part]
        cost = s.config.train.chunk_cost or CHUNK_COST.get(s.device.type, CHUNK_COST["cuda"])
        chunks = [[part[j] for j in chunk] for chunk in length_chunks(lengths, cost)]
    loss, logits, labels = 0.0, [], []
    with autocast(s.device, s.dtype):
        for chunk in chunks:
            batch = {k: v.to(s.device, non_blocking=True) for k, v in batches.collate(chunk).items()}
            if loss_fn is None and s.objective.plain:
                loss = loss + s.forward(**batch).loss * (len(chunk) * numerator / denominator)
            else:
                labels.append(batch.pop("labels"))
                logits.append(s.forward(**batch).logits.float())
    if loss_fn is not None:  # a mean over the part's items
        loss = loss_fn(torch.cat(logits), torch.cat(labels)) * (len(part) * numerator / denominator)
    elif logits:
        loss = s.objective.summed(torch.cat(logits), torch.cat(labels)) * (numerator / denominator)
    return loss


def check_finite(s: Setup, first_bad: torch.Tensor, last_checkpoint: Path | None) -> None:
    """Stop with one line at the first step whose loss or gradient norm was not finite."""
    bad = int(s.procs.reduce(first_bad.clone(), "max"))
    if bad >= 0:
        kept = f"the last good checkpoint ({last_checkpoint}) and " if last_checkpoint else ""
        raise UserError(f"training diverged: loss or gradient norm is not finite at step {bad} (epoch "
                        f"{(bad - 1) // s.steps_per_epoch + 1}); stopped there. {kept}the best model in "
                        f"{s.out / run.ADAPTER} are unchanged; try a lower train.lr or train.precision fp32")


def log_train(s: Setup, state: TrainState, window_loss: torch.Tensor, elapsed: float,
              trackers: tracking.Trackers) -> dict[str, Any]:
    s.procs.reduce(window_loss)
    log_every = s.config.train.log_every
    record = {"event": "train", "step": state.step, "epoch": round(state.step / s.steps_per_epoch, 3),
              "loss": window_loss.item() / log_every, "lr": s.scheduler.get_last_lr()[0],
              "samples_per_s": state.seen / elapsed, "tokens_per_s": state.tokens / elapsed,
              "seen": state.seen, "tokens": state.tokens, "elapsed_s": round(elapsed, 4)}
    if s.procs.main:
        run.append_jsonl(s.out / run.METRICS_LOG, record)
        trackers.log(record)
    window_loss.zero_()
    return record


def predict_shared(model: torch.nn.Module, data: Encoded, batch_size: int, pad_id: int, device: torch.device,
                   dtype: torch.dtype | None, procs: Processes) -> np.ndarray:
    """Logits for every item of `data`: each process predicts its share, all get the whole."""
    part = data.subset(procs.part(len(data)))
    return np.concatenate(procs.gather(predict_logits(model, part, batch_size, pad_id, device, dtype)))


def validate(model: torch.nn.Module, data: Encoded, labels: np.ndarray, label_names: list[str], batch_size: int,
             pad_id: int, device: torch.device, dtype: torch.dtype | None, procs: Processes) -> dict[str, Any]:
    """Metrics of `model` on a labelled set (loss, accuracy, macro-F1, per class); the model is left in train mode."""
    model.eval()
    logits = predict_shared(model, data, batch_size, pad_id, device, dtype, procs)
    model.train()
    return metrics(labels, logits, label_names)


def validate_and_keep(s: Setup, state: TrainState, best_state: dict[str, torch.Tensor], clock: Clock,
                      trackers: tracking.Trackers, progress: Progress,
                      on_eval: Callable[[dict[str, Any]], None] | None) -> dict[str, torch.Tensor]:
    """Validate, log, and save the adapter when it is the best so far; returns the best trainable tensors."""
    clock.stop()
    tc = s.config.train
    result = validate(s.model, s.val_set, s.splits.val.labels, s.splits.label_names, tc.eval_batch_size, s.pad_id,
                      s.device, s.dtype, s.procs)
    epoch = state.step / s.steps_per_epoch
    record = {"event": "eval", "step": state.step, "epoch": round(epoch, 3), "val_loss": result["loss"],
              "val_accuracy": result["accuracy"], "val_macro_f1": result["macro_f1"],
              "val_micro_f1": result["micro_f1"]}
    if s.procs.main:
        run.append_jsonl(s.out / run.METRICS_LOG, record)
        trackers.log(record)
    value = result[tc.metric_for_best]
    improved = is_better(tc.metric_for_best, value, state.best_value)
    state.stale = 0 if improved else state.stale + 1
    if tc.early_stopping_patience and state.stale >= tc.early_stopping_patience:
        state.stopped = (f"early stopping at step {state.step}: val {tc.metric_for_best} not better than "
                         f"{state.best_value:.4f} (step {state.best_step}) in {state.stale} evaluations")
    if improved:
        state.best_value, state.best_record, state.best_step = value, record, state.step
        best_state = checkpoint.trainable_state(s.model)
        if s.procs.main:
            run.replace_folder(s.out / run.ADAPTER, lambda folder: save_best(s, folder, record))
    progress.write(f"step {state.step} epoch {epoch:.2f}: val loss {result['loss']:.4f} acc {result['accuracy']:.4f} "
                   f"macro-F1 {result['macro_f1']:.4f}" + (" (best)" if improved else "")
                   + (f"; {state.stopped}" if state.stopped else ""))
    state.eval_seconds += time.perf_counter() - clock.mark
    clock.restart()
    if on_eval is not None:
        on_eval(record)
    return best_state


def save_best(s: Setup, folder: Path, best: dict[str, Any]) -> None:
    """The adapter folder, standing alone: adapter and head, tokenizer, and a model card."""
    base = card.base_reference(s.config, s.out)
    save_adapter(s.model, folder, s.initial_adapter, base)
    s.tokenizer.save_pretrained(folder)
    write_card(s, folder, best, base)


def write_card(s: Setup, folder: Path, best: dict[str, Any], base: str, test: dict[str, Any] | None = None) -> None:
    command = json.loads((s.out / run.VERSIONS).read_text(encoding="utf-8")).get("command")
    run.write_text(folder / "README.md", card.render(s.config, s.splits.label_names, s.parameters.to_dict(), best,
                                                     base, test, command))


def save_checkpoint(s: Setup, state: TrainState, best_state: dict[str, torch.Tensor], window_loss: torch.Tensor,
                    clock: Clock) -> Path:
    """Write a resumable checkpoint (rank 0); returns its folder on every process."""
    clock.stop()
    state.window_loss = float(s.procs.reduce(window_loss.clone()))
    state.log_bytes = (s.out / run.METRICS_LOG).stat().st_size if s.procs.main else 0
    # Each process draws its own dropout masks: all their generator states go in the checkpoint.
    rng_by_rank = s.procs.gather(checkpoint.rng_tensors()) if s.procs.world > 1 else None
    folder = None
    if s.procs.main:
        folder = checkpoint.save(s.out, state.step, s.model, s.optimizer, s.scheduler, s.scaler, best_state,
                                 asdict(state), keep=s.config.train.keep_checkpoints, keep_step=state.best_step,
                                 rng_by_rank=rng_by_rank)
    return Path(s.procs.broadcast(str(folder)))


def finish(s: Setup, state: TrainState, best_state: dict[str, torch.Tensor], started: float) -> dict[str, Any]:
    """Evaluate the best model on the test split; write metrics.json and the report; return the summary."""
    tc, quant = s.config.train, s.config.quantization
    seconds = state.train_seconds
    summary: dict[str, Any] = {
        "best": state.best_record,
        "metric_for_best": tc.metric_for_best,
        "parameters": s.parameters.to_dict(),
        "train_items": len(s.splits.train),
        "val_items": len(s.splits.val),
        "steps": state.step,
        "stopped_early": state.stopped,
        "train_seconds": round(seconds, 2),
        "eval_seconds": round(state.eval_seconds, 2),
        "train_samples_per_s": round(state.seen / seconds, 2),
        "train_tokens_per_s": round(state.tokens / seconds, 2),
        "filter": vars(s.splits.filter_report) if s.splits.filter_report else None,
        "sources": s.splits.sources,
        "device": str(s.device),
        "processes": s.procs.world,
        "base_weight_bytes": s.base_bytes,
        "peak_memory_mb": peak_memory_mb(s.device),
        "quantization": f"{quant.bits}-bit" if quant.bits else None,
        "precision": str(s.dtype).removeprefix("torch.") if s.dtype else "float32",
    }
    if s.config.adapt.method != "none":
        from loraclf.adapt import rounds

        summary["adapt"] = rounds(s.out)
    thresholds = decision_thresholds(s, best_state)
    if thresholds is not None:
        summary["thresholds"] = dict(zip(s.splits.label_names, thresholds))
    if s.splits.test is not None:
        summary["test"] = test(s, best_state, thresholds)
    summary["total_seconds"] = round(time.perf_counter() - started, 2)
    if s.procs.main:
        run.write_json(s.out / run.SUMMARY, summary)
        write_card(s, s.out / run.ADAPTER, state.best_record, card.base_reference(s.config, s.out),
                   summary.get("test"))
        report.write(s.out)
    s.log(f"run folder: {s.out} (best {tc.metric_for_best} {state.best_value:.4f}; "
          f"{summary['train_samples_per_s']} samples/s; {summary['total_seconds']} s in all)")
    return summary


def decision_thresholds(s: Setup, best_state: dict[str, torch.Tensor]) -> list[float] | None:
    """multi_label: each class's decision threshold, written to the run (thresholds.json): tuned on the validation
    set for the best model with train.tune_thresholds, else 0.5. None for single_label."""
    if s.config.data.task != "multi_label":
        return None
    thresholds = [0.5] * len(s.splits.label_names)
    if s.config.train.tune_thresholds:
        checkpoint.load_trainable(s.model, best_state)
        s.model.eval()
        logits = predict_shared(s.model, s.val_set, s.config.train.eval_batch_size, s.pad_id, s.device, s.dtype,
                                s.procs)
        thresholds = tune_thresholds(s.splits.val.labels, logits)
        s.log("thresholds tuned on validation: " + ", ".join(f"{n} {t:g}" for n, t in
                                                              zip(s.splits.label_names, thresholds)))
    if s.procs.main:
        run.write_json(s.out / run.THRESHOLDS, {"thresholds": thresholds, "labels": s.splits.label_names,
                                                "tuned_on": "validation" if s.config.train.tune_thresholds else None})
    return thresholds


def test(s: Setup, best_state: dict[str, torch.Tensor], thresholds: list[float] | None = None) -> dict[str, Any]:
    """The best model (not the last) on the test split; writes test_metrics.json and its confusion matrix."""
    checkpoint.load_trainable(s.model, best_state)
    test_set = encode(s.tokenizer, s.splits.test.texts, None, s.config.data.max_length)
    label_names = s.splits.label_names
    started = time.perf_counter()
    s.model.eval()
    logits = predict_shared(s.model, test_set, s.config.train.eval_batch_size, s.pad_id, s.device, s.dtype, s.procs)
    seconds = time.perf_counter() - started
    result = metrics(s.splits.test.labels, logits, label_names, thresholds)
    result["texts_per_s"] = round(len(test_set) / seconds, 2)
    result["confident_mistakes"] = confident_mistakes(s.splits.test.texts, s.splits.test.labels, logits, label_names,
                                                      thresholds=thresholds)
    if s.procs.main:
        run.write_json(s.out / "test_metrics.json", result)
        plot_confusion(result["confusion_matrix"], label_names, s.out / "test_confusion_matrix.png", "test")
    s.log(f"test: accuracy {result['accuracy']:.4f}, macro-F1 {result['macro_f1']:.4f} on {result['count']:,} items")
    kept = ("accuracy", "macro_f1", "micro_f1", "samples_f1", "hamming_loss", "loss", "count", "texts_per_s")
    return {k: result[k] for k in kept if k in result}
