import math

import torch

from fedarena.core.metrics import (
    accuracy,
    backdoor_accuracy,
    class_accuracy,
    cosine_to,
    detection_rates,
    per_class_accuracy,
    row_norms,
)


def test_accuracy_family_on_hand_made_predictions():
    y = torch.tensor([0, 1, 1, 2, 2, 2])
    pred = torch.tensor([0, 1, 0, 2, 1, 2])
    assert accuracy(pred, y) == 4 / 6
    assert class_accuracy(pred, y, 1) == 0.5
    assert class_accuracy(pred, y, 2) == 2 / 3
    assert per_class_accuracy(pred, y, 3) == [1.0, 0.5, 2 / 3]
    assert backdoor_accuracy(torch.tensor([7, 7, 3, 7]), 7) == 0.75
    assert math.isnan(backdoor_accuracy(torch.tensor([], dtype=torch.long), 7))


def test_norms_cosines_detection():
    U = torch.tensor([[3.0, 4.0], [0.0, 0.0], [-1.0, 0.0]])
    assert row_norms(U).tolist() == [5.0, 0.0, 1.0]
    cos = cosine_to(U, torch.tensor([1.0, 0.0]))
    assert torch.allclose(cos, torch.tensor([0.6, 0.0, -1.0]))
    rates = detection_rates(torch.tensor([True, False, True, False]), torch.tensor([True, True, False, False]))
    assert rates == {"tpr": 0.5, "fpr": 0.5}
