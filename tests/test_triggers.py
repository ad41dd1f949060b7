"""Backdoor triggers: pixel-exact geometry (RLR spec U10), options, DBA parts, blending."""

import pytest
import torch

from fedarena.data.poison import TRIGGERS, apple_logo, copyright_logo, make_trigger
from fedarena.errors import ConfigError


def pixels(mask: torch.Tensor) -> set[tuple[int, int]]:
    return {tuple(p) for p in torch.nonzero(mask[0] > 0).tolist()}


def plus_pixels(rows, col, row, cols):
    return {(r, col) for r in rows} | {(row, c) for c in cols}


FMNIST_PLUS = plus_pixels(range(5, 10), 5, 7, range(3, 8))
CIFAR_PLUS = plus_pixels(range(5, 12), 5, 8, range(2, 9))


def test_fmnist_plus_is_the_reference_geometry():
    t = make_trigger("plus", (1, 28, 28))
    assert pixels(t.mask) == FMNIST_PLUS and len(FMNIST_PLUS) == 9
    x = torch.zeros(2, 1, 28, 28)
    out = t.apply(x)
    on = torch.zeros(28, 28, dtype=torch.bool)
    for r, c in FMNIST_PLUS:
        on[r, c] = True
    assert (out[:, 0][:, on] == 1.0).all()  # 255 in uint8
    assert (out[:, 0][:, ~on] == 0.0).all()


def test_fmnist_square_is_rows_and_cols_21_to_25():
    t = make_trigger("square", (1, 28, 28))
    assert pixels(t.mask) == {(r, c) for r in range(21, 26) for c in range(21, 26)}
    assert t.num_pixels == 25


def test_femnist_plus_dark_at_position():
    # FEMNIST (light background): value 0 at (8..12, 8) and (10, 6..10)
    t = make_trigger("plus", (1, 28, 28), value=0.0, position=(8, 6))
    assert pixels(t.mask) == plus_pixels(range(8, 13), 8, 10, range(6, 11))
    out = t.apply(torch.ones(1, 1, 28, 28))
    assert out.sum() == 28 * 28 - 9 and out[0, 0, 10, 8] == 0.0


def test_cifar_plus_black_in_all_channels():
    t = make_trigger("plus", (3, 32, 32))
    assert pixels(t.mask) == CIFAR_PLUS
    x = torch.full((1, 3, 32, 32), 0.5)
    out = t.apply(x)
    for r, c in CIFAR_PLUS:
        assert (out[0, :, r, c] == 0.0).all()
    assert (out == 0).sum() == 3 * len(CIFAR_PLUS)


def test_cifar_dba_parts_and_union():
    parts = make_trigger("plus", (3, 32, 32)).split(4)
    got = [pixels(p.mask) for p in parts]
    assert got[0] == {(r, 5) for r in range(5, 9)}  # upper vertical with the centre
    assert got[1] == {(r, 5) for r in range(9, 12)}  # lower vertical
    assert got[2] == {(8, c) for c in range(2, 6)}  # left horizontal with the centre
    assert got[3] == {(8, c) for c in range(5, 9)}  # right horizontal with the centre
    assert set().union(*got) == CIFAR_PLUS


def test_digits_geometry():
    plus3 = make_trigger("plus", (1, 8, 8))
    assert pixels(plus3.mask) == {(0, 1), (1, 0), (1, 1), (1, 2), (2, 1)}
    plus5 = make_trigger("plus", (1, 8, 8), size=5)
    assert pixels(plus5.mask) == plus_pixels(range(0, 5), 2, 2, range(0, 5))
    dba = [pixels(p.mask) for p in plus5.split(4)]
    assert dba == [{(0, 2), (1, 2), (2, 2)}, {(3, 2), (4, 2)}, {(2, 0), (2, 1), (2, 2)}, {(2, 2), (2, 3), (2, 4)}]
    assert pixels(make_trigger("square", (1, 8, 8)).mask) == {(6, 6), (6, 7), (7, 6), (7, 7)}
    assert pixels(make_trigger("pixel", (1, 8, 8)).mask) == {(7, 7)}


def test_named_and_explicit_positions():
    t = make_trigger("square", (1, 28, 28), size=3, position="top-left")
    assert pixels(t.mask) == {(r, c) for r in range(2, 5) for c in range(2, 5)}
    t = make_trigger("square", (1, 28, 28), size=2, position=[0, 26])
    assert pixels(t.mask) == {(0, 26), (0, 27), (1, 26), (1, 27)}


def test_badnets_checkerboard():
    t = make_trigger("badnets", (1, 28, 28))
    assert pixels(t.mask) == {(r, c) for r in range(24, 27) for c in range(24, 27)}
    out = t.apply(torch.full((1, 1, 28, 28), 0.3))[0, 0]
    assert out[24, 24] == 1.0 and out[24, 25] == 0.0 and out[25, 25] == 1.0 and out[0, 0] == pytest.approx(0.3)


def test_logos_bottom_right_and_additive_with_saturation():
    for name, draw in (("copyright", copyright_logo), ("apple", apple_logo)):
        t = make_trigger(name, (1, 28, 28))
        px = pixels(t.mask)
        assert min(r for r, _ in px) >= 20 and max(r for r, _ in px) <= 27
        assert min(c for _, c in px) >= 18 and max(c for _, c in px) <= 27
        assert 20 <= len(px) <= 64 and t.blend == "add"
        assert torch.equal(t.mask[0, 20:28, 19:27], draw(8))
        x = torch.full((1, 1, 28, 28), 0.8)
        out = t.apply(x)
        assert out.max() <= 1.0 and (out >= x).all()  # saturating addition, no wrap-around
        strong = t.mask[0] == 1.0
        assert (out[0, 0][strong] == 1.0).all()
        dark = make_trigger(name, (1, 28, 28), value=0.0).apply(torch.ones(1, 1, 28, 28))
        assert (dark[0, 0][strong] == 0.0).all() and dark.min() >= 0.0  # FEMNIST: x - logo


def test_copyright_ring_and_c_shape():
    m = copyright_logo(24)
    assert m[12, 0] > 0.5 and m[12, 23] > 0.5  # the ring, left and right
    assert m[12, 6] > 0.5  # the C's left stroke
    assert m[12, 17] < 0.1  # the C is open to the right
    assert m[12, 12] == 0.0  # hollow centre


@pytest.mark.parametrize("name", TRIGGERS)
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (1, 16, 16)])
def test_every_trigger_fits_every_size(name, shape):
    t = make_trigger(name, shape)
    assert t.num_pixels >= 1
    x = torch.rand(4, *shape)
    out = t.apply(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    untouched = t.mask[0] == 0
    assert torch.equal(out[..., untouched], x[..., untouched])
    parts = t.split(min(2, t.num_pixels))
    assert set().union(*(pixels(p.mask) for p in parts)) == pixels(t.mask)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"name": "star"}, "attack.trigger"),
        ({"name": "plus", "size": 4}, "attack.trigger_size"),
        ({"name": "square", "size": 40}, "attack.trigger_size"),
        ({"name": "square", "position": (27, 27)}, "attack.trigger_position"),
        ({"name": "square", "position": "middle"}, "attack.trigger_position"),
        ({"name": "square", "value": 2.0}, "attack.trigger_value"),
        ({"name": "square", "blend": "mix"}, "attack.trigger_blend"),
    ],
)
def test_bad_options_one_line_errors(kwargs, field):
    name = kwargs.pop("name")
    with pytest.raises(ConfigError) as e:
        make_trigger(name, (1, 28, 28), **kwargs)
    assert str(e.value).startswith(field + ":") and "\n" not in str(e.value)


def test_dba_lines_trigger_is_the_dba_papers_layout():
    """DBA's CIFAR trigger: 4 lines of 1x6 at rows 0/4, cols 0-5 / 9-14, max value, one line per part."""
    t = make_trigger("dba-lines", (3, 32, 32))
    expected = {(r, c) for r in (0, 4) for c in list(range(0, 6)) + list(range(9, 15))}
    assert {tuple(p) for p in torch.nonzero(t.mask[0]).tolist()} == expected
    assert torch.all(t.pattern == 1.0)
    parts = t.split(4)
    assert [sorted({tuple(p) for p in torch.nonzero(q.mask[0]).tolist()})[0] for q in parts] == [
        (0, 0),
        (0, 9),
        (4, 0),
        (4, 9),
    ]
    assert all(q.num_pixels == 6 for q in parts)
    # Table 9's thickness x4: rows 0-3 and 4-7
    t4 = make_trigger("dba-lines", (1, 28, 28), size=4)
    assert torch.nonzero(t4.mask[0].sum(1)).flatten().tolist() == list(range(8)) and t4.num_pixels == 96
    # 8x8 digits: lines of 3 columns, gap 1
    t8 = make_trigger("dba-lines", (1, 8, 8))
    assert t8.mask[0, 0].tolist() == [1, 1, 1, 0, 1, 1, 1, 0] and t8.mask[0, 4].tolist() == [1, 1, 1, 0, 1, 1, 1, 0]
    with pytest.raises(ConfigError, match="attack.trigger_size"):
        make_trigger("dba-lines", (1, 28, 28), size=5)
