"""Command line: parse, dispatch, and turn user errors into one line and exit code 2.

Each command imports the stage it runs inside its own function: `loraclf --help`, a bad flag or a bad
config answer without loading torch and transformers, and no command loads the stages it does not use.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
import warnings
from pathlib import Path

from loraclf.errors import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other user error
        raise UserError(f"{self.prog}: {message}")


PICKLE_HELP = "read pickled data files (unpickling runs code from the file: only for files you trust)"
UNQUANTIZED_HELP = "a run trained on a quantized base: put the adapter on the full-precision base instead"
PRECISION_HELP = ("auto (default): fp32, or the precision the run trained in where this machine runs it natively "
                  "and the run found it gives fp32's labels; bf16 or fp32 force one; exports run in fp32")
INT8_HELP = ("the encoder's linear layers as int8 matmuls (CPUs with VNNI or AMX): faster, the same answer alone and "
             "in any batch; its label agreement with fp32, measured when the run finished, is printed")
FOLDER_HELP = "a run folder, or a folder made by loraclf export"
VERBOSE_HELP = "keep the warnings and log lines of transformers, peft and the hub (hidden by default)"
CONFIG_HELP = ("a shipped recipe by name (quickstart, paper, base, competition, competition-base, best: see `loraclf "
               "recipes`) or a recipe YAML file")
OVERRIDES = ("Any config key can be overridden after the options as --section.key VALUE (or --section.key=VALUE), "
             "e.g. --train.lr 1e-4 --data.train_file mine.csv; `loraclf recipes show quickstart` prints a recipe's "
             "keys and docs/config.md lists them all.")


def _parser() -> argparse.ArgumentParser:
    from loraclf import __version__

    parser = _Parser(prog="loraclf", description="LoRA text classification under a parameter budget. "
                                                 "Start with `loraclf recipes`.", epilog=OVERRIDES)
    parser.add_argument("--version", action="version", version=f"loraclf {__version__}")
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (_add_train, _add_recipes, _add_budget, _add_plan, _add_evaluate, _add_predict, _add_report,
                _add_search, _add_serve, _add_export, _add_doctor):
        # SUPPRESS: a command's own default must not undo `loraclf --verbose COMMAND`.
        add(commands).add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    return parser


def _add_train(commands) -> argparse.ArgumentParser:
    train = commands.add_parser("train", help="fine-tune with LoRA; writes a run folder", epilog=OVERRIDES)
    train.add_argument("--config", help=CONFIG_HELP)
    train.add_argument("--resume", metavar="RUN_DIR",
                       help="continue an interrupted run from its latest checkpoint, with its own config")
    train.add_argument("--output-dir", help="run folder (default: runs/<config>-<time>)")
    train.add_argument("--overwrite", action="store_true", help="reuse a non-empty run folder")
    train.add_argument("--allow-pickle", action="store_true", help=PICKLE_HELP)
    return train


def _add_recipes(commands) -> argparse.ArgumentParser:
    recipes = commands.add_parser("recipes", help="the recipes that come with loraclf: list them, or show one",
                                  epilog="`loraclf recipes show NAME > mine.yaml`, edit it, then "
                                         "`loraclf train --config mine.yaml`.")
    recipes.add_argument("action", nargs="?", default="list", choices=["list", "show"],
                         help="list (default): one line each; show NAME: print a recipe")
    recipes.add_argument("name", nargs="?", help="the recipe to show")
    return recipes


def _add_budget(commands) -> argparse.ArgumentParser:
    budget = commands.add_parser("budget", help="exact trainable parameters, without weights", epilog=OVERRIDES)
    budget.add_argument("--config", required=True, help=CONFIG_HELP)
    budget.add_argument("--json", action="store_true", help="print one JSON object")
    budget.add_argument("--allow-pickle", action="store_true", help=PICKLE_HELP)
    return budget


def _add_plan(commands) -> argparse.ArgumentParser:
    plan = commands.add_parser("plan", help="adapter configurations that fit a parameter budget, best first")
    plan.add_argument("--config", help=CONFIG_HELP + " whose model and data to plan for (default: built-in defaults)")
    plan.add_argument("--budget", type=int, help="trainable-parameter budget (default: the config's)")
    plan.add_argument("--top", type=int, default=15, help="how many to print (default 15)")
    plan.add_argument("--json", action="store_true", help="one JSON object per configuration")
    plan.add_argument("--allow-pickle", action="store_true", help=PICKLE_HELP)
    return plan


def _add_long_texts(command: argparse.ArgumentParser) -> argparse.ArgumentParser:
    command.add_argument("--long-texts", choices=["truncate", "windows"],
                         help="texts longer than max_length tokens: truncate, or read as overlapping windows whose "
                              "logits are averaged (default: the run's data.long_texts)")
    command.add_argument("--window-stride", type=int, help="tokens consecutive windows share (default: the run's "
                                                           "data.window_stride)")
    return command


def _add_inference_options(command: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """What evaluate and predict share: how the model runs and what it may read."""
    command.add_argument("--delimiter", help="CSV field delimiter (default: the run's data.delimiter, else a tab for "
                                             ".tsv, else the one of , ; tab | that splits the header into columns)")
    command.add_argument("--encoding", help="text encoding of the input, e.g. latin-1 (default: the run's "
                                            "data.encoding, else UTF-8)")
    command.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default 32)")
    _add_precision(command)
    command.add_argument("--allow-pickle", action="store_true", help=PICKLE_HELP)
    command.add_argument("--unquantized", action="store_true", help=UNQUANTIZED_HELP)
    return _add_long_texts(command)


def _add_precision(command: argparse.ArgumentParser) -> None:
    command.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"], help=PRECISION_HELP)
    command.add_argument("--int8", action="store_true", help=INT8_HELP)


def _add_evaluate(commands) -> argparse.ArgumentParser:
    evaluate = commands.add_parser("evaluate", help="metrics of a run on labelled files, each on its own")
    evaluate.add_argument("run_dir", help=FOLDER_HELP)
    evaluate.add_argument("--data", "--input", dest="data", required=True, action="append",
                          help="labelled file (CSV, JSONL, Parquet, pickle); repeat to score several sets")
    evaluate.add_argument("--output", help="metrics JSON, with one --data (default: RUN_DIR/eval_<data>.json); "
                                           "a PNG goes beside")
    evaluate.add_argument("--text-column", help="column holding the texts (default: the run's)")
    evaluate.add_argument("--on-bad-row", default="error", choices=["error", "skip"],
                          help="a row without a usable text or label: error (default) stops before the model loads; "
                               "skip drops it (the result counts and lists the dropped rows)")
    return _add_inference_options(evaluate)


def _add_predict(commands) -> argparse.ArgumentParser:
    predict = commands.add_parser("predict", help="labels and probabilities for texts")
    predict.add_argument("run_dir", help=FOLDER_HELP)
    predict.add_argument("texts", nargs="*", help="texts to classify (else --input, else stdin lines)")
    predict.add_argument("--input", help="file of texts of any size (CSV, JSONL, Parquet; JSON and pickle are read "
                                         "whole), predicted shard by shard")
    predict.add_argument("--output", help=".csv, .jsonl or .parquet, written when complete (default: CSV on stdout)")
    predict.add_argument("--submission", action="store_true", help="write the competition format ID,Label")
    predict.add_argument("--text-column", help="column holding the texts (default: the run's)")
    predict.add_argument("--id-column", help="input column copied to the output's first column (default: id, where "
                                             "the input has one)")
    predict.add_argument("--on-bad-row", default="error", choices=["error", "skip"],
                         help="a row without a usable text: error (default) stops before anything is written; skip "
                              "answers it with an empty prediction and an error column")
    predict.add_argument("--resume", action="store_true", help="continue an interrupted --output from its last "
                                                               "finished shard (OUTPUT.partial)")
    predict.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    predict.add_argument("--shard-rows", type=int, default=10_000,
                         help="rows read, predicted and kept at a time (default 10,000): memory follows it")
    predict.add_argument("--engine", default="local", choices=["local", "ray"],
                         help="local (default), or ray: shards on Ray Data actors, one model each")
    predict.add_argument("--ray-address", help="a running Ray cluster (default: start one on this machine)")
    predict.add_argument("--ray-actors", type=int, help="Ray actors, one loaded model each (default: one per CPU)")
    return _add_inference_options(predict)


def _add_report(commands) -> argparse.ArgumentParser:
    report = commands.add_parser("report", help="write the run's report.html (curves, errors, parameters)")
    report.add_argument("run_dir", help="a run folder")
    report.add_argument("--output", help="HTML file (default: RUN_DIR/report.html)")
    return report


def _add_search(commands) -> argparse.ArgumentParser:
    search = commands.add_parser("search", help="hyperparameter search under the budget (Optuna)")
    search.add_argument("--config", required=True, help=CONFIG_HELP + "; its search: section is the space")
    search.add_argument("--trials", type=int, required=True, help="complete or pruned trials the study should hold")
    search.add_argument("--study-dir", required=True, help="folder for the study, its trials and its results")
    search.add_argument("--storage", help="Optuna storage URL (default: sqlite in the study folder; "
                                          "postgresql://... to share a study between machines)")
    search.add_argument("--workers", type=int, default=1, help="processes on this machine (default 1)")
    search.add_argument("--timeout", type=float, help="minutes after which no new trial starts (this run)")
    search.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    search.add_argument("--allow-pickle", action="store_true", help=PICKLE_HELP)
    return search


def _add_serve(commands) -> argparse.ArgumentParser:
    serve = commands.add_parser("serve", help="an HTTP service: POST /predict, GET /health, /info, /")
    serve.add_argument("run_dir", help=FOLDER_HELP)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    _add_precision(serve)
    return _add_long_texts(serve)


def _add_export(commands) -> argparse.ArgumentParser:
    export = commands.add_parser("export", help="a run as a merged transformers folder or an ONNX graph")
    export.add_argument("run_dir", help="a run folder")
    export.add_argument("--format", choices=["merged", "onnx"],
                        help="merged: adapter folded into the weights, loads without peft; onnx: an ONNX graph")
    export.add_argument("--int8", action="store_true",
                        help="onnx only: int8 weights and int8 compute with per-row scales, so a text's answer "
                             "does not depend on its batch")
    export.add_argument("--output", help="export folder")
    export.add_argument("--overwrite", action="store_true", help="replace a non-empty export folder")
    export.add_argument("--start-up", action="store_true",
                        help="write the run as ONNX into its own folder (RUN/onnx): evaluate, predict and serve of "
                             "the run then run it on the CPU in fp32 (onnxruntime, no torch: `loraclf predict RUN` "
                             "starts in about a second), while it matches the run's adapter")
    return export


def _add_doctor(commands) -> argparse.ArgumentParser:
    doctor = commands.add_parser("doctor", help="this machine, what loraclf uses on it, measured peaks, expected rates "
                                                "(paste it into a bug report)")
    doctor.add_argument("--json", action="store_true", help="print one JSON object")
    return doctor


def _config(args, overrides):
    from loraclf.config.loading import load_config, parse_overrides

    pairs = parse_overrides(overrides)
    if getattr(args, "allow_pickle", False):
        pairs.append(("data.allow_pickle", "true"))
    return load_config(args.config, pairs)


def _label_names(config) -> list[str]:
    from loraclf.data.labels import label_names_of

    return label_names_of(config.data)


def cmd_train(args, overrides) -> None:
    from loraclf.model.hub import require_model
    from loraclf.rundir.readers import read_config

    if args.resume:
        if args.config or args.output_dir or args.overwrite or overrides:
            raise UserError("train --resume RUN_DIR continues with the run's own config and folder; "
                            "drop --config, --output-dir, --overwrite and overrides")
        config, output = read_config(args.resume), args.resume
    elif not args.config:
        from loraclf.config.recipes import names

        raise UserError(f"train: give --config RECIPE, a shipped one ({', '.join(names())}) or a YAML file "
                        "(or --resume RUN_DIR)")
    else:
        config = _config(args, overrides)
        output = args.output_dir or f"runs/{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    require_model(config.model.name_or_path)
    from loraclf.training.recipe import train  # torch and PEFT load only once the config checked out

    # The run's log lines go to stdout; progress (a bar, or a line per train record) and errors to stderr, so
    # a bad input's stderr is its one line.
    train(config, output, overwrite=args.overwrite, resume=bool(args.resume), command=args.command_line)


def cmd_recipes(args, overrides) -> None:
    from loraclf.config import recipes

    _no_overrides(overrides)
    if args.action == "show":
        if not args.name:
            raise UserError(f"recipes show: name a recipe ({', '.join(recipes.names())})")
        sys.stdout.write(recipes.show(args.name))
        return
    if args.name:
        raise UserError(f"recipes: unexpected {args.name!r}; `loraclf recipes show {args.name}` prints it")
    for name in recipes.names():
        print(recipes.describe(name))
    print("\nloraclf recipes show NAME prints one; loraclf train --config NAME trains it.")


def cmd_budget(args, overrides) -> None:
    from loraclf.model import accounting

    config = _config(args, overrides)
    breakdown = accounting.estimate(config, _label_names(config))
    if args.json:
        print(json.dumps(breakdown.to_dict() | {"within_budget": breakdown.over_by <= 0}))
    else:
        print(breakdown.describe())
        print("within budget" if breakdown.over_by <= 0 else f"OVER budget by {breakdown.over_by:,}")


def cmd_plan(args, overrides) -> None:
    from loraclf.config.loading import load_config, parse_overrides
    from loraclf.config.schema import AG_NEWS_LABELS, Config
    from loraclf.model.plan import candidates, exact

    config = _config(args, overrides) if args.config else load_config(tree=Config().to_dict(),
                                                                       overrides=parse_overrides(overrides))
    if config.data.label_names or config.data.dataset != "fancyzhx/ag_news" or config.data.train_file:
        labels = _label_names(config)
    else:
        labels = list(AG_NEWS_LABELS)  # the hub's AG News, without downloading it
    limit = args.budget if args.budget is not None else config.budget.max_trainable
    if limit < 1 or args.top < 1:
        raise UserError("plan: --budget and --top must be positive")
    found = candidates(config, labels, limit)
    if not found:
        raise UserError(f"plan: no enumerated configuration has fewer than {limit:,} trainable parameters")
    shown = found[: args.top]
    if not args.json:
        print(f"{len(found):,} configurations under {limit:,} trainable parameters; the top {len(shown)} "
              "(most adapter parameters first, then the smaller head), each re-counted exactly:")
    for rank, candidate in enumerate(shown, 1):
        counted = exact(config, candidate, labels)
        assert (counted.lora, counted.head) == (candidate.adapter, candidate.head_params), (candidate, counted)
        if args.json:
            print(json.dumps({"rank": rank, "trainable": counted.trainable, "adapter": counted.lora,
                              "head": counted.head, "overrides": candidate.overrides(config)}))
        else:
            print(f"{rank:>3}. {counted.trainable:>10,} = adapter {counted.lora:>9,} + head {counted.head:>7,}  "
                  + " ".join(candidate.overrides(config)))


def cmd_evaluate(args, overrides) -> None:
    from loraclf.inference.inputs import labelled_files
    from loraclf.inference.manifest import describe, require_base, with_long_texts

    _no_overrides(overrides)
    about = with_long_texts(describe(args.run_dir), args.long_texts, args.window_stride)
    require_base(about)
    inputs = labelled_files(about, args.data, args.output, args.allow_pickle, args.on_bad_row, args.delimiter,
                            args.encoding, args.text_column)
    from loraclf.data.encoding import cut_note
    from loraclf.inference.evaluate import evaluate  # torch and PEFT load only once the files checked out

    results = evaluate(about, inputs, args.output, args.batch_size, args.precision, not args.unquantized, _note,
                       args.int8)
    width = max(len(r["data"]) for r in results)
    print(f"{'data':<{width}}  {'items':>7}  accuracy  macro-F1")
    for r in results:
        print(f"{r['data']:<{width}}  {r['count']:>7,}  {r['accuracy']:>8.4f}  {r['macro_f1']:>8.4f}")
    print("wrote " + ", ".join(r["written"] for r in results))
    for r in results:
        note = cut_note(r["texts_cut"], r["count"], about.max_length, about.long_texts)
        if note:
            print(f"{r['data']}{note}", file=sys.stderr)
        if r["bad_rows"]:
            count = r["bad_rows"]["count"]
            print(f"{r['data']}: skipped {count:,} bad row{'s' * (count != 1)} (--on-bad-row skip); the first: "
                  f"{r['bad_rows']['first'][0]}", file=sys.stderr)


def cmd_predict(args, overrides) -> None:
    from loraclf.inference.manifest import describe, require_base, with_long_texts

    _no_overrides(overrides)
    if args.input and args.texts:
        raise UserError("predict: give texts as arguments or --input FILE, not both")
    about = with_long_texts(describe(args.run_dir), args.long_texts, args.window_stride)
    require_base(about)
    if args.input:
        _predict_file(args, about)
    else:
        _predict_texts(args, about)


def _predict_file(args, about) -> None:
    """A file of any size, shard by shard: everything is checked (every row, under --on-bad-row error) before the
    model loads; the output appears when complete."""
    import importlib.util

    from loraclf.inference import corpus, engines
    from loraclf.inference.manifest import load_options

    if args.engine == "ray" and importlib.util.find_spec("ray") is None:
        raise UserError("predict --engine ray: needs ray (pip install 'loraclf[ray]')")
    job = corpus.FileJob(Path(args.input), Path(args.output) if args.output else None, args.text_column,
                         args.id_column, args.on_bad_row, args.shard_rows, args.batch_size, args.submission,
                         args.allow_pickle, args.delimiter, args.encoding)
    options = load_options(about, args.precision, not args.unquantized, int8=args.int8)
    planned = corpus.plan(job, about, options, args.resume, args.overwrite)

    from loraclf.inference.classifier import Classifier  # torch and PEFT load only once the input checked out

    try:
        if args.engine == "local":
            clf = Classifier.load(about.path, **options)
            _note(clf.runs_in)
            predict = engines.local_engine(clf, args.batch_size)
        else:
            predict = engines.engine(args.engine, args.batch_size, Classifier.load, about.path, options,
                                     args.ray_address, args.ray_actors)
        summary = corpus.run(planned, predict)
    except KeyboardInterrupt:
        if planned.partial is not None:
            print(f"loraclf: the finished shards are kept in {planned.partial}; the same command with --resume "
                  "continues", file=sys.stderr)
        raise
    bad = f"; {summary['bad_rows']:,} bad rows answered with an error" if summary["bad_rows"] else ""
    resumed = f" (resumed at row {summary['resumed_from_row']:,})" if summary["resumed_from_row"] else ""
    print(f"wrote {summary['rows']:,} predictions to {summary['output']}{resumed}{bad}; {summary['texts_per_s']:,} "
          f"texts/s" + (f"; {summary['note']}" if summary["note"] else ""), file=sys.stderr)


def _predict_texts(args, about) -> None:
    """Texts given as arguments or on stdin, predicted together."""
    from loraclf.data.sources import check_texts
    from loraclf.data.tables import Table
    from loraclf.inference.outputs import layout_for, render, write_predictions

    for flag in ("resume", "overwrite", "id_column"):
        if getattr(args, flag):
            raise UserError(f"predict --{flag.replace('_', '-')}: applies to --input FILE")
    layout = layout_for(Path(args.output) if args.output else None, about.labels, args.submission,
                        about.multi_label)
    if about.pairs:
        raise UserError(f"predict: this model classifies text pairs; give --input FILE with columns "
                        f"{about.schema.text!r} and {about.schema.pair!r}")
    if not args.texts and sys.stdin.isatty():
        raise UserError("predict: give texts as arguments, --input FILE, or texts on stdin, one per line")
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    check_texts(Table("arguments" if args.texts else "stdin", texts, None))
    from loraclf.inference.classifier import Classifier  # torch and PEFT load only once the input checked out

    clf = Classifier.load(args.run_dir, precision=args.precision, quantized=not args.unquantized,
                          long_texts=about.long_texts, window_stride=about.window_stride, int8=args.int8)
    _note(clf.runs_in)
    probs = clf.predict_proba(texts, args.batch_size)
    if args.output:
        write_predictions(Path(args.output), layout, probs, clf.decide(probs))
        print(f"wrote {len(texts):,} predictions to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(render(layout, probs, clf.decide(probs)))


def cmd_report(args, overrides) -> None:
    from loraclf.rundir.report import write

    _no_overrides(overrides)
    print(f"wrote {write(args.run_dir, args.output)}")


def cmd_search(args, overrides) -> None:
    from loraclf.model.hub import require_model

    config = _config(args, overrides)
    require_model(config.model.name_or_path)
    from loraclf.tuning.search import run_worker, search  # torch and Optuna load only once the config checked out

    if args.worker_index:  # a child started by --workers K: one worker, no children of its own
        run_worker(config, args.trials, Path(args.study_dir), args.storage, args.worker_index,
                   timeout_min=args.timeout)
        return
    passed = ["--config", args.config, "--trials", str(args.trials), "--study-dir", args.study_dir,
              *(["--storage", args.storage] if args.storage else []),
              *(["--timeout", str(args.timeout)] if args.timeout else []),
              *(["--allow-pickle"] if args.allow_pickle else []), *overrides]
    search(config, args.trials, args.study_dir, args.storage, args.workers, passed, timeout_min=args.timeout)


def cmd_serve(args, overrides) -> None:
    """Limits come from the run's config (`serve:`; defaults for exports), then --serve.KEY VALUE."""
    import importlib.util

    import yaml

    from loraclf.config.loading import load_config, parse_overrides
    from loraclf.inference.manifest import MANIFEST, describe, require_base
    from loraclf.rundir import layout

    for module in ("fastapi", "uvicorn", "fastapi_offline"):
        if importlib.util.find_spec(module) is None:
            raise UserError(f"serve: needs {module} (pip install 'loraclf[serve]')")
    pairs = parse_overrides(overrides)
    others = [key for key, _ in pairs if not key.startswith("serve.")]
    if others:
        raise UserError(f"serve: only --serve.KEY settings apply here, not {', '.join('--' + k for k in others)}")
    folder = Path(args.run_dir)
    tree = None
    if not (folder / MANIFEST).is_file():
        layout.check_folder(folder, (layout.CONFIG, layout.ADAPTER), "a finished loraclf training run or an export")
        tree = yaml.safe_load((folder / layout.CONFIG).read_text(encoding="utf-8"))
    limits = load_config(tree=tree, overrides=pairs).serve
    require_base(describe(folder))
    from loraclf.deploy.serve import serve  # torch and PEFT load only once the folder and settings checked out

    serve(args.run_dir, args.host, args.port, limits, long_texts=args.long_texts, window_stride=args.window_stride,
          precision=args.precision, int8=args.int8)


def cmd_export(args, overrides) -> None:
    from loraclf.deploy.export import export, export_start_up

    _no_overrides(overrides)
    if args.start_up:
        if args.format or args.output or args.int8:
            raise UserError("export --start-up: writes RUN/onnx (ONNX, fp32); give no --format, --output or --int8")
        export_start_up(args.run_dir)
        return
    if not (args.format and args.output):
        raise UserError("export: give --format and --output (or --start-up)")
    export(args.run_dir, args.format, args.output, int8=args.int8, overwrite=args.overwrite)


def cmd_doctor(args, overrides) -> None:
    from loraclf.doctor import render, report

    _no_overrides(overrides)
    found = report()
    print(json.dumps(found) if args.json else render(found), end="\n" if args.json else "")


def _note(line: str) -> None:
    print(line, file=sys.stderr)


def _no_overrides(overrides: list[str]) -> None:
    if overrides:
        raise UserError(f"unexpected arguments: {' '.join(overrides)}")


COMMANDS = {"train": cmd_train, "recipes": cmd_recipes, "budget": cmd_budget, "plan": cmd_plan, "evaluate": cmd_evaluate,
            "predict": cmd_predict, "export": cmd_export, "report": cmd_report,
            "serve": cmd_serve, "search": cmd_search, "doctor": cmd_doctor}


class _DropMessages(logging.Filter):
    def __init__(self, *starts: str):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


def _quiet() -> None:
    """Hide library chatter that says nothing wrong (`--verbose` keeps it), set before those libraries import:
    they read these settings then, so a command stopped by a bad input never waits for them to import."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    # transformers' and the hub's log levels; their weight loading/saving bars, noise between our own lines.
    for name, value in (("TRANSFORMERS_VERBOSITY", "error"), ("HF_HUB_VERBOSITY", "error"),
                        ("HF_HUB_DISABLE_PROGRESS_BARS", "1")):
        os.environ.setdefault(name, value)
    if "transformers" in sys.modules:  # imported already (main called in a Python that uses it)
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import logging as hub_logging

        hub_logging.set_verbosity_error()  # its retry chatter would bury our one-line error
    # PEFT imports bitsandbytes where installed. Its 8-bit matmul logs on every call that fp32/bf16 inputs become
    # fp16 (expected here); on import its CPU backend logs that an optional kernel could not be downloaded.
    logging.getLogger("bitsandbytes.autograd._functions").addFilter(_DropMessages("MatMul8bitLt: inputs will be cast"))
    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_DropMessages("Failed to load CPU gemm_4bit_forward"))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args, overrides = _parser().parse_known_args(argv)
        args.command_line = shlex.join(["loraclf", *argv])  # what a run records as the command that made it
        if not args.verbose:
            _quiet()
        COMMANDS[args.command](args, overrides)
    except UserError as exc:
        print(f"loraclf: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("loraclf: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
