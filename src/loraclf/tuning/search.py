"""Hyperparameter search under the budget (Optuna): budget first, pruning, resumable storage, several workers.

    STUDY_DIR/
      study.db            the Optuna study (SQLite), unless --storage names another database
      trials/trial-NNNN/  each trial's ordinary run folder
      best.yaml           the best trial's resolved config: loraclf train --config STUDY_DIR/best.yaml
      summary.md          one row per trial: state, parameters, validation and test accuracy, size
      history.png, importance.png, accuracy_vs_parameters.png

Every sampled configuration is counted exactly on the meta device before any
training; one over `budget.max_trainable` is marked failed with the reason
"over budget", costs no training, and does not count towards --trials. Trials
report validation accuracy at each evaluation and are pruned by the median or
Hyperband rule. Workers send heartbeats; a trial whose worker died is marked
failed by the next worker to start a trial, and the study goes on.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import yaml

from loraclf.config.loading import load_config
from loraclf.config.schema import Config
from loraclf.data.labels import label_names_of
from loraclf.data.splits import load_splits
from loraclf.errors import UserError
from loraclf.model import accounting
from loraclf.model.build import load_base_config, load_tokenizer
from loraclf.rundir import atomic, layout, readers
from loraclf.training.recipe import train

STUDY_NAME = "loraclf"
OVER_BUDGET = "over budget"


def _structure(config: Config, params: dict[str, Any], layer_count: int | None) -> Config:
    """`config` with the sampled parameters applied (a copy)."""
    trial = load_config(tree=config.to_dict())
    method = params["method"]
    trial.lora.method = "lora" if method == "dora" else method
    trial.lora.use_dora = method == "dora"
    trial.lora.use_rslora, trial.lora.plus_ratio, trial.lora.init, trial.lora.rank_pattern = False, 0.0, "default", None
    trial.lora.r = params.get("r", trial.lora.r)
    trial.lora.alpha = params.get("alpha_ratio", 1.0) * trial.lora.r
    trial.lora.target_modules = params["target_modules"].split(",")
    top_half = params["layers"] == "top_half" and layer_count and method != "ia3"
    trial.lora.layers = list(range(layer_count // 2, layer_count)) if top_half else None
    trial.model.head = params["head"]
    trial.model.pooling = params.get("pooling", trial.model.pooling)
    for key in ("lr", "warmup_ratio", "epochs", "batch_size", "weight_decay", "ema"):
        if key in params:
            setattr(trial.train, key, params[key])
    if "dropout" in params:
        trial.lora.dropout = params["dropout"]
    trial.validate()
    return trial


class Counter:
    """Exact, weights-free trainable counts, cached by the structural choices that determine them."""

    def __init__(self, config: Config, label_names: list[str]):
        self.config, self.label_names, self.cache = config, label_names, {}

        self.layer_count = getattr(load_base_config(config.model, label_names), "num_hidden_layers", None)

    def count(self, params: dict[str, Any]) -> accounting.Breakdown:
        key = tuple(params.get(k) for k in ("method", "r", "target_modules", "layers", "head"))
        if key not in self.cache:
            self.cache[key] = accounting.estimate(_structure(self.config, params, self.layer_count), self.label_names)
        return self.cache[key]

    def smallest(self) -> accounting.Breakdown:
        """The smallest configuration of the whole space (every structural combination counted)."""
        space = self.config.search
        combos = itertools.product(space.methods, space.r, space.target_modules, space.layers, space.heads)
        return min((self.count({"method": m, "target_modules": t, "layers": lay, "head": h}
                               | ({} if m == "ia3" else {"r": r})) for m, r, t, lay, h in combos),
                   key=lambda b: b.trainable)


def sample(trial, space) -> dict[str, Any]:
    params: dict[str, Any] = {"method": trial.suggest_categorical("method", space.methods)}
    if params["method"] != "ia3":
        params["r"] = trial.suggest_categorical("r", space.r)
        params["alpha_ratio"] = trial.suggest_categorical("alpha_ratio", space.alpha_ratio)
    params["target_modules"] = trial.suggest_categorical("target_modules", space.target_modules)
    params["layers"] = trial.suggest_categorical("layers", space.layers)
    params["head"] = trial.suggest_categorical("head", space.heads)
    if space.poolings:
        params["pooling"] = trial.suggest_categorical("pooling", space.poolings)
    params["lr"] = trial.suggest_float("lr", *space.lr, log=True)
    if params["method"] != "ia3":
        params["dropout"] = trial.suggest_float("dropout", *space.dropout)
    params["warmup_ratio"] = trial.suggest_float("warmup_ratio", *space.warmup_ratio)
    params["epochs"] = trial.suggest_int("epochs", *space.epochs)
    params["batch_size"] = trial.suggest_categorical("batch_size", space.batch_size)
    if space.weight_decay:
        params["weight_decay"] = trial.suggest_float("weight_decay", *space.weight_decay)
    if space.ema:
        params["ema"] = trial.suggest_categorical("ema", space.ema)
    return params


def _storage(url: str | None, study_dir: Path, space):
    import optuna

    url = url or f"sqlite:///{(study_dir / 'study.db').resolve()}"
    try:
        return optuna.storages.RDBStorage(url, heartbeat_interval=space.heartbeat_s, grace_period=space.grace_s,
                                          failed_trial_callback=None)
    except Exception as exc:  # a bad URL or an unreachable database: one line
        raise UserError(f"search --storage {url}: cannot open ({str(exc).splitlines()[0][:200]})") from None


def _pruner(space):
    import optuna

    if space.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    if space.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def tally(study) -> dict[str, Any]:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    rejected = [t for t in trials if t.user_attrs.get("rejected") == OVER_BUDGET]
    failed = [t for t in trials if t.state == TrialState.FAIL and t not in rejected]
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(done, key=lambda t: t.value) if done else None
    return {"complete": len(done), "pruned": sum(t.state == TrialState.PRUNED for t in trials),
            "rejected": len(rejected), "failed": len(failed), "running": sum(t.state == TrialState.RUNNING
                                                                            for t in trials),
            "best": best}


def progress_line(study) -> str:
    t = tally(study)
    best = f"best {t['best'].value:.4f} (trial {t['best'].number})" if t["best"] else "best -"
    return (f"trials: {t['complete']} complete, {t['pruned']} pruned, {t['rejected']} rejected over budget, "
            f"{t['failed']} failed; {best}")


def run_worker(config: Config, trials: int, study_dir: Path, storage_url: str | None, worker_index: int = 0,
               log=print, timeout_min: float | None = None) -> None:
    """Trials in this process until the study holds `trials` complete or pruned ones.

    With `timeout_min`, no trial starts after that many minutes (the one running finishes).
    """
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats
    space = config.search
    label_names = label_names_of(config.data)
    counter = Counter(config, label_names)
    smallest = counter.smallest()
    if smallest.trainable > config.budget.max_trainable:
        raise UserError(f"search: every configuration of the space is over budget; the smallest has "
                        f"{smallest.trainable:,} trainable parameters against budget.max_trainable "
                        f"{config.budget.max_trainable:,} (lower search.r, use fewer target modules or "
                        "search.heads linear)")
    # Check the data once here: a bad file fails before any trial starts.
    load_splits(config.data, load_tokenizer(config.model), lambda _: None)
    study = optuna.create_study(study_name=STUDY_NAME, storage=_storage(storage_url, study_dir, space),
                                direction="maximize", load_if_exists=True, pruner=_pruner(space),
                                sampler=optuna.samplers.TPESampler(seed=space.seed + worker_index))

    def objective(trial) -> float:
        params = sample(trial, space)
        parts = counter.count(params)
        trial.set_user_attr("trainable", parts.trainable)
        if parts.over_by > 0:
            trial.set_user_attr("rejected", OVER_BUDGET)
            raise OverBudget(f"{parts.trainable:,} trainable > {config.budget.max_trainable:,}")
        trial_config = _structure(config, params, counter.layer_count)
        trial_config.train.progress = False
        folder = study_dir / "trials" / f"trial-{trial.number:04d}"
        trial.set_user_attr("run_dir", str(folder))

        def report(record: dict[str, Any]) -> None:
            # Reported at the share of the data seen (hundredths of an epoch), not the optimizer step:
            # trials with other batch sizes are then compared at the same point of training.
            trial.report(record["val_accuracy"], round(100 * record["epoch"]))
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {record['step']}")

        summary = train(trial_config, folder, overwrite=True, log=lambda _: None, on_eval=report)
        if summary.get("test"):
            trial.set_user_attr("test_accuracy", summary["test"]["accuracy"])
        return summary["best"]["val_accuracy"]

    def after(study, trial) -> None:
        log(f"trial {trial.number} {trial.state.name.lower()}"
            + (f" ({trial.user_attrs['rejected']})" if trial.user_attrs.get("rejected") else "")
            + f" | {progress_line(study)}")

    done_states = (TrialState.COMPLETE, TrialState.PRUNED)
    if worker_index == 0 and not study.get_trials(deepcopy=False):
        start = recipe_params(config, counter.layer_count)
        if start is not None:
            study.enqueue_trial(start)  # the recipe as given is trial 0: the search starts from it
            log("trial 0 is the config's own recipe")
    if sum(t.state in done_states for t in study.get_trials(deepcopy=False)) < trials:
        study.optimize(objective, callbacks=[MaxTrialsCallback(trials, states=done_states), after],
                       catch=(OverBudget, UserError), gc_after_trial=True,
                       timeout=timeout_min * 60 if timeout_min else None)
    optuna.storages.fail_stale_trials(study)  # trials of workers that died, once their grace period is over
    write_outputs(study, config, study_dir)


def recipe_params(config: Config, layer_count: int | None) -> dict[str, Any] | None:
    """The config's own settings as a point of the search space, or None where they lie outside it."""
    space, lora, tc = config.search, config.lora, config.train
    if lora.use_rslora or lora.plus_ratio or lora.init != "default" or lora.rank_pattern:
        return None
    method = "dora" if lora.use_dora else lora.method
    layers = "all" if lora.layers is None else "top_half" if layer_count and \
        lora.layers == list(range(layer_count // 2, layer_count)) else None
    params = {"method": method, "target_modules": ",".join(lora.target_modules), "layers": layers,
              "head": config.model.head, "lr": tc.lr, "warmup_ratio": tc.warmup_ratio, "epochs": tc.epochs,
              "batch_size": tc.batch_size}
    if method != "ia3":
        params |= {"r": lora.r, "alpha_ratio": lora.alpha / lora.r, "dropout": lora.dropout}
    if space.poolings:
        params["pooling"] = config.model.pooling
    if space.weight_decay:
        params["weight_decay"] = tc.weight_decay
    if space.ema:
        params["ema"] = tc.ema
    choices = {"method": space.methods, "target_modules": space.target_modules, "layers": space.layers,
               "head": space.heads, "batch_size": space.batch_size, "r": space.r, "alpha_ratio": space.alpha_ratio,
               "pooling": space.poolings, "ema": space.ema}
    ranges = {"lr": space.lr, "warmup_ratio": space.warmup_ratio, "epochs": space.epochs, "dropout": space.dropout,
              "weight_decay": space.weight_decay}
    inside = all(params[k] in v for k, v in choices.items() if k in params) and \
        all(v[0] <= params[k] <= v[1] for k, v in ranges.items() if k in params)
    return params if inside else None


class OverBudget(Exception):
    pass


def search(config: Config, trials: int, study_dir: str | Path, storage_url: str | None = None, workers: int = 1,
           worker_args: list[str] | None = None, log=print, timeout_min: float | None = None) -> None:
    """Run the study with `workers` processes on this machine (this one and workers - 1 children)."""
    if trials < 1 or workers < 1:
        raise UserError("search: --trials and --workers must be at least 1")
    study_dir = Path(study_dir)
    layout.create(study_dir)
    children = []
    for index in range(1, workers):
        command = [sys.executable, "-m", "loraclf.cli", "search", *(worker_args or []), "--workers", "1",
                   "--worker-index", str(index)]
        children.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, env=os.environ))
        time.sleep(0.5)  # let the first create the study tables before the next opens them
    try:
        run_worker(config, trials, study_dir, storage_url, 0, log, timeout_min)
    finally:
        for child in children:
            child.wait()
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    study = optuna.load_study(study_name=STUDY_NAME, storage=_storage(storage_url, study_dir, config.search))
    write_outputs(study, config, study_dir)
    log(progress_line(study))
    log(f"study folder: {study_dir} (best config: {study_dir / 'best.yaml'})")


def write_outputs(study, config: Config, study_dir: Path) -> None:
    """best.yaml, summary.md and the plots, from the study as it stands."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    best = tally(study)["best"]
    if best is not None:
        best_config = readers.read_config(best.user_attrs["run_dir"])
        best_config.train.progress = True
        # Through a temporary file: another worker may be writing the same outputs.
        atomic.write_text(study_dir / "best.yaml", yaml.safe_dump(best_config.to_dict(), sort_keys=False))
    keys = sorted({k for t in trials for k in t.params})
    lines = [f"# Study {STUDY_NAME}: {progress_line(study)}", "",
             "| trial | state | val accuracy | test accuracy | trainable | " + " | ".join(keys) + " |",
             "|---" * (5 + len(keys)) + "|"]
    for t in trials:
        state = "rejected (over budget)" if t.user_attrs.get("rejected") else t.state.name.lower()
        value = f"{t.value:.4f}" if t.state == TrialState.COMPLETE and t.value is not None else (
            f"{max(t.intermediate_values.values()):.4f}" if t.intermediate_values else "")
        test = t.user_attrs.get("test_accuracy")
        cells = [str(t.number), state, value, f"{test:.4f}" if test is not None else "",
                 f"{t.user_attrs.get('trainable', 0):,}"]
        cells += [_fmt(t.params.get(k)) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    atomic.write_text(study_dir / "summary.md", "\n".join(lines) + "\n")
    _plots(study, study_dir)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _plots(study, study_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not done:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([t.number for t in done], [t.value for t in done], "o", label="trial")
    best_so_far = list(itertools.accumulate([t.value for t in done], max))
    ax.step([t.number for t in done], best_so_far, where="post", label="best so far")
    ax.set(xlabel="trial", ylabel="validation accuracy", title="optimisation history")
    ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, study_dir / "history.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter([t.user_attrs.get("trainable", 0) for t in done], [t.value for t in done])
    ax.set(xlabel="trainable parameters", ylabel="validation accuracy", title="accuracy against trainable parameters")
    ax.grid(alpha=0.3)
    _save(fig, study_dir / "accuracy_vs_parameters.png")

    if len(done) >= 3:
        import optuna

        try:
            importance = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError):  # too few distinct values to fit the importance model
            importance = {}
        if importance:
            fig, ax = plt.subplots(figsize=(7, 4))
            names = list(importance)[::-1]
            ax.barh(names, [importance[n] for n in names])
            ax.set(xlabel="importance (fANOVA)", title="parameter importances")
            fig.tight_layout()
            _save(fig, study_dir / "importance.png")


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    # A temporary name of its own: another worker may be saving the same plot.
    tmp = atomic.temp_file(path, suffix=".png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)

