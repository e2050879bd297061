import pytest
import torch
from transformers import AutoModelForSequenceClassification

from loraclf.config.schema import LoraConfig, ModelConfig
from loraclf.errors import UserError
from loraclf.model.adapter import wrap_with_lora
from loraclf.model.build import build_base
from loraclf.model.heads import head_module_names
from loraclf.model.hub import resolve_model_path

from conftest import tiny_roberta_config

LABELS = ["World", "Sports", "Business", "Sci/Tech"]


@pytest.fixture
def tiny_dir(tmp_path):
    tiny_roberta_config(vocab_size=100).save_pretrained(tmp_path)
    return tmp_path


def test_random_base_has_labels(tiny_dir):
    base = build_base(ModelConfig(name_or_path=str(tiny_dir), init="random"), LABELS)
    assert base.config.num_labels == 4 and base.config.id2label[3] == "Sci/Tech"
    assert head_module_names(base) == ["classifier"]


def test_lora_at_init_equals_the_base_model(tiny_dir):
    torch.manual_seed(0)
    base = build_base(ModelConfig(name_or_path=str(tiny_dir), init="random"), LABELS).eval()
    ids = torch.randint(3, 100, (3, 9))
    with torch.no_grad():
        before = base(input_ids=ids).logits.clone()
        model = wrap_with_lora(base, LoraConfig(r=4, alpha=8, target_modules=["query", "value"])).eval()
        after = model(input_ids=ids).logits
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_only_lora_and_head_train(tiny_dir):
    base = build_base(ModelConfig(name_or_path=str(tiny_dir), init="random"), LABELS)
    model = wrap_with_lora(base, LoraConfig(r=2, target_modules=["query"]))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "classifier.modules_to_save" in n for n in trainable)
    assert any("classifier.modules_to_save.default.dense.weight" in n for n in trainable)
    assert any("classifier.modules_to_save.default.out_proj.weight" in n for n in trainable)


def test_merged_weight_is_w_plus_scaled_ba(tiny_dir):
    torch.manual_seed(0)
    base = build_base(ModelConfig(name_or_path=str(tiny_dir), init="random"), LABELS)
    r, alpha = 4, 12
    model = wrap_with_lora(base, LoraConfig(r=r, alpha=alpha, target_modules=["query", "key", "value"])).eval()
    query = model.base_model.model.roberta.encoder.layer[1].attention.self.query
    with torch.no_grad():
        query.lora_B["default"].weight.normal_()
    w = query.base_layer.weight.detach().clone()
    a, b = query.lora_A["default"].weight.detach(), query.lora_B["default"].weight.detach()
    ids = torch.randint(3, 100, (2, 7))
    with torch.no_grad():
        unmerged = model(input_ids=ids).logits
    merged = model.merge_and_unload()
    torch.testing.assert_close(merged.roberta.encoder.layer[1].attention.self.query.weight,
                               w + (alpha / r) * b @ a, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, unmerged, rtol=1e-4, atol=1e-5)


def test_unknown_target_lists_the_linear_layers(tiny_dir):
    base = build_base(ModelConfig(name_or_path=str(tiny_dir), init="random"), LABELS)
    with pytest.raises(UserError, match=r"\['q_proj'\] not found in RobertaForSequenceClassification.*query"):
        wrap_with_lora(base, LoraConfig(target_modules=["q_proj"]))


def test_package_model_path():
    with pytest.raises(UserError, match="not installed"):
        resolve_model_path("package:no_such_package_here")
    assert resolve_model_path("some/hub-id") == "some/hub-id"


def test_missing_local_model_says_how_to_go_offline(tmp_path):
    with pytest.raises(UserError, match="cannot load the model config"):
        build_base(ModelConfig(name_or_path=str(tmp_path / "missing-folder"), init="random"), LABELS)


def test_pretrained_weights_load_from_a_folder(tiny_dir, tmp_path):
    base = build_base(ModelConfig(name_or_path=str(tiny_dir), init="random"), LABELS)
    base.save_pretrained(tmp_path / "saved")
    again = build_base(ModelConfig(name_or_path=str(tmp_path / "saved")), LABELS)
    key = "roberta.encoder.layer.0.attention.self.query.weight"
    torch.testing.assert_close(again.state_dict()[key], base.state_dict()[key])
    assert isinstance(again, type(AutoModelForSequenceClassification.from_config(base.config)))


def test_bert_pooler_is_part_of_the_head(tmp_path):
    from transformers import BertConfig

    from loraclf.config.schema import Config
    from loraclf.model import accounting

    BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64).save_pretrained(tmp_path)
    base = build_base(ModelConfig(name_or_path=str(tmp_path), init="random"), LABELS)
    assert head_module_names(base) == ["classifier", "bert.pooler"]
    model = wrap_with_lora(base, LoraConfig(r=2, target_modules=["query", "value"]))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n]
    assert sorted(trainable) == sorted([
        "base_model.model.bert.pooler.modules_to_save.default.dense.weight",
        "base_model.model.bert.pooler.modules_to_save.default.dense.bias",
        "base_model.model.classifier.modules_to_save.default.weight",
        "base_model.model.classifier.modules_to_save.default.bias",
    ])
    config = Config()
    config.model.name_or_path = str(tmp_path)
    config.lora.r, config.lora.target_modules = 2, ["query", "value"]
    b = accounting.estimate(config, LABELS)
    assert b.head == 32 * 32 + 32 + 32 * 4 + 4  # the same shape as RoBERTa's head
    assert b.lora == 2 * 2 * 2 * (32 + 32)


def test_dotted_targets_match_name_suffixes(tiny_dir):
    base = build_base(ModelConfig(name_or_path=str(tiny_dir), init="random"), LABELS)
    model = wrap_with_lora(base, LoraConfig(r=2, target_modules=["query", "intermediate.dense"]))
    wrapped = {n.rsplit(".lora_A", 1)[0] for n, _ in model.named_parameters() if ".lora_A." in n}
    assert any(n.endswith("layer.0.intermediate.dense") for n in wrapped)
    assert not any("output.dense" in n for n in wrapped)
    base = build_base(ModelConfig(name_or_path=str(tiny_dir), init="random"), LABELS)
    with pytest.raises(UserError, match=r"\['nope.dense'\] not found"):
        wrap_with_lora(base, LoraConfig(target_modules=["nope.dense"]))


def test_dropout_override_reaches_the_encoder(tiny_dir):
    base = build_base(ModelConfig(name_or_path=str(tiny_dir), init="random", dropout=0.0), LABELS)
    assert base.config.hidden_dropout_prob == 0.0 and base.config.attention_probs_dropout_prob == 0.0
    kept = build_base(ModelConfig(name_or_path=str(tiny_dir), init="random"), LABELS)
    assert kept.config.hidden_dropout_prob == 0.1
    # With every dropout off, train mode is deterministic.
    model = wrap_with_lora(base, LoraConfig(r=2, dropout=0.0)).train()
    ids = torch.randint(3, 100, (2, 9))
    torch.testing.assert_close(model(input_ids=ids).logits, model(input_ids=ids).logits)


def test_loading_a_pretrained_base_reports_only_what_is_unexpected(tmp_path, tiny_model_dir):
    """The fresh head (MISSING) is loraclf's doing and is not reported; a missing encoder weight still is."""
    import logging
    import shutil

    from safetensors.torch import load_file, save_file
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    base = tmp_path / "base"
    AutoModel.from_config(tiny_roberta_config()).save_pretrained(base)  # encoder + pooler, no head
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(tiny_model_dir / name, base / name)
    reports = []
    handler = logging.Handler()
    handler.emit = lambda record: reports.append(record.getMessage())
    logger = logging.getLogger("transformers.modeling_utils")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    logger.addHandler(handler)
    try:
        build_base(ModelConfig(name_or_path=str(base)), ["a", "b"])
        assert not [r for r in reports if "LOAD REPORT" in r]
        weights = load_file(str(base / "model.safetensors"))
        save_file({k: v for k, v in weights.items() if "layer.1.output.dense" not in k}, str(base / "model.safetensors"),
                  metadata={"format": "pt"})
        build_base(ModelConfig(name_or_path=str(base)), ["a", "b"])
        [report] = [r for r in reports if "LOAD REPORT" in r]
        assert "layer.1.output.dense.weight" in report and "MISSING" in report
    finally:
        logger.removeHandler(handler)
        hf_logging.set_verbosity(verbosity)


def test_an_unreachable_hub_fails_at_once_from_the_cache(monkeypatch, tmp_path):
    import time

    from loraclf.model import build, hub

    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    assert hub.hub_kwargs(str(tmp_path)) == {}  # a local folder never asks the hub
    assert hub.hub_kwargs("nobody/no-such-model") == {"local_files_only": True}
    started = time.perf_counter()
    with pytest.raises(UserError, match="the hub is out of reach, and it is not in the local cache"):
        build.load_base_config(ModelConfig(name_or_path="nobody/no-such-model"), ["a", "b"])
    assert time.perf_counter() - started < 5


def test_a_model_is_required_before_anything_loads(monkeypatch, tmp_path):
    """require_model: a folder passes; a hub id passes where the hub is in reach or the id is in its cache;
    otherwise the one line loading would end in. Offline (HF_HUB_OFFLINE, as in this suite) only the cache counts."""
    from huggingface_hub import constants

    from loraclf.model import hub

    assert hub.require_model(str(tmp_path)) == str(tmp_path)
    with pytest.raises(UserError, match="cannot load the model 'nobody/no-such-model': not a local folder, the hub is "
                                        "out of reach, and it is not in the local cache"):
        hub.require_model("nobody/no-such-model")
    with pytest.raises(UserError, match="not a local folder"):
        hub.require_model(str(tmp_path / "gone"))  # a path that is no hub id either
    monkeypatch.setattr(hub, "_cached", lambda name: name == "cached/model")
    assert hub.require_model("cached/model") == "cached/model"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)
    assert hub.require_model("nobody/no-such-model") == "nobody/no-such-model"  # the hub itself will answer
    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    with pytest.raises(UserError, match="the hub is out of reach"):
        hub.require_model("nobody/no-such-model")
