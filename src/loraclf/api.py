"""The Python API: what the command line does, as functions.

    import loraclf
    config = loraclf.load_config("configs/quickstart.yaml", overrides={"train.epochs": 1})
    summary = loraclf.train(config, output_dir="runs/api")   # the dict metrics.json holds
    clf = loraclf.Classifier.load("runs/api")                # a run folder or an export folder
    clf.predict(["Stocks rally as oil falls"])               # ['Business']
    loraclf.budget(config)                                   # trainable / lora / head / ... as a dict

Errors in what the caller gave (files, keys, values, budgets) raise
`loraclf.UserError` with the one-line message the command line prints.
`train` and `budget` import their stage when called, so `import loraclf` and `load_config` stay fast.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loraclf.config.loading import load_config as _load_config
from loraclf.config.schema import Config


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """A recipe: the defaults, then the YAML file at `path`, then `overrides` ({"section.key": value}); validated."""
    return _load_config(path, dict(overrides or {}))


def train(config: Config, output_dir: str | Path | None = None, overwrite: bool = False,
          resume: bool = False, command: str | None = None) -> dict[str, Any]:
    """Train `config` into the run folder `output_dir` (default runs/run-<time>); returns metrics.json's summary.

    With `resume`, `output_dir` is an interrupted run, continued from its latest checkpoint. `command`, if
    given, is recorded in versions.json and the model card as what made the run.
    """
    from loraclf.training.recipe import train as _train

    output = output_dir or f"runs/run-{time.strftime('%Y%m%d-%H%M%S')}"
    return _train(config, output, overwrite=overwrite, resume=resume, command=command)


def budget(config: Config) -> dict[str, Any]:
    """The exact trainable-parameter breakdown of `config`, counted without weights (meta device)."""
    from loraclf.data.labels import label_names_of
    from loraclf.model import accounting

    breakdown = accounting.estimate(config, label_names_of(config.data))
    return breakdown.to_dict() | {"within_budget": breakdown.over_by <= 0}
