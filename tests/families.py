"""Tiny random models of the encoder families loraclf supports (no tokenizer, no download)."""

from __future__ import annotations

FAMILIES = ("bert", "roberta", "xlm-roberta", "distilbert", "deberta-v2", "electra", "albert", "mpnet", "modernbert")

_SIZES = dict(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
              max_position_embeddings=64, num_labels=3)
# Token ids inside the tiny vocabulary, and the embedding widths of the families that factor their embeddings.
_EXTRA = {"roberta": dict(pad_token_id=1), "xlm-roberta": dict(pad_token_id=1), "mpnet": dict(pad_token_id=1),
          "albert": dict(embedding_size=8), "electra": dict(embedding_size=8),
          "modernbert": dict(pad_token_id=1, bos_token_id=0, eos_token_id=2, cls_token_id=0, sep_token_id=2,
                             global_attn_every_n_layers=1)}


def tiny_config(family: str, **overrides):
    from transformers import AutoConfig

    if family == "distilbert":
        return AutoConfig.for_model("distilbert", vocab_size=100, dim=16, n_layers=2, n_heads=2, hidden_dim=32,
                                    max_position_embeddings=64, num_labels=3, **overrides)
    return AutoConfig.for_model(family, **(_SIZES | _EXTRA.get(family, {}) | overrides))


def tiny_model(family: str):
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(tiny_config(family))
