"""The classification head: which modules it is, and the `linear` and `lowrank` alternatives to the model's own."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from loraclf.errors import UserError


def head_module_names(model: PreTrainedModel) -> list[str]:
    """The classification head, which trains in full.

    Every top-level module with parameters outside the encoder (RoBERTa:
    `classifier` = dense + out_proj; DistilBERT: `pre_classifier` and
    `classifier`), plus the encoder's pooler where one exists: BERT's pooler
    (dense + tanh on the first token) feeds only the classifier and is the
    counterpart of RoBERTa's head dense layer.
    """
    prefix = model.base_model_prefix
    names = [
        name
        for name, module in model.named_children()
        if name != prefix and any(True for _ in module.parameters())
    ]
    pooler = getattr(getattr(model, prefix, None), "pooler", None)
    if isinstance(pooler, torch.nn.Module) and any(True for _ in pooler.parameters()):
        names.append(f"{prefix}.pooler")
    return names


class FirstTokenLinear(torch.nn.Module):
    """The `linear` head: dropout, then one linear layer on the first token's hidden state."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float):
        super().__init__()
        self.dropout = torch.nn.Dropout(dropout)
        self.out_proj = torch.nn.Linear(hidden_size, num_labels)

    def forward(self, features: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.out_proj(self.dropout(features[:, 0]))


class FirstToken(torch.nn.Module):
    """A pooler without parameters: the first token's hidden state, as it is."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states[:, 0]


def low_rank(dense: torch.nn.Linear, rank: int) -> torch.nn.Sequential:
    """`dense` factored as (in -> rank, no bias) then (rank -> out, with bias)."""
    return torch.nn.Sequential(torch.nn.Linear(dense.in_features, rank, bias=False),
                               torch.nn.Linear(rank, dense.out_features))


def fold_low_rank(model: torch.nn.Module) -> int:
    """Multiply each `low_rank` pair back into one linear layer (same function); return how many."""
    folded = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, torch.nn.Sequential) and len(module) == 2 and \
                all(isinstance(m, torch.nn.Linear) for m in module) and module[0].bias is None:
            down, up = module
            dense = torch.nn.Linear(down.in_features, up.out_features)
            with torch.no_grad():
                dense.weight.copy_(up.weight @ down.weight)
                dense.bias.copy_(up.bias)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, dense)
            folded += 1
    return folded


def apply_head(model: PreTrainedModel, kind: str, rank: int) -> PreTrainedModel:
    """Swap the model's own head for the `linear` or `lowrank` one (`default` keeps it).

    Two head layouts are known: RoBERTa's (classifier = dense + tanh + out_proj
    on the first token) and BERT's (pooler = dense + tanh on the first token,
    then classifier = one linear layer).
    """
    if kind == "default":
        return model
    classifier = getattr(model, "classifier", None)
    encoder = getattr(model, model.base_model_prefix, None)
    pooler = getattr(encoder, "pooler", None)
    if isinstance(getattr(classifier, "dense", None), torch.nn.Linear) and \
            isinstance(getattr(classifier, "out_proj", None), torch.nn.Linear):
        if kind == "linear":
            dropout = getattr(getattr(classifier, "dropout", None), "p", 0.0)
            model.classifier = FirstTokenLinear(classifier.dense.in_features, classifier.out_proj.out_features,
                                                dropout)
        else:
            classifier.dense = low_rank(classifier.dense, rank)
    elif isinstance(getattr(pooler, "dense", None), torch.nn.Linear) and isinstance(classifier, torch.nn.Linear):
        if kind == "linear":
            encoder.pooler = FirstToken()
        else:
            pooler.dense = low_rank(pooler.dense, rank)
    else:
        raise UserError(f"config model.head {kind}: {type(model).__name__} has neither a RoBERTa-style head "
                        "(classifier.dense + classifier.out_proj) nor a BERT-style pooler + classifier; "
                        "use model.head default")
    return model
