"""Mean pooling: the head reads the masked mean of the encoder's output, in every family and head type."""

from __future__ import annotations

import pytest
import torch

from loraclf.model.pooling import apply_pooling, encoder_of, masked_mean, pools_natively

from families import FAMILIES, tiny_model


def _inputs(vocab: int = 90):
    torch.manual_seed(0)
    ids = torch.randint(5, vocab, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    return ids, mask


@pytest.mark.parametrize("family", FAMILIES)
def test_mean_pooling_feeds_the_head_the_masked_mean(family):
    model = tiny_model(family).eval()
    ids, mask = _inputs()
    encoder = encoder_of(model)
    with torch.no_grad():
        hidden = encoder(input_ids=ids, attention_mask=mask)[0]
        apply_pooling(model, "mean")
        direct = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        if pools_natively(model.config):
            # ModernBERT's head pools as its config says: told, not hooked (the encoder's output is untouched).
            assert model.config.classifier_pooling == "mean"
            torch.testing.assert_close(encoder(input_ids=ids, attention_mask=mask)[0], hidden)
            torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits,
                                       model.classifier(model.head(direct)), atol=1e-6, rtol=0)
        else:
            pooled = encoder(input_ids=ids, attention_mask=mask)[0][:, 0]
            torch.testing.assert_close(pooled, direct, atol=1e-6, rtol=0)
        # Padding must not move the result: the same rows without their padding give the same logits.
        logits = model(input_ids=ids, attention_mask=mask).logits
        for row in range(3):
            n = int(mask[row].sum())
            alone = model(input_ids=ids[row:row + 1, :n], attention_mask=mask[row:row + 1, :n]).logits
            torch.testing.assert_close(logits[row:row + 1], alone, atol=1e-5, rtol=0)


def test_masked_mean_without_a_mask_is_the_plain_mean():
    hidden = torch.randn(2, 5, 4)
    torch.testing.assert_close(masked_mean(hidden, None), hidden.mean(1))


def test_pooling_is_applied_once_and_cls_changes_nothing():
    model = tiny_model("roberta").eval()
    ids, mask = _inputs()
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits
        apply_pooling(model, "cls")
        torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits, before)
        apply_pooling(model, "mean")
        once = model(input_ids=ids, attention_mask=mask).logits
        apply_pooling(model, "mean")
        torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits, once)
    assert not torch.allclose(once, before)


@pytest.mark.parametrize("head", ["default", "linear", "lowrank"])
def test_mean_pooled_models_count_exactly_as_planned(tiny_model_dir, head):
    from loraclf.config.schema import AG_NEWS_LABELS, Config
    from loraclf.model import accounting
    from loraclf.model.adapter import build_model

    config = Config()
    config.model.name_or_path, config.model.init = str(tiny_model_dir), "random"
    config.model.pooling, config.model.head, config.model.head_rank = "mean", head, 4
    built = accounting.count(build_model(config.model, config.lora, AG_NEWS_LABELS), config.budget.max_trainable)
    assert built == accounting.estimate(config, AG_NEWS_LABELS)
    config.model.pooling = "cls"
    assert built == accounting.estimate(config, AG_NEWS_LABELS)
