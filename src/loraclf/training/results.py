"""The end of a run: the best model on the test split, multi-label thresholds, metrics.json, card and report."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from loraclf.data.encoding import Encoded, cut_note, document_logits, encode
from loraclf.metrics.classification import confident_mistakes, metrics, tune_thresholds
from loraclf.metrics.plots import plot_confusion
from loraclf.model.runtime import dtype_name, peak_memory_mb
from loraclf.rundir import atomic, card, layout, readers, report
from loraclf.training import answers, calibration, checkpoint
from loraclf.training.evaluation import predict_shared
from loraclf.training.keep import write_card
from loraclf.training.state import RunContext, Trainable, TrainData, TrainState


def finish(run: RunContext, data: TrainData, trainable: Trainable, state: TrainState,
           best_state: dict[str, torch.Tensor], started: float) -> dict[str, Any]:
    """Evaluate the best model on the test split; write metrics.json and the report; return the summary."""
    tc, quant = run.config.train, run.config.quantization
    seconds = state.train_seconds
    summary: dict[str, Any] = {
        "best": state.best_record,
        "metric_for_best": tc.metric_for_best,
        "parameters": trainable.parameters.to_dict(),
        "train_items": len(data.splits.train),
        "val_items": len(data.splits.val),
        "steps": state.step,
        "stopped_early": state.stopped,
        "train_seconds": round(seconds, 2),
        "eval_seconds": round(state.eval_seconds, 2),
        "train_samples_per_s": round(state.seen / seconds, 2),
        "train_tokens_per_s": round(state.tokens / seconds, 2),
        "filter": vars(data.splits.filter_report) if data.splits.filter_report else None,
        "sources": data.splits.sources,
        "bad_rows": [dropped.to_dict() for dropped in data.splits.dropped],
        "device": str(run.device),
        "processes": run.procs.world,
        "base_weight_bytes": trainable.base_bytes,
        "peak_memory_mb": peak_memory_mb(run.device),
        "quantization": f"{quant.bits}-bit" if quant.bits else None,
        "precision": dtype_name(run.dtype),
    }
    if run.config.adapt.method != "none":
        summary["adapt"] = readers.read_rounds(run.out)
    best_state, calibrated = calibration.calibrate(run, data, trainable, state, best_state)
    thresholds = decision_thresholds(run, data, trainable, best_state)
    if thresholds is not None:
        summary["thresholds"] = dict(zip(data.splits.label_names, thresholds))
    dc = run.config.data
    test_set = encode(data.tokenizer, data.splits.test.texts, None, dc.max_length, dc.long_texts, dc.window_stride) \
        if data.splits.test is not None else None
    settled = answers.settle(run, data, trainable, best_state, test_set, thresholds)
    summary |= settled.record
    if test_set is not None:
        summary["test"] = evaluate_test(run, data, trainable, best_state, test_set, settled, thresholds, calibrated)
    if calibrated is not None:
        summary["calibration"] = calibrated
        if run.procs.main:
            calibration.plot(run, calibrated)
    summary["total_seconds"] = round(time.perf_counter() - started, 2)
    if run.procs.main:
        atomic.write_json(run.out / layout.SUMMARY, summary)
        write_card(run, data.label_names, trainable, run.out / layout.ADAPTER, state.best_record,
                   card.base_reference(run.config, run.out), summary.get("test"))
        report.write(run.out)
    run.log(f"run folder: {run.out} (best {tc.metric_for_best} {state.best_value:.4f}; "
          f"{summary['train_samples_per_s']} samples/s; {summary['total_seconds']} s in all)")
    return summary


def decision_thresholds(run: RunContext, data: TrainData, trainable: Trainable,
                        best_state: dict[str, torch.Tensor]) -> list[float] | None:
    """multi_label: each class's decision threshold, written to the run (thresholds.json): tuned on the validation
    set for the best model with train.tune_thresholds, else 0.5. None for single_label."""
    if run.config.data.task != "multi_label":
        return None
    thresholds = [0.5] * len(data.splits.label_names)
    if run.config.train.tune_thresholds:
        checkpoint.load_trainable(trainable.model, best_state)
        trainable.model.eval()
        logits = predict_shared(trainable.model, data.val_set, run.config.train.eval_batch_size, data.pad_id, run.device, run.dtype,
                                run.procs)
        thresholds = tune_thresholds(data.splits.val.labels, logits)
        run.log("thresholds tuned on validation: " + ", ".join(f"{n} {t:g}" for n, t in
                                                              zip(data.splits.label_names, thresholds)))
    if run.procs.main:
        atomic.write_json(run.out / layout.THRESHOLDS, {"thresholds": thresholds, "labels": data.splits.label_names,
                                                "tuned_on": "validation" if run.config.train.tune_thresholds else None})
    return thresholds


def evaluate_test(run: RunContext, data: TrainData, trainable: Trainable, best_state: dict[str, torch.Tensor],
                  test_set: Encoded, settled: answers.Settled, thresholds: list[float] | None = None,
                  calibrated: dict[str, Any] | None = None) -> dict[str, Any]:
    """The best model (not the last) on the test split (encoded), in the dtype answers.settle chose (or with the
    logits it already computed); writes test_metrics.json and its confusion matrix. With `calibrated` (a
    calibration record), adds the test split's ECE before and after to it."""
    dc = run.config.data
    label_names = data.splits.label_names
    dtype, logits, seconds = settled.test_dtype, settled.test_logits, settled.test_seconds
    if logits is None:
        checkpoint.load_trainable(trainable.model, best_state)
        started = time.perf_counter()
        trainable.model.eval()
        logits = document_logits(predict_shared(trainable.model, test_set, run.config.train.eval_batch_size,
                                                data.pad_id, run.device, dtype, run.procs), test_set.documents)
        seconds = time.perf_counter() - started
    result = metrics(data.splits.test.labels, logits, label_names, thresholds)
    result["texts_per_s"] = round(test_set.count / seconds, 2)
    result["texts_cut"] = test_set.cut
    result["precision"] = dtype_name(dtype)
    if calibrated is not None:  # the model's logits are already divided by T: before is logits * T
        t = np.asarray(calibrated["temperature"])  # one, or one per class
        calibrated["test"] = calibration.measured(data.splits.test.labels, logits * t, t)
    result["confident_mistakes"] = confident_mistakes(data.splits.test.texts, data.splits.test.labels, logits, label_names,
                                                      thresholds=thresholds)
    if run.procs.main:
        atomic.write_json(run.out / layout.TEST_METRICS, result)
        plot_confusion(result["confusion_matrix"], label_names, run.out / layout.TEST_CONFUSION, "test")
    run.log(f"test: accuracy {result['accuracy']:.4f}, macro-F1 {result['macro_f1']:.4f} on {result['count']:,} items"
            + cut_note(test_set.cut, test_set.count, dc.max_length, dc.long_texts))
    kept = ("accuracy", "macro_f1", "micro_f1", "samples_f1", "hamming_loss", "loss", "ece", "count",
            "texts_per_s")
    return {k: result[k] for k in kept if k in result}
