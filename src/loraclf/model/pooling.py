"""What the classification head reads: the first token (`cls`) or the mean over non-padding tokens (`mean`).

Every transformers head reads position 0 of the encoder's output (RoBERTa's
and MPNet's `classifier`, BERT's pooler, DistilBERT's `pre_classifier`,
DeBERTa's `pooler`). Mean pooling therefore needs no new head: a forward
hook on the encoder writes the masked mean into position 0, and whatever
head the model has reads it there. Sentence-embedding encoders (MiniLM,
MPNet here) were trained with mean pooling, so their mean is the
representation they learned to make useful; their first token is not.
The hook adds no parameters, survives PEFT wrapping and merging (it sits on
the encoder module, which neither replaces), and is traced into ONNX.
ModernBERT pools in its own head (`config.classifier_pooling`): it is set to
the run's pooling there, and no hook is added.
"""

from __future__ import annotations

from typing import Any

import torch

POOLINGS = ("cls", "mean")


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """(batch, length, hidden) -> (batch, hidden): the mean over positions where the mask is 1."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def _mean_into_first(encoder: torch.nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> Any:
    hidden = output[0]
    pooled = masked_mean(hidden, kwargs.get("attention_mask"))
    hidden = torch.cat([pooled.unsqueeze(1).to(hidden.dtype), hidden[:, 1:]], dim=1)
    output["last_hidden_state"] = hidden
    pooler = getattr(encoder, "pooler", None)
    if pooler is not None and output.get("pooler_output") is not None:
        # BERT-style encoders pool inside their forward, from the old first token: pool again. ALBERT's pooler
        # is a bare linear layer that its forward feeds the first token, then applies pooler_activation.
        if hasattr(encoder, "pooler_activation"):
            output["pooler_output"] = encoder.pooler_activation(pooler(hidden[:, 0]))
        else:
            output["pooler_output"] = pooler(hidden)
    return output


def encoder_of(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers encoder inside a (PEFT-wrapped or plain) sequence-classification model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, base.base_model_prefix)


def pools_natively(config: Any) -> bool:
    """Whether the model's own head pools as its config says (ModernBERT's `classifier_pooling`, cls or mean)."""
    return getattr(config, "classifier_pooling", None) in POOLINGS


def apply_pooling(model: torch.nn.Module, pooling: str) -> torch.nn.Module:
    """Make the head of `model` read `pooling` (cls: unchanged; mean: the hook above). A model that pools
    natively is told in its config instead, which its saved config and a merged export carry. Returns `model`."""
    if pools_natively(model.config):
        # A hub checkpoint's own choice (ModernBERT-base says mean) gives way to the run's.
        model.config.classifier_pooling = pooling
    elif pooling == "mean":
        encoder = encoder_of(model)
        if not getattr(encoder, "_loraclf_mean_pooling", False):
            encoder.register_forward_hook(_mean_into_first, with_kwargs=True)
            encoder._loraclf_mean_pooling = True
    return model
