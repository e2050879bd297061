"""The encoder with a fresh classification head: from the hub, a local folder, a pip package, or random weights."""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from loraclf.config.schema import ModelConfig, QuantizationConfig
from loraclf.model import fast_attention, pooling, quantize
from loraclf.model.heads import apply_head, head_module_names
from loraclf.model.hub import hub_error, hub_kwargs, resolve_model_path


def load_tokenizer(model_cfg: ModelConfig) -> PreTrainedTokenizerBase:
    name = resolve_model_path(model_cfg.name_or_path)
    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=model_cfg.trust_remote_code, **hub_kwargs(name))
    except (OSError, ValueError) as exc:
        raise hub_error("tokenizer", name, exc) from None


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
            **hub_kwargs(name),
        )
    except (OSError, ValueError) as exc:
        raise hub_error("model config", name, exc) from None
    if model_cfg.dropout is not None:
        for key in DROPOUT_KEYS:
            if isinstance(getattr(config, key, None), float):
                setattr(config, key, model_cfg.dropout)
    return config


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
    attention = fast_attention.register() if model_cfg.attn_implementation == "fast" else model_cfg.attn_implementation
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
                **extra, **hub_kwargs(name)
            )
    except (OSError, ValueError) as exc:
        raise hub_error("model", name, exc) from None
