"""Adaptation to unlabelled target text, after the labelled training: self-training, entropy minimisation,
consistency training (training/consistency.py), or self-training and consistency together.

Each round: predict `data.unlabelled_file` with the current model, keep the
confident predictions (probability at least the round's threshold, each
class capped at `class_ratio` times the smallest kept class, a seeded
sample where a class is over its cap), and continue training, in `fit`'s
loop with a fresh AdamW and cosine schedule, on the labelled training items
plus those pseudo-labelled ones. Entropy and consistency rounds train on every unlabelled
text instead (or as well: self_training+consistency), with a loss of their own. The trainable
parameters stay those of the recipe:
the budget is unchanged. Labels found in the unlabelled file are never
trained on; they only score the pseudo-labels in the log.

    RUN_DIR/adapt/round-1/
      pseudo_labels.csv       row (in the unlabelled file), label, probability
      trainable.safetensors   every trainable tensor after the round
      round.json              threshold, counts kept per class, pseudo-label accuracy, validation

A round folder is written atomically once the round is done: a resumed run
loads the last complete round and goes on from there.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from loraclf.config.schema import AdaptConfig
from loraclf.data.encoding import Encoded, encode
from loraclf.data.labels import encode_labels
from loraclf.data.sources import read_file
from loraclf.data.tables import Schema
from loraclf.metrics.probabilities import softmax
from loraclf.rundir import atomic, layout, readers
from loraclf.training import checkpoint
from loraclf.training.consistency import IGNORE, ConsistencyLoss
from loraclf.training.evaluation import predict_shared
from loraclf.training.keep import save_best, val_fields, validate_run
from loraclf.training.loop import fit, optimization, plan_epochs, seed_everything
from loraclf.training.state import RunContext, Trainable, TrainData, TrainState
from loraclf.training.tracking import Trackers


def threshold_for(cfg: AdaptConfig, round_index: int) -> float:
    """The round's threshold (rounds counted from 0): `threshold`, moving linearly to `final_threshold`."""
    if cfg.final_threshold is None or cfg.rounds == 1:
        return cfg.threshold
    return cfg.threshold + (cfg.final_threshold - cfg.threshold) * round_index / (cfg.rounds - 1)


def select(probs: np.ndarray, threshold: float, class_ratio: float, seed: int) -> np.ndarray:
    """Rows of `probs` to keep as pseudo-labelled (sorted): confident, and no class over its cap.

    The cap is `class_ratio` times the smallest count among the classes that have any
    confident row (0: no cap); a class over it keeps a seeded random sample of its rows.
    """
    predicted, confidence = probs.argmax(axis=1), probs.max(axis=1)
    confident = np.flatnonzero(confidence >= threshold)
    by_class = [confident[predicted[confident] == c] for c in range(probs.shape[1])]
    present = [len(rows) for rows in by_class if len(rows)]
    if not present:
        return confident
    cap = math.floor(class_ratio * min(present)) if class_ratio else max(present)
    rng = np.random.default_rng(seed)
    kept = [rows if len(rows) <= cap else rng.choice(rows, cap, replace=False) for rows in by_class]
    return np.sort(np.concatenate(kept))


@dataclasses.dataclass
class Target:
    """The unlabelled texts, tokenized once; `labels` only where the file had them (for the log)."""

    source: str
    encoded: Encoded
    labels: np.ndarray | None


def load_target(run: RunContext, data: TrainData) -> Target:
    cfg = run.config.data
    schema = Schema.of(cfg)
    table = read_file(cfg.unlabelled_file, schema, cfg.allow_pickle)
    labels = encode_labels(table, data.label_names, schema) if table.raw_labels is not None else None
    return Target(table.source, encode(data.tokenizer, table.texts, None, cfg.max_length), labels)


def adapt(run: RunContext, data: TrainData, trainable: Trainable, state: TrainState,
          best_state: dict[str, torch.Tensor], trackers: Trackers) -> dict[str, torch.Tensor]:
    """Adaptation rounds from the best labelled model; returns the trainable tensors of the last round.

    `state` is the labelled training's; its best record becomes the last round's validation.
    """
    cfg = run.config.adapt
    target = load_target(run, data)
    run.log(f"adapt: {cfg.rounds} {cfg.method} rounds on {len(target.encoded):,} unlabelled texts from "
            f"{target.source}")
    checkpoint.load_trainable(trainable.model, best_state)
    if run.procs.main:
        layout.create(run.out / layout.ADAPT)
    for index in range(cfg.rounds):
        folder = layout.round_folder(run.out, index + 1)
        record = readers.read_round(folder)
        if record is not None:  # done before an interruption: take its weights and go on
            saved = load_file(str(folder / layout.ROUND_STATE), device=str(run.device))
            checkpoint.load_trainable(trainable.model, saved)
            run.log(f"adapt round {index + 1}: loaded from {folder}")
        else:
            probs = softmax(_predict(run, data, trainable, target))
            record, rows = run_round(run, data, trainable, target, probs, index)
            record |= val_fields(validate_run(run, trainable, data))
            if run.procs.main:
                atomic.replace_folder(folder, lambda tmp: _write_round(tmp, trainable.model, record, rows))
            run.log(describe_round(record, data.label_names))
        if run.procs.main:
            atomic.append_jsonl(run.out / layout.METRICS_LOG, record)
            trackers.log(record | {"step": record["round"]})  # adapt curves plot against the round
        state.best_record = {"event": "eval", "round": index + 1, "step": record["step"]} | {
            key: record[key] for key in ("val_loss", "val_accuracy", "val_macro_f1", "val_micro_f1") if key in record}
    state.best_value = state.best_record[f"val_{run.config.train.metric_for_best}"]
    if target.labels is not None:
        accuracy = float((_predict(run, data, trainable, target).argmax(axis=1) == target.labels).mean())
        run.log(f"adapt: after {cfg.rounds} rounds, accuracy on the unlabelled file's own labels {accuracy:.4f}")
    if run.procs.main:
        atomic.replace_folder(run.out / layout.ADAPTER,
                              lambda folder: save_best(run, data, trainable, folder, state.best_record))
    return checkpoint.trainable_state(trainable.model)


def _predict(run: RunContext, data: TrainData, trainable: Trainable, target: Target) -> np.ndarray:
    """The current model's logits on every unlabelled text (each process predicts its share)."""
    trainable.model.eval()
    return predict_shared(trainable.model, target.encoded, run.config.train.eval_batch_size, data.pad_id,
                          run.device, run.dtype, run.procs)


def run_round(run: RunContext, data: TrainData, trainable: Trainable, target: Target, probs: np.ndarray,
              index: int) -> tuple[dict[str, Any], list[tuple]]:
    """Train one round on the labelled items plus unlabelled ones (pseudo-labelled, or all of them under the
    entropy or consistency loss, or both), given the current model's probabilities on the unlabelled texts.

    Returns the round's record and its pseudo-labels as (row, label, probability).
    """
    cfg, tc = run.config.adapt, run.config.train
    record: dict[str, Any] = {"event": "adapt", "round": index + 1, "method": cfg.method}
    threshold = threshold_for(cfg, index)
    if cfg.method != "entropy":
        record["threshold"] = round(threshold, 4)
    if target.labels is not None:
        record["target_accuracy"] = float((probs.argmax(axis=1) == target.labels).mean())
    parts, part_labels, rows, loss_fn = [data.train_set], [data.train_set.labels], [], None
    if cfg.method in ("self_training", "self_training+consistency"):
        kept = pseudo_labels(cfg, threshold, tc.seed + index, target, probs, data.label_names, record)
        parts.append(target.encoded.subset(kept))
        part_labels.append(probs[kept].argmax(axis=1))
        rows = [(int(i), int(label), float(probs[i].max())) for i, label in zip(kept, part_labels[-1])]
        record["kept"] = int(len(kept))
    if cfg.method in ("entropy", "consistency", "self_training+consistency"):
        parts.append(target.encoded)
        part_labels.append(np.full(len(target.encoded), IGNORE))
        record["unlabelled"] = len(target.encoded)
        loss_fn = entropy_loss(cfg.entropy_weight) if cfg.method == "entropy" else ConsistencyLoss(
            threshold, cfg.consistency_weight, data.pad_id, data.tokenizer.mask_token_id,
            cfg.mask_rate, cfg.deletion)
    items = Encoded.concat(parts, np.concatenate(part_labels))
    started = time.perf_counter()
    record["train_loss"], record["step"] = train_round(run, data, trainable, items, cfg.lr or tc.lr, cfg.epochs,
                                                       tc.seed + 1000 * (index + 1), loss_fn)
    record["train_seconds"] = round(time.perf_counter() - started, 2)
    if isinstance(loss_fn, ConsistencyLoss):
        record["consistency_confident"] = round(int(loss_fn.confident) / max(1, int(loss_fn.unlabelled)), 4)
    return record, rows


def pseudo_labels(cfg: AdaptConfig, threshold: float, seed: int, target: Target, probs: np.ndarray,
                  names: list[str], record: dict[str, Any]) -> np.ndarray:
    """The rows kept as pseudo-labelled this round (see `select`); their counts go into `record`."""
    kept = select(probs, threshold, cfg.class_ratio, seed)
    predicted = probs[kept].argmax(axis=1)
    record |= {"confident": int((probs.max(axis=1) >= threshold).sum()),
               "kept_per_class": {names[c]: int((predicted == c).sum()) for c in range(len(names))}}
    if target.labels is not None:
        record["pseudo_accuracy"] = float((predicted == target.labels[kept]).mean()) if len(kept) else None
    return kept


def entropy_loss(weight: float):
    """Cross-entropy on labelled rows plus `weight` times the mean prediction entropy of unlabelled rows
    (label IGNORE); either part is 0 when the batch has no such rows."""

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        unlabelled = labels == IGNORE
        total = logits.new_zeros(())
        if (~unlabelled).any():
            total = total + torch.nn.functional.cross_entropy(logits[~unlabelled], labels[~unlabelled])
        if unlabelled.any():
            logp = torch.log_softmax(logits[unlabelled], dim=-1)
            total = total + weight * -(logp.exp() * logp).sum(dim=-1).mean()
        return total

    return loss


def train_round(run: RunContext, data: TrainData, trainable: Trainable, items: Encoded, lr: float, epochs: int,
                seed: int, loss_fn=None) -> tuple[float, int]:
    """`epochs` passes over `items` in `fit`'s loop, with a fresh AdamW and cosine schedule; returns (mean loss,
    steps). The adapter and head go on from where they are; the optimizer state starts anew."""
    seed_everything(seed)  # each round draws the same batches and dropout masks when resumed
    plan = plan_epochs(run.config, items, data.pad_id, seed, epochs, loss_fn=loss_fn)
    optimizer, scheduler = optimization(trainable.model, run.config.train, run.config.lora.plus_ratio, lr, "cosine",
                                        plan.total_steps, run.device)
    state = TrainState()
    # Rounds train and keep plain weights: train.ema's average belongs to the labelled run's validations.
    rounds_trainable = dataclasses.replace(trainable, optimizer=optimizer, scheduler=scheduler, average=None)
    summed = fit(run, rounds_trainable, plan, state)
    return summed / max(1, state.step) / run.procs.world, state.step


def _write_round(folder: Path, model: torch.nn.Module, record: dict[str, Any], rows: list[tuple]) -> None:
    with (folder / layout.PSEUDO_LABELS).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "label", "probability"])
        writer.writerows((i, label, f"{p:.6f}") for i, label, p in rows)
    tensors = checkpoint.trainable_state(model)
    save_file({k: v.cpu().contiguous() for k, v in tensors.items()}, str(folder / layout.ROUND_STATE))
    atomic.write_json(folder / layout.ROUND_RECORD, record)


def describe_round(record: dict[str, Any], label_names: list[str]) -> str:
    used = []
    if "kept_per_class" in record:
        counts = ", ".join(f"{name} {record['kept_per_class'][name]}" for name in label_names)
        used.append(f"threshold {record['threshold']}, kept {record['kept']:,} of {record['confident']:,} confident "
                    f"({counts})")
    if record["method"] == "entropy":
        used.append(f"entropy on all {record['unlabelled']:,} unlabelled texts")
    elif "consistency_confident" in record:
        used.append(f"consistency on all {record['unlabelled']:,} unlabelled texts, "
                    f"{record['consistency_confident']:.1%} of them over threshold {record['threshold']} in training")
    scored = ""
    if record.get("target_accuracy") is not None:
        scored = f"; before the round, accuracy on the unlabelled file's labels {record['target_accuracy']:.4f}"
        if record.get("pseudo_accuracy") is not None:
            scored += f", of the kept pseudo-labels {record['pseudo_accuracy']:.4f}"
    return (f"adapt round {record['round']}: {'; '.join(used)}{scored}; train loss {record['train_loss']:.4f}; "
            f"val acc {record['val_accuracy']:.4f}")
