"""Client-side defenses (defenses/client.py): the LeadFL spec's U3-U7 and U10 via
reproduce/leadfl_units.py, vectorized == sequential for every recipe, config errors, and
that attackers never apply them; the CLIENT_DEFENSES registry, the routing of their flat
``defense.*`` keys, and config.yaml files of earlier versions (the four LeadFL keys at
their defaults whatever defense.client is)."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fedarena.config import load_config
from fedarena.core.local import BatchSchedule, train_sequential, train_vectorized
from fedarena.core.recipe import TrainRecipe
from fedarena.defenses.client import LeadFLA1N, LeadFLA3, LeadFLRef, NoiseDefense, laplace
from fedarena.errors import ConfigError
from fedarena.registry import CLIENT_DEFENSES
from fedarena.models.simple import MLP, LeNet
from fedarena.reproduce import leadfl_units as units


@pytest.mark.parametrize("name", ["U2", "U3", "U4", "U5", "U7", "U8", "U9", "U10"])
def test_unit_claims(name):
    ours, ok = units.UNITS[name]()
    assert ok, ours


@pytest.mark.parametrize("double", [True, False])
def test_u6_ref_equals_the_reference_code_loop(double):
    """LeadFLRef == the authors' loop written with torch.optim.SGD (momentum, un-zeroed grads,
    clip_grad_value_, per-epoch reset, no regulariser on an epoch's first batch)."""
    err, ok = units.u6_reference_code(double)
    assert ok, err


def test_laplace_sampler_scale():
    x = laplace((200_000,), 0.2, torch.Generator().manual_seed(0))
    assert float(x.abs().mean()) == pytest.approx(0.2, rel=0.02)  # E|X| = s
    assert abs(float(x.mean())) < 0.005


def client_defense(
    name: str,
    variant: str = "ref",
    regular_weight: float = 0.4,
    pert_strength: float = 0.2,
    double_task_step: bool = True,
):
    """The step hook of client-side defense ``name``, built through the registry."""
    values = {
        "client_variant": variant,
        "regular_weight": regular_weight,
        "pert_strength": pert_strength,
        "double_task_step": double_task_step,
    }
    return CLIENT_DEFENSES.build(name, {k: v for k, v in values.items() if k in CLIENT_DEFENSES.params(name)}).hook()


HOOKS = [
    ("leadfl", "ref", True),
    ("leadfl", "ref", False),
    ("leadfl", "a3", True),
    ("leadfl", "a1n", True),
    ("ldp", "ref", True),
    ("fl-wbc", "ref", True),
]


@pytest.mark.parametrize("name,variant,double", HOOKS)
def test_vectorized_equals_sequential_with_client_defense(name, variant, double):
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10)
    g = torch.Generator().manual_seed(0)
    sizes = (13, 30, 7, 25)  # unequal: clients stop at different steps
    x, y = torch.rand(sum(sizes), 1, 8, 8, generator=g), torch.randint(0, 10, (sum(sizes),), generator=g)
    bounds = np.cumsum((0,) + sizes)
    index = [np.arange(bounds[i], bounds[i + 1]) for i in range(len(sizes))]
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    hook = client_defense(name, variant, 0.4, 0.2, double)
    recipe = TrainRecipe(lr=0.05, momentum=0.1, batch_size=8, epochs=2, step_hook=hook)
    sched = BatchSchedule.build(list(sizes), recipe, [np.random.default_rng([1, i]) for i in range(4)])
    U_vec = train_vectorized(model, params, x, y, index, sched, recipe, chunk_size=3)
    U_seq, _ = train_sequential(model, params, x, y, index, sched, recipe)
    plain = TrainRecipe(lr=0.05, momentum=0.1, batch_size=8, epochs=2)
    U_plain, _ = train_sequential(
        model,
        params,
        x,
        y,
        index,
        BatchSchedule.build(list(sizes), plain, [np.random.default_rng([1, i]) for i in range(4)]),
        plain,
    )
    assert torch.allclose(U_vec, U_seq, atol=1e-5, rtol=1e-4)
    assert (U_seq - U_plain).abs().max() > 1e-4  # the defense changed the training


@pytest.mark.parametrize("name", ["leadfl", "fl-wbc"])
def test_vectorized_equals_sequential_cnn_fold(name):
    torch.manual_seed(0)
    model = LeNet((1, 28, 28), 10)
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(30, 1, 28, 28, generator=g), torch.randint(0, 10, (30,), generator=g)
    index = [np.arange(0, 15), np.arange(15, 30)]
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    recipe = TrainRecipe(lr=0.05, momentum=0.1, batch_size=8, epochs=1, step_hook=client_defense(name))
    sched = BatchSchedule.build([15, 15], recipe, [np.random.default_rng(i) for i in range(2)])
    U_vec = train_vectorized(model, params, x, y, index, sched, recipe)
    U_seq, _ = train_sequential(model, params, x, y, index, sched, recipe)
    assert torch.allclose(U_vec, U_seq, atol=1e-5, rtol=1e-4)


def test_attackers_train_without_the_client_defense():
    from fedarena.run.simulation import Simulation

    base = [
        "fl.num_clients=10",
        "fl.rounds=1",
        "attack.name=backdoor",
        "attack.num_malicious=3",
        "attack.poison_frac=0.0",
    ]
    plain = Simulation(load_config(None, base))
    lead = Simulation(load_config(None, base + ["defense.client=leadfl"]))
    cohort = plain.sample_clients(0)
    U0, U1 = plain.local_updates(0, cohort, True), lead.local_updates(0, cohort, True)
    mal = torch.from_numpy(plain.is_malicious[cohort])
    assert torch.allclose(U0[mal], U1[mal])  # attackers: identical to no defense
    assert not torch.allclose(U0[~mal], U1[~mal])  # benign: changed


@pytest.mark.parametrize(
    "override,field",
    [
        ("defense.client=dp", "defense.client"),
        ("defense.client_variant=paper", "defense.client_variant"),
        ("defense.pert_strength=0", "defense.pert_strength"),
    ],
)
def test_bad_client_defense_settings_are_one_line_errors(override, field):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert e.value.field == field


def test_client_defense_composes_with_server_rules_and_survives_a_name_change():
    cfg = load_config(None, ["defense.client=ldp", "defense.name=median"])
    assert cfg.defense.client == "ldp" and cfg.defense.name == "median"


# ------------------------------------------------------------------ the registry and its keys
def test_registry_lists_every_client_defense_with_its_parameters():
    assert CLIENT_DEFENSES.names() == ["fl-wbc", "ldp", "leadfl", "none"]
    defaults = {n: {k: p.default for k, p in CLIENT_DEFENSES.params(n).items()} for n in CLIENT_DEFENSES.names()}
    assert defaults == {
        "none": {},
        "ldp": {"pert_strength": 0.2},
        "fl-wbc": {"pert_strength": 0.2},
        "leadfl": {"client_variant": "ref", "regular_weight": 0.4, "pert_strength": 0.2, "double_task_step": True},
    }
    assert CLIENT_DEFENSES.owners() == {
        "pert_strength": ["fl-wbc", "ldp", "leadfl"],
        "client_variant": ["leadfl"],
        "regular_weight": ["leadfl"],
        "double_task_step": ["leadfl"],
    }


@pytest.mark.parametrize(
    "over,hook",
    [
        ([], None),
        (["defense.client=leadfl"], LeadFLRef(0.4, 0.2, True)),
        (
            ["defense.client=leadfl", "defense.regular_weight=1", "defense.double_task_step=false"],
            LeadFLRef(1.0, 0.2, False),
        ),
        (["defense.client=leadfl", "defense.client_variant=a3", "defense.pert_strength=0.1"], LeadFLA3(0.4, 0.1)),
        (["defense.client=leadfl", "defense.client_variant=a1n"], LeadFLA1N(0.4, 0.2)),
        (["defense.client=ldp", "defense.pert_strength=0.3"], NoiseDefense(0.3, False)),
        (["defense.client=fl-wbc"], NoiseDefense(0.2, True)),
    ],
)
def test_the_config_builds_the_chosen_hook_with_its_keys(over, hook):
    from fedarena.defenses.client import client_hook

    built = client_hook(load_config(None, over).defense)
    assert built == hook and type(built) is type(hook)
    if hook is not None:
        assert all(type(v) is type(getattr(hook, k)) for k, v in vars(built).items())  # 1 -> 1.0, as before


def test_client_keys_reach_the_client_defense_not_the_aggregator():
    from fedarena.config import defense_dict
    from fedarena.defenses.pipeline import build_pipeline

    cfg = load_config(
        None,
        [
            "defense.name=trimmed-mean",
            "defense.trim=2",
            "defense.client=leadfl",
            "defense.regular_weight=0.5",
            "defense.clip=2.0",
        ],
    )
    pipe = build_pipeline(defense_dict(cfg))  # trimmed-mean takes no regular_weight: it never sees it
    assert type(pipe.aggregator).__name__ == "TrimmedMean" and len(pipe.pre) == 1
    # a dict that names the client-side defense builds too ("client" is the engine's key)
    build_pipeline({"name": "median", "client": "leadfl", "regular_weight": 0.5})


@pytest.mark.parametrize(
    "over,field,needle",
    [
        (
            ["defense.regular_weight=0.5"],
            "defense.regular_weight",
            "only applies when defense.client is leadfl (got defense.client='none')",
        ),
        (["defense.client=ldp", "defense.client_variant=a3"], "defense.client_variant", "defense.client is leadfl"),
        (["defense.client=fl-wbc", "defense.double_task_step=false"], "defense.double_task_step", "is leadfl"),
        (["defense.pert_strength=0.3"], "defense.pert_strength", "defense.client is fl-wbc or ldp or leadfl"),
        (
            ["defense.client=leadfl", "defense.client_variant=paper"],
            "defense.client_variant",
            "unknown value (got 'paper') (valid: 'ref', 'a3', 'a1n')",
        ),
        (["defense.client=leadfl", "defense.regular_weight=-0.1"], "defense.regular_weight", "must be >= 0"),
        (["defense.client=ldp", "defense.pert_strength=0"], "defense.pert_strength", "must be > 0"),
        (["defense.client=leadfl", "defense.pert_strength=.inf"], "defense.pert_strength", "finite"),
        (["defense.client=leadfl", "defense.regular_weight=abc"], "defense.regular_weight", "valid number"),
        (["defense.client=leadfl", "fl.algorithm=fedsgd"], "defense.client", "needs local steps"),
    ],
)
def test_a_client_key_the_chosen_defense_does_not_read_is_one_line(over, field, needle):
    with pytest.raises(ConfigError) as e:
        load_config(None, over)
    assert e.value.field == field and needle in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert "(valid: " in str(e.value)


def test_a_client_key_at_its_default_passes_while_unread_and_leaves_config_yaml():
    from fedarena.config import dump_config

    plain = load_config(None, ["defense.client=ldp"])
    stale = load_config(
        None,
        [
            "defense.client=ldp",
            "defense.client_variant=ref",
            "defense.regular_weight=0.4",
            "defense.double_task_step=true",
            "defense.pert_strength=0.2",
        ],
    )
    assert dump_config(stale) == dump_config(plain)
    assert "regular_weight" not in dump_config(stale) and "  pert_strength: 0.2\n" in dump_config(stale)


def test_set_client_drops_the_keys_the_new_client_defense_does_not_read(tmp_path):
    (tmp_path / "c.yaml").write_text("defense:\n  client: leadfl\n  regular_weight: 0.6\n  pert_strength: 0.3\n")
    assert load_config(tmp_path / "c.yaml", ["defense.client=ldp"]).defense.params() == {"pert_strength": 0.3}
    assert load_config(tmp_path / "c.yaml", ["defense.client=none"]).defense.params() == {}
    with pytest.raises(ConfigError, match="defense.regular_weight: only applies"):  # stated on the command line
        load_config(tmp_path / "c.yaml", ["defense.regular_weight=0.7", "defense.client=ldp"])
    kept = load_config(tmp_path / "c.yaml", ["defense.name=median"]).defense.params()  # a new rule keeps them
    assert kept == {"regular_weight": 0.6, "pert_strength": 0.3}


def test_leadfl_config_yaml_keeps_its_keys_where_earlier_versions_wrote_them():
    from fedarena.config import dump_config

    text = dump_config(
        load_config(
            None, ["defense.client=leadfl", "defense.name=multi-krum", "defense.regular_weight=1", "defense.f=1"]
        )
    )
    assert (
        "defense:\n  name: multi-krum\n  weighted: false\n  f: 1\n  client: leadfl\n  client_variant: ref\n"
        "  regular_weight: 1.0\n  pert_strength: 0.2\n  double_task_step: true\n  m: null\n"
    ) in text


LEGACY = Path(__file__).parent / "data" / "legacy_config_client_none.yaml"


def test_a_config_yaml_of_an_earlier_version_loads():
    from fedarena.config import dump_config

    cfg = load_config(LEGACY)
    assert cfg.defense.client == "none" and cfg.defense.name == "fedavg" and cfg.fl.algorithm == "fedsgd"
    text = dump_config(cfg)
    old = LEGACY.read_text()
    for key in ("client_variant: ref", "regular_weight: 0.4", "pert_strength: 0.2", "double_task_step: true"):
        assert f"  {key}\n" in old and key not in text
    assert dump_config(load_config(None, base=yaml.safe_load(text))) == text


def test_a_run_whose_config_yaml_an_earlier_version_wrote_resumes(tmp_path, interrupt_at):
    """The legacy file made small (digits, 4 rounds): a run cut after round 2 whose
    config.yaml is the earlier version's resumes to the uninterrupted run's records."""
    from fedarena.run.runner import execute

    tree = yaml.safe_load(LEGACY.read_text())
    tree["data"]["dataset"] = "digits"
    tree["fl"].update(num_clients=6, clients_per_round=6, rounds=4)
    tree["eval"]["every"], tree["run"]["checkpoint_every"] = 1, 2
    legacy = yaml.safe_dump(tree, sort_keys=False)
    assert "  regular_weight: 0.4\n" in legacy
    (tmp_path / "legacy.yaml").write_text(legacy)
    cfg = load_config(tmp_path / "legacy.yaml")
    for d in ("ref", "cut"):
        (tmp_path / d).mkdir()
    execute(tmp_path / "ref", cfg, plot=False)
    interrupt_at(2)
    with pytest.raises(KeyboardInterrupt):
        execute(tmp_path / "cut", cfg, plot=False)
    interrupt_at(None)
    (tmp_path / "cut" / "config.yaml").write_text(legacy)  # as the earlier version left it
    done = execute(tmp_path / "cut", resume=True, plot=False)
    assert done.summary["status"] == "ok" and done.summary["resumed_from"] == 2
    for f in ("metrics.jsonl", "clients.jsonl", "rounds.jsonl"):
        assert (tmp_path / "cut" / f).read_bytes() == (tmp_path / "ref" / f).read_bytes(), f


def test_fedarena_list_shows_the_client_defenses_with_their_keys():
    from typer.testing import CliRunner

    from fedarena.cli import app

    out = CliRunner().invoke(app, ["list", "client-defenses"]).output.replace("\n", " ")
    for name in ("leadfl", "ldp", "fl-wbc", "none"):
        assert name in out
    for key in (
        "defense.client_variant='ref'",
        "defense.regular_weight=0.4",
        "defense.pert_strength=0.2",
        "defense.double_task_step=True",
    ):
        assert key in out
