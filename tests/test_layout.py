import torch

from fedarena.core.layout import ParamLayout, flat_params, load_flat
from fedarena.models.simple import MLP


def test_flatten_unflatten_round_trip():
    model = MLP((1, 8, 8), 10, hidden=(5,))
    layout = ParamLayout.from_module(model)
    params = dict(model.named_parameters())
    assert layout.dim == 64 * 5 + 5 + 5 * 10 + 10
    flat = layout.flatten(params)
    back = layout.unflatten(flat)
    for n, p in params.items():
        assert torch.equal(back[n], p.detach())
    assert layout.slice("net.1.weight") == slice(0, 320)
    assert layout.last_layer() == ["net.3.weight", "net.3.bias"]
    assert layout.columns(["net.3.bias"]).tolist() == list(range(layout.dim - 10, layout.dim))


def test_batched_flatten_and_module_helpers():
    model = MLP((1, 4, 4), 3, hidden=(2,))
    layout = ParamLayout.from_module(model)
    U = torch.arange(3 * layout.dim, dtype=torch.float32).reshape(3, layout.dim)
    named = layout.unflatten(U)
    assert named["net.1.weight"].shape == (3, 2, 16)
    assert torch.equal(layout.flatten(named), U)
    load_flat(model, U[1])
    assert torch.equal(flat_params(model), U[1])
