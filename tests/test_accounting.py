import pytest
import torch

from loraclf.config.loading import load_config, parse_overrides
from loraclf.config.schema import AG_NEWS_LABELS, Config
from loraclf.errors import UserError
from loraclf.model import accounting
from loraclf.model.adapter import build_model

from conftest import ROBERTA, needs_shared, tiny_roberta_config

CONFIGS = __import__("pathlib").Path(__file__).resolve().parents[1] / "configs"


@needs_shared
def test_paper_recipe_on_real_roberta_config_is_exact():
    config = load_config(CONFIGS / "paper.yaml", parse_overrides(["--model.name_or_path", str(ROBERTA)]))
    b = accounting.estimate(config, AG_NEWS_LABELS)
    assert (b.trainable, b.lora, b.head, b.other) == (980_740, 387_072, 593_668, 0)
    # The frozen encoder: roberta-base without its pooler (the sequence-classification model has none).
    assert b.frozen == 124_645_632 - (768 * 768 + 768)
    assert b.over_by == 980_740 - 1_000_000


def lora_formula(layers, hidden, r, targets, intermediate):
    shapes = {"query": (hidden, hidden), "key": (hidden, hidden), "value": (hidden, hidden),
              "dense": None, "intermediate.dense": (hidden, intermediate)}
    return layers * sum(r * sum(shapes[t]) for t in targets)


@pytest.mark.parametrize("r, targets", [(1, ["query"]), (4, ["query", "value"]), (7, ["query", "key", "value"]),
                                        (16, ["key"])])
@pytest.mark.parametrize("num_labels", [2, 4, 7])
def test_formula_on_other_ranks_targets_and_classes(tmp_path, r, targets, num_labels):
    tiny_roberta_config(vocab_size=100).save_pretrained(tmp_path)
    config = Config()
    config.model.name_or_path = str(tmp_path)
    config.lora.r, config.lora.target_modules = r, targets
    b = accounting.estimate(config, [str(i) for i in range(num_labels)])
    hidden, layers = 32, 2
    assert b.lora == lora_formula(layers, hidden, r, targets, 64)
    assert b.head == hidden * hidden + hidden + hidden * num_labels + num_labels
    assert b.trainable == b.lora + b.head


def test_meta_estimate_equals_the_built_model(tmp_path):
    tiny_roberta_config(vocab_size=100).save_pretrained(tmp_path)
    config = Config()
    config.model.name_or_path, config.model.init = str(tmp_path), "random"
    config.lora.r, config.lora.target_modules = 3, ["query", "value", "dense"]
    model = build_model(config.model, config.lora, ["a", "b", "c"])
    built = accounting.count(model, config.budget.max_trainable)
    assert built == accounting.estimate(config, ["a", "b", "c"])
    assert built.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_enforce_says_by_how_much_and_which_parts(tmp_path):
    tiny_roberta_config(vocab_size=100).save_pretrained(tmp_path)
    config = Config()
    config.model.name_or_path = str(tmp_path)
    config.budget.max_trainable = 1000
    b = accounting.estimate(config, ["a", "b"])
    with pytest.raises(UserError, match=rf"over budget by {b.trainable - 1000:,}.*LoRA {b.lora:,} \+ head {b.head:,}"):
        accounting.enforce(b)


def test_estimate_allocates_no_weights(tmp_path, monkeypatch):
    tiny_roberta_config(vocab_size=100).save_pretrained(tmp_path)
    config = Config()
    config.model.name_or_path = str(tmp_path)
    real_empty = torch.empty

    def no_cpu_storage(*args, **kwargs):
        tensor = real_empty(*args, **kwargs)
        assert tensor.device.type == "meta" or tensor.numel() < 1000, "a real weight was allocated"
        return tensor

    monkeypatch.setattr(torch, "empty", no_cpu_storage)
    assert accounting.estimate(config, ["a", "b"]).trainable > 0


@needs_shared
@pytest.mark.parametrize("head, rank, expected", [
    ("default", 16, 768 * 768 + 768 + 768 * 4 + 4),
    ("linear", 16, 3_076),  # 768 x 4 + 4
    ("lowrank", 16, 768 * 16 + 16 * 768 + 768 + 3_076),
    ("lowrank", 64, 768 * 64 + 64 * 768 + 768 + 3_076),
])
def test_head_types_on_real_roberta_config(head, rank, expected):
    config = load_config(CONFIGS / "paper.yaml", parse_overrides([
        "--model.name_or_path", str(ROBERTA), "--model.head", head, "--model.head_rank", str(rank)]))
    b = accounting.estimate(config, AG_NEWS_LABELS)
    assert (b.lora, b.head, b.other) == (387_072, expected, 0)


@pytest.mark.parametrize("head, expected", [
    ("default", (32 * 32 + 32) + (32 * 3 + 3)),  # BERT: pooler dense + classifier
    ("linear", 32 * 3 + 3),  # no pooler: the first token's hidden state goes straight to the classifier
    ("lowrank", (32 * 4 + 4 * 32 + 32) + (32 * 3 + 3)),
])
def test_head_types_on_a_bert_layout(tmp_path, head, expected):
    from transformers import BertConfig

    BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64).save_pretrained(tmp_path)
    config = Config()
    config.model.name_or_path, config.model.init, config.model.head, config.model.head_rank = \
        str(tmp_path), "random", head, 4
    config.lora.target_modules = ["query"]
    b = accounting.estimate(config, ["a", "b", "c"])
    assert b.head == expected
    model = build_model(config.model, config.lora, ["a", "b", "c"])
    assert accounting.count(model, config.budget.max_trainable) == b
    logits = model(input_ids=torch.tensor([[2, 5, 7, 3]])).logits
    assert logits.shape == (1, 3)
