"""The training loop: one function, read top to bottom.

Data -> budget check (weights-free) -> model -> AdamW + schedule -> epochs of
steps with evaluation on validation -> best adapter saved -> test evaluation.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_scheduler

from loraclf import budget, checkpoint, distributed, quantize, report, run, speed, tracking
from loraclf.config import Config, save_config
from loraclf.data import Encoded, encode, load_splits, loader
from loraclf.errors import UserError
from loraclf.evaluate import confident_mistakes, metrics, plot_confusion
from loraclf.model import build_base, load_tokenizer, save_adapter, wrap_with_lora
from loraclf.predict import predict_logits
from loraclf.runtime import autocast, autocast_dtype, grad_scaler, peak_memory_mb, pick_device


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


def crash_point(kind: str, step: int) -> None:
    """Kill this process at a named point when LORACLF_TEST_CRASH_AT=kind:step says so.

    The resume tests use it to SIGKILL a real training process at an exact
    place (after a step, halfway through a checkpoint write); unset, it is a no-op.
    """
    if os.environ.get("LORACLF_TEST_CRASH_AT") == f"{kind}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def is_better(metric: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value < best if metric == "loss" else value > best


def train(config: Config, output_dir: str | Path, overwrite: bool = False,
          log: Callable[[str], None] = print, resume: bool = False,
          on_eval: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train per `config` into the run folder `output_dir`.

    `on_eval` receives each validation record (a search prunes a trial by raising from it).

    With `resume`, `output_dir` is an interrupted run: training continues from
    its latest complete checkpoint and ends exactly as the uninterrupted run would.
    """
    started = time.perf_counter()
    tc = config.train
    seed_everything(tc.seed)
    procs, device = distributed.start(pick_device(tc.device))
    dtype = autocast_dtype(tc.precision, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if not procs.main:
        log = lambda _: None  # noqa: E731  rank 0 alone logs
    # One run folder for all processes: rank 0's (a default name holds the time it started).
    output_dir = procs.broadcast(str(output_dir))
    if resume:
        out = Path(output_dir)
        resume_from = checkpoint.latest(out)
        if resume_from is None:
            raise UserError(f"resume {out}: no complete checkpoint in {out / checkpoint.FOLDER}; "
                            "nothing to resume (start a new run with --config)")
    else:
        out = run.prepare(output_dir, overwrite)
        resume_from = None

    tracking.check_available(tc.log_to)
    # Data, then the exact budget check on the meta device before any weights load.
    tokenizer = load_tokenizer(config.model)
    splits = load_splits(config.data, tokenizer, log)
    label_names = splits.label_names
    planned = budget.estimate(config, label_names)
    budget.enforce(planned)
    log(f"data: train {len(splits.train):,}, validation {len(splits.val):,}, "
        f"test {len(splits.test) if splits.test else 0:,}; classes {label_names}")
    log(planned.describe())
    if procs.world > 1:
        log(f"data parallel: {procs.world} processes, global batch {tc.batch_size} split between them")
    procs.barrier()  # every process has checked the folder before rank 0 creates it

    train_set = Encoded(splits.train.input_ids, splits.train.labels)
    val_set = Encoded(splits.val.input_ids, splits.val.labels)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # Bucketed widths keep torch.compile from recompiling for every batch length.
    multiple = config.data.pad_to_multiple_of or (16 if tc.compile else 1)

    def epoch_batches(epoch: int):
        # The data order comes from (seed, epoch) alone, so a resumed run sees the same batches.
        return loader(train_set, tc.batch_size, pad_id, shuffle=True, seed=tc.seed + epoch,
                      group_by_length=tc.group_by_length, pad_to_multiple_of=multiple)

    steps_per_epoch = len(epoch_batches(0))
    total_steps = steps_per_epoch * tc.epochs
    if tc.max_steps:
        total_steps = min(total_steps, tc.max_steps)

    quant = config.quantization
    if quant.bits:
        quantize.check_available(device)
    # A quantized base loads quantized from its weights: a random one from the run's saved base_model/.
    base = None
    if resume_from is None:
        if not quant.bits or config.model.init == "random":
            base = build_base(config.model, label_names)  # the same seeded weights in every process
        if procs.main:
            run.create(out)
            run.clear(out)
            save_config(config, out / run.CONFIG)
            run.write_json(out / run.LABELS, {"label_names": label_names})
            run.replace_folder(out / run.TOKENIZER, tokenizer.save_pretrained)
            if config.model.init == "random":
                # Random weights are part of the result: evaluate and predict need the same ones.
                run.replace_folder(out / run.BASE_MODEL, base.save_pretrained)
        procs.barrier()
    if base is None or quant.bits:
        saved_base = out / run.BASE_MODEL
        base = build_base(config.model, label_names, base_folder=saved_base if saved_base.is_dir() else None,
                          quantization=quant, device=device, autocast=dtype)
    if quant.bits:
        base = quantize.prepare(base)
    base_bytes = quantize.weight_bytes(base)
    if tc.gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = wrap_with_lora(base, config.lora, total_steps)
    if not quant.bits:  # a quantized base was loaded onto the device, and bitsandbytes weights stay there
        model = model.to(device)
    if tc.fast_dropout and device.type == "cpu":
        speed.use_fast_dropout(model)
    initial_adapter = out / run.INITIAL_ADAPTER if config.lora.init != "default" else None
    if initial_adapter is not None and procs.main:
        # PiSSA/OLoRA move part of W into the adapter; saving needs the adapter as initialised.
        run.replace_folder(initial_adapter, model.save_pretrained)
    actual = budget.count(model, config.budget.max_trainable)
    assert actual == planned, f"meta-device count {planned} differs from the built model {actual}"
    log(f"base weights in memory: {base_bytes / 2**20:.1f} MiB"
        + (f" ({quant.bits}-bit linear layers{', int8 embeddings' if quant.embeddings else ''})" if quant.bits else ""))
    if resume_from is None and procs.main:
        run.write_json(out / run.BUDGET, actual.to_dict())

    optimizer = torch.optim.AdamW(param_groups(model, tc.weight_decay, tc.lr, config.lora.plus_ratio), lr=tc.lr,
                                  fused=device.type == "cuda")
    scaler = grad_scaler(device, dtype)
    forward = procs.wrap(torch.compile(model) if tc.compile else model, device)
    scheduler = get_scheduler(tc.scheduler, optimizer, num_warmup_steps=int(tc.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    log_path = out / run.METRICS_LOG
    # The loop's position and everything it carries from step to step; a checkpoint saves it.
    loop: dict[str, Any] = {"epoch": 0, "batch": 0, "step": 0, "seen": 0, "tokens": 0, "window_loss": 0.0,
                            "best_value": None, "best_record": {}, "best_step": None, "eval_seconds": 0.0,
                            "train_seconds": 0.0, "log_bytes": 0}
    best_state: dict[str, torch.Tensor] = checkpoint.trainable_state(model)
    if resume_from is not None:
        loop, best_state = checkpoint.restore(resume_from, model, optimizer, scheduler, scaler, procs.rank)
        if procs.main:
            # Drop log lines written after the checkpoint: the resumed run writes them again.
            with log_path.open("r+b") as handle:
                handle.truncate(loop["log_bytes"])
        log(f"resuming from {resume_from.name}: epoch {loop['epoch'] + 1}, step {loop['step']}")
    elif procs.main:
        log_path.write_text("", encoding="utf-8")
    trackers = tracking.Trackers(tc.log_to if procs.main else [], out, config.to_dict(), tc.mlflow_uri)
    window_loss = torch.tensor(loop["window_loss"] / procs.world, device=device)  # summed on device: no host sync per step
    # First step whose loss or gradient norm was not finite (-1: none yet); checked when the host syncs anyway.
    first_bad = torch.tensor(-1, device=device)
    check_grad_norm = dtype != torch.float16  # fp16 overflow is the loss scaler's business
    last_checkpoint = resume_from

    def stop_if_diverged() -> None:
        bad = int(procs.reduce(first_bad.clone(), "max"))
        if bad >= 0:
            kept = f"the last good checkpoint ({last_checkpoint}) and " if last_checkpoint else ""
            raise UserError(f"training diverged: loss or gradient norm is not finite at step {bad} (epoch "
                            f"{(bad - 1) // steps_per_epoch + 1}); stopped there. {kept}the best model in "
                            f"{out / run.ADAPTER} are unchanged; try a lower train.lr or train.precision fp32")

    def validate(step: int, epoch: float) -> None:
        stop_if_diverged()
        nonlocal best_state
        eval_started = time.perf_counter()
        model.eval()
        logits = predict_shared(val_set)
        result = metrics(splits.val.labels, logits, label_names)
        model.train()
        record = {"event": "eval", "step": step, "epoch": round(epoch, 3), "val_loss": result["loss"],
                  "val_accuracy": result["accuracy"], "val_macro_f1": result["macro_f1"]}
        if procs.main:
            run.append_jsonl(log_path, record)
            trackers.log(record)
        value = result[tc.metric_for_best]
        improved = is_better(tc.metric_for_best, value, loop["best_value"])
        if improved:
            loop.update(best_value=value, best_record=record, best_step=step)
            best_state = checkpoint.trainable_state(model)
            if procs.main:
                run.replace_folder(out / run.ADAPTER, lambda folder: save_adapter(model, folder, initial_adapter))
        say(f"step {step} epoch {epoch:.2f}: val loss {result['loss']:.4f} acc {result['accuracy']:.4f} "
            f"macro-F1 {result['macro_f1']:.4f}" + (" (best)" if improved else ""))
        loop["eval_seconds"] += time.perf_counter() - eval_started
        if on_eval is not None:
            on_eval(record)

    def save_checkpoint() -> None:
        nonlocal last_checkpoint
        stop_if_diverged()
        loop.update(window_loss=float(procs.reduce(window_loss.clone())), train_seconds=train_seconds(),
                    log_bytes=log_path.stat().st_size if procs.main else 0)
        # Each process draws its own dropout masks: all their generator states go in the checkpoint.
        rng_by_rank = procs.gather(checkpoint.rng_tensors()) if procs.world > 1 else None
        if procs.main:
            last_checkpoint = checkpoint.save(out, loop["step"], model, optimizer, scheduler, scaler, best_state,
                                              loop, keep=tc.keep_checkpoints, keep_step=loop["best_step"],
                                              crash_hook=crash_point, rng_by_rank=rng_by_rank)
        last_checkpoint = procs.broadcast(last_checkpoint)

    def predict_shared(data: Encoded) -> np.ndarray:
        """Logits for every item of `data`: each process predicts its share, all get the whole."""
        share = procs.part(len(data))
        part = Encoded([data.input_ids[i] for i in share])
        logits = predict_logits(model, part, tc.eval_batch_size, pad_id, device, dtype)
        return np.concatenate(procs.gather(logits))

    def train_seconds() -> float:
        # Training steps only, not the validation passes between them; carried across resumes.
        return resumed_seconds + time.perf_counter() - session_started - (loop["eval_seconds"] - eval_before)

    step = loop["step"]
    bar = tqdm(total=total_steps, initial=step, disable=not (tc.progress and procs.main), unit="step",
               dynamic_ncols=True)
    say = bar.write if tc.progress and procs.main else log
    model.train()
    session_started, eval_before, resumed_seconds = time.perf_counter(), loop["eval_seconds"], loop["train_seconds"]
    for epoch in range(loop["epoch"], tc.epochs):
        if step >= total_steps:
            break
        batches = epoch_batches(epoch)
        for index in range(loop["batch"], len(batches)):
            indices = batches.batches[index]
            loop["tokens"] += sum(len(train_set.input_ids[i]) for i in indices)
            local, weight = procs.shard(indices)
            batch = {k: v.to(device, non_blocking=True) for k, v in batches.collate(local).items()}
            with autocast(device, dtype):
                loss = forward(**batch).loss
            if procs.world > 1:
                # Weighted so DDP's gradient average is the global batch's mean loss; logged summed over processes.
                loss = loss * weight
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # clip the true gradients
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.max_grad_norm or float("inf"))
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if config.lora.method == "adalora":
                model.base_model.update_and_allocate(step + 1)  # prunes ranks on its schedule
            optimizer.zero_grad(set_to_none=True)
            step += 1
            finite = torch.isfinite(loss.detach()) & (torch.isfinite(norm) if check_grad_norm else True)
            first_bad = torch.where((first_bad < 0) & ~finite, step, first_bad)
            loop.update(step=step, epoch=epoch, batch=index + 1, seen=loop["seen"] + len(indices))
            window_loss += loss.detach() / procs.world
            bar.update(1)
            if step % tc.log_every == 0:
                stop_if_diverged()
                elapsed = train_seconds()
                procs.reduce(window_loss)
                record = {"event": "train", "step": step, "epoch": round(step / steps_per_epoch, 3),
                          "loss": window_loss.item() / tc.log_every, "lr": scheduler.get_last_lr()[0],
                          "samples_per_s": loop["seen"] / elapsed, "tokens_per_s": loop["tokens"] / elapsed,
                          "seen": loop["seen"], "tokens": loop["tokens"], "elapsed_s": round(elapsed, 4)}
                if procs.main:
                    run.append_jsonl(log_path, record)
                    trackers.log(record)
                window_loss.zero_()
                bar.set_postfix(loss=f"{record['loss']:.4f}", samples_s=f"{record['samples_per_s']:.1f}")
            crash_point("after-step", step)
            if step == total_steps or index + 1 == len(batches):
                break
            if tc.eval_every and step % tc.eval_every == 0:
                validate(step, step / steps_per_epoch)
            if tc.checkpoint_every and step % tc.checkpoint_every == 0:
                save_checkpoint()
        validate(step, step / steps_per_epoch)
        if loop["batch"] == len(batches):
            loop.update(epoch=epoch + 1, batch=0)
        save_checkpoint()
    bar.close()
    stop_if_diverged()
    seconds = train_seconds()

    summary: dict[str, Any] = {
        "best": loop["best_record"],
        "metric_for_best": tc.metric_for_best,
        "parameters": actual.to_dict(),
        "train_items": len(splits.train),
        "val_items": len(splits.val),
        "steps": step,
        "train_seconds": round(seconds, 2),
        "eval_seconds": round(loop["eval_seconds"], 2),
        "train_samples_per_s": round(loop["seen"] / seconds, 2),
        "train_tokens_per_s": round(loop["tokens"] / seconds, 2),
        "filter": vars(splits.filter_report) if splits.filter_report else None,
        "sources": splits.sources,
        "device": str(device),
        "processes": procs.world,
        "base_weight_bytes": base_bytes,
        "peak_memory_mb": peak_memory_mb(device),
        "quantization": f"{quant.bits}-bit" if quant.bits else None,
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
        logits = predict_shared(test_set)
        test_seconds = time.perf_counter() - t0
        result = metrics(splits.test.labels, logits, label_names)
        result["texts_per_s"] = round(len(test_set) / test_seconds, 2)
        result["confident_mistakes"] = confident_mistakes(splits.test.texts, splits.test.labels, logits, label_names)
        if procs.main:
            run.write_json(out / "test_metrics.json", result)
            plot_confusion(result["confusion_matrix"], label_names, out / "test_confusion_matrix.png", "test")
        summary["test"] = {k: result[k] for k in ("accuracy", "macro_f1", "loss", "count", "texts_per_s")}
        log(f"test: accuracy {result['accuracy']:.4f}, macro-F1 {result['macro_f1']:.4f} "
            f"on {result['count']:,} items")
    summary["total_seconds"] = round(time.perf_counter() - started, 2)
    if procs.main:
        run.write_json(out / run.SUMMARY, summary)
        report.write(out)
    trackers.close(summary)
    log(f"run folder: {out} (best {tc.metric_for_best} {loop['best_value']:.4f}; "
        f"{summary['train_samples_per_s']} samples/s; {summary['total_seconds']} s in all)")
    procs.barrier()
    distributed.stop(procs)
    return summary
