"""What a labelled run keeps as it trains: validation records, the best adapter (saved with its card) and
resumable checkpoints; and the train records it logs."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from loraclf.errors import UserError
from loraclf.model import pooling
from loraclf.model.adapter import save_adapter
from loraclf.progress import Progress
from loraclf.rundir import atomic, card, layout
from loraclf.training import checkpoint
from loraclf.training.evaluation import validate
from loraclf.training.state import Clock, EpochPlan, RunContext, Trainable, TrainData, TrainState, is_better
from loraclf.training.tracking import Trackers


@dataclass
class Keeper:
    """A labelled run's validation and what it keeps: the best trainable tensors, the adapter folder, checkpoints."""

    data: TrainData
    trackers: Trackers
    best_state: dict[str, torch.Tensor]  # the trainable tensors of the best validation so far
    last_checkpoint: Path | None = None
    on_eval: Callable[[dict[str, Any]], None] | None = None  # each validation record (a search prunes by raising)

    def log(self, run: RunContext, record: dict[str, Any]) -> None:
        """Append a record to metrics.jsonl and send it to the trackers (rank 0)."""
        if run.procs.main:
            atomic.append_jsonl(run.out / layout.METRICS_LOG, record)
            self.trackers.log(record)


def validate_and_keep(run: RunContext, trainable: Trainable, plan: EpochPlan, state: TrainState, keeper: Keeper,
                      clock: Clock, progress: Progress) -> None:
    """Validate, log, and save the adapter when it is the best so far (then also in `keeper.best_state`).

    With a moving average (train.ema) both the trained weights and the average are scored; the record's val_*
    are those of the better one (`weights` says which), and that one is the candidate for the best.
    """
    clock.stop()
    tc, data, average = run.config.train, keeper.data, trainable.average
    result = validate_run(run, trainable, data)
    epoch = state.step / plan.steps_per_epoch
    record: dict[str, Any] = {"event": "eval", "step": state.step, "epoch": round(epoch, 3)}
    use_average = False
    if average is not None:
        with average.applied(trainable.model):
            averaged = validate_run(run, trainable, data)
        record |= {"trained_val_" + tc.metric_for_best: result[tc.metric_for_best],
                   "ema_val_" + tc.metric_for_best: averaged[tc.metric_for_best]}
        use_average = is_better(tc.metric_for_best, averaged[tc.metric_for_best], result[tc.metric_for_best])
        record["weights"] = "ema" if use_average else "trained"
        result = averaged if use_average else result
    record |= val_fields(result)
    keeper.log(run, record)
    value = result[tc.metric_for_best]
    improved = is_better(tc.metric_for_best, value, state.best_value)
    state.stale = 0 if improved else state.stale + 1
    if tc.early_stopping_patience and state.stale >= tc.early_stopping_patience:
        state.stopped = (f"early stopping at step {state.step}: val {tc.metric_for_best} not better than "
                         f"{state.best_value:.4f} (step {state.best_step}) in {state.stale} evaluations")
    if improved:
        state.best_value, state.best_record, state.best_step = value, record, state.step
        kept = average.applied(trainable.model) if use_average else contextlib.nullcontext()
        with kept:
            keeper.best_state = checkpoint.trainable_state(trainable.model)
            if run.procs.main:
                atomic.replace_folder(run.out / layout.ADAPTER,
                                      lambda folder: save_best(run, data, trainable, folder, record))
    which = f" ({record['weights']} weights)" if average is not None else ""
    progress.write(f"step {state.step} epoch {epoch:.2f}: val loss {result['loss']:.4f} acc {result['accuracy']:.4f} "
                   f"macro-F1 {result['macro_f1']:.4f}{which}" + (" (best)" if improved else "")
                   + (f"; {state.stopped}" if state.stopped else ""))
    state.eval_seconds += time.perf_counter() - clock.mark
    clock.restart()
    if keeper.on_eval is not None:
        keeper.on_eval(record)


def val_fields(result: dict[str, Any]) -> dict[str, float]:
    """A validation's scores as a record's val_* fields (each a metric train.metric_for_best can pick)."""
    return {f"val_{name}": result[name] for name in ("loss", "accuracy", "macro_f1", "micro_f1")}


def validate_run(run: RunContext, trainable: Trainable, data: TrainData) -> dict[str, Any]:
    """The model's metrics on the run's validation split, with the weights it holds now."""
    return validate(trainable.model, data.val_set, data.splits.val.labels, data.label_names,
                    run.config.train.eval_batch_size, data.pad_id, run.device, run.dtype, run.procs)


def save_best(run: RunContext, data: TrainData, trainable: Trainable, folder: Path, best: dict[str, Any]) -> None:
    """The adapter folder, standing alone: adapter and head, tokenizer, and a model card."""
    base = card.base_reference(run.config, run.out)
    save_adapter(trainable.model, folder, trainable.initial_adapter, base)
    data.tokenizer.save_pretrained(folder)
    write_card(run, data.label_names, trainable, folder, best, base)


def write_card(run: RunContext, label_names: list[str], trainable: Trainable, folder: Path, best: dict[str, Any],
               base: str, test: dict[str, Any] | None = None) -> None:
    command = json.loads((run.out / layout.VERSIONS).read_text(encoding="utf-8")).get("command")
    text = card.render(run.config, label_names, trainable.parameters.to_dict(), best, base, test, command,
                       pooling.pools_natively(trainable.model.config))
    atomic.write_text(folder / layout.ADAPTER_CARD, text)


def save_checkpoint(run: RunContext, trainable: Trainable, state: TrainState, keeper: Keeper,
                    window_loss: torch.Tensor, clock: Clock) -> None:
    """Write a resumable checkpoint (rank 0); every process learns its folder (`keeper.last_checkpoint`)."""
    clock.stop()
    state.window_loss = float(run.procs.reduce(window_loss.clone()))
    state.log_bytes = (run.out / layout.METRICS_LOG).stat().st_size if run.procs.main else 0
    # Each process draws its own dropout masks: all their generator states go in the checkpoint.
    rng_by_rank = run.procs.gather(checkpoint.rng_tensors()) if run.procs.world > 1 else None
    folder = None
    if run.procs.main:
        folder = checkpoint.save(run.out, state.step, trainable.model, trainable.optimizer, trainable.scheduler,
                                 trainable.scaler, keeper.best_state, asdict(state),
                                 keep=run.config.train.keep_checkpoints, keep_step=state.best_step,
                                 rng_by_rank=rng_by_rank,
                                 average=trainable.average.state() if trainable.average is not None else None)
    keeper.last_checkpoint = Path(run.procs.broadcast(str(folder)))


def check_finite(run: RunContext, plan: EpochPlan, first_bad: torch.Tensor, keeper: Keeper | None) -> None:
    """Stop with one line at the first step whose loss or gradient norm was not finite."""
    bad = int(run.procs.reduce(first_bad.clone(), "max"))
    if bad >= 0:
        last_checkpoint = keeper.last_checkpoint if keeper is not None else None
        kept = f"the last good checkpoint ({last_checkpoint}) and " if last_checkpoint else ""
        raise UserError(f"training diverged: loss or gradient norm is not finite at step {bad} (epoch "
                        f"{(bad - 1) // plan.steps_per_epoch + 1}); stopped there. {kept}the best model in "
                        f"{run.out / layout.ADAPTER} are unchanged; try a lower train.lr or train.precision fp32")


def train_record(run: RunContext, trainable: Trainable, plan: EpochPlan, state: TrainState, window_loss: torch.Tensor,
                 elapsed: float) -> dict[str, Any]:
    """The train record of the last `train.log_every` steps (loss, lr, throughput); zeroes `window_loss`."""
    run.procs.reduce(window_loss)
    log_every = run.config.train.log_every
    record = {"event": "train", "step": state.step, "epoch": round(state.step / plan.steps_per_epoch, 3),
              "loss": window_loss.item() / log_every, "lr": trainable.scheduler.get_last_lr()[0],
              "samples_per_s": state.seen / elapsed, "tokens_per_s": state.tokens / elapsed,
              "seen": state.seen, "tokens": state.tokens, "elapsed_s": round(elapsed, 4)}
    window_loss.zero_()
    return record
