"""Tiny random models of the five encoder families loraclf is tested on (no tokenizer, no download)."""

from __future__ import annotations

FAMILIES = ("bert", "roberta", "distilbert", "deberta-v2", "mpnet")

_SIZES = dict(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
              max_position_embeddings=64, num_labels=3)


def tiny_config(family: str):
    from transformers import AutoConfig

    if family == "distilbert":
        return AutoConfig.for_model("distilbert", vocab_size=100, dim=16, n_layers=2, n_heads=2, hidden_dim=32,
                                    max_position_embeddings=64, num_labels=3)
    extra = {"pad_token_id": 1} if family in ("roberta", "mpnet") else {}
    return AutoConfig.for_model(family, **_SIZES, **extra)


def tiny_model(family: str):
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(tiny_config(family))
