"""loraclf: LoRA fine-tuning of pretrained encoders for text classification under a parameter budget.

    import loraclf
    config = loraclf.load_config("configs/quickstart.yaml", overrides={"train.epochs": 1})
    summary = loraclf.train(config, output_dir="runs/api")
    clf = loraclf.Classifier.load("runs/api")
    clf.predict(["Stocks rally as oil falls"])

The names load lazily: `import loraclf` stays fast, and torch loads on first use.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["Classifier", "Config", "UserError", "budget", "load_config", "train"]

_WHERE = {"Classifier": "loraclf.inference.classifier", "Config": "loraclf.config.schema",
          "UserError": "loraclf.errors", "budget": "loraclf.api", "load_config": "loraclf.api", "train": "loraclf.api"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'loraclf' has no attribute {name!r}")
