import math

import pytest
import torch
import torch.nn.functional as F

from loraclf.model import fast_attention, geometric_dropout, runtime

from conftest import tiny_roberta_config


@pytest.mark.parametrize("p", [0.01, 0.1, 0.5])
def test_each_element_drops_with_probability_p(p):
    torch.manual_seed(0)
    n = 400_000
    positions = geometric_dropout.dropped_positions(n, p)
    # Sorted, distinct, in range: a set of positions, not draws with replacement.
    assert positions.min() >= 0 and positions.max() < n
    assert bool((positions.diff() > 0).all())
    # The count is Binomial(n, p): within 5 standard deviations.
    assert abs(len(positions) - n * p) < 5 * math.sqrt(n * p * (1 - p))
    # Uniform over the tensor: each tenth holds its share.
    tenths = torch.bincount(positions // (n // 10), minlength=10).double()
    assert float((tenths - n * p / 10).abs().max()) < 5 * math.sqrt(n / 10 * p * (1 - p))


def test_neighbours_drop_independently():
    # For independent drops, P(i and i+1 both dropped) = p^2.
    torch.manual_seed(1)
    n, p = 1_000_000, 0.2
    mask = torch.zeros(n, dtype=torch.bool)
    mask[geometric_dropout.dropped_positions(n, p)] = True
    pairs = float((mask[:-1] & mask[1:]).double().mean())
    assert abs(pairs - p * p) < 5 * math.sqrt(p * p * (1 - p * p) / n)


def test_positions_reach_the_end_even_when_the_first_draw_falls_short():
    torch.manual_seed(2)
    # n * p < 1: the first chunk of gaps rarely passes n, so the loop must continue.
    for _ in range(50):
        positions = geometric_dropout.dropped_positions(100_000, 1e-5)
        assert positions.numel() == 0 or positions.max() < 100_000


def test_dropout_scales_kept_values_and_zeroes_the_gradient_where_dropped():
    torch.manual_seed(3)
    x = torch.rand(64, 33, 17) + 0.5  # no zeros of its own
    x.requires_grad_()
    y = geometric_dropout.geometric_dropout(x, 0.25)
    kept = y != 0
    assert torch.allclose(y[kept], x.detach()[kept] / 0.75)
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, kept.float() / 0.75)
    assert abs(float(kept.float().mean()) - 0.75) < 0.02


def test_dropout_is_seeded_and_off_in_eval():
    x = torch.ones(1000, 8)
    torch.manual_seed(4)
    a = geometric_dropout.geometric_dropout(x, 0.1)
    torch.manual_seed(4)
    b = geometric_dropout.geometric_dropout(x, 0.1)
    assert torch.equal(a, b)
    assert geometric_dropout.geometric_dropout(x, 0.1, training=False) is x
    assert torch.equal(geometric_dropout.geometric_dropout(x, 1.0), torch.zeros_like(x))
    layer = geometric_dropout.FastDropout(0.3).eval()
    assert layer(x) is x


def test_every_dropout_module_is_swapped(tiny_model_dir):
    from loraclf.config.schema import LoraConfig, ModelConfig
    from loraclf.model.adapter import wrap_with_lora
    from loraclf.model.build import build_base

    base = build_base(ModelConfig(name_or_path=str(tiny_model_dir), init="random"), ["a", "b"])
    model = wrap_with_lora(base, LoraConfig(r=2, alpha=4, dropout=0.05, target_modules=["query", "value"]))
    before = [m.p for m in model.modules() if type(m) is torch.nn.Dropout]
    # Embeddings; 3 per layer (attention probabilities, attention output, feed-forward);
    # the head's, in each of PEFT's two copies; LoRA's, one per targeted layer.
    assert len(before) == 1 + 3 * 2 + 2 + 2 * 2
    assert geometric_dropout.use_fast_dropout(model) == len(before)
    assert not [m for m in model.modules() if type(m) is torch.nn.Dropout]
    assert sorted(m.p for m in model.modules() if isinstance(m, geometric_dropout.FastDropout)) == sorted(before)


class _Module(torch.nn.Module):
    is_causal = False


@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive"])
def test_training_attention_matches_sdpa_when_nothing_drops(mask_kind):
    torch.manual_seed(5)
    q, k, v = (torch.randn(3, 2, 7, 8) for _ in range(3))
    keep = torch.ones(3, 1, 7, 7, dtype=torch.bool)
    keep[0, :, :, 5:] = False  # padding in the first sequence
    mask = {"none": None, "bool": keep,
            "additive": torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)}[mask_kind]
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
    # p so small that no element drops: the math path alone is compared with SDPA.
    out, _ = fast_attention.attention(_Module(), q, k, v, mask, dropout=1e-12)
    assert torch.allclose(out, expected, atol=1e-5)


def test_training_attention_drops_probabilities():
    torch.manual_seed(6)
    q, k = torch.zeros(2, 2, 40, 8), torch.zeros(2, 2, 40, 8)
    v = torch.ones(2, 2, 40, 8)
    # Uniform attention over 40 keys with v = 1: each output is (kept share) / (1 - p).
    out, _ = fast_attention.attention(_Module(), q, k, v, None, dropout=0.5)
    assert not torch.allclose(out, torch.ones_like(out))
    assert abs(float(out.mean()) - 1.0) < 0.05


def test_fast_attention_model_matches_sdpa_model(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    config = tiny_roberta_config(num_labels=3)
    torch.manual_seed(7)
    fast = AutoModelForSequenceClassification.from_config(config, attn_implementation=fast_attention.ATTENTION_NAME)
    plain = AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa")
    plain.load_state_dict(fast.state_dict())
    ids = torch.randint(3, 1000, (4, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    fast.eval(), plain.eval()
    with torch.no_grad():
        assert torch.allclose(fast(input_ids=ids, attention_mask=mask).logits,
                              plain(input_ids=ids, attention_mask=mask).logits, atol=1e-6)
    # In training with dropout off, the math path runs and still agrees.
    for model in (fast, plain):
        model.train()
        for module in model.modules():
            if hasattr(module, "dropout") and isinstance(module.dropout, torch.nn.Dropout):
                module.dropout.p = 1e-12
    fast_logits = fast(input_ids=ids, attention_mask=mask).logits
    plain_logits = plain(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(fast_logits, plain_logits, atol=1e-4)


@pytest.mark.parametrize("training", [False, True])
def test_padding_is_masked_as_loraclf_builds_the_model(tiny_model_dir, training):
    """A padded item gets the logits it gets alone (the fast attention receives the padding mask)."""
    from loraclf.config.schema import ModelConfig
    from loraclf.model.build import build_base

    torch.manual_seed(8)
    model = build_base(ModelConfig(name_or_path=str(tiny_model_dir), init="random", dropout=0.0), ["a", "b"])
    assert model.config._attn_implementation == fast_attention.ATTENTION_NAME
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 1e-12  # in training, attention takes the math + dropout path, and nothing drops
    model.train(training)
    ids = torch.randint(3, 1000, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    with torch.no_grad():
        together = model(input_ids=ids, attention_mask=mask).logits[1]
        alone = model(input_ids=ids[1:, :7], attention_mask=mask[1:, :7]).logits[0]
    assert torch.allclose(together, alone, atol=1e-5)


def test_frozen_linears_in_bf16_give_what_autocast_gives_fp32_weights(tiny_model_dir):
    """Only the frozen linear layers change dtype, and under autocast the logits and LoRA gradients are the same."""
    import copy

    from loraclf.config.schema import LoraConfig, ModelConfig
    from loraclf.model.adapter import wrap_with_lora
    from loraclf.model.build import build_base

    torch.manual_seed(9)
    base = build_base(ModelConfig(name_or_path=str(tiny_model_dir), init="random", dropout=0.0), ["a", "b"])
    fp32 = wrap_with_lora(base, LoraConfig(r=4, alpha=8, dropout=0.0), 10)
    for name, param in fp32.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param)  # B starts at zero: give the LoRA path something to carry
    bf16 = copy.deepcopy(fp32)
    assert runtime.frozen_linears_to(bf16, torch.bfloat16) == 2 * 6 + 2  # 6 per layer, and the frozen original of the head (dense, out_proj)
    for name, param in bf16.named_parameters():
        assert param.dtype == (torch.float32 if param.requires_grad or "LayerNorm" in name or "embeddings" in name
                               else torch.bfloat16), name
    ids = torch.randint(3, 1000, (3, 10))
    grads = []
    for model in (fp32, bf16):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(input_ids=ids).logits
        logits.float().sum().backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
        grads[-1]["logits"] = logits
    for name, grad in grads[0].items():
        assert torch.equal(grad, grads[1][name]), name
