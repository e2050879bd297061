"""Quantized bases: what is quantized and what is not, exact counts, memory, and adapters that load both ways.

bitsandbytes' CPU 4-bit kernels need layers at least 64 wide, so these tiny
models have hidden size 64 (the others in the suite use 32).
"""

import importlib.util
import json
import shutil

import numpy as np
import pytest
import torch

from loraclf.config.schema import QuantizationConfig
from loraclf.data.encoding import encode
from loraclf.errors import UserError
from loraclf.inference.classifier import Classifier
from loraclf.metrics.classification import metrics
from loraclf.model import accounting, quantize
from loraclf.model.adapter import wrap_with_lora
from loraclf.model.build import build_base
from loraclf.model.logits import predict_logits
from loraclf.rundir import layout, readers
from loraclf.training.recipe import train

from conftest import ROBERTA, tiny_roberta_config, write_csv
from test_training import tiny_config

pytestmark = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None,
                                reason="needs bitsandbytes (pip install 'loraclf[quantization]')")


@pytest.fixture(scope="module")
def model64_dir(tmp_path_factory):
    if not ROBERTA.is_dir():
        pytest.skip(f"needs the roberta-base tokenizer in {ROBERTA}")
    folder = tmp_path_factory.mktemp("tiny-roberta-64")
    tiny_roberta_config(hidden_size=64, intermediate_size=128).save_pretrained(folder)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(ROBERTA / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def random_base_dir(tmp_path_factory, model64_dir):
    """Saved random weights: a quantized base loads from weights, never from a bare config."""
    config = tiny_config(model64_dir, "unused.csv")
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("base")
    build_base(config.model, ["a", "b", "c", "d"]).save_pretrained(folder)
    return folder


def quantized(bits: int, **settings) -> QuantizationConfig:
    quant = QuantizationConfig(bits=bits, **settings)
    quant.validate()
    return quant


def test_int8_embedding_rounds_each_weight_to_half_a_step_of_its_row():
    torch.manual_seed(0)
    table = torch.nn.Embedding(50, 16, padding_idx=1)
    table.weight.data[3] *= 100  # rows keep their own scale: a large row does not coarsen the others
    packed = quantize.Int8Embedding(table)
    ids = torch.arange(50)[None]
    error = (packed(ids)[0] - table.weight.detach()).abs()
    step = table.weight.detach().abs().amax(dim=1, keepdim=True) / 127
    assert (error <= step / 2 + 1e-7).all()
    assert packed.weight.dtype == torch.int8 and not packed.weight.requires_grad
    assert set(packed.state_dict()) == {"weight", "scale"}  # saves, unlike bitsandbytes' Embedding8bit


@pytest.mark.parametrize("bits", [4, 8])
def test_linear_layers_quantized_head_and_norms_full_precision_and_counts_exact(model64_dir, random_base_dir,
                                                                                 bits):
    config = tiny_config(model64_dir, "unused.csv")
    config.quantization = quantized(bits)
    labels = ["a", "b", "c", "d"]
    base = quantize.prepare(build_base(config.model, labels, base_folder=random_base_dir,
                                       quantization=config.quantization))
    kind = {4: "Linear4bit", 8: "Linear8bitLt"}[bits]
    encoder_linear = [type(m).__name__ for n, m in base.named_modules() if n.endswith(("query", "dense"))
                      and ".encoder." in n]
    assert encoder_linear and set(encoder_linear) == {kind}
    assert isinstance(base.get_input_embeddings(), quantize.Int8Embedding)
    for module in (base.classifier.dense, base.classifier.out_proj):
        assert type(module) is torch.nn.Linear and module.weight.dtype == torch.float32
    assert all(p.dtype == torch.float32 for n, p in base.named_parameters() if "LayerNorm" in n)

    model = wrap_with_lora(base, config.lora)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "modules_to_save" in n for n in trainable)
    # Exact: the weights-free estimate (unquantized meta model) equals the quantized model's count, frozen included.
    assert accounting.count(model, config.budget.max_trainable) == accounting.estimate(config, labels)


def test_base_weight_memory(model64_dir, random_base_dir):
    config = tiny_config(model64_dir, "unused.csv")
    labels = ["a", "b", "c", "d"]
    full = build_base(config.model, labels, base_folder=random_base_dir)
    sizes = {bits: quantize.weight_bytes(build_base(config.model, labels, base_folder=random_base_dir,
                                                    quantization=quantized(bits)))
             for bits in (4, 8)}
    fp32 = quantize.weight_bytes(full)
    assert fp32 == sum(p.numel() * 4 for p in full.parameters()) + sum(b.numel() * b.element_size()
                                                                         for b in full.buffers())
    vocab, hidden = full.get_input_embeddings().weight.shape
    query = full.roberta.encoder.layer[0].attention.self.query.weight.numel()
    q4 = build_base(config.model, labels, base_folder=random_base_dir, quantization=quantized(4))
    packed = q4.roberta.encoder.layer[0].attention.self.query.weight
    assert packed.numel() * packed.element_size() == query // 2  # two 4-bit weights a byte
    assert q4.get_input_embeddings().weight.numel() == vocab * hidden  # one byte each
    assert sizes[4] < sizes[8] < 0.3 * fp32


def test_missing_bitsandbytes_is_a_one_line_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(UserError, match="needs bitsandbytes"):
        quantize.check_available(torch.device("cpu"))
    with pytest.raises(UserError, match="runs on cpu and cuda, not mps"):
        monkeypatch.undo()
        quantize.check_available(torch.device("mps"))


@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_run_reloads_on_a_quantized_and_on_a_full_precision_base(tmp_path, model64_dir, agnews_rows,
                                                                          bits):
    from loraclf.data.splits import load_splits

    texts, labels = agnews_rows
    data = write_csv(tmp_path / "train.csv", texts[:80], labels[:80])
    config = tiny_config(model64_dir, data, precision="fp32", metric_for_best="loss")
    config.quantization = quantized(bits)
    summary = train(config, tmp_path / "run", log=lambda _: None)
    assert summary["quantization"] == f"{bits}-bit"
    assert summary["parameters"] == json.loads((tmp_path / "run" / layout.BUDGET).read_text())

    loaded = Classifier.load(tmp_path / "run", device="cpu", precision="fp32")
    assert {"Linear4bit", "Linear8bitLt"} & {type(m).__name__ for m in loaded.model.modules()}
    splits = load_splits(readers.read_config(tmp_path / "run").data, loaded.tokenizer, lambda _: None)
    val = encode(loaded.tokenizer, splits.val.texts, None, config.data.max_length)
    on_quantized = predict_logits(loaded.model, val, 16, 1, "cpu")
    # On the base it trained on, the adapter gives back the validation loss recorded in training.
    assert metrics(splits.val.labels, on_quantized, loaded.labels)["loss"] == pytest.approx(
        summary["best"]["val_loss"], abs=1e-5)

    full = Classifier.load(tmp_path / "run", device="cpu", precision="fp32", quantized=False)
    assert not {"Linear4bit", "Linear8bitLt"} & {type(m).__name__ for m in full.model.modules()}
    on_full = predict_logits(full.model, val, 16, 1, "cpu")
    # Only the base's rounding separates the two: the adapter and head are the same tensors.
    assert np.abs(on_full - on_quantized).max() < 0.05 * np.abs(on_quantized).max()


def test_4bit_training_survives_a_validation_pass_in_bf16(model64_dir, random_base_dir, tokenizer):
    """Regression: on CPUs with AVX-512 BF16, bitsandbytes repacks a 4-bit weight for its inference kernel the
    first time it runs in eval mode without gradients, and the next training step then went through that
    kernel (`result += bias` on a tensor that needs a gradient: RuntimeError). Training keeps the training layout."""
    from loraclf.model.runtime import autocast

    config = tiny_config(model64_dir, "unused.csv")
    config.quantization = quantized(4)
    base = build_base(config.model, ["a", "b", "c", "d"], base_folder=random_base_dir,
                      quantization=config.quantization, autocast=torch.bfloat16)
    model = wrap_with_lora(quantize.prepare(base), config.lora)
    batch = tokenizer(["Stocks rally as oil falls", "Team wins the cup"], return_tensors="pt", padding=True)
    cpu = torch.device("cpu")
    for _ in range(2):  # validation, then training, twice: as between epochs
        model.eval()
        with torch.inference_mode(), autocast(cpu, torch.bfloat16):
            model(**batch)
        model.train()
        with autocast(cpu, torch.bfloat16):
            loss = model(**batch, labels=torch.tensor([2, 1])).loss
        loss.backward()
    layers = [m for m in model.modules() if type(m).__name__ == "Linear4bit"]
    assert layers and not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)
