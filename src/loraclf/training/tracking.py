"""Where a run's numbers go besides metrics.jsonl: TensorBoard and MLflow (`train.log_to`).

metrics.jsonl is always written (resume and the report read it); `tensorboard`
writes event files to RUN_DIR/tensorboard/, `mlflow` logs params and metrics to
`train.mlflow_uri` (default: a file store in RUN_DIR/mlruns).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from loraclf.errors import UserError
from loraclf.rundir import layout

KINDS = ("jsonl", "tensorboard", "mlflow")
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}


def check_available(kinds: list[str]) -> None:
    for kind in kinds:
        package = PACKAGES.get(kind)
        if package and importlib.util.find_spec(package) is None:
            raise UserError(f"config train.log_to {kind}: needs {package} (pip install 'loraclf[tracking]')")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class Trackers:
    """The optional trackers of one run, fed the same records as metrics.jsonl."""

    def __init__(self, kinds: list[str], run_dir: Path, config: dict[str, Any], mlflow_uri: str | None):
        self.tensorboard = self.mlflow = None
        if "tensorboard" in kinds:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(log_dir=str(run_dir / layout.TENSORBOARD))
        if "mlflow" in kinds:
            import mlflow

            uri = mlflow_uri or (run_dir / layout.MLRUNS).resolve().as_uri()
            if uri.startswith("file:"):
                # MLflow 3 keeps the file store only on request; it is the one that needs no server or database.
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            mlflow.set_tracking_uri(uri)
            self.mlflow = mlflow
            mlflow.start_run(run_name=run_dir.resolve().name)
            mlflow.log_params({k: str(v)[:500] for k, v in _flatten(config).items()})

    def log(self, record: dict[str, Any]) -> None:
        step, event = record["step"], record["event"]
        values = {k: float(v) for k, v in record.items()
                  if k not in ("event", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.tensorboard is not None:
            for key, value in values.items():
                self.tensorboard.add_scalar(f"{event}/{key}", value, step)
        if self.mlflow is not None:
            self.mlflow.log_metrics({f"{event}_{key}": value for key, value in values.items()}, step=step)

    def close(self, summary: dict[str, Any] | None = None, failed: bool = False) -> None:
        """Flush and end the trackers; a second call does nothing.

        `failed`: the run stopped early (an error, a pruned search trial); MLflow marks it FAILED, so
        that the next run in this process starts its own MLflow run instead of finding this one active.
        """
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.mlflow is not None:
            if summary and summary.get("test"):
                self.mlflow.log_metrics({f"test_{k}": float(v) for k, v in summary["test"].items()})
            self.mlflow.end_run(status="FAILED" if failed else "FINISHED")
        self.tensorboard = self.mlflow = None
