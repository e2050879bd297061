"""PEFT around the encoder (LoRA, DoRA, VeRA, IA3, AdaLoRA), and saving and loading the adapter folder."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import peft
from peft import AdaLoraConfig, IA3Config, PeftModel, TaskType, VeraConfig, get_peft_model, get_peft_model_state_dict
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel

from loraclf.config.schema import LoraConfig, ModelConfig
from loraclf.errors import UserError
from loraclf.model import targets
from loraclf.model.build import build_base
from loraclf.model.heads import head_module_names


def peft_config(lora: LoraConfig, head_modules: list[str], total_steps: int = 1):
    """The PEFT config for `lora.method`; `total_steps` sets AdaLoRA's rank schedule."""
    common = dict(task_type=TaskType.SEQ_CLS, target_modules=list(lora.target_modules),
                  modules_to_save=head_modules, layers_to_transform=lora.layers)
    if lora.method == "vera":
        # Projections saved with the adapter, so it loads without regenerating them.
        return VeraConfig(r=lora.r, vera_dropout=lora.dropout, save_projection=True, **common)
    if lora.method == "ia3":
        # Feed-forward targets scale their input, the others their output (the IA3 paper's split).
        feedforward = [t for t in lora.target_modules if "intermediate" in t]
        common.pop("layers_to_transform")  # IA3 adapts every matching layer
        return IA3Config(feedforward_modules=feedforward, **common)
    if lora.method == "adalora":
        return AdaLoraConfig(init_r=lora.r, target_r=max(1, lora.r // 2), lora_alpha=lora.alpha,
                             lora_dropout=lora.dropout, bias=lora.bias, total_step=max(1, total_steps),
                             rank_pattern=lora.rank_pattern, **common)
    # Full SVD for PiSSA: deterministic, so a resumed run rebuilds the same initial weights.
    init = {"default": True, "pissa": "pissa", "olora": "olora"}[lora.init]
    return peft.LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias=lora.bias,
                      use_rslora=lora.use_rslora, use_dora=lora.use_dora, rank_pattern=lora.rank_pattern or {},
                      init_lora_weights=init, **common)


def wrap_with_lora(model: PreTrainedModel, lora: LoraConfig, total_steps: int = 1) -> PeftModel:
    """PEFT around `model`, with `lora.target_modules` (roles or names) resolved for its architecture."""
    depth = targets.shared_depth(model)
    if lora.layers is not None and depth:
        raise UserError(f"config lora.layers: {type(model).__name__} runs one set of layer weights at all {depth} "
                        "depths, so there are no layers to choose between; set lora.layers null")
    resolved = dataclasses.replace(lora, target_modules=targets.resolve(model, lora.target_modules))
    return get_peft_model(model, peft_config(resolved, head_module_names(model), total_steps))


def build_model(model_cfg: ModelConfig, lora: LoraConfig, label_names: list[str]) -> PeftModel:
    return wrap_with_lora(build_base(model_cfg, label_names), lora)


def save_adapter(model: PeftModel, folder: Path, initial: Path | None = None, base: str | None = None) -> None:
    """Save the adapter and head; with `initial` (PiSSA/OLoRA), as a plain LoRA adapter.

    PEFT rewrites a PiSSA/OLoRA adapter as rank-2r LoRA on the original weights
    (dW = BA - B0A0), but keeps only the LoRA tensors: the head trained in full is
    put back beside them. `base` is written as `base_model_name_or_path`.
    """
    if initial is None:
        model.save_pretrained(folder)
    else:
        model.save_pretrained(folder, path_initial_model_for_weight_conversion=str(initial))
        path = folder / "adapter_model.safetensors"
        head = {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(model).items() if "lora_" not in k}
        save_file(load_file(str(path)) | head, str(path), metadata={"format": "pt"})
    _tidy_adapter_config(folder / "adapter_config.json", model, base)


def _tidy_adapter_config(path: Path, model: PeftModel, base: str | None) -> None:
    """PEFT's SEQ_CLS task adds its default head names (classifier, score) to modules_to_save, whether or not
    the model has them; keep each name once, and only those the model has."""
    settings = json.loads(path.read_text(encoding="utf-8"))
    present = {name for name, _ in model.named_modules()}
    saved = settings.get("modules_to_save") or []
    settings["modules_to_save"] = [name for i, name in enumerate(saved) if name not in saved[:i] and any(
        p == name or p.endswith(f".{name}") for p in present)] or None
    if base is not None:
        settings["base_model_name_or_path"] = base
    path.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8")
