"""PEFT methods and LoRA variants: exact counts, their defining numbers, and a train-save-reload round trip."""

import math

import pytest
import torch

from loraclf.config.schema import Config
from loraclf.data.encoding import encode
from loraclf.data.splits import load_splits
from loraclf.errors import UserError
from loraclf.inference.classifier import Classifier
from loraclf.metrics.classification import metrics
from loraclf.model import accounting
from loraclf.model.adapter import build_model
from loraclf.model.logits import predict_logits
from loraclf.rundir import readers
from loraclf.training.loop import param_groups
from loraclf.training.recipe import train

from test_training import tiny_config

HIDDEN, LAYERS, R = 32, 2, 4  # the tiny RoBERTa of conftest; q, k, v targeted
HEAD = HIDDEN * HIDDEN + HIDDEN + HIDDEN * 2 + 2  # default head, 2 classes


def tiny(tiny_model_dir, **lora) -> Config:
    config = Config()
    config.model.name_or_path, config.model.init = str(tiny_model_dir), "random"
    config.lora.r, config.lora.alpha = R, 8
    for key, value in lora.items():
        setattr(config.lora, key, value)
    config.lora.validate()
    return config


# Adapter parameters per targeted 32x32 layer, from each method's definition.
PER_LAYER = {
    "lora": R * HIDDEN + HIDDEN * R,  # A (r x in) + B (out x r)
    "dora": R * HIDDEN + HIDDEN * R + HIDDEN,  # + one magnitude per output
    "vera": HIDDEN + R,  # lambda_b (out) + lambda_d (r); the shared projections are frozen
    "ia3": HIDDEN,  # one scale per output
    "adalora": R * HIDDEN + HIDDEN * R + R,  # A + B + the singular values E, at the initial rank
}
SETTINGS = {"lora": {}, "dora": {"use_dora": True}, "vera": {"method": "vera"}, "ia3": {"method": "ia3"},
            "adalora": {"method": "adalora"}}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_adapter_count_is_exact_and_the_estimate_matches_the_model(tiny_model_dir, name):
    config = tiny(tiny_model_dir, **SETTINGS[name])
    planned = accounting.estimate(config, ["a", "b"])
    assert (planned.lora, planned.head, planned.other) == (LAYERS * 3 * PER_LAYER[name], HEAD, 0)
    assert accounting.count(build_model(config.model, config.lora, ["a", "b"]), config.budget.max_trainable) == planned


def test_layers_and_rank_pattern(tiny_model_dir):
    only_first = accounting.estimate(tiny(tiny_model_dir, layers=[0]), ["a", "b"])
    assert only_first.lora == 3 * PER_LAYER["lora"]
    patterned = accounting.estimate(tiny(tiny_model_dir, rank_pattern={"value": 8}), ["a", "b"])
    assert patterned.lora == LAYERS * (2 * PER_LAYER["lora"] + 8 * 2 * HIDDEN)


def test_rslora_scales_by_alpha_over_sqrt_r(tiny_model_dir):
    for rslora, expected in ((False, 8 / R), (True, 8 / math.sqrt(R))):
        config = tiny(tiny_model_dir, use_rslora=rslora)
        model = build_model(config.model, config.lora, ["a", "b"])
        query = model.base_model.model.roberta.encoder.layer[0].attention.self.query
        assert query.scaling["default"] == pytest.approx(expected)


def test_lora_plus_gives_b_matrices_their_own_rate(tiny_model_dir):
    config = tiny(tiny_model_dir, plus_ratio=16)
    model = build_model(config.model, config.lora, ["a", "b"])
    names = {id(p): n for n, p in model.named_parameters()}
    groups = param_groups(model, 0.1, 1e-3, plus_ratio=16)
    for group in groups:
        is_b = {".lora_B." in names[id(p)] for p in group["params"]}
        assert len(is_b) == 1  # no group mixes B with anything else
        assert group["lr"] == (16e-3 if is_b == {True} else 1e-3)
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())


def test_variant_switches_belong_to_lora(tiny_model_dir):
    with pytest.raises(UserError, match="lora.use_dora: applies to lora.method lora, not vera"):
        tiny(tiny_model_dir, method="vera", use_dora=True)


@pytest.mark.parametrize("name", ["dora", "vera", "ia3", "adalora"])
def test_each_method_trains_saves_and_reloads(tmp_path, tiny_model_dir, small_csv, name):  # noqa: F811
    config = tiny_config(tiny_model_dir, small_csv, epochs=1, metric_for_best="loss", precision="fp32")
    for key, value in SETTINGS[name].items():
        setattr(config.lora, key, value)
    out = tmp_path / "run"
    summary = train(config, out, log=lambda _: None)
    assert summary["parameters"]["lora"] == LAYERS * 3 * PER_LAYER[name]
    for merge in (False, True):
        trained = Classifier.load(out, device="cpu", precision="fp32", merge=merge)
        splits = load_splits(readers.read_config(out).data, trained.tokenizer, log=lambda _: None)
        val = encode(trained.tokenizer, splits.val.texts, None, config.data.max_length)
        with torch.no_grad():
            result = metrics(splits.val.labels, predict_logits(trained.model, val, 16, 1, "cpu"), trained.labels)
        assert result["loss"] == pytest.approx(summary["best"]["val_loss"], abs=1e-4), merge


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_pissa_and_olora_start_from_the_base_model_and_reload_on_the_original_weights(
        tmp_path, tiny_model_dir, small_csv, init):  # noqa: F811
    from loraclf.model.adapter import wrap_with_lora
    from loraclf.model.build import build_base

    config = tiny(tiny_model_dir, init=init)
    ids = torch.tensor([[0, 31414, 232, 328, 2]])
    torch.manual_seed(0)
    base = build_base(config.model, ["a", "b"]).eval()
    with torch.no_grad():
        before = base(input_ids=ids).logits
        # W is split into W_res + (alpha/r) B A: the same function until training moves A and B.
        after = wrap_with_lora(base, config.lora).eval()(input_ids=ids).logits
    assert torch.allclose(before, after, atol=1e-5)

    config = tiny_config(tiny_model_dir, small_csv, epochs=1, metric_for_best="loss", precision="fp32")
    config.lora.init = init
    out = tmp_path / "run"
    summary = train(config, out, log=lambda _: None)
    for merge in (False, True):
        trained = Classifier.load(out, device="cpu", precision="fp32", merge=merge)  # the original random base + the converted adapter
        splits = load_splits(readers.read_config(out).data, trained.tokenizer, log=lambda _: None)
        val = encode(trained.tokenizer, splits.val.texts, None, config.data.max_length)
        with torch.no_grad():
            result = metrics(splits.val.labels, predict_logits(trained.model, val, 16, 1, "cpu"), trained.labels)
        assert result["loss"] == pytest.approx(summary["best"]["val_loss"], abs=1e-4), merge
