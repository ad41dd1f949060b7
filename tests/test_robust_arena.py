"""``fedarena arena --robust``: the grid covers the peers' rules and validates, and one
cell plays (the whole arena's results are committed under benchmarks/results/)."""

from fedarena.config import from_tree
from fedarena.registry import DEFENSES
from fedarena.run.simulation import Simulation
from fedarena.studies.robust_arena import robust_arena_jobs

PEER_RULES = {"dnc", "signguard", "clipped-clustering", "fldetector", "monna", "meamed", "caf", "lasa"}


def test_grid_validates_and_covers_the_peer_rules():
    jobs = robust_arena_jobs()  # validates every config
    defenses = {j.labels["defense"] for j in jobs}
    assert PEER_RULES <= defenses and {"arc+median", "median", "fedavg"} <= defenses
    assert PEER_RULES <= set(DEFENSES.names())
    attacks = {j.labels["attack"] for j in jobs}
    assert {"cc-chain", "signguard-mimic", "signflip", "alie", "minmax", "ipm", "none"} == attacks
    assert len({j.run_id for j in jobs}) == len(jobs) == 7 * 12 * 5


def test_one_cell_plays():
    job = next(
        j
        for j in robust_arena_jobs()
        if j.labels["defense"] == "arc+median" and j.labels["attack"] == "cc-chain" and j.labels["seed"] == 0
    )
    cfg = from_tree({**job.config, "fl": {**job.config["fl"], "rounds": 2}})
    assert cfg.defense.params().get("arc") is True
    assert Simulation(cfg).run().summary["status"] == "ok"
