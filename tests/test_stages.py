"""Pre-aggregation stages: clipping (server and client side), bucketing, nearest-neighbour mixing."""

import math

import pytest
import torch
from torch.func import vmap

from fedarena.config import load_config
from fedarena.defenses.base import RoundContext
from fedarena.defenses.pipeline import build_pipeline
from fedarena.defenses.stages import (
    NNM,
    Bucketing,
    NormClip,
    bucket_means,
    clip_rows,
    l2_ball_projection,
    nearest_neighbor_mixing,
)
from fedarena.core.recipe import TrainRecipe
from fedarena.run.simulation import Simulation
from fedarena.errors import ConfigError
from fedarena.registry import STAGES

T = lambda rows: torch.tensor(rows, dtype=torch.float32)


def ctx(n, f=0, seed=0):
    return RoundContext(
        round=0,
        layout=None,
        client_ids=torch.arange(n),
        num_samples=torch.ones(n, dtype=torch.long),
        f=f,
        generator=torch.Generator().manual_seed(seed),
    )


# ----------------------------------------------------------------------------- clip


def test_server_clip_by_hand():
    U = T([[3, 4], [0.3, 0.4], [1e30, 0], [math.nan, 0]])
    out = NormClip(clip=1.0)(U, ctx(4))
    assert torch.allclose(out[:3], T([[0.6, 0.8], [0.3, 0.4], [1.0, 0.0]]))
    assert torch.isnan(out[3, 0])
    assert U[0].tolist() == [3, 4]  # the input is not modified


def test_server_clip_returns_input_when_nothing_exceeds_the_bound():
    U = T([[0.3, 0.4]])
    assert clip_rows(U, 1.0) is U


def test_client_clip_leaves_U_and_projects_every_local_step():
    stage = NormClip(clip=1.0, clip_at="client")
    U = T([[3, 4]])
    assert stage(U, ctx(1)) is U
    recipe = stage.client_recipe(TrainRecipe())
    g = {"w": torch.zeros(2), "b": torch.zeros(1)}
    p = recipe.project({"w": T([3, 0]), "b": T([4])}, g)  # update norm 5 -> 1
    assert p["w"].tolist() == pytest.approx([0.6, 0]) and p["b"].tolist() == pytest.approx([0.8])
    batch = {"w": T([[3, 0], [0.1, 0]]), "b": T([[4], [0.2]])}
    out = vmap(recipe.project, in_dims=(0, None))(batch, g)  # runs under vmap; the small one is kept
    assert torch.allclose(out["w"], T([[0.6, 0], [0.1, 0]]))
    assert torch.allclose(out["b"], T([[0.8], [0.2]]))
    # composes with a projection already in the recipe (applied first)
    halve = lambda params, glob: {k: v / 2 for k, v in params.items()}
    both = stage.client_recipe(TrainRecipe(project=halve)).project({"w": T([3, 0]), "b": T([4])}, g)
    assert both["w"].tolist() == pytest.approx([0.6, 0])
    assert l2_ball_projection(10.0)({"w": T([3, 0])}, {"w": torch.zeros(2)})["w"].tolist() == [3, 0]


def test_client_clip_refuses_fedsgd():
    c = ctx(1)
    c.extras["algorithm"] = "fedsgd"
    with pytest.raises(ConfigError) as e:
        NormClip(clip=1.0, clip_at="client")(T([[1.0]]), c)
    assert e.value.field == "defense.clip_at" and e.value.valid == "server"


def test_client_clip_bounds_every_benign_update_end_to_end():
    r = Simulation(
        load_config(None, ["fl.num_clients=6", "fl.rounds=2", "defense.clip=0.5", "defense.clip_at=client"])
    ).run()
    assert r.summary["status"] == "ok"
    assert max(c["norm"] for c in r.clients) <= 0.5 + 1e-5


# ----------------------------------------------------------------------------- bucketing


def test_bucketing_by_hand():
    U = T([[0], [1], [2], [3], [4]])
    perm = torch.randperm(5, generator=torch.Generator().manual_seed(0)).tolist()
    c = ctx(5)
    out = Bucketing(bucketing=2)(U, c)
    expect = [[(perm[0] + perm[1]) / 2], [(perm[2] + perm[3]) / 2], [perm[4]]]  # the last bucket holds 1 row
    assert out.tolist() == expect
    row_of = c.extras["row_of_client"]
    assert [row_of[perm[i]].item() for i in range(5)] == [0, 0, 1, 1, 2]
    assert Bucketing(bucketing=2).rows_out(5) == 3
    assert Bucketing(bucketing=1)(U, ctx(5)) is U


def test_bucketing_maps_per_client_decisions_back():
    U = T([[0], [0.1], [0.2], [0.3], [100], [101]])
    p = build_pipeline({"name": "krum", "f": 0, "bucketing": 2})
    out = p(U, ctx(6, seed=3))
    assert out.weights.shape == (6,) and out.weights.dtype == torch.bool
    assert out.weights.sum() == 2  # the two clients of the chosen bucket
    rfa = build_pipeline({"name": "rfa", "bucketing": 2})(U, ctx(6, seed=3))
    assert rfa.weights.shape == (6,) and rfa.weights.sum().item() == pytest.approx(1.0)


def test_bucket_means_keep_nan_inside_its_bucket():
    U = T([[math.nan], [1], [2], [3]])
    means, row_of = bucket_means(U, 2, torch.Generator().manual_seed(1))
    bad = row_of[0]
    assert torch.isnan(means[bad]).all() and torch.isfinite(means[1 - bad]).all()


# ----------------------------------------------------------------------------- nnm


def test_nnm_by_hand():
    # 1-D rows 0, 1, 2, 10; f = 1: each row -> mean of its 3 nearest (itself included)
    # 0: {0,1,2} -> 1; 1: {1,0,2} -> 1; 2: {2,1,0} -> 1; 10: {10,2,1} -> 13/3
    out = NNM(nnm=True)(T([[0], [1], [2], [10]]), ctx(4, f=1))
    assert out.flatten().tolist() == pytest.approx([1, 1, 1, 13 / 3])
    assert torch.equal(nearest_neighbor_mixing(T([[5], [7]]), 0), T([[6], [6]]))


def test_nnm_includes_itself_among_duplicates_and_skips_faulty_rows():
    U = T([[1, 1], [1, 1], [1, 1], [4, 4], [math.nan, 0]])
    out = nearest_neighbor_mixing(U, f=2)  # 3 nearest
    assert out[:3].tolist() == [[1, 1]] * 3
    assert out[3].tolist() == [2, 2]  # {4, 1, 1}
    assert torch.isnan(out[4, 0])  # passed on unchanged for the aggregator to discard


def test_nnm_then_median_resists_a_far_row():
    U = T([[0], [1], [2], [3], [1e6]])
    p = build_pipeline({"name": "median", "f": 1, "nnm": True})
    assert abs(p(U, ctx(5, f=1)).update.item() - 1.5) < 1.0


# ----------------------------------------------------------------------------- composition, errors


def test_stages_compose_in_order_with_any_aggregator():
    assert {"clip", "bucketing", "nnm"} <= set(STAGES.names())
    p = build_pipeline({"name": "trimmed-mean", "f": 1, "clip": 1.0, "bucketing": 2, "nnm": True})
    assert [type(s).__name__ for s in p.pre] == ["NormClip", "NNM", "Bucketing"]
    out = p(torch.randn(8, 5, generator=torch.Generator().manual_seed(0)) * 10, ctx(8, f=1))
    assert out.update.shape == (5,) and out.update.norm() <= 1.0 + 1e-5


@pytest.mark.parametrize(
    "values, field",
    [
        ({"clip": 0.0}, "defense.clip"),
        ({"clip": 1.0, "clip_at": "both"}, "defense.clip_at"),
    ],
)
def test_clip_parameter_errors(values, field):
    with pytest.raises(ConfigError) as e:
        STAGES.build("clip", values)
    assert e.value.field == field


def test_bucketing_and_nnm_errors():
    with pytest.raises(ConfigError) as e:
        STAGES.build("bucketing", {"bucketing": 0})
    assert e.value.field == "defense.bucketing"
    with pytest.raises(ConfigError) as e:
        NNM(nnm=True)(torch.zeros(3, 2), ctx(3, f=3))
    assert e.value.field == "defense.f" and e.value.valid == "0..2"
