"""The encoder with a fresh classification head: from the hub, a local folder, a pip package, or random weights."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
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
from loraclf.errors import UserError
from loraclf.model import fast_attention, pooling, quantize
from loraclf.model.heads import apply_head, head_module_names

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


@functools.lru_cache(maxsize=1)
def hub_reachable() -> bool:
    """Whether the hub's host answers a TCP connection within a second and a half, asked once per process.

    Unreachable, the hub's client retries each file for tens of seconds before failing; loading from its cache
    alone (local_files_only) answers at once, from the cache or with the one-line error. Behind a proxy the
    direct connection says nothing, so it is not tried there."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY")):
        return True  # offline already answers at once; a proxy is trusted to reach the hub
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), 1.5).close()
    except OSError:
        return False
    return True


def hub_kwargs(name: str) -> dict:
    """from_pretrained's keywords for `name`: the cache alone where it is a hub id and the hub is out of reach."""
    return {} if Path(name).exists() or hub_reachable() else {"local_files_only": True}


def _hub_error(what: str, name: str, exc: Exception) -> UserError:
    if Path(name).exists():
        return UserError(f"cannot load the {what} from folder {name}: {str(exc).splitlines()[0]}")
    reason = "the hub is out of reach, and it is not in the local cache" if hub_kwargs(name) else \
        f"the hub could not provide it ({type(exc).__name__})"
    return UserError(
        f"cannot load the {what} {name!r}: not a local folder, {reason}; offline, point --model.name_or_path "
        "at a local model folder"
    )


def load_tokenizer(model_cfg: ModelConfig) -> PreTrainedTokenizerBase:
    name = resolve_model_path(model_cfg.name_or_path)
    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=model_cfg.trust_remote_code, **hub_kwargs(name))
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
            **hub_kwargs(name),
        )
    except (OSError, ValueError) as exc:
        raise _hub_error("model config", name, exc) from None
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
        raise _hub_error("model", name, exc) from None
