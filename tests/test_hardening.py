"""Bad input ends in one line and exit code 2 (never a traceback, never a hang): the reproducers
of the fuzzing report, each as a CLI command."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fedarena.attacks.byzantine import MinMax, MinSum
from fedarena.cli import app
from fedarena.config import load_config
from fedarena.errors import ConfigError

runner = CliRunner()
LONG_NAME = "a" * 300

CASES = [
    (
        ["attack.name=minmax", "attack.num_malicious=4", "attack.gamma_init=.inf"],
        "attack.gamma_init: must be a finite number",
    ),
    (["attack.name=minsum", "attack.num_malicious=4", "attack.tol=1e-300"], "attack.tol: must be in [1e-12, 1)"),
    (["defense.name=cc", "defense.iterations=1000000000"], "defense.iterations: must be in 1..1000"),
    (["defense.name=rfa", "defense.iters=1000000000"], "defense.iters: must be in 1..1000"),
    (["defense.name=krum", "defense.m=3"], "defense.m: unknown parameter for defense 'krum' (valid: none"),
    (["defense.name=bulyan", "defense.m=3"], "defense.m: unknown parameter for defense 'bulyan'"),
    (["defense.name=sign", "defense.m=3"], "defense.m: unknown parameter for defense 'sign'"),
    (["attack.name=none", "attack.num_malicious=0", "attack.foo=3"], "attack.foo: unknown parameter for attack 'none'"),
    (["seed=-1"], "seed: "),
    (
        ["attack.name=edge-case", "attack.num_malicious=4", "attack.edge_seed=-1"],
        "attack.edge_seed: a seed must be in 0..2**63-1",
    ),
    (["data.dataset=synthetic", "data.synthetic.synthetic_seed=-1"], "data.synthetic.synthetic_seed: a seed"),
    (["model.hidden=[-5]"], "model.hidden: layer widths must be in 1..100000"),
    (
        ["data.dataset=synthetic", "data.synthetic.train_size=99999999999999999999999"],
        "data.synthetic.train_size: must be in",
    ),
    (["data.dataset=synthetic", "data.synthetic.image_size=512", "data.synthetic.channels=16"], "would hold"),
    (["fl.local_epochs=1000000000"], "fl.local_epochs: Input should be less than or equal to 1000"),
    (["fl.local_steps=1000000000"], "fl.local_steps: Input should be less than or equal to 100000"),
    (["defense.bucketing=9223372036854775808"], "defense.bucketing: bucket size must be in 1..1000000"),
    ([f"name={LONG_NAME}"], "name: must be 1..100 characters"),
    (["name=a/b"], "name: must be 1..100 characters"),
    (["fl.lr=.inf"], "fl.lr: Input should be a finite number"),
    (["fl.server_lr=.inf"], "fl.server_lr: Input should be a finite number"),
    (["fl.weight_decay=.inf"], "fl.weight_decay: Input should be a finite number"),
    (["defense.noise=.inf"], "defense.noise: must be a finite number"),
    (
        ["attack.name=alie", "attack.num_malicious=4", "attack.z=.nan"],
        "attack.z: must be a finite number (got nan) (valid: a finite float, or null)",
    ),
    (["defense.name=sparsefed", "defense.norm_bound=.nan"], "defense.norm_bound: must be a finite number"),
    (["defense.name=cc", "defense.tau=.inf"], "defense.tau: must be a finite number"),
    (["data.dataset=synthetic", "data.synthetic.noise=.nan"], "data.synthetic.noise: must be a finite number"),
    (["data.partition=dirichlet", "data.alpha=.inf"], "data.alpha: Input should be a finite number"),
    (["data.synthetic.noise=0.3"], "data.synthetic.noise: only applies when data.dataset = 'synthetic'"),
    (["=5"], "--set: no key name before '=' in '=5'"),
    (["fl..rounds=5"], "--set: empty part in key 'fl..rounds'"),
    (
        ["data.dataset=synthetic", "data.synthetic.foo=1"],
        "data.synthetic.foo: unknown option of the synthetic dataset (valid: channels,",
    ),
    (["fl.clients_per_round=foo"], "(valid: an integer, or null)"),
    (["attack.name=alie", "attack.num_malicious=20"], "attack.num_malicious: attack 'alie' crafts from the benign"),
]


def _one_error_line(res) -> str:
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.output, res.output
    return lines[0]


@pytest.mark.parametrize("sets,expected", CASES, ids=[" ".join(c[0])[:40] for c in CASES])
def test_bad_value_one_line_exit_2(tmp_path, sets, expected):
    args = ["run", "--quiet", "--out", str(tmp_path / "o")]
    for s in sets:
        args += ["--set", s]
    line = _one_error_line(runner.invoke(app, args))
    assert expected in line
    assert "(valid: Optional)" not in line and "(valid: Literal)" not in line


def test_folder_as_config_one_line(tmp_path):
    line = _one_error_line(runner.invoke(app, ["run", "--quiet", str(tmp_path)]))
    assert "is a folder" in line


def test_no_message_names_a_typing_construct():
    """Every registry parameter's valid values are real values, not 'Optional'/'Literal'."""
    from fedarena.registry import ATTACKS, CLIENT_DEFENSES, DATASETS, DEFENSES, MODELS, STAGES

    for reg in (ATTACKS, DEFENSES, STAGES, CLIENT_DEFENSES, MODELS, DATASETS):
        for name in reg.names():
            for p in reg.params(name).values():
                assert not p.type_name.startswith(("Optional", "Literal", "Union")), (name, p.name, p.type_name)


def test_minmax_search_loops_are_bounded():
    g = torch.Generator().manual_seed(0)
    B = torch.randn(6, 50, generator=g)
    for cls in (MinMax, MinSum):
        a = cls(gamma_init=1e-300, tol=1e-12, gamma_max=1e300)  # 2**200 doublings would not reach a break
        p = -B.std(0)
        gamma = a.find_gamma(B, p)
        assert 0 <= gamma < 1e300
    with pytest.raises(ConfigError, match="attack.gamma_init"):
        MinMax(gamma_init=20.0, gamma_max=10.0)


def test_zero_sample_clients_under_fedsgd(tmp_path):
    """Dirichlet alpha=0.01 with min_size=0 leaves clients without samples: they contribute a zero update."""
    res = runner.invoke(
        app,
        [
            "run",
            "--quiet",
            "--out",
            str(tmp_path / "o"),
            "--set",
            "fl.rounds=1",
            "--set",
            "fl.algorithm=fedsgd",
            "--set",
            "data.partition=dirichlet",
            "--set",
            "data.alpha=0.01",
            "--set",
            "fl.num_clients=100",
            "--set",
            "data.min_size=0",
            "--set",
            "attack.num_malicious=4",
        ],
    )
    assert res.exit_code == 0, res.output
    clients = [json.loads(x) for x in (tmp_path / "o" / "clients.jsonl").read_text().splitlines()]
    cfg = load_config(None, ["fl.num_clients=100", "data.partition=dirichlet", "data.alpha=0.01", "data.min_size=0"])
    from fedarena.run.simulation import Simulation

    sim = Simulation(cfg)
    empty = [c for c in range(100) if len(sim.client_index[c]) == 0]
    assert empty, "the partition should leave some clients empty"
    norms = {c["client"]: c["norm"] for c in clients}
    assert all(norms[c] == 0.0 for c in empty if not sim.is_malicious[c])


def test_zero_sample_client_gives_zero_row():
    from fedarena.core.local import BatchSchedule, minibatch_gradients
    from fedarena.core.recipe import TrainRecipe

    model = torch.nn.Linear(4, 3)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    index = [np.arange(5), np.array([], dtype=np.int64), np.arange(5, 10)]
    recipe = TrainRecipe(lr=0.1, batch_size=4, weight_decay=0.01)
    for steps in (None, 3):
        r = recipe.with_(steps=steps) if steps else recipe
        sched = BatchSchedule.build([len(i) for i in index], r, [np.random.default_rng(i) for i in range(3)])
        assert sched.batches[1] == []
        for vec in (True, False):
            G = minibatch_gradients(model, params, x, y, index, sched, r, vectorized=vec)
            assert G.shape == (3, 15) and torch.all(G[1] == 0) and torch.all(G[0] != 0)
