"""The training loop: one function, read top to bottom.

Data -> budget check (weights-free) -> model -> AdamW + schedule -> epochs of
steps with evaluation on validation -> best adapter saved -> test evaluation.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_scheduler

from loraclf import budget, run, speed
from loraclf.config import Config, save_config
from loraclf.data import Encoded, encode, load_splits, loader
from loraclf.evaluate import metrics, plot_confusion
from loraclf.model import build_base, load_tokenizer, wrap_with_lora
from loraclf.predict import predict_logits
from loraclf.runtime import autocast, autocast_dtype, grad_scaler, pick_device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices only: not on biases or LayerNorm, as the HF Trainer does."""
    no_decay = set()
    for module_name, module in model.named_modules():
        if isinstance(module, torch.nn.LayerNorm) or "LayerNorm" in type(module).__name__:
            no_decay.update(f"{module_name}.{p}" for p, _ in module.named_parameters(recurse=False))
    decay, plain = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (plain if name in no_decay or name.endswith("bias") else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def is_better(metric: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value < best if metric == "loss" else value > best


def train(config: Config, output_dir: str | Path, overwrite: bool = False,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    started = time.perf_counter()
    tc = config.train
    seed_everything(tc.seed)
    device = pick_device(tc.device)
    dtype = autocast_dtype(tc.precision, device)
    out = run.prepare(output_dir, overwrite)

    # Data, then the exact budget check on the meta device before any weights load.
    tokenizer = load_tokenizer(config.model)
    splits = load_splits(config.data, tokenizer, log)
    label_names = splits.label_names
    planned = budget.estimate(config, label_names)
    budget.enforce(planned)
    log(f"data: train {len(splits.train):,}, validation {len(splits.val):,}, "
        f"test {len(splits.test) if splits.test else 0:,}; classes {label_names}")
    log(planned.describe())

    base = build_base(config.model, label_names)
    run.clear(out)
    save_config(config, out / run.CONFIG)
    run.write_json(out / run.LABELS, {"label_names": label_names})
    run.replace_folder(out / run.TOKENIZER, tokenizer.save_pretrained)
    if config.model.init == "random":
        # Random weights are part of the result: evaluate and predict need the same ones.
        run.replace_folder(out / run.BASE_MODEL, base.save_pretrained)
    model = wrap_with_lora(base, config.lora).to(device)
    if tc.fast_dropout and device.type == "cpu":
        speed.use_fast_dropout(model)
    actual = budget.count(model, config.budget.max_trainable)
    assert actual == planned, f"meta-device count {planned} differs from the built model {actual}"
    run.write_json(out / run.BUDGET, actual.to_dict())

    train_set = Encoded(splits.train.input_ids, splits.train.labels)
    val_set = Encoded(splits.val.input_ids, splits.val.labels)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # Bucketed widths keep torch.compile from recompiling for every batch length.
    multiple = config.data.pad_to_multiple_of or (16 if tc.compile else 1)

    def epoch_batches(epoch: int):
        # The data order comes from (seed, epoch) alone.
        return loader(train_set, tc.batch_size, pad_id, shuffle=True, seed=tc.seed + epoch,
                      group_by_length=tc.group_by_length, pad_to_multiple_of=multiple)

    steps_per_epoch = len(epoch_batches(0))
    total_steps = steps_per_epoch * tc.epochs
    if tc.max_steps:
        total_steps = min(total_steps, tc.max_steps)

    optimizer = torch.optim.AdamW(param_groups(model, tc.weight_decay), lr=tc.lr, fused=device.type == "cuda")
    scaler = grad_scaler(device, dtype)
    forward = torch.compile(model) if tc.compile else model
    scheduler = get_scheduler(tc.scheduler, optimizer, num_warmup_steps=int(tc.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    log_path = out / run.METRICS_LOG
    log_path.write_text("", encoding="utf-8")
    best_value: float | None = None
    best_state: dict[str, torch.Tensor] = {}
    best_record: dict[str, Any] = {}

    eval_seconds = 0.0

    def validate(step: int, epoch: float) -> None:
        nonlocal best_value, best_state, best_record, eval_seconds
        eval_started = time.perf_counter()
        model.eval()
        logits = predict_logits(model, val_set, tc.eval_batch_size, pad_id, device, dtype)
        result = metrics(splits.val.labels, logits, label_names)
        model.train()
        record = {"event": "eval", "step": step, "epoch": round(epoch, 3), "val_loss": result["loss"],
                  "val_accuracy": result["accuracy"], "val_macro_f1": result["macro_f1"]}
        run.append_jsonl(log_path, record)
        value = result[tc.metric_for_best]
        improved = is_better(tc.metric_for_best, value, best_value)
        if improved:
            best_value, best_record = value, record
            best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
            run.replace_folder(out / run.ADAPTER, model.save_pretrained)
        say(f"step {step} epoch {epoch:.2f}: val loss {result['loss']:.4f} acc {result['accuracy']:.4f} "
            f"macro-F1 {result['macro_f1']:.4f}" + (" (best)" if improved else ""))
        eval_seconds += time.perf_counter() - eval_started

    bar = tqdm(total=total_steps, disable=not tc.progress, unit="step", dynamic_ncols=True)
    say = bar.write if tc.progress else log
    model.train()
    step, seen, tokens = 0, 0, 0
    window_loss = torch.zeros((), device=device)  # summed on device: no host sync per step
    train_started = time.perf_counter()
    for epoch in range(tc.epochs):
        if step >= total_steps:
            break
        for batch in epoch_batches(epoch):
            tokens += int(batch["attention_mask"].sum())
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with autocast(device, dtype):
                loss = forward(**batch).loss
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # clip the true gradients
            if tc.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            seen += len(batch["labels"])
            window_loss += loss.detach()
            bar.update(1)
            if step % tc.log_every == 0:
                elapsed = time.perf_counter() - train_started - eval_seconds
                record = {"event": "train", "step": step, "epoch": round(step / steps_per_epoch, 3),
                          "loss": window_loss.item() / tc.log_every, "lr": scheduler.get_last_lr()[0],
                          "samples_per_s": seen / elapsed, "tokens_per_s": tokens / elapsed,
                          "seen": seen, "tokens": tokens, "elapsed_s": round(elapsed, 4)}
                run.append_jsonl(log_path, record)
                window_loss.zero_()
                bar.set_postfix(loss=f"{record['loss']:.4f}", samples_s=f"{record['samples_per_s']:.1f}")
            if step == total_steps:
                break
            if tc.eval_every and step % tc.eval_every == 0 and step % steps_per_epoch != 0:
                validate(step, step / steps_per_epoch)
        validate(step, step / steps_per_epoch)
    bar.close()
    # Throughput counts training steps only, not the validation passes between them.
    train_seconds = time.perf_counter() - train_started - eval_seconds

    summary: dict[str, Any] = {
        "best": best_record,
        "metric_for_best": tc.metric_for_best,
        "parameters": actual.to_dict(),
        "train_items": len(splits.train),
        "val_items": len(splits.val),
        "steps": step,
        "train_seconds": round(train_seconds, 2),
        "eval_seconds": round(eval_seconds, 2),
        "train_samples_per_s": round(seen / train_seconds, 2),
        "train_tokens_per_s": round(tokens / train_seconds, 2),
        "filter": vars(splits.filter_report) if splits.filter_report else None,
        "sources": splits.sources,
        "device": str(device),
        "precision": str(dtype).removeprefix("torch.") if dtype else "float32",
    }
    if splits.test is not None:
        # Evaluate the best model, not the last one.
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in best_state:
                    param.copy_(best_state[name])
        model.eval()
        test_set = encode(tokenizer, splits.test.texts, None, config.data.max_length)
        t0 = time.perf_counter()
        logits = predict_logits(model, test_set, tc.eval_batch_size, pad_id, device, dtype)
        test_seconds = time.perf_counter() - t0
        result = metrics(splits.test.labels, logits, label_names)
        result["texts_per_s"] = round(len(test_set) / test_seconds, 2)
        run.write_json(out / "test_metrics.json", result)
        plot_confusion(result["confusion_matrix"], label_names, out / "test_confusion_matrix.png", "test")
        summary["test"] = {k: result[k] for k in ("accuracy", "macro_f1", "loss", "count", "texts_per_s")}
        log(f"test: accuracy {result['accuracy']:.4f}, macro-F1 {result['macro_f1']:.4f} "
            f"on {result['count']:,} items")
    summary["total_seconds"] = round(time.perf_counter() - started, 2)
    run.write_json(out / run.SUMMARY, summary)
    log(f"run folder: {out} (best {tc.metric_for_best} {best_value:.4f}; "
        f"{summary['train_samples_per_s']} samples/s; {summary['total_seconds']} s in all)")
    return summary
