"""int8 linear layers: the arithmetic they promise, answers independent of the batch, and the recorded agreement."""

import numpy as np
import pytest
import torch

from loraclf.errors import UserError
from loraclf.inference.classifier import Classifier
from loraclf.model.int8 import Int8Linear, quantize_linears


def test_int8_linear_is_per_row_quantized_arithmetic():
    torch.manual_seed(0)
    linear = torch.nn.Linear(48, 24)
    x = torch.randn(5, 7, 48)
    q = Int8Linear(linear)
    w_scale = linear.weight.abs().amax(1) / 127
    w_q = torch.round(linear.weight / w_scale[:, None])
    rows = x.reshape(-1, 48)
    x_scale = rows.abs().amax(1, keepdim=True) / 127
    expected = (torch.round(rows / x_scale) @ w_q.t()) * x_scale * w_scale + linear.bias
    torch.testing.assert_close(q(x), expected.reshape(5, 7, 24), rtol=1e-5, atol=1e-5)
    relative = (q(x) - linear(x)).norm() / linear(x).norm()
    assert 0 < relative < 0.02  # 8 bits per weight and per activation: about 1% error on random data


def test_a_row_gets_the_same_output_alone_and_in_any_batch():
    torch.manual_seed(0)
    q = Int8Linear(torch.nn.Linear(64, 32))
    batch = torch.randn(9, 64) * torch.logspace(-2, 2, 9)[:, None]  # rows of very different scales
    together = q(batch)
    for i in range(len(batch)):
        assert torch.equal(q(batch[i : i + 1]), together[i : i + 1])  # bit-identical: integer sums, own scale


def test_the_head_stays_fp32():
    from transformers import AutoModelForSequenceClassification

    from conftest import tiny_roberta_config
    from loraclf.model.heads import head_module_names

    model = AutoModelForSequenceClassification.from_config(tiny_roberta_config())
    linears = sum(type(m) is torch.nn.Linear for m in model.modules())
    keep = head_module_names(model)
    replaced = quantize_linears(model, keep)
    assert replaced == linears - 2  # roberta: classifier.dense and classifier.out_proj stay
    head = [m for name, m in model.named_modules() if name.startswith("classifier.") and hasattr(m, "weight")]
    assert len(head) == 2 and all(type(m) is torch.nn.Linear for m in head)


def test_predict_int8_same_answers_alone_and_batched(trained):
    clf = Classifier.load(trained["run"], device="cpu", int8=True)
    texts = trained["texts"]
    together = clf.predict_proba(texts, batch_size=32)
    alone = np.stack([clf.predict_proba(t) for t in texts[:6]])
    # The int8 products are exact; attention and layer norms in fp32 round the last bit by padded length.
    np.testing.assert_allclose(alone, together[:6], rtol=0, atol=1e-6)
    assert (alone.argmax(1) == together[:6].argmax(1)).all()
    exact = Classifier.load(trained["run"], device="cpu", precision="fp32").predict_proba(texts)
    assert np.abs(together - exact).max() < 0.05
    assert clf.precision == "int8" and "int8 linear layers" in clf.runs_in
    agreement = clf.description.info["int8_agreement"]
    assert set(agreement) == {"validation"} and 0 <= agreement["validation"] <= 1
    assert f"{100 * agreement['validation']:.2f}% of validation" in clf.runs_in


def test_int8_refuses_what_it_cannot_run(trained):
    with pytest.raises(UserError, match="--int8: runs on the CPU"):
        Classifier.load(trained["run"], device="meta", int8=True)
    with pytest.raises(UserError, match="--int8: needs the adapter merged"):
        Classifier.load(trained["run"], device="cpu", int8=True, merge=False)
