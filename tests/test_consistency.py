"""Consistency training: the perturbed view, and the loss against the model's own confident predictions."""

import math
from types import SimpleNamespace

import torch

from loraclf.data.perturb import strong_view
from loraclf.training.consistency import IGNORE, ConsistencyLoss

MASK, PAD = 99, 0


def batch_of(lengths):
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.arange(1, n + 1)  # 1 = the first token, n = the last
    return ids, (ids != PAD).long()


def test_strong_view_deletes_one_span_masks_inner_tokens_and_keeps_the_ends():
    torch.manual_seed(0)
    ids, mask = batch_of([40, 12, 3])
    view, view_mask = strong_view(ids, mask, PAD, MASK, mask_rate=0.3, deletion=0.25)
    masked = 0
    for row, n in enumerate([40, 12, 3]):
        length = int(view_mask[row].sum())
        assert length == n - math.floor(0.25 * (n - 2))
        tokens = view[row, :length].tolist()
        assert tokens[0] == 1 and tokens[-1] == n
        kept = [t for t in tokens[1:-1] if t != MASK]
        assert kept == sorted(kept) and len(set(kept)) == len(kept)  # a subsequence, in order
        if n == 40:  # the 9 deleted tokens are contiguous: without masking, the gap shows as one jump
            unmasked, _ = strong_view(ids[:1], mask[:1], PAD, MASK, mask_rate=0.0, deletion=0.25)
            steps = torch.diff(unmasked[0]).tolist()
            assert sorted(steps)[-1] == 10 and steps.count(1) == len(steps) - 1
        masked += tokens.count(MASK)
        assert (view[row, length:] == PAD).all()
    assert 0 < masked < 20
    no_mask_token, _ = strong_view(ids, mask, PAD, None, mask_rate=0.3, deletion=0.0)
    assert torch.equal(no_mask_token, ids)


class Bag(torch.nn.Module):
    """A tiny classifier with dropout: eval mode and train mode differ."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.drop, self.out = torch.nn.Embedding(100, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 3)

    def forward(self, input_ids, attention_mask):
        pooled = (self.embed(input_ids) * attention_mask[..., None]).sum(1) / attention_mask.sum(1, keepdim=True)
        return SimpleNamespace(logits=self.out(self.drop(pooled)))


def test_loss_is_labelled_cross_entropy_plus_weighted_cross_entropy_to_the_weak_prediction():
    model = Bag().train()
    ids, mask = batch_of([6, 5, 7, 4])
    labels = torch.tensor([2, IGNORE, 0, IGNORE])
    with torch.no_grad():
        model.eval()
        targets = model(ids, mask).logits.argmax(-1)
        model.train()
    torch.manual_seed(1)
    loss = ConsistencyLoss(0.0, 0.5, PAD, MASK, 0.0, 0.0).summed(model, {"input_ids": ids, "attention_mask": mask,
                                                                          "labels": labels})
    # The same draws of dropout: the labelled forward first, then the unlabelled (strong) one.
    torch.manual_seed(1)
    labelled = model(ids[[0, 2]], mask[[0, 2]]).logits
    strong = model(ids[[1, 3]], mask[[1, 3]]).logits
    expected = torch.nn.functional.cross_entropy(labelled, labels[[0, 2]], reduction="sum") + \
        0.5 * torch.nn.functional.cross_entropy(strong, targets[[1, 3]], reduction="sum")
    torch.testing.assert_close(loss, expected)
    assert model.training


def test_unconfident_texts_add_nothing_and_are_counted():
    model = Bag().train()
    ids, mask = batch_of([6, 5, 7])
    consistency = ConsistencyLoss(0.999, 1.0, PAD, MASK, 0.15, 0.1)
    loss = consistency.summed(model, {"input_ids": ids, "attention_mask": mask, "labels": torch.full((3,), IGNORE)})
    assert loss.item() == 0.0 and int(consistency.unlabelled) == 3 and int(consistency.confident) == 0
    reachable = ConsistencyLoss(0.0, 1.0, PAD, MASK, 0.15, 0.1)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.full((3,), IGNORE)}
    assert reachable.summed(model, batch).item() > 0 and int(reachable.confident) == 3
