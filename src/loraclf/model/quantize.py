"""Quantized bases (QLoRA): 4- or 8-bit frozen linear layers through bitsandbytes, int8 word embeddings.

What stays in full precision, and why:
- the classification head trains in full, and bitsandbytes weights cannot
  require gradients (PEFT #1720: "only Tensors of floating point dtype can
  require gradients"), so the head modules are kept out of quantization;
- LayerNorms and biases are tiny; k-bit preparation keeps them fp32.
"""

from __future__ import annotations

import importlib.util

import torch

from loraclf.config.schema import QuantizationConfig
from loraclf.errors import UserError

COMPUTE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def check_available(device: torch.device) -> None:
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError("config quantization.bits: needs bitsandbytes (pip install 'loraclf[quantization]' "
                        "or pip install bitsandbytes>=0.48, which runs on CPU and CUDA)")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"config quantization.bits: bitsandbytes runs on cpu and cuda, not {device.type}")


def compute_dtype(quant: QuantizationConfig, autocast: torch.dtype | None) -> torch.dtype:
    """`auto`: the dtype training autocasts to (bf16/fp16), else fp32."""
    if quant.compute_dtype == "auto":
        return autocast or torch.float32
    return COMPUTE_DTYPES[quant.compute_dtype]


def load_kwargs(quant: QuantizationConfig, keep: list[str], device: torch.device,
                autocast: torch.dtype | None) -> dict:
    """from_pretrained arguments that load the base quantized, with the modules in `keep` left as they are."""
    from transformers import BitsAndBytesConfig

    check_available(device)
    if quant.bits == 4:
        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant.quant_type,
                                 bnb_4bit_use_double_quant=quant.double_quant,
                                 bnb_4bit_compute_dtype=compute_dtype(quant, autocast), llm_int8_skip_modules=keep)
    else:
        bnb = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=keep)
    # bitsandbytes quantizes as the weights move to the device: load them straight there.
    return {"quantization_config": bnb, "device_map": {"": device}}


class Int8Embedding(torch.nn.Module):
    """A frozen embedding table stored as int8 rows, each with one fp32 scale (absmax / 127).

    Only the looked-up rows are dequantized. bitsandbytes has an Embedding8bit
    with the same storage, but its state_dict() raises, and PEFT calls
    state_dict() for every adapter save.
    """

    def __init__(self, embedding: torch.nn.Embedding):
        super().__init__()
        weight = embedding.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny) / 127
        # Named `weight` so code that reads an input embedding's weight shape still works.
        self.weight = torch.nn.Parameter(torch.round(weight / scale[:, None]).to(torch.int8), requires_grad=False)
        self.register_buffer("scale", scale)
        self.padding_idx = embedding.padding_idx
        self.dtype = embedding.weight.dtype

    @property
    def num_embeddings(self) -> int:
        return self.weight.shape[0]

    @property
    def embedding_dim(self) -> int:
        return self.weight.shape[1]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = torch.nn.functional.embedding(input_ids, self.weight).to(self.dtype)
        return rows * self.scale[input_ids].unsqueeze(-1).to(self.dtype)


def quantize_embeddings(model: torch.nn.Module) -> None:
    embedding = model.get_input_embeddings()
    if isinstance(embedding, torch.nn.Embedding):
        model.set_input_embeddings(Int8Embedding(embedding))


def prepare(model: torch.nn.Module) -> torch.nn.Module:
    """Ready a quantized base for training: PEFT's k-bit preparation (freeze everything, cast non-quantized
    weights to fp32), before PEFT wraps it; and 4-bit weights kept in their training layout.

    On CPUs with AVX-512 BF16, bitsandbytes repacks a 4-bit weight for its inference-only kernel the first
    time the layer runs in eval mode without gradients (a validation pass) and keeps it so; training steps
    after that went through that kernel and failed (`result += bias` on a tensor that needs a gradient).
    Gradient checkpointing is train.gradient_checkpointing's business, not this one's.
    """
    from peft import prepare_model_for_kbit_training

    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def logical_numel(param: torch.Tensor) -> int:
    """The number of weights a parameter stands for: a packed 4-bit tensor holds two per byte."""
    quant_state = getattr(param, "quant_state", None)
    return quant_state.shape.numel() if quant_state is not None else param.numel()


def _quant_state_bytes(param: torch.Tensor) -> int:
    """Bytes of the scales bitsandbytes keeps beside a quantized weight (not registered as tensors)."""
    total = 0
    state = getattr(param, "quant_state", None)
    while state is not None:  # 4-bit: absmax per block, its codebook, and with double_quant their own state
        total += sum(t.numel() * t.element_size() for t in (state.absmax, state.code, state.offset)
                     if isinstance(t, torch.Tensor))
        state = state.state2
    scb = getattr(param, "SCB", None)  # 8-bit: one scale per row
    if isinstance(scb, torch.Tensor):
        total += scb.numel() * scb.element_size()
    return total


def weight_bytes(model: torch.nn.Module, frozen_only: bool = False) -> int:
    """Bytes the model's weights take in memory: parameters (`frozen_only`: those that train not), buffers and
    quantization scales."""
    params = sum(p.numel() * p.element_size() + _quant_state_bytes(p) for p in model.parameters()
                 if not (frozen_only and p.requires_grad))
    return params + sum(b.numel() * b.element_size() for b in model.buffers())
