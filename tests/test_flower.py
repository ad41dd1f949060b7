"""Flower integration: reply -> U conversion, rejection, the strategy's round, attacks in
clients, the colluding-server simulation, and one run in Flower's simulation runtime."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

fl = pytest.importorskip(
    "fedarena.integrations.flower", reason="Flower is not installed (pip install 'fedarena[flower]')"
)

from flwr.app import (  # noqa: E402
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MessageType,
    Metadata,
    MetricRecord,
    RecordDict,
)

from fedarena.attacks.base import DataInfo  # noqa: E402
from fedarena.config import load_config  # noqa: E402
from fedarena.errors import ConfigError  # noqa: E402
from fedarena.integrations.flower import (  # noqa: E402
    REJECT_CODES,
    ClientAttack,
    ColludingServerSimulation,
    FedarenaStrategy,
    FlowerTask,
    flat_to_record,
    record_layout,
    record_to_flat,
    replies_to_updates,
)
from fedarena.run.simulation import Simulation  # noqa: E402

GLOBAL = {
    "w": np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32),
    "b": np.array([0.5], dtype=np.float32),
    "steps": np.array(7, dtype=np.int64),
}


def record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()})


def global_record() -> ArrayRecord:
    return record(GLOBAL)


def _metadata(node: int, message_type: str = MessageType.TRAIN) -> Metadata:
    return Metadata(
        run_id=1,
        message_id=f"m{node}",
        src_node_id=node,
        dst_node_id=0,
        reply_to_message_id="i",
        group_id="",
        created_at=0.0,
        ttl=60.0,
        message_type=message_type,
    )


def reply(node: int, dw=0.0, db=0.0, pid=None, n=10, arrays=None, extra_records=None, error=None) -> Message:
    """A train reply of ``node``: full weights = GLOBAL + (dw, db) unless ``arrays`` is given."""
    if error is not None:
        return Message(Error(code=0, reason=error), metadata=_metadata(node))
    if arrays is None:
        arrays = {
            "w": GLOBAL["w"] + np.float32(1) * np.asarray(dw, dtype=np.float32),
            "b": GLOBAL["b"] + np.float32(db),
            "steps": GLOBAL["steps"],
        }
    metrics = {"num-examples": n} if n is not None else {}
    if pid is not None:
        metrics["partition-id"] = pid
    content = RecordDict({"arrays": record(arrays), "metrics": MetricRecord(metrics), **(extra_records or {})})
    return Message(content, metadata=_metadata(node))


# ---------------------------------------------------------------- conversion
def test_layout_covers_float_arrays_and_roundtrips():
    g = global_record()
    layout = record_layout(g)
    assert layout.names == ("w", "b") and layout.dim == 5  # the int64 counter is not in U
    flat = record_to_flat(g, layout)
    assert flat.tolist() == [1.0, 2.0, 3.0, 4.0, 0.5]
    back = flat_to_record(flat + 1, layout, g)
    assert back["w"].numpy().tolist() == [[2.0, 3.0], [4.0, 5.0]] and back["w"].numpy().dtype == np.float32
    assert back["b"].numpy().tolist() == [1.5] and int(back["steps"].numpy()) == 7  # integers keep the global value


def test_replies_become_deltas_against_the_global_in_partition_order():
    g = global_record()
    layout = record_layout(g)
    replies = [
        reply(50, dw=[[1, 0], [0, 0]], pid=2),
        reply(40, db=-0.25, pid=0),
        reply(60, dw=[[0, 0], [0, 2]], db=1.0, pid=1),
    ]
    batch = replies_to_updates(replies, g, layout)
    assert [e.partition_id for e in batch.entries] == [0, 1, 2]
    assert batch.U.tolist() == [[0, 0, 0, 0, -0.25], [0, 0, 0, 2, 1.0], [1, 0, 0, 0, 0]]
    assert batch.num_examples.tolist() == [10, 10, 10] and not batch.rejected


def test_absurd_partition_ids_are_ignored():
    g = global_record()
    batch = replies_to_updates(
        [reply(1, pid=1e300), reply(2, pid=-4), reply(3, pid=2.5), reply(4, pid=3)], g, record_layout(g)
    )
    assert [e.partition_id for e in batch.entries] == [3, None, None, None]


def test_float64_reply_is_accepted_and_cast():
    g = global_record()
    arrays = {"w": GLOBAL["w"].astype(np.float64) + 1, "b": GLOBAL["b"].astype(np.float64), "steps": GLOBAL["steps"]}
    batch = replies_to_updates([reply(1, arrays=arrays)], g, record_layout(g))
    assert batch.U.tolist() == [[1, 1, 1, 1, 0]]


def test_malformed_replies_are_rejected_each_with_a_reason():
    g = global_record()
    bad_nan = {**GLOBAL, "w": np.array([[np.nan, 0], [0, 0]], dtype=np.float32)}
    bad_inf = {**GLOBAL, "b": np.array([np.inf], dtype=np.float32)}
    huge = {**GLOBAL, "b": np.array([1e300], dtype=np.float64)}  # overflows float32: Inf
    cases = {
        1: (reply(1, error="CUDA out of memory"), "client-error", "CUDA out of memory"),
        2: (reply(2, arrays={"w": GLOBAL["w"], "steps": GLOBAL["steps"]}), "missing-array", "'b'"),
        3: (reply(3, arrays={**GLOBAL, "evil": np.zeros(3, np.float32)}), "extra-array", "'evil'"),
        4: (reply(4, arrays={**GLOBAL, "w": np.zeros((2, 3), np.float32)}), "shape", "(2, 3)"),
        5: (reply(5, arrays=bad_nan), "non-finite", "'w'"),
        6: (reply(6, arrays=bad_inf), "non-finite", "'b'"),
        7: (reply(7, extra_records={"more": record(GLOBAL)}), "records", "got 2"),
        8: (reply(8, arrays={**GLOBAL, "w": np.ones((2, 2), dtype=bool)}), "dtype", "bool"),
        9: (reply(9, arrays=huge), "non-finite", "'b'"),
    }
    replies = [c[0] for c in cases.values()] + [reply(100, dw=1.0)]
    batch = replies_to_updates(replies, g, record_layout(g))
    assert batch.U.tolist() == [[1, 1, 1, 1, 0]]  # the one valid reply
    got = {e.node_id: e for e in batch.rejected}
    assert set(got) == set(cases)
    for node, (_, code, text) in cases.items():
        assert got[node].code == code and text in got[node].reason, (node, got[node].reason)
        assert code in REJECT_CODES


def test_weighted_rules_need_a_valid_num_examples():
    g = global_record()
    replies = [reply(1, n=None), reply(2, n=-3), reply(3, n=5)]
    batch = replies_to_updates(replies, g, record_layout(g), need_weight=True)
    assert [e.code for e in batch.rejected] == ["num-examples", "num-examples"]
    assert batch.num_examples.tolist() == [5.0]
    assert not replies_to_updates(replies, g, record_layout(g)).rejected  # unweighted rules ignore it


# ---------------------------------------------------------------- the strategy
def test_median_round_with_a_nan_client():
    s = FedarenaStrategy("median")
    s.remember(global_record())
    replies = [
        reply(1, dw=1.0, pid=0),
        reply(2, dw=2.0, pid=1),
        reply(3, dw=9.0, db=9.0, pid=2),
        reply(4, arrays={**GLOBAL, "w": np.full((2, 2), np.nan, np.float32)}, pid=3),
    ]
    arrays, metrics = s.aggregate_train(1, replies)
    assert arrays["w"].numpy().tolist() == [[3.0, 4.0], [5.0, 6.0]]  # + median(1, 2, 9) = 2
    assert arrays["b"].numpy().tolist() == [0.5] and int(arrays["steps"].numpy()) == 7
    assert metrics["fedarena-rejected"] == 1 and metrics["fedarena-skipped"] == 0
    assert metrics["client-partition-id"] == [0, 1, 2, 3]
    assert metrics["client-reject-code"] == [0, 0, 0, REJECT_CODES["non-finite"]]
    assert metrics["client-accepted"] == [1, 1, 1, 0]
    assert "client-weight" not in metrics  # the median gives no per-client weight
    assert metrics["client-norm"][0] == pytest.approx(2.0) and metrics["client-norm"][3] == -1.0
    assert "NaN" in s.history[0]["entries"][3].reason


def test_fedavg_weights_and_server_lr():
    s = FedarenaStrategy({"name": "fedavg", "weighted": True}, server_lr=0.5)
    s.remember(global_record())
    arrays, metrics = s.aggregate_train(1, [reply(1, dw=4.0, n=3, pid=0), reply(2, dw=0.0, n=1, pid=1)])
    assert arrays["w"].numpy().tolist() == [[2.5, 3.5], [4.5, 5.5]]  # 0.5 * (3/4 * 4)
    assert metrics["client-weight"] == pytest.approx([0.75, 0.25]) and metrics["client-accepted"] == [1, 1]


def test_multi_krum_decisions_reach_the_metrics():
    s = FedarenaStrategy({"name": "multi-krum", "f": 1})
    s.remember(global_record())
    replies = [reply(i, dw=0.1 * i, pid=i) for i in range(5)] + [reply(9, dw=50.0, pid=5)]
    arrays, metrics = s.aggregate_train(1, replies)
    assert metrics["client-accepted"][5] == 0 and sum(metrics["client-accepted"]) == 5


def test_too_few_valid_replies_skip_the_round():
    s = FedarenaStrategy({"name": "krum", "f": 1})
    s.remember(global_record())
    arrays, metrics = s.aggregate_train(1, [reply(1), reply(2), reply(3, error="crashed")])
    assert arrays is None and metrics["fedarena-skipped"] == 1
    assert "too few" in s.history[0]["skipped"]


def test_stateful_defense_keeps_state_across_rounds():
    s = FedarenaStrategy({"name": "foolsgold", "history": True})
    pipeline = s.pipeline
    for rnd in (1, 2):
        s.remember(global_record())
        _, metrics = s.aggregate_train(
            rnd,
            [
                reply(11, dw=[[1, 0], [0, 0]], pid=0),
                reply(12, dw=[[0, 1], [0, 0]], pid=1),
                reply(13, dw=[[0, 0], [1, 1]], pid=2),
            ],
        )
        assert "defense_foolsgold_mean_weight" in metrics  # the defense's diagnostics
        assert len(metrics["client-weight"]) == 3
    assert s.pipeline is pipeline and s.node_index == {11: 0, 12: 1, 13: 2}
    mem = pipeline.aggregator.memory
    assert sorted(mem) == [0, 1, 2]  # summed over the two rounds, keyed by the stable client index
    assert s.prev_update is not None


@pytest.mark.parametrize(
    "defense, key",
    [
        ({"name": "medain"}, "defense.name"),
        ({"name": "median", "trim": 2}, "defense.trim"),
        ({"name": "trimmed-mean", "f": -1}, "defense.f"),
        ({"name": "fedavg", "clip": 1.0, "clip_at": "client"}, "defense"),
        ({"name": "fltrust"}, "defense.name"),
        ({"name": "fedavg", "dp": "local", "dp_clip": 1.0}, "defense"),
    ],
)
def test_bad_defense_is_a_one_line_config_error(defense, key):
    with pytest.raises(ConfigError) as e:
        FedarenaStrategy(defense)
    assert e.value.field == key and "\n" not in str(e.value)


def test_central_dp_runs_at_the_server():
    s = FedarenaStrategy({"name": "fedavg", "dp": "central", "dp_clip": 1.0, "dp_sigma": 0.0})
    s.remember(global_record())
    arrays, metrics = s.aggregate_train(1, [reply(1, dw=10.0, pid=0), reply(2, dw=0.0, pid=1)])
    step = arrays["w"].numpy() - GLOBAL["w"]  # row 1 clipped to norm 1 (4 coordinates: 0.5 each), mean of 2
    assert np.allclose(step, 0.25, atol=1e-5)


def test_num_clients_validates_the_rule_up_front():
    with pytest.raises(ConfigError):
        FedarenaStrategy({"name": "krum", "f": 2}, num_clients=5)


# ---------------------------------------------------------------- attacks
def test_colluding_server_simulation_crafts_alie_rows():
    s = ColludingServerSimulation("fedavg", attack={"name": "alie", "z": 1.0}, malicious_partitions=[2])
    s.remember(global_record())
    replies = [reply(1, dw=1.0, pid=0), reply(2, dw=3.0, pid=1), reply(3, dw=100.0, db=100.0, pid=2)]
    arrays, _ = s.aggregate_train(1, replies)
    # benign deltas: w 1 and 3 (mean 2, std sqrt(2)), b 0 and 0; ALIE row: 2 - sqrt(2), b 0
    crafted_w = 2.0 - math.sqrt(2.0)
    expect = GLOBAL["w"] + (1.0 + 3.0 + crafted_w) / 3
    assert np.allclose(arrays["w"].numpy(), expect, atol=1e-6)
    assert arrays["b"].numpy().tolist() == [0.5]


def test_colluding_simulation_refuses_attacks_without_craft():
    with pytest.raises(ConfigError, match="attack.name"):
        ColludingServerSimulation("fedavg", attack="label-flip", malicious_partitions=[0])


def test_client_attack_refuses_omniscient_attacks():
    info = DataInfo(num_classes=10, input_shape=(1, 8, 8))
    with pytest.raises(ConfigError, match="ColludingServerSimulation"):
        ClientAttack({"name": "alie"}, [0], data_info=info)


def test_client_attack_poisons_only_malicious_partitions_in_its_window():
    info = DataInfo(num_classes=10, input_shape=(1, 8, 8))
    atk = ClientAttack({"name": "backdoor", "target": 0, "poison_frac": 1.0}, [1], data_info=info, start_round=1)
    x, y = torch.rand(20, 1, 8, 8), torch.arange(20) % 10
    assert atk.poison(0, x, y, server_round=2)[0] is x  # benign partition
    assert atk.poison(1, x, y, server_round=1)[0] is x  # before start_round (0-based 1 = Flower round 2)
    px, py = atk.poison(1, x, y, server_round=2)
    assert (py == 0).all() and not torch.equal(px, x)
    again = ClientAttack({"name": "backdoor", "target": 0, "poison_frac": 1.0}, [1], data_info=info, start_round=1)
    assert torch.equal(again.poison(1, x, y, server_round=2)[0], px)  # seeded


def test_client_attack_mod_boosts_malicious_replies():
    info = DataInfo(num_classes=10, input_shape=(1, 8, 8))
    atk = ClientAttack({"name": "backdoor", "boost": 3.0}, [1], data_info=info)
    sent = Message(
        RecordDict({"arrays": global_record(), "config": ConfigRecord({"server-round": 1})}), metadata=_metadata(0)
    )

    def app(msg, ctx):
        return reply(1, dw=1.0, db=0.5)

    for pid, factor in ((0, 1.0), (1, 3.0)):
        ctx = Context(run_id=1, node_id=1, node_config={"partition-id": pid}, state=RecordDict(), run_config={})
        out = atk(sent, ctx, app)
        assert np.allclose(out.content["arrays"]["w"].numpy(), GLOBAL["w"] + factor)
        assert np.allclose(out.content["arrays"]["b"].numpy(), GLOBAL["b"] + 0.5 * factor)


def test_client_attack_runs_the_attacks_own_local_loop():
    """AutoAdapt owns its clients' training: ClientAttack.local_train runs it on one
    client's data (benign partitions, and attacks without an own loop, get None)."""
    from fedarena.core.recipe import TrainRecipe
    from fedarena.models.simple import MLP

    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10, hidden=(8,))
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    x, y = torch.rand(32, 1, 8, 8), torch.arange(32) % 10
    info = DataInfo(num_classes=10, input_shape=(1, 8, 8))
    recipe = TrainRecipe(lr=0.1, batch_size=8, epochs=3)
    atk = ClientAttack({"name": "autoadapt", "target": 0, "poison_frac": 0.5}, [1], data_info=info)
    assert atk.local_train(0, model, params, x, y, recipe) is None
    row = atk.local_train(1, model, params, x, y, recipe)
    d = sum(p.numel() for p in params.values())
    assert row.shape == (d,) and bool(torch.isfinite(row).all()) and float(row.norm()) > 0
    plain = ClientAttack({"name": "backdoor"}, [1], data_info=info)
    assert plain.local_train(1, model, params, x, y, recipe) is None


def test_colluding_simulation_gives_aggregator_aware_attacks_the_server_view():
    """Mimic reads the benign clients' ids; the simulation passes them (partition ids)."""
    s = ColludingServerSimulation("median", attack="mimic", malicious_partitions=[3])
    s.remember(global_record())
    replies = [reply(i + 1, dw=float(i), pid=i) for i in range(4)]
    arrays, metrics = s.aggregate_train(1, replies)
    assert arrays is not None and metrics["fedarena-skipped"] == 0


# ---------------------------------------------------------------- Flower's simulation runtime
SETTING = [
    "fl.num_clients=10",
    "fl.rounds=4",
    "fl.local_epochs=2",
    "fl.batch_size=16",
    "fl.lr=0.1",
    "attack.name=backdoor",
    "attack.num_malicious=2",
    "attack.target=0",
    "attack.poison_frac=1.0",
    "data.download=false",
]


def test_backdoor_fedavg_vs_median_in_flower_simulation_matches_fedarena():
    """One Flower simulation (Ray backend, 1 CPU) plays the same backdoor setting against
    FedAvg and against the median, and an omniscient ALIE attack (server-side simulation);
    fedarena's own Simulation plays them too. The backdoor must get through FedAvg and not
    through the median in both, and Flower's per-round metrics must match fedarena's (same
    partition, attackers and batches)."""
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    cfgs = {d: load_config(None, SETTING + [f"defense.name={d}"]) for d in ("fedavg", "median")}
    cfgs["alie"] = load_config(
        None, SETTING[:5] + ["attack.name=alie", "attack.num_malicious=2", "data.download=false"]
    )
    tasks = {name: FlowerTask(cfg) for name, cfg in cfgs.items()}
    results, kinds = {}, {}
    server = ServerApp()

    @server.main()
    def main(grid, context):
        for name, task in tasks.items():  # three strategies, one Ray start
            strategy = task.strategy()
            kinds[name] = type(strategy).__name__
            results[name] = strategy.start(
                grid=grid,
                initial_arrays=task.initial_arrays(),
                num_rounds=4,
                train_config=ConfigRecord({"task": name}),
                evaluate_fn=task.evaluate,
            )

    client = ClientApp()

    @client.train()
    def train(msg, context):  # each strategy's clients are its config's clients
        return tasks[msg.content["config"]["task"]].train(msg, context)

    start = time.perf_counter()
    run_simulation(
        server,
        client,
        num_supernodes=10,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": 1}},
    )
    wall = time.perf_counter() - start
    assert set(results) == set(cfgs), "the ServerApp did not finish"
    assert kinds == {"fedavg": "FedarenaStrategy", "median": "FedarenaStrategy", "alie": "ColludingServerSimulation"}
    flower = {d: [r.evaluate_metrics_serverapp[t] for t in range(1, 5)] for d, r in results.items()}
    own = {d: Simulation(cfg).run().metrics for d, cfg in cfgs.items()}
    ba = {
        src: {d: [m["backdoor_acc"] for m in runs[d]] for d in ("fedavg", "median")}
        for src, runs in (("flower", flower), ("fedarena", own))
    }
    print(f"Flower simulation wall time {wall:.1f} s; backdoor acc {ba}")
    for src in ba.values():
        assert src["fedavg"][-1] > 0.2 and src["median"][-1] < 0.05
        assert src["fedavg"][-1] - src["median"][-1] > 0.2
    for d in cfgs:
        assert [m["main_acc"] for m in flower[d]] == pytest.approx([m["main_acc"] for m in own[d]], abs=0.03)
        if d != "alie":
            assert ba["flower"][d] == pytest.approx(ba["fedarena"][d], abs=0.03)
    last = results["median"].train_metrics_clientapp[4]
    assert last["fedarena-replies"] == 10 and last["client-partition-id"] == list(range(10))


def test_example_app_config_is_valid_and_its_apps_import(monkeypatch):
    """examples/flower: the run config in its pyproject.toml is a valid fedarena config and
    the ServerApp / ClientApp modules import (guards the example against API drift)."""
    import importlib
    import sys
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "examples" / "flower"
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["tool"]["flwr"]["app"]["components"] == {
        "serverapp": "fedarena_flower.server_app:app",
        "clientapp": "fedarena_flower.client_app:app",
    }
    monkeypatch.syspath_prepend(str(root))
    for mod in [m for m in sys.modules if m.startswith("fedarena_flower")]:
        monkeypatch.delitem(sys.modules, mod)
    task_mod = importlib.import_module("fedarena_flower.task")
    importlib.import_module("fedarena_flower.server_app")
    importlib.import_module("fedarena_flower.client_app")
    run_config = project["tool"]["flwr"]["app"]["config"]
    cfg = load_config(None, task_mod.overrides(run_config))
    assert cfg.defense.name == run_config["defense"] and cfg.attack.num_malicious == 2
    with pytest.raises(ConfigError, match="defense.name"):
        load_config(None, task_mod.overrides({**run_config, "defense": "nope"}))


@pytest.mark.parametrize(
    "over",
    [
        ["attack.name=backdoor", "defense.name=median"],
        ["attack.name=backdoor", "attack.boost=3.0", "defense.name=fedavg"],  # an own-update craft in the client
        ["attack.name=alie", "defense.name=multi-krum"],  # omniscient: crafted by the colluding server
        ["attack.name=minmax", "defense.name=trimmed-mean", "defense.clip=5.0"],
    ],
)
def test_flower_and_native_rounds_give_the_same_aggregate_every_round(over):
    """The strategy's round and the simulation's round are one function
    (:func:`fedarena.run.server_round.server_round`): driven by hand with FlowerTask's
    clients (every client every round), the Flower strategy steps the global model exactly
    as fedarena's Simulation does, round by round."""
    cfg = load_config(
        None,
        [
            "data.dataset=digits",
            "fl.num_clients=8",
            "fl.rounds=3",
            "fl.local_epochs=1",
            "fl.batch_size=32",
            "attack.num_malicious=2",
            "defense.f=2",
        ]
        + over,
    )
    native = Simulation(cfg)
    native_params = []
    for t in range(cfg.fl.rounds):
        rec = native.run_round(t)
        assert "diverged" not in rec
        native_params.append(native.flat_params.clone())
    task = FlowerTask(cfg)
    strategy = task.strategy()
    arrays = task.initial_arrays()
    for t in range(cfg.fl.rounds):
        strategy.remember(arrays)
        msgs = []
        for pid in range(cfg.fl.num_clients):
            msg = Message(
                RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": t + 1})}),
                metadata=_metadata(100 + pid),
            )
            ctx = Context(
                run_id=1, node_id=100 + pid, node_config={"partition-id": pid}, state=RecordDict(), run_config={}
            )
            out = task.train(msg, ctx)
            msgs.append(Message(out.content, metadata=_metadata(100 + pid)))
        arrays, _ = strategy.aggregate_train(t + 1, msgs)
        assert arrays is not None, strategy.history[-1]["skipped"]
        flat = record_to_flat(arrays, record_layout(arrays))
        assert torch.allclose(flat, native_params[t], atol=1e-5, rtol=1e-5), (t, (flat - native_params[t]).abs().max())
