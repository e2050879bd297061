"""Predicting a file of any size: shard by shard, with progress, resumable, joined into one file at the end.

    output.csv.partial/job.json       what is being predicted (input, its size and time, the model, options)
    output.csv.partial/000000.part    each finished shard's rows (written atomically), with 000000.json (counts)
    output.csv                        appears, atomically, once every shard is done; the .partial folder goes

After kill -9 or Ctrl-C the finished shards stay; the same command with `resume` predicts only the rest, and the
file is byte for byte what an uninterrupted run writes. Memory follows the shard, never the file.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from loraclf.config.schema import check_reading
from loraclf.data.encoding import cut_note
from loraclf.data.stream import Corpus, Mark, Scan, Shard
from loraclf.errors import UserError
from loraclf.inference.manifest import Description
from loraclf.inference.outputs import Layout, join_shards, layout_for, write_shard
from loraclf.progress import Progress
from loraclf.rundir import atomic

BAD_ROWS = ("error", "skip")
JOB = "job.json"


@dataclass(frozen=True)
class FileJob:
    """What `predict_file` does; `settings()` is what a resumed job must share with the one it continues."""

    input: Path
    output: Path | None  # None: CSV on stdout, each shard as it is done (nothing to resume)
    text_column: str | None = None  # default: the run's
    id_column: str | None = None  # default: `id` where the input has one
    on_bad_row: str = "error"  # error: stop before writing anything; skip: answer the row with an error
    shard_rows: int = 10_000
    batch_size: int = 32
    submission: bool = False
    allow_pickle: bool = False
    delimiter: str | None = None  # default: the run's (data.delimiter), else sniffed
    encoding: str | None = None  # default: the run's (data.encoding), else UTF-8

    def settings(self, about: Description, model_options: dict[str, Any]) -> dict[str, Any]:
        """Everything that shapes the output's bytes: the input as it was, the model and how it runs, the
        options (the batch size too: it groups the texts, and the sixth decimal can follow the grouping)."""
        stat = self.input.stat()
        return {"input": str(self.input.resolve()), "input_bytes": stat.st_size, "input_mtime_ns": stat.st_mtime_ns,
                "model": str(Path(about.path).resolve()), "long_texts": about.long_texts,
                "window_stride": about.window_stride, "text_column": self.text_column, "id_column": self.id_column,
                "on_bad_row": self.on_bad_row, "shard_rows": self.shard_rows, "batch_size": self.batch_size,
                "submission": self.submission, "delimiter": self.delimiter, "encoding": self.encoding} | {k: v for k, v in model_options.items() if k not in {
                    "long_texts", "window_stride"}}


def open_job(job: FileJob, about: Description) -> tuple[Corpus, Layout]:
    """The input opened and the output's layout, checked before any model loads."""
    if job.on_bad_row not in BAD_ROWS:
        raise UserError(f"--on-bad-row: expected error or skip, got {job.on_bad_row!r}")
    if job.shard_rows < 1 or job.batch_size < 1:
        raise UserError("--shard-rows and --batch-size: must be at least 1")
    check_reading(job.delimiter, job.encoding, "--")
    schema = dataclasses.replace(about.schema, text=job.text_column or about.schema.text, options="flags",
                                 delimiter=job.delimiter or about.schema.delimiter,
                                 encoding=job.encoding or about.schema.encoding)
    corpus = Corpus(job.input, schema, job.id_column, job.allow_pickle)
    layout = layout_for(job.output, about.labels, job.submission, about.multi_label, corpus.id_column,
                        job.on_bad_row == "skip")
    if job.output is not None and job.output.is_dir():
        raise UserError(f"output {job.output}: is a directory, expected a file name")
    return corpus, layout


def partial_folder(output: Path) -> Path:
    return output.with_name(output.name + ".partial")


def start(job: FileJob, settings: dict[str, Any], resume: bool, overwrite: bool) -> tuple[Path, int, dict[str, Any]]:
    """The .partial folder, how many shards are already done in it, and the job's record (rows counted)."""
    partial = partial_folder(job.output)
    if partial.is_dir() and not (partial / JOB).is_file():  # stopped before its first record: nothing done
        shutil.rmtree(partial)
    if resume and partial.is_dir():
        recorded = json.loads((partial / JOB).read_text(encoding="utf-8"))
        changed = [k for k in settings if recorded.get(k) != settings[k]]
        if changed:
            raise UserError(f"--resume: {partial} was started with another {changed[0]} "
                            f"({recorded.get(changed[0])!r}, now {settings[changed[0]]!r}); --overwrite starts over")
        return partial, len(done_shards(partial)), recorded
    if partial.is_dir() and not overwrite:
        raise UserError(f"output {job.output}: {partial} holds an interrupted prediction "
                        f"({len(done_shards(partial))} shards done); --resume continues it, --overwrite starts over")
    if job.output.exists() and resume and not overwrite:
        raise UserError(f"output {job.output}: already complete (no {partial.name} to resume); --overwrite "
                        "predicts it again")
    if job.output.exists() and not overwrite:
        raise UserError(f"output {job.output}: exists; --overwrite replaces it")
    shutil.rmtree(partial, ignore_errors=True)
    return partial, 0, settings


def done_shards(partial: Path) -> list[Path]:
    """The finished shards, in order (each written atomically, so a listed one is whole)."""
    parts = sorted(partial.glob("[0-9]*.part"))
    return [p for i, p in enumerate(parts) if p.name == f"{i:06d}.part" and p.with_suffix(".json").is_file()]


def scan(corpus: Corpus, job: FileJob) -> Scan:
    found = corpus.scan(job.shard_rows)
    if found.first_problem is not None and job.on_bad_row == "error":
        raise UserError(f"{found.first_problem} (--on-bad-row skip answers such rows with an error instead)")
    return found


@dataclass
class Plan:
    """A job ready to run: its input, output layout, .partial folder, shards already done, rows in all."""

    job: FileJob
    about: Description
    corpus: Corpus
    layout: Layout
    partial: Path | None  # None for stdout
    skip: int
    rows: int
    marks: list[Mark]  # where each shard starts in the input


def plan(job: FileJob, about: Description, model_options: dict[str, Any], resume: bool = False,
         overwrite: bool = False) -> Plan:
    """Everything checked and counted before a model loads: the files, the options, every row (--on-bad-row
    error stops here, with nothing written), and what a resumed job has already done. `model_options` are
    Classifier.load's (precision, quantized...): a resumed job must run the model as the first did."""
    corpus, layout = open_job(job, about)
    if job.output is None:
        found = scan(corpus, job)
        return Plan(job, about, corpus, layout, None, 0, found.rows, found.marks)
    partial, skip, record = start(job, job.settings(about, model_options), resume, overwrite)
    if "rows" not in record:
        found = scan(corpus, job)
        record |= {"rows": found.rows, "marks": [dataclasses.astuple(m) for m in found.marks]}
        partial.mkdir(parents=True, exist_ok=True)
        atomic.write_json(partial / JOB, record)
    return Plan(job, about, corpus, layout, partial, skip, record["rows"], [Mark(*m) for m in record["marks"]])


# An engine: (the plan, the shards to do) -> (shard index, output rows, counts), in shard order.
Predict = Callable[["Plan", list[int]], Iterator[tuple[int, list, dict]]]


def run(plan: Plan, predict: Predict, progress: bool = True,
        log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> dict[str, Any]:
    """Predict the planned job: `predict` (an engine) turns shards into (shard, output rows, counts), in order;
    each is written as it comes. Returns the summary: rows, bad rows, texts cut, seconds, texts/s."""
    job, partial = plan.job, plan.partial
    done_rows = min(plan.skip * job.shard_rows, plan.rows)
    bar = Progress(plan.rows, done_rows, progress, log, unit="text")
    started, id_type, counts = time.perf_counter(), plan.corpus.id_type(), []
    if partial is None:
        sys.stdout.write(plan.layout.text([], header=True))
    try:
        for index, records, shard_counts in predict(plan, list(range(plan.skip, len(plan.marks)))):
            if partial is None:
                sys.stdout.write(plan.layout.text(records, header=False))
                counts.append(shard_counts)
            else:
                name = partial / f"{index:06d}"
                atomic.write_json(name.with_suffix(".json"), shard_counts)
                write_shard(name.with_suffix(".part"), plan.layout, records, id_type)
            bar.done(plan.marks[index].row + shard_counts["rows"], time.perf_counter() - started, done_rows)
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    if partial is not None:
        parts = done_shards(partial)
        counts = [json.loads(p.with_suffix(".json").read_text(encoding="utf-8")) for p in parts]
        join_shards(job.output, plan.layout, parts)
        shutil.rmtree(partial, ignore_errors=True)
    summary = {"rows": plan.rows, "bad_rows": sum(c["bad"] for c in counts),
               "texts_cut": sum(c["cut"] for c in counts), "resumed_from_row": done_rows,
               "seconds": round(seconds, 2), "texts_per_s": round((plan.rows - done_rows) / max(seconds, 1e-9), 1),
               "output": str(job.output) if job.output else "stdout"}
    summary["note"] = cut_note(summary["texts_cut"], plan.rows, plan.about.max_length,
                               plan.about.long_texts).lstrip("; ")
    return summary


def predict_shard(classifier, layout: Layout, shard: Shard, batch_size: int) -> tuple[list, dict[str, int]]:
    """One shard's output rows and counts: its good rows predicted together (sorted by length across the
    shard, so batches pad little), its bad rows answered with their problem. Every engine runs this."""
    good = [i for i, row in enumerate(shard.rows) if row.problem is None]
    tokens = classifier.tokens([shard.rows[i].text for i in good])
    probs = np.zeros((len(shard.rows), len(classifier.labels)), dtype=np.float32)
    decided: list = [None] * len(shard.rows)
    if good:
        probs[good] = classifier.proba_of(classifier.logits_of(tokens, batch_size))
        for i, label in zip(good, classifier.decide(probs[good])):
            decided[i] = label
    ids = [row.id for row in shard.rows] if layout.id_column else None
    records = layout.records(probs, decided, shard.start, ids, [row.problem for row in shard.rows])
    return records, {"rows": len(shard.rows), "bad": len(shard.rows) - len(good), "cut": tokens.cut}

