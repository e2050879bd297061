"""Adaptation to unlabelled target text, after the labelled training: self-training or entropy minimisation.

Each round: predict `data.unlabelled_file` with the current model, keep the
confident predictions (probability at least the round's threshold, each
class capped at `class_ratio` times the smallest kept class, a seeded
sample where a class is over its cap), and continue training, with a fresh
AdamW and cosine schedule, on the labelled training items plus those
pseudo-labelled ones. The trainable parameters stay those of the recipe:
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
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import get_scheduler

from loraclf import checkpoint, run
from loraclf.config import AdaptConfig
from loraclf.data import Encoded, Schema, encode, encode_labels, read_file
from loraclf.predict import softmax
from loraclf.progress import Progress

FOLDER = "adapt"
ROUND_FILE = "round.json"
STATE_FILE = "trainable.safetensors"
PSEUDO_FILE = "pseudo_labels.csv"
IGNORE = -100  # the label of an unlabelled item under the entropy loss


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


def load_target(s) -> Target:
    data = s.config.data
    schema = Schema.of(data)
    table = read_file(data.unlabelled_file, schema, data.allow_pickle)
    labels = encode_labels(table, s.splits.label_names, schema) if table.raw_labels is not None else None
    return Target(table.source, encode(s.tokenizer, table.texts, None, data.max_length), labels)


def adapt(s, state, best_state: dict[str, torch.Tensor], trackers) -> dict[str, torch.Tensor]:
    """Adaptation rounds from the best labelled model; returns the trainable tensors of the last round.

    `s` and `state` are the labelled training's Setup and TrainState (training.py); the
    state's best record becomes the last round's validation.
    """
    from loraclf.training import validate

    cfg = s.config.adapt
    target = load_target(s)
    s.log(f"adapt: {cfg.rounds} {cfg.method} rounds on {len(target.encoded):,} unlabelled texts from {target.source}")
    checkpoint.load_trainable(s.model, best_state)
    root = s.out / FOLDER
    if s.procs.main:
        run.create(root)
    for index in range(cfg.rounds):
        folder = root / f"round-{index + 1}"
        if (folder / ROUND_FILE).is_file():  # done before an interruption: take its weights and go on
            checkpoint.load_trainable(s.model, load_file(str(folder / STATE_FILE), device=str(s.device)))
            record = json.loads((folder / ROUND_FILE).read_text(encoding="utf-8"))
            s.log(f"adapt round {index + 1}: loaded from {folder}")
        else:
            record, rows = run_round(s, target, softmax(_predict(s, target)), index)
            val = validate(s.model, s.val_set, s.splits.val.labels, s.splits.label_names,
                           s.config.train.eval_batch_size, s.pad_id, s.device, s.dtype, s.procs)
            record |= {"val_loss": val["loss"], "val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"]}
            if s.procs.main:
                run.replace_folder(folder, lambda tmp: _write_round(tmp, s.model, record, rows))
            s.log(describe_round(record, s.splits.label_names))
        if s.procs.main:
            run.append_jsonl(s.out / run.METRICS_LOG, record)
            trackers.log(record | {"step": record["round"]})  # adapt curves plot against the round
        state.best_record = {"event": "eval", "round": index + 1, "step": record["step"],
                             "val_loss": record["val_loss"], "val_accuracy": record["val_accuracy"],
                             "val_macro_f1": record["val_macro_f1"]}
    state.best_value = state.best_record[f"val_{s.config.train.metric_for_best}"]
    if target.labels is not None:
        s.log(f"adapt: after {cfg.rounds} rounds, accuracy on the unlabelled file's own labels "
              f"{float((_predict(s, target).argmax(axis=1) == target.labels).mean()):.4f}")
    from loraclf.training import save_best

    if s.procs.main:
        run.replace_folder(s.out / run.ADAPTER, lambda folder: save_best(s, folder, state.best_record))
    return checkpoint.trainable_state(s.model)


def _predict(s, target: Target) -> np.ndarray:
    """The current model's logits on every unlabelled text (each process predicts its share)."""
    from loraclf.training import predict_shared

    s.model.eval()
    return predict_shared(s.model, target.encoded, s.config.train.eval_batch_size, s.pad_id, s.device, s.dtype,
                          s.procs)


def run_round(s, target: Target, probs: np.ndarray, index: int) -> tuple[dict[str, Any], list[tuple]]:
    """Train one round on the labelled items plus the unlabelled ones (pseudo-labelled, or all of them under the
    entropy loss), given the current model's probabilities on the unlabelled texts.

    Returns the round's record and its pseudo-labels as (row, label, probability).
    """
    cfg, tc = s.config.adapt, s.config.train
    names = s.splits.label_names
    record: dict[str, Any] = {"event": "adapt", "round": index + 1, "method": cfg.method}
    if target.labels is not None:
        record["target_accuracy"] = float((probs.argmax(axis=1) == target.labels).mean())
    if cfg.method == "entropy":
        kept = np.arange(len(probs))
        extra_labels, rows, loss_fn = np.full(len(kept), IGNORE), [], entropy_loss(cfg.entropy_weight)
    else:
        threshold = threshold_for(cfg, index)
        kept = select(probs, threshold, cfg.class_ratio, tc.seed + index)
        extra_labels, loss_fn = probs[kept].argmax(axis=1), None
        rows = [(int(i), int(label), float(probs[i].max())) for i, label in zip(kept, extra_labels)]
        record |= {"threshold": round(threshold, 4), "confident": int((probs.max(axis=1) >= threshold).sum()),
                   "kept_per_class": {names[c]: int((extra_labels == c).sum()) for c in range(len(names))}}
        if target.labels is not None:
            record["pseudo_accuracy"] = float((extra_labels == target.labels[kept]).mean()) if len(kept) else None
    record["kept"] = int(len(kept))
    items = Encoded(s.train_set.input_ids + [target.encoded.input_ids[i] for i in kept],
                    np.concatenate([s.train_set.labels, extra_labels]))
    s.model.train()
    started = time.perf_counter()
    record["train_loss"], record["step"] = train_round(s, items, cfg.lr or tc.lr, cfg.epochs,
                                                       tc.seed + 1000 * (index + 1), loss_fn)
    record["train_seconds"] = round(time.perf_counter() - started, 2)
    return record, rows


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


def train_round(s, items: Encoded, lr: float, epochs: int, seed: int, loss_fn=None) -> tuple[float, int]:
    """`epochs` passes over `items` with a fresh AdamW and cosine schedule; returns (mean loss, steps)."""
    from loraclf.training import epoch_batches, param_groups, seed_everything, train_step

    tc = s.config.train
    seed_everything(seed)  # each round draws the same batches and dropout masks when resumed
    optimizer = torch.optim.AdamW(param_groups(s.model, tc.weight_decay, lr, s.config.lora.plus_ratio), lr=lr,
                                  fused=s.device.type == "cuda")
    config = dataclasses.replace(s.config, train=dataclasses.replace(tc, seed=seed))
    per_epoch = [epoch_batches(config, items, s.pad_id, epoch) for epoch in range(epochs)]
    total = sum(len(batches) for batches in per_epoch)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=int(tc.warmup_ratio * total),
                              num_training_steps=total)
    r = dataclasses.replace(s, config=config, train_set=items, optimizer=optimizer, scheduler=scheduler,
                            total_steps=total, steps_per_epoch=len(per_epoch[0]))
    progress = Progress(total, 0, tc.progress and s.procs.main, s.log)
    losses, window = torch.zeros((), device=s.device), torch.zeros((), device=s.device)
    step, seen, started = 0, 0, time.perf_counter()
    try:
        for batches in per_epoch:
            for indices in batches.batches:
                step += 1
                loss, _ = train_step(r, batches, indices, step, loss_fn)
                losses, window, seen = losses + loss, window + loss, seen + len(indices)
                progress.advance()
                if step % tc.log_every == 0:
                    elapsed = time.perf_counter() - started
                    progress.record({"step": step, "loss": window.item() / tc.log_every, "elapsed_s": elapsed,
                                     "samples_per_s": seen / elapsed})
                    window.zero_()
    finally:
        progress.close()
    return float(s.procs.reduce(losses)) / max(1, step) / s.procs.world, step


def _write_round(folder: Path, model: torch.nn.Module, record: dict[str, Any], rows: list[tuple]) -> None:
    with (folder / PSEUDO_FILE).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "label", "probability"])
        writer.writerows((i, label, f"{p:.6f}") for i, label, p in rows)
    tensors = checkpoint.trainable_state(model)
    save_file({k: v.cpu().contiguous() for k, v in tensors.items()}, str(folder / STATE_FILE))
    run.write_json(folder / ROUND_FILE, record)


def describe_round(record: dict[str, Any], label_names: list[str]) -> str:
    if record["method"] == "entropy":
        used = f"entropy on all {record['kept']:,} unlabelled texts"
    else:
        counts = ", ".join(f"{name} {record['kept_per_class'][name]}" for name in label_names)
        used = f"threshold {record['threshold']}, kept {record['kept']:,} of {record['confident']:,} confident ({counts})"
    scored = ""
    if record.get("target_accuracy") is not None:
        scored = f"; before the round, accuracy on the unlabelled file's labels {record['target_accuracy']:.4f}"
        if record.get("pseudo_accuracy") is not None:
            scored += f", of the kept pseudo-labels {record['pseudo_accuracy']:.4f}"
    return (f"adapt round {record['round']}: {used}{scored}; train loss {record['train_loss']:.4f}; "
            f"val acc {record['val_accuracy']:.4f}")


def rounds(run_dir: Path) -> list[dict[str, Any]]:
    """The round records of a run, in order."""
    folders = sorted((run_dir / FOLDER).glob("round-*"), key=lambda p: int(p.name.split("-")[1]))
    return [json.loads((f / ROUND_FILE).read_text(encoding="utf-8")) for f in folders if (f / ROUND_FILE).is_file()]
