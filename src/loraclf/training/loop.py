"""The loop: epochs of optimizer steps on length-chunked batches, read top to bottom (`fit`, `train_step`).

A labelled run and each adaptation round run the same loop; a labelled run's `Keeper` adds validation,
the best adapter and checkpoints to it.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import numpy as np
import torch
from transformers import get_scheduler

from loraclf.config.schema import Config, TrainConfig
from loraclf.data.batching import Batches, length_chunks, loader
from loraclf.data.encoding import Encoded
from loraclf.model.runtime import autocast
from loraclf.progress import Progress
from loraclf.training.keep import Keeper, check_finite, save_checkpoint, train_record, validate_and_keep
from loraclf.training.state import Clock, EpochPlan, LossFn, RunContext, Trainable, TrainState


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


def optimization(model: torch.nn.Module, tc: TrainConfig, plus_ratio: float, lr: float, scheduler: str,
                 total_steps: int, device: torch.device) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over the trainable parameters (see param_groups) and its learning-rate schedule, warmed up over
    `train.warmup_ratio` of `total_steps`: for a labelled run, and afresh for each adaptation round."""
    optimizer = torch.optim.AdamW(param_groups(model, tc.weight_decay, lr, plus_ratio), lr=lr,
                                  fused=device.type == "cuda")
    schedule = get_scheduler(scheduler, optimizer, num_warmup_steps=int(tc.warmup_ratio * total_steps),
                             num_training_steps=total_steps)
    return optimizer, schedule


def plan_epochs(config: Config, items: Encoded, pad_id: int, seed: int, epochs: int, max_steps: int = 0,
                loss_fn: LossFn | None = None) -> EpochPlan:
    """`epochs` passes over `items` in batches of `train.batch_size`, at most `max_steps` steps (0: no limit)."""
    plan = EpochPlan(items, pad_id, seed, epochs, 0, 0, loss_fn)
    plan.steps_per_epoch = len(epoch_batches(config, plan, 0))
    plan.total_steps = plan.steps_per_epoch * epochs
    if max_steps:
        plan.total_steps = min(plan.total_steps, max_steps)
    return plan


def epoch_batches(config: Config, plan: EpochPlan, epoch: int) -> Batches:
    """Epoch `epoch`'s batches of `plan.items`, ordered by (plan.seed + epoch) alone."""
    tc = config.train
    # Bucketed widths keep torch.compile from recompiling for every batch length.
    multiple = config.data.pad_to_multiple_of or (16 if tc.compile else 1)
    return loader(plan.items, tc.batch_size, plan.pad_id, shuffle=True, seed=plan.seed + epoch,
                  group_by_length=tc.group_by_length, pad_to_multiple_of=multiple)


def fit(run: RunContext, trainable: Trainable, plan: EpochPlan, state: TrainState, keeper: Keeper | None = None
        ) -> float:
    """The loop: epochs of steps from `state` on; a train record every `train.log_every` steps. With a `keeper`
    (a labelled run): validation and a checkpoint at each epoch end, and every N steps if asked.

    Returns the loss summed over the steps it ran (each step's loss summed over the processes).
    """
    tc, procs = run.config.train, run.procs
    window_loss = torch.tensor(state.window_loss / procs.world, device=run.device)  # on device: no sync per step
    summed_loss = torch.zeros((), device=run.device)
    # First step whose loss or gradient norm was not finite (-1: none yet); checked when the host syncs anyway.
    first_bad = torch.tensor(-1, device=run.device)
    progress = Progress(plan.total_steps, state.step, tc.progress and procs.main, run.log)
    clock = Clock(state)
    trainable.model.train()
    try:
        for epoch in range(state.epoch, plan.epochs):
            if state.step >= plan.total_steps or state.stopped:
                break
            batches = epoch_batches(run.config, plan, epoch)
            for index in range(state.batch, len(batches)):
                indices = batches.batches[index]
                loss, finite = train_step(run, trainable, batches, indices, state.step + 1, plan.loss_fn)
                state.step, state.epoch, state.batch = state.step + 1, epoch, index + 1
                if trainable.average is not None:
                    trainable.average.update(trainable.model, state.step)
                state.seen += len(indices)
                state.tokens += int(plan.items.lengths[indices].sum())
                first_bad = torch.where((first_bad < 0) & ~finite, state.step, first_bad)
                window_loss += loss / procs.world
                summed_loss += loss
                progress.advance()
                if state.step % tc.log_every == 0:
                    check_finite(run, plan, first_bad, keeper)
                    record = train_record(run, trainable, plan, state, window_loss, clock.elapsed())
                    if keeper is not None:
                        keeper.log(run, record)
                    progress.record(record)
                if state.step == plan.total_steps or index + 1 == len(batches):
                    break
                if keeper is not None and tc.eval_every and state.step % tc.eval_every == 0:
                    check_finite(run, plan, first_bad, keeper)
                    validate_and_keep(run, trainable, plan, state, keeper, clock, progress)
                    if state.stopped:
                        break
                if keeper is not None and tc.checkpoint_every and state.step % tc.checkpoint_every == 0:
                    check_finite(run, plan, first_bad, keeper)
                    save_checkpoint(run, trainable, state, keeper, window_loss, clock)
            check_finite(run, plan, first_bad, keeper)
            if keeper is not None and not state.stopped:  # an early stop has just validated
                validate_and_keep(run, trainable, plan, state, keeper, clock, progress)
            if state.batch == len(batches):
                state.epoch, state.batch = epoch + 1, 0
            if keeper is not None:
                save_checkpoint(run, trainable, state, keeper, window_loss, clock)
    finally:
        progress.close()
    check_finite(run, plan, first_bad, keeper)
    clock.stop()
    return float(procs.reduce(summed_loss))


# A chunk's fixed cost in tokens where train.chunk_cost is 0: measured on a 2-core CPU (docs/benchmarks.md); on
# CUDA (and other accelerators) a pass's launch overhead outweighs far more padding (not yet measured).
CHUNK_COST = {"cpu": 256, "cuda": 4096}


def train_step(run: RunContext, trainable: Trainable, batches: Batches, indices: list[int], step: int,
               loss_fn: LossFn | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimizer step number `step` on the global batch `indices`; returns (detached loss, whether it and the norm
    are finite). `loss_fn(logits, labels)`, a mean over items, replaces the training loss; a `loss_fn` that
    `runs_model` gets the model and each chunk's batch instead (`summed(forward, batch)`, summed over items).

    The batch runs as `train.grad_accum_steps` micro-batches, one backward pass each, and each micro-batch as
    length chunks (`train.length_chunks`). Every piece's loss is its items' summed loss over the whole global
    batch's normaliser, so the pieces add up to the whole batch's mean loss and gradient.
    """
    local, weight = run.procs.shard(indices)
    tc = run.config.train
    micro = [part.tolist() for part in np.array_split(np.asarray(local), min(tc.grad_accum_steps, len(local)))]
    # A piece of n items (or summed loss) counts n * numerator / denominator. DDP averages gradients over
    # processes, so each process's share is scaled by `world` (0: a process left without items).
    numerator = run.procs.world if weight else 0
    if loss_fn is not None:
        numerator, denominator = weight, len(local)  # a mean over this process's items, weighted by shard()
    elif trainable.objective.plain:
        denominator = len(indices)  # the model's own loss, a mean per chunk: weighted by its items
    else:
        denominator = trainable.objective.normaliser(batches.data.labels[indices])
    total = torch.zeros((), device=run.device)
    for number, part in enumerate(micro):
        last = number == len(micro) - 1
        # DDP all-reduces gradients in the backward pass: only once per step, in the last micro-batch's.
        with contextlib.nullcontext() if last or run.procs.world == 1 else trainable.forward.no_sync():
            loss = micro_batch_loss(run, trainable, batches, part, numerator, denominator, loss_fn)
            trainable.scaler.scale(loss).backward()
        total += loss.detach()
    trainable.scaler.unscale_(trainable.optimizer)  # clip the true gradients
    norm = torch.nn.utils.clip_grad_norm_(trainable.model.parameters(), tc.max_grad_norm or float("inf"))
    trainable.scaler.step(trainable.optimizer)
    trainable.scaler.update()
    trainable.scheduler.step()
    if run.config.lora.method == "adalora":
        trainable.model.base_model.update_and_allocate(step)  # prunes ranks on its schedule
    trainable.optimizer.zero_grad(set_to_none=True)
    finite = torch.isfinite(total)
    if run.dtype != torch.float16:  # fp16 overflow is the loss scaler's business
        finite = finite & torch.isfinite(norm)
    return total, finite


def micro_batch_loss(run: RunContext, trainable: Trainable, batches: Batches, part: list[int], numerator: float,
                     denominator: float, loss_fn: LossFn | None) -> torch.Tensor:
    """The loss of the items `part` as their share of the global batch's mean (see train_step), run as chunks."""
    chunks = [part]
    if run.config.train.length_chunks:
        lengths = batches.data.lengths[part].tolist()
        cost = run.config.train.chunk_cost or CHUNK_COST.get(run.device.type, CHUNK_COST["cuda"])
        chunks = [[part[j] for j in chunk] for chunk in length_chunks(lengths, cost)]
    loss, logits, labels = 0.0, [], []
    runs_model = getattr(loss_fn, "runs_model", False)
    with autocast(run.device, run.dtype):
        for chunk in chunks:
            batch = {k: v.to(run.device, non_blocking=True) for k, v in batches.collate(chunk).items()}
            if runs_model:  # a loss that calls the model itself, summed over the chunk's items
                loss = loss + loss_fn.summed(trainable.forward, batch) * (numerator / denominator)
            elif loss_fn is None and trainable.objective.plain:
                loss = loss + trainable.forward(**batch).loss * (len(chunk) * numerator / denominator)
            else:
                labels.append(batch.pop("labels"))
                logits.append(trainable.forward(**batch).logits.float())
    if loss_fn is not None and not runs_model:  # a mean over the part's items
        loss = loss_fn(torch.cat(logits), torch.cat(labels)) * (len(part) * numerator / denominator)
    elif logits:
        loss = trainable.objective.summed(torch.cat(logits), torch.cat(labels)) * (numerator / denominator)
    return loss
