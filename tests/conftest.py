"""Shared fixtures: tiny random models with the real roberta-base tokenizer from ../shared."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
ROBERTA = SHARED / "models" / "roberta-base"
AGNEWS_5K = SHARED / "data" / "agnews-5k" / "train.csv"
AGNEWS_CANONICAL = SHARED / "data" / "agnews-canonical-sample" / "train.csv"

needs_shared = pytest.mark.skipif(
    not ROBERTA.is_dir() or not AGNEWS_5K.is_file(),
    reason="needs ../shared (real roberta-base tokenizer/config and AG News samples) beside the checkout",
)


def tiny_roberta_config(**overrides):
    from transformers import RobertaConfig

    settings = dict(
        vocab_size=50265, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=514, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        type_vocab_size=1,
    )
    return RobertaConfig(**(settings | overrides))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A model folder (config + real tokenizer, no weights) for `model.init: random`."""
    if not ROBERTA.is_dir():
        pytest.skip(f"needs the roberta-base tokenizer in {ROBERTA}")
    folder = tmp_path_factory.mktemp("tiny-roberta")
    tiny_roberta_config().save_pretrained(folder)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(ROBERTA / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def tokenizer():
    if not ROBERTA.is_dir():
        pytest.skip(f"needs the roberta-base tokenizer in {ROBERTA}")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ROBERTA)


@pytest.fixture(scope="session")
def agnews_rows():
    """The first 5,000-item sample from ../shared as (texts, labels)."""
    if not AGNEWS_5K.is_file():
        pytest.skip(f"needs {AGNEWS_5K}")
    import csv

    with AGNEWS_5K.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [r["text"] for r in rows], [int(r["label"]) for r in rows]


def write_csv(path: Path, texts, labels) -> Path:
    import csv

    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(zip(texts, labels))
    return path
