"""attack.optimize: ByzFL's published Optimal-IPM/ALIE values, bounded searches, never worse
than the default strength, probing leaves a stateful defense untouched, and the engine path."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from fedarena.attacks.base import RoundView, ServerView
from fedarena.attacks.byzantine import ALIE, IPM, ROP, GaussianAttack, MinMax
from fedarena.attacks.optimize import OptimizedAttack, maximize
from fedarena.core.layout import ParamLayout
from fedarena.defenses.base import DefensePipeline, RoundContext
from fedarena.defenses.foolsgold import FoolsGold
from fedarena.defenses.pipeline import build_pipeline
from fedarena.defenses.robust import CenteredClipping, TrimmedMean
from fedarena.defenses.stages import NNM, NormClip
from fedarena.errors import ConfigError

X3 = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])  # ByzFL's docstring example


def make_view(benign, pipeline, f=1, m=1, mal_rows=None, seed=0, gen_seed=7):
    benign = torch.as_tensor(benign, dtype=torch.float32)
    d, k = benign.shape[1], len(benign) + m
    layout = ParamLayout.from_params({"w": torch.zeros(d)})
    rows = torch.arange(len(benign), k) if mal_rows is None else torch.as_tensor(mal_rows)
    ctx = RoundContext(
        round=0,
        layout=layout,
        client_ids=torch.arange(k),
        num_samples=torch.ones(k),
        f=f,
        generator=torch.Generator().manual_seed(gen_seed),
    )
    return RoundView(
        round=0,
        layout=layout,
        global_params=torch.zeros(d),
        prev_update=None,
        malicious_ids=torch.arange(100, 100 + m),
        num_clients=k,
        own_updates=torch.zeros(m, d),
        benign_updates=benign,
        lr=1.0,
        algorithm="fedavg",
        generator=torch.Generator().manual_seed(seed),
        server=ServerView(pipeline, ctx, rows, step=lambda u: u),
    )


def _byzfl_pipeline():
    """ByzFL's example: agg = TrMean(f=1), pre_agg_list = [NNM(f=1), Clipping()] (c = 2.0), in that order."""
    return DefensePipeline([NNM(nnm=True), NormClip(clip=2.0)], TrimmedMean(), [])


def test_matches_byzfl_optimal_ipm_published_value():
    # byzfl.Optimal_InnerProductManipulation(TrMean(f=1), [NNM(f=1), Clipping()], f=1)(x)
    # = [-2.74877907, -3.43597384, -4.1231686] (ByzFL docs), i.e. tau = 10 * 0.8**12
    a = OptimizedAttack(IPM(), search="byzfl", evals=20, include_default=False)
    out = a.craft(make_view(X3, _byzfl_pipeline()))
    assert torch.allclose(out[0], torch.tensor([-2.74877907, -3.43597384, -4.1231686]), atol=1e-5)
    assert a.diagnostics()["strength"] == pytest.approx(10 * 0.8**12)
    assert a.diagnostics()["evals"] == 20


def test_matches_byzfl_optimal_alie_published_value():
    # byzfl.Optimal_ALittleIsEnough(TrMean(f=1), [NNM(f=1), Clipping()], f=1)(x)
    # = [12.91985116, 13.91985116, 14.91985116]; ByzFL sends mean + tau*std, we mean - z*std: delta = -10
    a = OptimizedAttack(ALIE(), search="byzfl", evals=20, include_default=False, delta=-10.0)
    out = a.craft(make_view(X3, _byzfl_pipeline()))
    assert torch.allclose(out[0], torch.tensor([12.91985116, 13.91985116, 14.91985116]), atol=1e-4)


@pytest.mark.parametrize("search", ["grid", "golden", "byzfl"])
@pytest.mark.parametrize("evals", [1, 2, 5, 20])
def test_search_uses_exactly_its_evaluation_budget(search, evals):
    calls = []

    def f(x):
        calls.append(x)
        return -((x - 3.3) ** 2)

    trace = maximize(f, search, evals, 0.0, 10.0, start=0.0, delta=1.0)
    assert len(calls) == evals == len(trace.xs)


def test_budget_refuses_an_extra_evaluation():
    from fedarena.attacks.optimize import Trace, _Budget

    g = _Budget(lambda x: x, 1, Trace())
    g(0.0)
    with pytest.raises(RuntimeError, match="budget"):
        g(1.0)


def test_searches_find_a_smooth_maximum():
    f = lambda x: -((x - 3.3) ** 2)
    assert maximize(f, "golden", 30, 0.0, 10.0).best[0] == pytest.approx(3.3, abs=1e-4)
    assert maximize(f, "grid", 20, 0.0, 10.0).best[0] == pytest.approx(3.3, abs=1e-2)
    # ByzFL's line search only steps forward from its best point: coarser
    assert maximize(f, "byzfl", 20, 0.0, 10.0, start=0.0, delta=1.0).best[0] == pytest.approx(3.3, abs=0.3)
    tr = maximize(f, "grid", 5, 0.0, 10.0, first=9.0)
    assert tr.xs[0] == 9.0 and len(tr.xs) == 5


def test_engine_pipeline_counts_probes():
    """Each evaluation is one pass of the (copied) defense pipeline, plus the real craft's none."""
    seen = []

    class Counting(TrimmedMean):
        def aggregate(self, U, ctx):
            seen.append(1)
            return super().aggregate(U, ctx)

    B = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    a = OptimizedAttack(ALIE(), evals=7)
    a.craft(make_view(B, DefensePipeline([], Counting(), []), f=2, m=2))
    assert len(seen) == 7 and a.diagnostics()["evals"] == 7


def _distance(pipeline, view, rows):
    """Objective of a crafted block, from a fresh copy of the pipeline."""
    B = view.benign_updates
    U = torch.empty(view.num_clients, B.shape[1])
    keep = torch.ones(view.num_clients, dtype=torch.bool)
    keep[view.server.malicious_rows] = False
    U[keep], U[~keep] = B, rows
    ctx = copy.deepcopy(view.server.context)
    return float(torch.linalg.vector_norm(copy.deepcopy(pipeline)(U, ctx).update.double() - B.mean(0).double()))


@pytest.mark.parametrize(
    "defense",
    [
        {"name": "median"},
        {"name": "krum"},
        {"name": "trimmed-mean", "nnm": True},
        {"name": "cc", "tau": 0.5},
        {"name": "median", "bucketing": 2},
    ],
)
@pytest.mark.parametrize(
    "make", [lambda: ALIE(), lambda: IPM(), lambda: MinMax(), lambda: ROP(), lambda: GaussianAttack(sigma=0.1)]
)
def test_optimized_never_worse_than_default_on_its_objective(defense, make):
    g = torch.Generator().manual_seed(3)
    B = torch.randn(9, 20, generator=g) * 0.3 + 0.2
    pipeline = build_pipeline({"f": 3, **defense})
    view = make_view(B, pipeline, f=3, m=3, mal_rows=[1, 4, 10])
    default_rows = make().craft(copy.deepcopy(view))
    d_default = _distance(pipeline, view, default_rows)
    a = OptimizedAttack(make(), evals=12)
    rows = a.craft(view)
    d_opt = _distance(pipeline, view, rows)
    diag = a.diagnostics()
    assert diag["objective_default"] == pytest.approx(d_default, rel=1e-5)
    assert diag["objective"] == pytest.approx(d_opt, rel=1e-5)
    assert d_opt >= d_default - 1e-9


def test_probing_leaves_stateful_defenses_and_the_generator_untouched():
    g = torch.Generator().manual_seed(1)
    B = torch.randn(7, 6, generator=g)
    for agg in (CenteredClipping(tau=0.3), FoolsGold(layers="all")):
        pipeline = DefensePipeline([], agg, [])
        view = make_view(B, pipeline, f=2, m=2)
        ctx = view.server.context
        pipeline(torch.randn(9, 6, generator=g), copy.deepcopy(ctx))  # give it state
        before = copy.deepcopy(agg.__dict__)
        gen_state = ctx.generator.get_state().clone()
        a = OptimizedAttack(ALIE(), evals=10)
        a.craft(view)
        after = agg.__dict__
        assert before.keys() == after.keys()
        for k, v in before.items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(v, after[k]), k
            elif isinstance(v, dict):
                assert v.keys() == after[k].keys() and all(torch.equal(v[c], after[k][c]) for c in v), k
            else:
                assert v == after[k], k
        assert torch.equal(ctx.generator.get_state(), gen_state)
        assert not ctx.extras


def test_loss_objective_and_bad_options():
    B = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    pipeline = build_pipeline({"name": "median", "f": 2})
    view = make_view(B, pipeline, f=2, m=2)
    view.server.loss = lambda flat: float(flat.sum())  # a stand-in loss: grows with the parameters
    a = OptimizedAttack(IPM(), objective="loss", evals=8, range=(-5.0, 5.0))
    a.craft(view)
    assert a.diagnostics()["objective"] >= a.diagnostics()["objective_default"]
    with pytest.raises(ConfigError, match="attack.optimize"):
        from fedarena.attacks.data_poisoning import LabelFlip

        OptimizedAttack(LabelFlip())
    with pytest.raises(ConfigError, match="attack.optimize.search"):
        OptimizedAttack(IPM(), search="newton")


def test_run_records_the_chosen_strength_and_is_deterministic(tmp_path):
    from fedarena.config import load_config
    from fedarena.run.simulation import Simulation

    over = [
        "fl.num_clients=10",
        "fl.rounds=2",
        "fl.local_steps=2",
        "attack.name=ipm",
        "attack.num_malicious=3",
        "defense.name=cc",
        "attack.optimize.evals=6",
        "eval.every=2",
    ]
    r1 = Simulation(load_config(None, over)).run()
    assert [r["attack_strength_param"] for r in r1.rounds] == ["epsilon", "epsilon"]
    assert all(r["attack_evals"] == 6 and r["attack_objective"] >= r["attack_objective_default"] for r in r1.rounds)
    r2 = Simulation(load_config(None, over)).run()
    assert [r["attack_strength"] for r in r1.rounds] == [r["attack_strength"] for r in r2.rounds]
    assert r1.summary["final_main_acc"] == r2.summary["final_main_acc"]
    json.dumps(r1.rounds)  # JSON-ready
    loss = Simulation(load_config(None, over + ["attack.optimize.objective=loss"])).run()
    assert all(math.isfinite(r["attack_objective"]) for r in loss.rounds)
    with pytest.raises(ConfigError, match="attack.optimize"):
        load_config(None, ["attack.name=backdoor", "attack.num_malicious=2", "attack.optimize=true"])
    with pytest.raises(ConfigError, match="attack.optimize.evals"):
        load_config(None, ["attack.name=ipm", "attack.num_malicious=2", "attack.optimize.evals=0"])
