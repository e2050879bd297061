"""LoRA targets by role, resolved to the module names of the architecture at hand.

Encoders name the same projections differently: `query/key/value` (BERT,
RoBERTa, XLM-RoBERTa, ELECTRA, ALBERT), `q/k/v` (MPNet), `q_lin/k_lin/v_lin`
(DistilBERT), `query_proj/key_proj/value_proj` (DeBERTa-v2/v3), one fused
`Wqkv` (ModernBERT). A recipe that says `attention_qkv` works on all of them:

    attention_qkv     the query, key and value projections (or the one fused projection)
    attention_output  the projection after attention (dense, o, out_lin, Wo)
    ffn               the feed-forward layers (intermediate + output, lin1 + lin2, Wi + Wo, ffn + ffn_output)
    all-linear        all three (PEFT's name; the head, trained in full, is not adapted)

Roles are read from the model's structure: a transformer layer is an item of a
list of modules (`layer.N`, `layers.N`, ALBERT's `albert_layers.N`), and a
linear layer's role is read from its path inside that item, so no table per
model family is needed. Linear layers outside any such list (embedding
projections, the pooler, the classification head) have no role. The result
is the shortest list of PEFT target names (matched against the end of a
module's name) that selects exactly the wanted modules and nothing else,
each name modules of one role.
Plain module names pass through unchanged.
"""

from __future__ import annotations

import re

import torch

from loraclf.errors import UserError

ROLES = ("attention_qkv", "attention_output", "ffn", "all-linear")
QKV_NAMES = {"query", "key", "value", "q", "k", "v", "q_lin", "k_lin", "v_lin", "query_proj", "key_proj",
             "value_proj", "q_proj", "k_proj", "v_proj", "Wqkv", "qkv", "qkv_proj", "query_key_value"}
# `<layer>.<path>`: the layer ends at the last numbered item of a module list, the path has no number in it.
_IN_LAYER = re.compile(r"^(?P<layer>.+\.\d+)\.(?P<path>[^.]*[^.\d][^.]*(?:\.[^.]*[^.\d][^.]*)*)$")


def layer_of(name: str) -> str | None:
    """The transformer layer that holds the module called `name` (its name, such as `roberta.encoder.layer.3`),
    or None for a module outside the layers."""
    match = _IN_LAYER.match(name)
    return None if match is None else match["layer"]


def role_of(name: str) -> str | None:
    """The role of the linear layer called `name`, or None outside the transformer layers (the head)."""
    match = _IN_LAYER.match(name)
    if match is None:
        return None
    path = match["path"]
    if path.rsplit(".", 1)[-1] in QKV_NAMES:
        return "attention_qkv"
    return "attention_output" if path.split(".")[0] in ("attention", "attn", "self_attn") else "ffn"


def matches(name: str, target: str) -> bool:
    # PEFT's rule for a list of targets: the whole name, or its end after a dot.
    return name == target or name.endswith(f".{target}")


def _shortest_suffix(name: str, others: list[str]) -> str:
    parts = name.split(".")
    for start in range(len(parts) - 1, -1, -1):
        suffix = ".".join(parts[start:])
        if not any(matches(other, suffix) for other in others):
            return suffix
    return name


def linear_names(model: torch.nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]


def layer_names(model: torch.nn.Module) -> list[str]:
    """The transformer layers that hold linear layers, in order, each once."""
    return list(dict.fromkeys(layer for name in linear_names(model) if (layer := layer_of(name)) is not None))


def shared_depth(model: torch.nn.Module) -> int | None:
    """How many layers deep the model runs, where that is more than the layers it has weights for (ALBERT runs
    one set of layer weights 12 times: LoRA on it is one adapter, applied at every depth); else None."""
    depth = getattr(model.config, "num_hidden_layers", None)
    held = len(layer_names(model))
    return depth if isinstance(depth, int) and 0 < held < depth else None


def resolve(model: torch.nn.Module, targets: list[str]) -> list[str]:
    """`targets` (roles and/or module names) as PEFT target names for `model`; a role or name that selects
    nothing is a UserError listing the model's linear-layer names."""
    roles = {"attention_qkv", "attention_output", "ffn"} if "all-linear" in targets else set(targets) & set(ROLES)
    plain = [t for t in targets if t not in ROLES]
    names = [name for name, _ in model.named_modules()]
    linear = linear_names(model)
    missing = [t for t in plain if not any(matches(n, t) for n in names)]
    missing += [r for r in ROLES[:3] if r in targets and not any(role_of(n) == r for n in linear)]
    if missing:
        short = sorted({n.rsplit(".", 1)[-1] for n in linear})
        raise UserError(f"config lora.target_modules: {missing} not found in {type(model).__name__}; its linear "
                        f"layers are named {', '.join(short)}; roles: {', '.join(ROLES)}")
    if not roles:
        return list(targets)
    wanted = {n for n in linear if role_of(n) in roles}
    if not wanted:
        raise UserError(f"config lora.target_modules: {targets} select no linear layer of {type(model).__name__}: "
                        f"none lies inside a numbered list of transformer layers; name them instead "
                        f"({', '.join(sorted({n.rsplit('.', 1)[-1] for n in linear}))})")
    wanted |= {n for n in names if any(matches(n, t) for t in plain)}
    resolved: list[str] = []
    for name in sorted(wanted, key=names.index):
        # A name selects modules of one role only (IA3 scales a feed-forward input by its name, "intermediate").
        others = [n for n in names if n not in wanted or role_of(n) != role_of(name)]
        suffix = _shortest_suffix(name, others)
        if suffix not in resolved:
            resolved.append(suffix)
    return resolved
