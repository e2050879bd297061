"""A config from the defaults, a YAML file and `--section.key value` overrides, in that order.

Unknown keys and values of the wrong type are errors that name the key and where it came from;
Trainer and PEFT names (`learning_rate`, `lora_alpha`, ...) are pointed to loraclf's.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

import yaml

from loraclf.config import recipes
from loraclf.config.schema import Config
from loraclf.errors import UserError


def _coerce(value: Any, kind: Any, key: str, origin: str) -> Any:
    """Check `value` against the annotation `kind`, converting only where lossless."""
    where = f"config {key} (from {origin})"
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (Union, types.UnionType):
        # YAML reads a bare `off` as false: for an optional setting it means unset.
        if value is None or value is False or (isinstance(value, str) and value.lower() in ("null", "none", "off")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        for kind in inner[:-1]:  # `list[float] | str`: the first type the value fits
            try:
                return _coerce(value, kind, key, origin)
            except UserError:
                pass
        return _coerce(value, inner[-1], key, origin)
    if typing.get_origin(kind) is dict:
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                pass
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping like {{name: value}}, got {value!r}")
        return {str(k): _coerce(v, args[1], key, origin) for k, v in value.items()}
    if typing.get_origin(kind) is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]  # `--lora.layers 11` reads as the number 11: a one-item list
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], key, origin) for v in value]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise UserError(f"{where}: expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            number = float(str(value).replace("_", ""))
        except ValueError:
            raise UserError(f"{where}: expected an integer, got {value!r}") from None
        if number != int(number):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        return int(number)
    if kind is float:
        if isinstance(value, bool):
            raise UserError(f"{where}: expected a number, got {value!r}")
        try:
            return float(str(value).replace("_", "")) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: expected a number, got {value!r}") from None
    if kind is str:
        if isinstance(value, (dict, list)) or value is None:
            raise UserError(f"{where}: expected a string, got {value!r}")
        return str(value)
    raise TypeError(f"unsupported annotation {kind!r} for {key}")


# The names users bring from the HF Trainer (TrainingArguments) and PEFT (LoraConfig), and loraclf's keys for them.
ALIASES = {
    "learning_rate": "train.lr", "num_train_epochs": "train.epochs", "per_device_train_batch_size": "train.batch_size",
    "per_device_eval_batch_size": "train.eval_batch_size", "eval_steps": "train.eval_every",
    "save_steps": "train.checkpoint_every", "save_total_limit": "train.keep_checkpoints",
    "logging_steps": "train.log_every", "lr_scheduler_type": "train.scheduler",
    "metric_for_best_model": "train.metric_for_best", "lora_alpha": "lora.alpha", "lora_dropout": "lora.dropout",
    "lora_r": "lora.r", "layers_to_transform": "lora.layers", "max_seq_length": "data.max_length",
    "bf16": "train.precision", "fp16": "train.precision", "warmup_steps": "train.warmup_ratio (a share of all steps)",
}


def alias_hint(name: str) -> str | None:
    """`; loraclf calls it 'train.lr'` for a Trainer or PEFT name, else None."""
    target = ALIASES.get(name.split(".")[-1])
    return f"; loraclf calls it '{target}'" if target else None


def _unknown(key: str, known: list[str], origin: str) -> UserError:
    close = difflib.get_close_matches(key.split(".")[-1], known, n=1)
    hint = alias_hint(key) or (f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}")
    return UserError(f"unknown config key {key!r} (from {origin}){hint}")


@functools.cache
def _hints(section: type) -> dict[str, Any]:
    # Resolving the string annotations is most of a config's load time: plan and search load hundreds.
    return typing.get_type_hints(section)


def _apply(config: Config, key: str, value: Any, origin: str) -> None:
    parts = key.split(".")
    sections = [f.name for f in dataclasses.fields(Config)]
    if len(parts) != 2 or parts[0] not in sections:
        raise _unknown(key, sections, origin)
    section = getattr(config, parts[0])
    hints = _hints(type(section))
    if parts[1] not in hints:
        raise _unknown(key, list(hints), origin)
    setattr(section, parts[1], _coerce(value, hints[parts[1]], key, origin))


def _flatten(tree: Any, origin: str) -> dict[str, Any]:
    if not isinstance(tree, dict):
        raise UserError(f"{origin}: expected a mapping of sections (model, data, lora, train, quantization, serve, search, budget)")
    flat: dict[str, Any] = {}
    for section, values in tree.items():
        if not isinstance(values, dict):
            raise UserError(f"{origin}: section {section!r} must be a mapping, got {values!r}")
        for key, value in values.items():
            flat[f"{section}.{key}"] = value
    return flat


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        shipped = f" (the shipped recipes: {', '.join(recipes.names())}; `loraclf recipes` lists them)"
        raise UserError(f"config file {path}: not found{shipped}" if not path.exists()
                        else f"config file {path}: not a file")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"config file {path}: not UTF-8 text (offset {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"config file {path}: not valid YAML{where} ({problem})") from None
    return tree or {}


def parse_overrides(args: list[str]) -> list[tuple[str, str]]:
    """Turn `--a.b value` and `--a.b=value` pairs into (key, raw value) pairs."""
    pairs = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or "." not in arg:
            hint = alias_hint(arg[2:].split("=")[0]) if arg.startswith("--") else None
            raise UserError(f"unexpected argument {arg!r}: overrides look like --section.key value{hint or ''}")
        if "=" in arg:
            key, raw = arg[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise UserError(f"override {arg} has no value")
            key, raw = arg[2:], args[i + 1]
            i += 2
        pairs.append((key, raw))
    return pairs


def _parse_raw(raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def load_config(
    path: str | Path | None = None,
    overrides: list[tuple[str, str]] | Mapping[str, Any] | None = None,
    tree: dict[str, Any] | None = None,
) -> Config:
    """Defaults, then the YAML file (a path, or a shipped recipe's name) or an already-read tree, then
    overrides; validated.

    `overrides`: {"train.epochs": 1, ...} with Python values, or the command line's
    (key, raw text) pairs, whose text is read as YAML (`--train.lr 3e-5`).
    A recipe's data.label_names name the classes of the recipe's own data: overrides that point it at other
    data (data.train_file or data.dataset) without naming classes too leave them to be read off that data.
    """
    config = Config()
    if path is not None:
        path = recipes.resolve(path)
        for key, value in _flatten(read_yaml(path), f"config file {path}").items():
            _apply(config, key, value, str(path))
    if tree is not None:
        for key, value in _flatten(tree, "config").items():
            _apply(config, key, value, "saved config")
    pairs = list(overrides.items()) if isinstance(overrides, Mapping) else \
        [(key, _parse_raw(raw)) for key, raw in overrides or []]
    source = (config.data.train_file, config.data.dataset)
    for key, value in pairs:
        _apply(config, key, value, f"overrides[{key!r}]" if isinstance(overrides, Mapping) else f"--{key}")
    overridden = {key for key, _ in pairs}
    if (config.data.train_file, config.data.dataset) != source and "data.label_names" not in overridden:
        config.data.label_names = None
    config.validate()
    return config


def save_config(config: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
