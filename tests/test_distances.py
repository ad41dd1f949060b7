import math

import pytest
import torch

from fedarena.core.distances import distances, metric_values, param_change_extremes, scope_groups, update_metric_values
from fedarena.core.layout import ParamLayout

# two "layers": conv (weight 2, bias 1) and fc (weight 2, bias 1)
LAY = ParamLayout.from_params(
    {"conv.weight": torch.zeros(2), "conv.bias": torch.zeros(1), "fc.weight": torch.zeros(2), "fc.bias": torch.zeros(1)}
)
G = torch.tensor([1.0, 0.0, 2.0, 3.0, 4.0, 0.0])
X = torch.tensor([0.0, 1.0, 2.0, 3.0, 0.0, 1.0])
# per tensor: conv.weight (1,0)/(0,1): cos dist 1, l2 sqrt2; conv.bias 2/2: 0, 0;
# fc.weight (3,4)/(3,0): cos = 9/(5*3) = 0.6 -> 0.4, l2 4; fc.bias 0 (global) vs 1: cos 1 (one zero), l2 1


def test_scopes_group_parameters():
    assert scope_groups(LAY, "whole") == {"whole": list(LAY.names)}
    assert scope_groups(LAY, "last") == {"last": ["fc.weight", "fc.bias"]}
    assert scope_groups(LAY, "layers") == {"conv": ["conv.weight", "conv.bias"], "fc": ["fc.weight", "fc.bias"]}
    declared = ParamLayout.from_params(
        dict(zip(LAY.names, [torch.zeros(2), torch.zeros(1)] * 2)), groups=("conv", "fc.weight")
    )
    assert declared.layer_groups() == {
        "conv": ["conv.weight", "conv.bias"],
        "fc.weight": ["fc.weight"],
        "fc": ["fc.bias"],
    }


@pytest.mark.parametrize(
    "scope,cos,l2",
    [
        ("whole", [1 + 0 + 0.4 + 1], [math.sqrt(2) + 0 + 4 + 1]),
        ("last", [0.4 + 1], [4 + 1]),
        ("layers", [1, 1.4], [math.sqrt(2), 5]),
    ],
)
def test_summed_hand_values(scope, cos, l2):
    assert distances(X, G, LAY, "cos", scope)[0].tolist() == pytest.approx(cos, abs=1e-12)
    assert distances(X, G, LAY, "l2", scope)[0].tolist() == pytest.approx(l2, abs=1e-12)


@pytest.mark.parametrize(
    "scope,cos,l2",
    [
        # whole: <x,g> = 0+0+4+9+0+0 = 13, |x|^2 = 15, |g|^2 = 30 -> 1 - 13/sqrt(450); l2: sqrt(2+0+16+1)
        ("whole", [1 - 13 / math.sqrt(450)], [math.sqrt(19)]),
        # last: <x,g> = 9, |x|^2 = 10, |g|^2 = 25 ; l2 sqrt(16+1)
        ("last", [1 - 9 / math.sqrt(250)], [math.sqrt(17)]),
        # conv: <x,g> = 4, |x|^2 = 5, |g|^2 = 5 -> 0.2 ; fc: as last
        ("layers", [1 - 4 / 5, 1 - 9 / math.sqrt(250)], [math.sqrt(2), math.sqrt(17)]),
    ],
)
def test_flat_hand_values(scope, cos, l2):
    assert distances(X, G, LAY, "cos", scope, flat=True)[0].tolist() == pytest.approx(cos, abs=1e-12)
    assert distances(X, G, LAY, "l2", scope, flat=True)[0].tolist() == pytest.approx(l2, abs=1e-12)


def test_zero_norm_and_stability():
    lay = ParamLayout.from_params({"b": torch.zeros(3)})
    z = torch.zeros(3)
    assert distances(z, z, lay, "cos", "whole")[0].item() == 0.0  # both zero: identical
    assert distances(torch.ones(3), z, lay, "cos", "whole")[0].item() == 1.0  # one zero: similarity 0
    # nearly equal tensors: 1 - cos ~ eps^2 / 2 survives (naive float32 1 - cos gives 0)
    g = torch.tensor([1.0, 0.0, 0.0])
    x = torch.tensor([1.0, 1e-4, 0.0])
    assert distances(x, g, lay, "cos", "whole")[0].item() == pytest.approx(0.5e-8, rel=1e-3)
    # gradients are finite everywhere, including at x == g and at zero tensors
    for xv, gv in ((g.clone(), g), (z.clone(), g), (torch.ones(3), z)):
        xv.requires_grad_(True)
        (distances(xv, gv, lay, "cos", "whole")[0].sum() + distances(xv, gv, lay, "l2", "whole")[0].sum()).backward()
        assert torch.isfinite(xv.grad).all()


def test_batched_rows_match_single_and_gradient():
    torch.manual_seed(0)
    g = torch.randn(6)
    U = torch.randn(4, 6)
    U[2] = float("nan")
    vals, labels = update_metric_values(U, g, LAY, ["cos", "l2"], "layers")
    assert labels == ["cos/layers/conv", "cos/layers/fc", "l2/layers/conv", "l2/layers/fc"]
    assert torch.isnan(vals[2]).all() and torch.isfinite(vals[[0, 1, 3]]).all()
    for i in (0, 1, 3):
        one, _ = metric_values(g + U[i], g, LAY, ["cos", "l2"], "layers")
        assert torch.allclose(vals[i], one, atol=1e-6)
    x = (g + U[0]).double().requires_grad_(True)
    v, _ = distances(x, g, LAY, "l2", "whole")
    v.sum().backward()
    # d/dx sum_p |x_p - g_p| = (x_p - g_p) / |x_p - g_p|
    exp = torch.cat([U[0, s] / U[0, s].norm() for s in (LAY.slice(n) for n in LAY.names)]).double()
    assert torch.allclose(x.grad, exp, atol=1e-6)


def test_param_change_extremes():
    ext = param_change_extremes(X, G, LAY, "layers")
    assert ext == {"conv": (-1.0, 1.0), "fc": (-4.0, 1.0)}
