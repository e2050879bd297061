"""The config reference (docs/config.md), generated from the dataclasses in config/schema.py.

Each key's description is the comment written above it in schema.py, so the
reference and the code cannot drift apart: tests/test_reference.py fails when
docs/config.md differs from what this module generates. Regenerate with

    python -m loraclf.config.reference > docs/config.md
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing

from loraclf.config import schema
from loraclf.config.schema import Config

FIELD = re.compile(r"^\s{4}(\w+):\s")


def field_comments(cls: type) -> dict[str, str]:
    """The comment lines right above each field of a dataclass, joined into one sentence."""
    comments: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
        elif (match := FIELD.match(line)) and "(" not in line.split(":")[0]:
            comments[match.group(1)] = " ".join(pending)
            pending = []
        else:
            pending = []
    return comments


def _default(field: dataclasses.Field) -> str:
    value = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return f"`{value}`" if value != "" else '`""`'


def _type(hint: typing.Any) -> str:
    return re.sub(r"\btyping\.", "", str(hint)).replace("NoneType", "None").replace("<class '", "").replace("'>", "")


def markdown() -> str:
    lines = ["# Config reference", "",
             "Generated from `src/loraclf/config/schema.py` by `python -m loraclf.config.reference > docs/config.md`; "
             "`tests/test_reference.py` fails when this page and the code differ.", "",
             "A recipe is YAML with these sections. Any key can be overridden on the command line "
             "(`--section.key value`) or from Python (`loraclf.load_config(path, overrides={\"section.key\": value})`).",
             "Unknown keys and wrong types are errors that name the key; Trainer and PEFT names "
             "(`learning_rate`, `lora_alpha`, ...) are pointed to loraclf's.", ""]
    for section in dataclasses.fields(Config):
        cls = typing.get_type_hints(Config)[section.name]
        hints = typing.get_type_hints(cls, vars(schema))
        comments = field_comments(cls)
        doc = inspect.getdoc(cls)
        lines += [f"## `{section.name}`", ""]
        if doc and not doc.startswith(cls.__name__ + "("):
            lines += [doc, ""]
        lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for field in dataclasses.fields(cls):
            cells = [f"`{section.name}.{field.name}`", f"`{_type(hints[field.name])}`", _default(field),
                     comments.get(field.name, "")]
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(), end="")
