"""The training objective against torch's own mean losses and scikit-learn's class weights."""

import numpy as np
import pytest
import torch
from sklearn.utils.class_weight import compute_class_weight

from loraclf.errors import UserError
from loraclf.training.losses import Objective

NAMES = ["a", "b", "c"]


def _parts_mean(objective, logits, labels, cuts=(0, 3, 4, 9)):
    """The batch's loss as train_step adds it up: parts' summed losses over the whole batch's normaliser."""
    total = sum(objective.summed(logits[i:j], torch.from_numpy(labels[i:j])) for i, j in zip(cuts, cuts[1:]))
    return total / objective.normaliser(labels)


def test_weighted_smoothed_cross_entropy_adds_up_to_torchs_batch_mean():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(9, 3, generator=generator)
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 2, 0])
    objective = Objective.build("single_label", "balanced", 0.1, labels, NAMES)
    expected_weights = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    torch.testing.assert_close(objective.weights, torch.tensor(expected_weights, dtype=torch.float32))
    mean = torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels), weight=objective.weights,
                                             label_smoothing=0.1)
    torch.testing.assert_close(_parts_mean(objective, logits, labels), mean)
    plain = Objective.build("single_label", "none", 0.0, labels, NAMES)
    assert plain.plain and not objective.plain
    torch.testing.assert_close(_parts_mean(plain, logits, labels),
                               torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels)))


def test_multi_label_loss_is_bce_with_positive_weights_and_smoothed_targets():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(9, 3, generator=generator)
    labels = (torch.rand(9, 3, generator=generator) > 0.6).float().numpy()
    labels[0] = 1  # every class has a positive
    objective = Objective.build("multi_label", "balanced", 0.2, labels, NAMES)
    positives = labels.sum(axis=0)
    torch.testing.assert_close(objective.weights, torch.tensor((9 - positives) / positives, dtype=torch.float32))
    targets = torch.from_numpy(labels) * 0.8 + 0.1
    mean = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, pos_weight=objective.weights)
    torch.testing.assert_close(_parts_mean(objective, logits, labels), mean)


def test_class_weights_need_every_class_and_the_right_length():
    with pytest.raises(UserError, match="class 'c' has no training item"):
        Objective.build("single_label", "balanced", 0.0, np.array([0, 1, 1]), NAMES)
    with pytest.raises(UserError, match="2 weights for 3 classes"):
        Objective.build("single_label", [1.0, 2.0], 0.0, np.array([0, 1, 2]), NAMES)
    listed = Objective.build("single_label", [1.0, 2.0, 0.5], 0.0, np.array([0, 1, 2]), NAMES)
    assert listed.normaliser(np.array([1, 1, 2])) == 4.5
