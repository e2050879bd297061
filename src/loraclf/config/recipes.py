"""The recipes that come with loraclf: YAML files inside the package, found by name.

`--config quickstart` and `--config configs/quickstart.yaml` read the same file: in a checkout, `configs/` is a
link to this package's `recipes/` folder, so there is one copy of each recipe.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from loraclf.errors import UserError


def folder() -> Path:
    return Path(str(resources.files("loraclf.config") / "recipes"))


def names() -> list[str]:
    """The shipped recipes' names, sorted."""
    return sorted(path.stem for path in folder().glob("*.yaml"))


def resolve(config: str | Path) -> Path:
    """A recipe file: `config` as a path where that file exists, else the shipped recipe of that name."""
    path = Path(config)
    if path.is_file():
        return path
    name = path.name.removesuffix(".yaml").removesuffix(".yml")
    shipped = folder() / f"{name}.yaml"
    if path.exists() or not shipped.is_file() or (path.parent != Path(".") and path.parent.name != "configs"):
        return path  # read_yaml names what is wrong with it
    return shipped


def describe(name: str) -> str:
    """One line: the recipe's name, what it is for (its first comment line), its model and its data."""
    path = resolve(name)
    text = path.read_text(encoding="utf-8")
    tree = yaml.safe_load(text) or {}
    model = (tree.get("model") or {}).get("name_or_path", "FacebookAI/roberta-base")
    data = tree.get("data") or {}
    source = data.get("train_file") or data.get("dataset") or "fancyzhx/ag_news"
    first = text.splitlines()[0] if text.startswith("#") else ""
    purpose = first.lstrip("# ").strip().rstrip(".")
    return f"{name:<17} {purpose}\n{'':<17} model {model}; data {source}"


def show(name: str) -> str:
    """A recipe's text, to copy and edit."""
    if name not in names():
        raise UserError(f"recipes show: no recipe {name!r}; shipped: {', '.join(names())}")
    return (folder() / f"{name}.yaml").read_text(encoding="utf-8")
