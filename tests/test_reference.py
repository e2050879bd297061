"""docs/config.md is generated from the config dataclasses and cannot go stale."""

import dataclasses
import typing
from pathlib import Path

from loraclf.config import reference
from loraclf.config.schema import Config

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def test_docs_config_md_is_what_the_code_generates():
    assert DOC.read_text(encoding="utf-8") == reference.markdown(), \
        "docs/config.md is stale: python -m loraclf.config.reference > docs/config.md"


def test_every_key_is_in_the_reference_with_a_meaning():
    text = DOC.read_text(encoding="utf-8")
    for section in dataclasses.fields(Config):
        cls = typing.get_type_hints(Config)[section.name]
        comments = reference.field_comments(cls)
        for field in dataclasses.fields(cls):
            assert f"| `{section.name}.{field.name}` |" in text, field.name
            assert comments.get(field.name), f"{section.name}.{field.name} has no comment in config/schema.py"
