"""The budget planner: which adapter configurations fit a trainable-parameter budget.

From the model config alone (meta device, no weights) it enumerates method x rank
x target modules x layer range x head type, counts each one's trainable
parameters from the shapes of the layers it adapts, keeps those under the
budget and ranks them: most adapter parameters first (the most capacity the
budget buys), then the smaller head. The configurations it prints are
re-counted exactly by building them on the meta device, as training would.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AutoModelForSequenceClassification

from loraclf.config.loading import load_config, parse_overrides
from loraclf.config.schema import Config
from loraclf.errors import UserError
from loraclf.model import accounting, targets
from loraclf.model.build import load_base_config
from loraclf.model.heads import apply_head, head_module_names

RANKS = {"lora": (1, 2, 4, 8, 16, 32, 64), "dora": (1, 2, 4, 8, 16, 32, 64), "adalora": (2, 4, 8, 16, 32, 64),
         "vera": (64, 128, 256, 512, 1024), "ia3": (0,)}
# Roles, resolved per architecture (targets.py): the same plan for every encoder family.
TARGET_SETS = (("attention_qkv",), ("attention_qkv", "attention_output"), ("all-linear",))
HEADS = (("default", 0), ("lowrank", 16), ("linear", 0))


@dataclass
class Candidate:
    method: str
    r: int
    targets: tuple[str, ...]
    layers: tuple[int, ...] | None  # None: every layer
    head: str
    head_rank: int
    adapter: int
    head_params: int

    @property
    def trainable(self) -> int:
        return self.adapter + self.head_params

    def overrides(self, config: Config) -> list[str]:
        """Command-line overrides that turn `config` into this configuration."""
        args = ["--lora.method", "lora" if self.method == "dora" else self.method]
        if self.method != "ia3":
            args += ["--lora.r", str(self.r)]
        args += ["--lora.target_modules", ",".join(self.targets),
                 "--lora.layers", ",".join(map(str, self.layers)) if self.layers else "null",
                 "--model.head", self.head]
        if self.head == "lowrank":
            args += ["--model.head_rank", str(self.head_rank)]
        # Switches the counts assume: printed only where `config` has them otherwise.
        lora_family = self.method in ("lora", "dora")
        wanted = {"use_dora": self.method == "dora", "use_rslora": config.lora.use_rslora and lora_family,
                  "plus_ratio": config.lora.plus_ratio if lora_family else 0.0,
                  "init": config.lora.init if lora_family else "default", "rank_pattern": None}
        for key, value in wanted.items():
            if getattr(config.lora, key) != value:
                text = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
                args += [f"--lora.{key}", text]
        return args


def _adapter_size(method: str, r: int, fan_in: int, fan_out: int, feedforward: bool) -> int:
    if method == "lora":
        return r * (fan_in + fan_out)
    if method == "dora":
        return r * (fan_in + fan_out) + fan_out
    if method == "adalora":
        return r * (fan_in + fan_out) + r
    if method == "vera":
        return fan_out + r
    return fan_in if feedforward else fan_out  # ia3


def candidates(config: Config, label_names: list[str], max_trainable: int) -> list[Candidate]:
    """Every enumerated configuration under `max_trainable`, best first."""
    base_config = load_base_config(config.model, label_names)
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(
            base_config, trust_remote_code=config.model.trust_remote_code)
    # Linear layers inside the transformer layers, by name: (layer index, name) -> (in, out). A fused
    # projection (ModernBERT's Wqkv) is one layer of its own shape, and costs r * (in + out).
    index_of = {layer: i for i, layer in enumerate(targets.layer_names(model))}
    linear = {(index_of[layer], name): (module.in_features, module.out_features)
              for name, module in model.named_modules()
              if isinstance(module, torch.nn.Linear) and (layer := targets.layer_of(name)) in index_of}
    heads = {}
    for head, rank in HEADS:
        with torch.device("meta"):
            try:
                headed = apply_head(AutoModelForSequenceClassification.from_config(
                    base_config, trust_remote_code=config.model.trust_remote_code), head, rank)
            except UserError:
                continue  # a head layout with no linear or lowrank form (ModernBERT, ALBERT, DeBERTa)
        heads[(head, rank)] = sum(p.numel() for m in head_module_names(headed)
                                  for p in headed.get_submodule(m).parameters())
    layers = len(index_of)
    layer_ranges: list[tuple[int, ...] | None] = [None]
    if layers > 1 and not targets.shared_depth(model):
        layer_ranges.append(tuple(range(layers // 2, layers)))  # the upper half
    found = []
    for roles in TARGET_SETS:
        try:
            resolved = targets.resolve(model, list(roles))
        except UserError:
            continue  # this architecture has no such layers
        matched = {key: shape for key, shape in linear.items() if any(targets.matches(key[1], t) for t in resolved)}
        for layer_range in layer_ranges:
            chosen = [(name, shape) for (index, name), shape in matched.items()
                      if layer_range is None or index in layer_range]
            for method, ranks in RANKS.items():
                if method == "ia3" and layer_range is not None:
                    continue  # PEFT's IA3 adapts every matching layer
                for r in ranks:
                    adapter = sum(_adapter_size(method, r, i, o, "intermediate" in name) for name, (i, o) in chosen)
                    for (head, rank), head_params in heads.items():
                        if adapter + head_params < max_trainable:
                            found.append(Candidate(method, r, roles, layer_range, head, rank, adapter,
                                                   head_params))
    return sorted(found, key=lambda c: (-c.adapter, c.head_params, c.method, c.r))


def exact(config: Config, candidate: Candidate, label_names: list[str]) -> accounting.Breakdown:
    """The count of `config` with the candidate's printed overrides, built on the meta device as training does."""
    planned = load_config(tree=config.to_dict(), overrides=parse_overrides(candidate.overrides(config)))
    return accounting.estimate(planned, label_names)
