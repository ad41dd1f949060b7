"""The uniformity filter (LeadFL spec P4): near-duplicate updates are dropped, hand values."""

from __future__ import annotations

import math

import pytest
import torch

from fedarena.core.layout import ParamLayout
from fedarena.defenses.base import RoundContext
from fedarena.defenses.uniformity import UniformityFilter, nearest_neighbour_distances, uniformity_mask
from fedarena.errors import ConfigError
from fedarena.registry import DEFENSES


def ctx(n, d):
    return RoundContext(
        round=0,
        layout=ParamLayout.from_params({"w": torch.zeros(d)}),
        client_ids=torch.arange(n),
        num_samples=torch.ones(n),
    )


def test_nearest_neighbour_distances_hand_values():
    U = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0], [0.0, 1.0]])
    nn, D = nearest_neighbour_distances(U)
    assert nn.tolist() == pytest.approx([1.0, math.sqrt(18), 5.0, 1.0])  # (3,4) is nearest to (0,1)
    assert D[1, 3] == pytest.approx(math.sqrt(18))


def test_duplicates_are_dropped_and_the_rest_averaged():
    U = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0], [5.0, 5.0], [5.0, 5.0]])
    out = UniformityFilter()(U, ctx(5, 2))
    assert out.weights.tolist() == [True, True, False, False, False]
    assert out.update.tolist() == [0.5, 0.5]
    assert out.info["num_dropped"] == 3


def test_no_duplicates_keeps_everyone_and_equals_the_mean():
    U = torch.randn(8, 30, generator=torch.Generator().manual_seed(0))
    out = UniformityFilter()(U, ctx(8, 30))
    assert bool(out.weights.all()) and torch.allclose(out.update, U.mean(0), atol=1e-6)


def test_tolerance_catches_noisy_copies():
    gen = torch.Generator().manual_seed(1)
    benign = torch.randn(6, 100, generator=gen)  # pairwise distance ~ sqrt(200) ~ 14
    fake = torch.full((3, 100), 3.0) + 0.01 * torch.randn(3, 100, generator=gen)  # copies 0.14 apart
    U = torch.cat([benign, fake])
    assert bool(uniformity_mask(U, 1e-6).all())  # exact-duplicate rule misses noisy copies
    assert uniformity_mask(U, 0.05).tolist() == [True] * 6 + [False] * 3


def test_all_identical_keeps_all_and_nan_rows_are_dropped():
    U = torch.ones(4, 3)
    assert bool(uniformity_mask(U).all())
    U = torch.tensor([[1.0, 0.0], [0.0, 1.0], [float("nan"), 0.0], [2.0, 2.0]])
    out = UniformityFilter()(U, ctx(4, 2))
    assert out.weights.tolist() == [True, True, False, True]
    assert torch.isfinite(out.update).all()


def test_registered_with_validation():
    assert DEFENSES.get("uniformity-filter") is UniformityFilter
    with pytest.raises(ConfigError, match="defense.tol"):
        UniformityFilter(tol=-1)
