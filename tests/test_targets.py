"""LoRA target roles resolve to each architecture's own module names, exactly, and count exactly."""

from __future__ import annotations


import pytest
import torch

from loraclf.config.loading import load_config, parse_overrides
from loraclf.config.schema import AG_NEWS_LABELS, LoraConfig
from loraclf.errors import UserError
from loraclf.model import accounting, targets
from loraclf.model.adapter import wrap_with_lora

from conftest import ROBERTA, needs_shared
from families import FAMILIES, tiny_model

CONFIGS = __import__("pathlib").Path(__file__).resolve().parents[1] / "configs"

# Each role's module paths inside one transformer layer, written out per family.
EXPECTED = {
    "bert": {"attention_qkv": ["attention.self.query", "attention.self.key", "attention.self.value"],
             "attention_output": ["attention.output.dense"], "ffn": ["intermediate.dense", "output.dense"]},
    "distilbert": {"attention_qkv": ["attention.q_lin", "attention.k_lin", "attention.v_lin"],
                   "attention_output": ["attention.out_lin"], "ffn": ["ffn.lin1", "ffn.lin2"]},
    "deberta-v2": {"attention_qkv": ["attention.self.query_proj", "attention.self.key_proj",
                                     "attention.self.value_proj"],
                   "attention_output": ["attention.output.dense"], "ffn": ["intermediate.dense", "output.dense"]},
    "mpnet": {"attention_qkv": ["attention.attn.q", "attention.attn.k", "attention.attn.v"],
              "attention_output": ["attention.attn.o"], "ffn": ["intermediate.dense", "output.dense"]},
}
EXPECTED["roberta"] = EXPECTED["xlm-roberta"] = EXPECTED["electra"] = EXPECTED["bert"]
EXPECTED["albert"] = {"attention_qkv": ["attention.query", "attention.key", "attention.value"],
                      "attention_output": ["attention.dense"], "ffn": ["ffn", "ffn_output"]}
EXPECTED["modernbert"] = {"attention_qkv": ["attn.Wqkv"], "attention_output": ["attn.Wo"],
                          "ffn": ["mlp.Wi", "mlp.Wo"]}


def _adapted(model) -> set[str]:
    """Each LoRA-adapted module as its path inside its layer."""
    paths = set()
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and isinstance(module.lora_A, torch.nn.ModuleDict):
            paths.add(name[len(targets.layer_of(name)) + 1:])
    return paths


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("role", ["attention_qkv", "attention_output", "ffn", "all-linear"])
def test_roles_adapt_exactly_their_layers_in_every_family(family, role):
    expected = EXPECTED[family]
    want = {p for paths in expected.values() for p in paths} if role == "all-linear" else set(expected[role])
    model = wrap_with_lora(tiny_model(family), LoraConfig(r=2, target_modules=[role]))
    assert _adapted(model) == want
    # Every layer, and no head layer; ALBERT holds one layer's weights for both of its layers.
    layers = 1 if family == "albert" else 2
    adapted = sum(1 for _, m in model.named_modules() if isinstance(getattr(m, "lora_A", None), torch.nn.ModuleDict))
    assert adapted == layers * len(want)


def test_plain_names_pass_through_and_unknown_names_list_the_linear_layers():
    model = tiny_model("mpnet")
    assert targets.resolve(model, ["q", "v"]) == ["q", "v"]
    with pytest.raises(UserError, match=r"\['query'\] not found in MPNetForSequenceClassification; its linear "
                                        r"layers are named dense, k, o, out_proj, q, v; roles: attention_qkv"):
        targets.resolve(model, ["query"])


def test_roles_and_names_mix():
    model = tiny_model("roberta")
    resolved = targets.resolve(model, ["attention_qkv", "intermediate.dense"])
    assert resolved == ["query", "key", "value", "intermediate.dense"]


@needs_shared
def test_study_recipe_on_roles_counts_as_with_names_on_roberta_base():
    by_name = load_config(CONFIGS / "paper.yaml", parse_overrides(["--model.name_or_path", str(ROBERTA)]))
    by_role = load_config(CONFIGS / "paper.yaml", parse_overrides(
        ["--model.name_or_path", str(ROBERTA), "--lora.target_modules", "attention_qkv"]))
    a, b = accounting.estimate(by_name, AG_NEWS_LABELS), accounting.estimate(by_role, AG_NEWS_LABELS)
    assert a == b and a.trainable == 980_740 and b.targets == ["key", "query", "value"]


def test_study_recipe_counts_980740_on_mpnet_base_shape(tmp_path):
    from transformers import MPNetConfig

    # all-mpnet-base-v2's architecture (weights are not needed to count).
    MPNetConfig(vocab_size=30527, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                intermediate_size=3072, max_position_embeddings=514).save_pretrained(tmp_path)
    config = load_config(CONFIGS / "paper.yaml", parse_overrides(
        ["--model.name_or_path", str(tmp_path), "--lora.target_modules", "attention_qkv"]))
    b = accounting.estimate(config, AG_NEWS_LABELS)
    assert (b.trainable, b.lora, b.head, b.targets) == (980_740, 387_072, 593_668, ["k", "q", "v"])


def _estimate(tmp_path, family, *overrides, **sizes):
    from families import tiny_config

    tiny_config(family, **sizes).save_pretrained(tmp_path)
    config = load_config(CONFIGS / "paper.yaml", parse_overrides(["--model.name_or_path", str(tmp_path),
                                                                  "--model.init", "random", *overrides]))
    return accounting.estimate(config, AG_NEWS_LABELS)


def test_a_fused_projection_costs_r_times_its_own_in_plus_out(tmp_path):
    # ModernBERT-base's shapes: Wqkv is 768 -> 2,304, one LoRA pair, not three of 768 -> 768.
    b = _estimate(tmp_path, "modernbert", "--lora.target_modules", "attention_qkv", hidden_size=768,
                  num_attention_heads=12, intermediate_size=1152, num_hidden_layers=22)
    assert b.targets == ["Wqkv"] and b.lora == 22 * 7 * (768 + 2304)


def test_albert_shares_one_adapter_across_its_layers_and_says_so(tmp_path):
    b = _estimate(tmp_path, "albert", "--lora.target_modules", "attention_qkv", hidden_size=32, num_hidden_layers=6)
    assert b.lora == 3 * 7 * (32 + 32) and b.shared_depth == 6  # one layer's q, k, v, counted once
    assert "its 6 layers share one set of weights" in b.describe()
    with pytest.raises(UserError, match="config lora.layers: AlbertForSequenceClassification runs one set of "
                                        "layer weights at all 6 depths"):
        _estimate(tmp_path, "albert", "--lora.layers", "3,4,5", num_hidden_layers=6)
    assert _estimate(tmp_path, "bert", hidden_size=32).shared_depth is None


def test_a_role_with_no_layer_to_adapt_is_a_one_line_error():
    from transformers import AutoConfig, AutoModelForSequenceClassification

    # GPT-2's blocks use Conv1D, not torch Linear: no role finds a linear layer inside them.
    model = AutoModelForSequenceClassification.from_config(AutoConfig.for_model(
        "gpt2", vocab_size=100, n_embd=16, n_layer=2, n_head=2, n_positions=32, pad_token_id=0))
    with pytest.raises(UserError, match=r"\['all-linear'\] select no linear layer of GPT2ForSequenceClassification"):
        targets.resolve(model, ["all-linear"])
