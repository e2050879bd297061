"""LoRA targets by role, resolved to the module names of the architecture at hand.

Encoders name the same projections differently: `query/key/value` (BERT,
RoBERTa), `q/k/v` (MPNet), `q_lin/k_lin/v_lin` (DistilBERT),
`query_proj/key_proj/value_proj` (DeBERTa-v2). A recipe that says
`attention_qkv` works on all of them:

    attention_qkv     the query, key and value projections
    attention_output  the projection after attention (dense, o, out_lin)
    ffn               the feed-forward layers (intermediate + output, lin1 + lin2)
    all-linear        all three (PEFT's name; the head, trained in full, is not adapted)

Roles are read from each linear layer's path inside its transformer layer
(`...layer.N.<path>`), so no table per model family is needed. The result
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
             "value_proj", "q_proj", "k_proj", "v_proj"}
_IN_LAYER = re.compile(r"^(?:.*\.)?layers?\.\d+\.(?P<path>.+)$")


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
    wanted |= {n for n in names if any(matches(n, t) for t in plain)}
    resolved: list[str] = []
    for name in sorted(wanted, key=names.index):
        # A name selects modules of one role only (IA3 scales a feed-forward input by its name, "intermediate").
        others = [n for n in names if n not in wanted or role_of(n) != role_of(name)]
        suffix = _shortest_suffix(name, others)
        if suffix not in resolved:
            resolved.append(suffix)
    return resolved
