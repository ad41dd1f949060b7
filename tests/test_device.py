"""Device placement (``fl.device=cuda``) guarded on a CPU-only machine.

* a source scan: in the modules a simulation runs, every tensor constructor either
  names its ``device=``, is moved at once (``.to(<device>)``), or is a reviewed
  CPU-only site listed in ``ALLOWED`` with the reason it is safe; every ``.numpy()``
  reads a ``.cpu()`` tensor or is listed too;
* the one-line error of ``fl.device=cuda`` where CUDA is unavailable (exit code 2);
* the torch code paths the robust rules take on a GPU give the NumPy paths' results;
* the GPU share of a Ray task and the GPU the lockstep bench samples.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

SRC = Path(__file__).resolve().parents[1] / "src" / "fedarena"
SCANNED_DIRS = ("run", "core", "attacks", "defenses", "data", "models", "integrations", "studies")
SCANNED_FILES = ("reproduce/invariant.py",)
CTORS = {
    "zeros",
    "ones",
    "empty",
    "full",
    "arange",
    "tensor",
    "as_tensor",
    "from_numpy",
    "rand",
    "randn",
    "randint",
    "randperm",
    "eye",
    "linspace",
    "logspace",
    "triu_indices",
    "tril_indices",
    "Generator",
}
#: methods a constructed tensor may pass through before its ``.to(device)``
CHAIN = {
    "reshape",
    "view",
    "flatten",
    "unsqueeze",
    "squeeze",
    "repeat",
    "expand",
    "float",
    "long",
    "double",
    "bool",
    "clone",
    "contiguous",
    "manual_seed",
    "t",
    "T",
    "view_as",
}

_CPU_GEN = "drawn on the CPU from a seeded CPU generator (same numbers on every device), moved before use"
_IDS = "client ids / counts / masks: CPU metadata (indexing a CUDA tensor with a CPU index is allowed; consumers call .tolist() or .to(U.device))"

#: whole files whose tensors are CPU by design
ALLOWED_FILES = {
    "data/datasets.py": "loaders build the CPU copy; Simulation moves it once with on_device()",
    "data/edge_sets.py": "edge-case pools are CPU; EdgeCaseBackdoor moves its draws to the client's device",
    "data/poison.py": "trigger templates are CPU; Trigger.apply moves mask and pattern to the batch's device",
    "models/simple.py": "shape probe at construction, before build_model(...).to(device)",
    "models/paper_cnns.py": "shape probe at construction, before build_model(...).to(device)",
    "integrations/flower_server.py": "the Flower strategy aggregates on the CPU: records arrive as NumPy arrays",
    "core/state.py": "checkpoint encoding of NumPy arrays (CPU by construction)",
}

#: (file, function, call) -> why the site is safe on a GPU run
ALLOWED = {
    ("run/results.py", "round_record", "torch.from_numpy(rec['malicious'])"): _IDS,
    ("integrations/flower_client.py", "ClientAttack.craft", "torch.tensor([0])"): _IDS,
    ("integrations/flower_client.py", "FlowerTask.train", "torch.tensor([0])"): _IDS,
    ("run/simulation.py", "Simulation.attacker_training", "torch.from_numpy(mask)"): _IDS,
    ("run/simulation.py", "Simulation.conclude_round", "torch.from_numpy(cohort)"): _IDS,
    (
        "run/simulation.py",
        "Simulation.conclude_round",
        "torch.tensor([len(self.client_index[c]) for c in cohort])",
    ): _IDS,
    ("run/simulation.py", "Simulation.conclude_round", "torch.from_numpy(cohort[rows])"): _IDS,
    ("run/simulation.py", "Simulation.conclude_round", "torch.from_numpy(rows)"): _IDS,
    ("run/simulation.py", "Simulation.conclude_round", "torch.from_numpy(cohort[~mal_mask])"): _IDS,
    (
        "core/layout.py",
        "ParamLayout.columns",
        "torch.arange(self.slice(n).start, self.slice(n).stop)",
    ): "column index for U[:, cols] (a CPU index is allowed for a CUDA tensor)",
    ("core/layout.py", "ParamLayout.columns", "torch.empty(0, dtype=torch.long)"): "as above (no columns)",
    ("core/local.py", "_initial_params", "torch.arange(k)"): "moved by the return's own.to(first.device)",
    (
        "core/local.py",
        "_initial_params",
        "torch.as_tensor(np.asarray(owner), dtype=torch.long)",
    ): "moved by the return's own.to(first.device)",
    ("core/local.py", "fold_supported", "torch.Generator()"): _CPU_GEN,
    ("core/local.py", "_HookRunner.__init__", "torch.Generator()"): _CPU_GEN + " (defenses.client.laplace)",
    (
        "attacks/autoadapt.py",
        "_RangeAdaptiveBackdoor.local_train",
        "torch.randint(0, 2 ** 31 - 1, (m,), generator=ctx.generator)",
    ): "seeds, read with .tolist()",
    ("attacks/byzantine.py", "sparse_mask", "torch.zeros(layout.dim)"): "cached mask, moved with .to(pert) at use",
    (
        "attacks/byzantine.py",
        "GaussianAttack.craft",
        "torch.randn(m, d, generator=view.generator, dtype=view.global_params.dtype)",
    ): _CPU_GEN,
    ("attacks/edge_case.py", "EdgeCaseBackdoor.poison", "torch.arange(n)"): "index moved with src.to(x.device)",
    ("attacks/edge_case.py", "EdgeCaseBackdoor._draw", "torch.randperm(len(pool), generator=generator)"): _CPU_GEN,
    ("attacks/mimic.py", "Mimic._update_direction", "torch.Generator()"): _CPU_GEN,
    ("defenses/client.py", "laplace", "torch.rand(shape, generator=generator, dtype=dtype)"): _CPU_GEN
    + " (NoiseDefense stacks and moves)",
    (
        "defenses/client.py",
        "NoiseDefense.__call__",
        "torch.zeros(p.shape[1:], dtype=p.dtype)",
    ): "stacked with the CPU Laplace draws, then moved with .to(p.device)",
    (
        "defenses/dp.py",
        "DifferentialPrivacy.client_upload",
        "torch.randn(U.shape, generator=generator, dtype=U.dtype)",
    ): _CPU_GEN,
    (
        "defenses/dp.py",
        "_DPAccounting.__call__",
        "torch.randn(update.shape, generator=gen, dtype=update.dtype)",
    ): _CPU_GEN,
    (
        "defenses/foolsgold.py",
        "foolsgold_weights",
        "torch.ones(n, dtype=torch.float64)",
    ): "FoolsGold.aggregate calls it on H.cpu() and moves the weights",
    ("defenses/foolsgold.py", "foolsgold_weights", "torch.zeros(n, dtype=torch.float64)"): "as above",
    (
        "core/robust_kernels.py",
        "sorted_slice_mean",
        "U.numpy()",
    ): "the NumPy path runs only for CPU tensors (use_numpy)",
    ("core/robust_kernels.py", "sorted_slice_mean", "out.numpy()"): "as above",
    ("core/robust_kernels.py", "coordinate_median", "U.numpy()"): "as above",
    ("core/robust_kernels.py", "coordinate_median", "out.numpy()"): "as above",
    ("defenses/robust.py", "closest_to_median_mean", "S.numpy()"): "as above",
    ("defenses/robust.py", "closest_to_median_mean", "out.numpy()"): "as above",
    (
        "defenses/robust_dpfl.py",
        "RobustDPFL.aggregate",
        "torch.from_numpy(kmeans_keep(z, self.separation, seed=int(ctx.round)))",
    ): "scikit-learn's K-means decision, moved with keep.to(U.device) before use",
    ("defenses/robust_dpfl.py", "RobustDPFL.aggregate", "torch.from_numpy(z)"): "diagnostic scores (records)",
    ("defenses/stages.py", "Bucketing.__call__", "torch.Generator()"): _CPU_GEN + " (bucket_means)",
    ("integrations/flower_client.py", "ClientAttack.craft", "torch.tensor([int(partition_id)])"): _IDS,
    ("integrations/flower_client.py", "FlowerTask.train", "torch.from_numpy(cohort)"): _IDS,
    ("reproduce/invariant.py", "attacker_influence", "torch.as_tensor(malicious, dtype=torch.bool)"): _IDS,
    ("reproduce/invariant.py", "diagnose.observe", "torch.from_numpy(obs.malicious)"): _IDS,
    (
        "defenses/byzfl_rules.py",
        "_removed_sets",
        "torch.tensor(chunk, dtype=torch.long)",
    ): "CPU row-index batches; _keep_masks moves them with removed.to(device)",
    (
        "defenses/clipped_clustering.py",
        "ClippedClustering.__init__",
        "torch.zeros(0, dtype=torch.float64)",
    ): "the norm history is kept on the CPU (checkpointed state): the round's norms join it as norms[ok].cpu()",
    ("defenses/clipped_clustering.py", "ClippedClustering.reset", "torch.zeros(0, dtype=torch.float64)"): "as above",
    (
        "defenses/crfl.py",
        "smoothed_votes",
        "torch.zeros(len(x), probe.num_classes, dtype=torch.long)",
    ): "vote counts on the CPU: predictions and finite masks are read in with .cpu()",
    ("defenses/crfl.py", "smoothed_votes", "torch.arange(len(pred))"): "row index of the CPU vote counts",
    ("defenses/crfl.py", "certify", "top2.values[:, 0].numpy()"): "top-2 of the CPU vote counts (smoothed_votes)",
    ("defenses/crfl.py", "certify", "top2.values[:, 1].numpy()"): "as above",
    (
        "defenses/crfl.py",
        "CRFL.final_metrics",
        "(pred == y.cpu()).numpy()",
    ): "pred is certify's argmax of the CPU vote counts, compared with y.cpu()",
    ("defenses/crfl.py", "CRFL.final_metrics", "(bpred != by.cpu()).numpy()"): "as above",
    (
        "defenses/deepsight.py",
        "DeepSight.aggregate",
        "torch.zeros(len(idx), dtype=torch.bool)",
    ): "CPU mask over HDBSCAN's NumPy labels (indexes susp.cpu()), moved with keep.to(idx.device)",
    ("defenses/deepsight.py", "DeepSight.aggregate", "torch.from_numpy(final == lab)"): "as above",
    ("defenses/deepsight.py", "DeepSight.aggregate", "torch.Generator()"): _CPU_GEN + " (noise inputs)",
    (
        "defenses/dnc.py",
        "DnC.aggregate",
        "torch.zeros(n, dtype=torch.bool)",
    ): "CPU accept mask (written with rows.cpu() and CPU scores), moved with good.to(U.device)",
    ("defenses/dnc.py", "DnC.aggregate", "torch.Generator()"): _CPU_GEN + " (column subsample)",
    (
        "defenses/flare.py",
        "FLARE.aggregate",
        "torch.zeros(n, dtype=torch.long)",
    ): "CPU nomination counts (written with idx.cpu()); client_scores are read with .tolist()",
    (
        "defenses/flare.py",
        "FLARE.aggregate",
        "torch.zeros(n, dtype=torch.float64)",
    ): "CPU trust scores (written with idx.cpu()), moved with ts.to(U.device) before the weighted sum",
    (
        "defenses/flare.py",
        "FLARE.aggregate",
        "torch.zeros(m, m, dtype=torch.float64)",
    ): "CPU MMD matrix: every entry is written with mmd2(...).cpu()",
    ("defenses/signguard.py", "SignGuard.aggregate", "torch.Generator()"): _CPU_GEN + " (coordinate subsample)",
    (
        "defenses/fldetector.py",
        "FLDetector.aggregate",
        "torch.tensor(scored)",
    ): "row index of G, which FLDetector keeps on the CPU (its L-BFGS history is CPU state)",
    (
        "defenses/fldetector.py",
        "FLDetector.aggregate",
        "torch.full((n,), math.nan, dtype=torch.float64)",
    ): "CPU suspicion scores from the CPU score windows; client_scores are read with .tolist()",
    ("defenses/fldetector.py", "FLDetector.aggregate", "susp[cand].numpy()"): "susp is the CPU tensor above",
    (
        "defenses/fldetector.py",
        "FLDetector.aggregate",
        "torch.randint(0, 2 ** 31 - 1, (1,), generator=ctx.generator)",
    ): "a seed read with .item(), drawn only when ctx.generator is a CPU generator",
    ("attacks/blades_adaptive.py", "sign_mimic", "torch.zeros(d, dtype=torch.float64)"): _CPU_GEN
    + " (SignGuardMimic.craft: sign_mimic(...).to(B.device))",
    (
        "attacks/blades_adaptive.py",
        "sign_mimic",
        "torch.rand(pos + neg, generator=generator, dtype=torch.float64)",
    ): _CPU_GEN,
    ("attacks/blades_adaptive.py", "sign_mimic", "torch.randperm(d, generator=generator)"): _CPU_GEN,
    (
        "attacks/chameleon.py",
        "Chameleon.local_train",
        "torch.zeros(len(idx), dtype=torch.bool)",
    ): "the stamped-sample masks are CPU (stored with .cpu()); the client's mask is moved with .to(ctx.x.device)",
    (
        "attacks/iba.py",
        "IBA.setup",
        "torch.randint(0, 2 ** 31 - 1, (1,), generator=generator)",
    ): "a seed read with int() from the attack's CPU setup stream",
    (
        "run/simulation.py",
        "selected_buffers",
        "torch.ones(len(plan.cohort))",
    ): "buffer weights on the CPU (the rule's weights arrive with .to('cpu')), moved with w.to(stacked.device)",
    (
        "run/simulation.py",
        "selected_buffers",
        "torch.tensor([float(w[r]) for r in rows], dtype=torch.float64)",
    ): "as above",
    ("run/simulation.py", "selected_buffers", "torch.ones(len(rows), dtype=torch.float64)"): "as above",
}
#: PoisonedFL keeps its sign vector, controller and draws on the CPU; craft() returns the rows on the run's device
ALLOWED_FUNCS = {
    ("attacks/poisonedfl.py", f)
    for f in ("PoisonedFL.setup", "PoisonedFL._init_state", "PoisonedFL.craft", "_random_signs")
}


def _paths():
    for d in SCANNED_DIRS:
        yield from sorted((SRC / d).rglob("*.py"))
    for f in SCANNED_FILES:
        yield SRC / f


def _moves_to_device(call: ast.Call) -> bool:
    """``.to(...)`` with a device or a tensor (not only a dtype)."""
    if any(k.arg == "device" for k in call.keywords):
        return True
    for a in call.args:
        dtype = isinstance(a, ast.Attribute) and (
            a.attr == "dtype" or (isinstance(a.value, ast.Name) and a.value.id == "torch")
        )
        if not dtype:
            return True
    return False


def _placed(node: ast.AST, parent: dict) -> bool:
    """Whether the constructed tensor is moved at once (through indexing and shape methods)."""
    while True:
        p = parent.get(node)
        if isinstance(p, ast.Subscript) and p.value is node:
            node = p
            continue
        if isinstance(p, ast.Attribute) and p.value is node:
            call = parent.get(p)
            is_call = isinstance(call, ast.Call) and call.func is p
            if p.attr == "cuda":
                return True
            if p.attr == "to" and is_call:
                return _moves_to_device(call)
            if p.attr in CHAIN:
                node = call if is_call else p
                continue
        return False


def unplaced_sites() -> list[tuple[str, str, str]]:
    """``(file, function, call)`` of every tensor constructor without a device and every
    ``.numpy()`` not on a ``.cpu()`` tensor, in the scanned modules."""
    out = []
    for path in _paths():
        tree = ast.parse(path.read_text())
        parent: dict = {}
        func: dict = {}

        def visit(node, qual):
            for c in ast.iter_child_nodes(node):
                parent[c] = node
                q = qual + [c.name] if isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else qual
                func[c] = ".".join(q) or "<module>"
                visit(c, q)

        visit(tree, [])
        rel = path.relative_to(SRC).as_posix()
        for n in ast.walk(tree):
            if not (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)):
                continue
            f = n.func
            if isinstance(f.value, ast.Name) and f.value.id == "torch" and f.attr in CTORS:
                if not any(k.arg == "device" for k in n.keywords) and not _placed(n, parent):
                    out.append((rel, func[n], ast.unparse(n)))
            elif f.attr == "numpy" and not n.args:
                r = f.value
                if not (isinstance(r, ast.Call) and isinstance(r.func, ast.Attribute) and r.func.attr == "cpu"):
                    out.append((rel, func[n], ast.unparse(n)))
    return out


def test_every_tensor_is_placed_or_reviewed():
    sites = unplaced_sites()
    new = [s for s in sites if s[0] not in ALLOWED_FILES and s[:2] not in ALLOWED_FUNCS and s not in ALLOWED]
    assert not new, (
        "tensors built without device= (add device=..., .to(device), or review the site and list "
        "it in ALLOWED with its reason):\n" + "\n".join(map(str, new))
    )
    stale = [k for k in ALLOWED if k not in sites]
    assert not stale, f"ALLOWED lists sites that no longer exist: {stale}"
    assert all(reason for reason in ALLOWED.values())


def test_scan_catches_unplaced_constructors(tmp_path, monkeypatch):
    """The scan itself: a plain ``torch.zeros(n)`` is caught, placed ones are not."""
    pkg = tmp_path / "run"
    pkg.mkdir()
    (pkg / "m.py").write_text(
        "import torch\n"
        "def f(U, n, g):\n"
        "    a = torch.zeros(n)\n"
        "    b = torch.zeros(n, device=U.device)\n"
        "    c = torch.randperm(n, generator=g)[:2].to(U.device)\n"
        "    d = torch.arange(n).to(torch.float64)\n"
        "    e = U.numpy()\n"
        "    h = U.cpu().numpy()\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "SCANNED_DIRS", ("run",))
    monkeypatch.setattr(sys.modules[__name__], "SCANNED_FILES", ())
    got = {call for _, _, call in unplaced_sites()}
    assert got == {"torch.zeros(n)", "torch.arange(n)", "U.numpy()"}


# ------------------------------------------------------------------ fl.device without CUDA
def test_cuda_unavailable_is_one_line_config_error(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from fedarena.cli import app
    from fedarena.errors import ConfigError
    from fedarena.run.simulation import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as e:
        resolve_device("cuda")
    assert str(e.value) == "fl.device: CUDA is not available on this machine (valid: cpu, auto)"
    assert resolve_device("auto") == torch.device("cpu")
    res = CliRunner().invoke(
        app, ["run", "--set", "fl.device=cuda", "--set", "fl.rounds=1", "--out", str(tmp_path / "r"), "--quiet"]
    )
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert lines == ["error: fl.device: CUDA is not available on this machine (valid: cpu, auto)"]


# ------------------------------------------------------------------ the rules' GPU code paths
def test_robust_rules_torch_path_matches_numpy_path(monkeypatch):
    """On a GPU the trimmed mean, the median and Bulyan's step 2 run their torch code;
    on the CPU, NumPy's. Both on the same rows (NaN and Inf included)."""
    from fedarena.core import robust_kernels
    from fedarena.defenses import robust

    g = torch.Generator().manual_seed(0)
    U = torch.randn(11, 300, generator=g, dtype=torch.float64)
    U[3, :7] = float("nan")
    U[5, 10:20] = float("inf")
    rows = torch.tensor([0, 2, 3, 4, 6, 7, 9, 10])
    calls = {
        "trimmed_mean": lambda: robust.trimmed_mean(U, 3),
        "slice": lambda: robust_kernels.sorted_slice_mean(U, 2, 7),
        "median_odd": lambda: robust.coordinate_median(U),
        "median_even": lambda: robust.coordinate_median(U[:10]),
        "median_lower": lambda: robust.coordinate_median(U[:10], even="lower"),
        "bulyan": lambda: robust.closest_to_median_mean(U, 4, rows),
        "bulyan_all": lambda: robust.closest_to_median_mean(U, 7),
    }
    want = {k: fn() for k, fn in calls.items()}
    monkeypatch.setattr(robust_kernels, "use_numpy", lambda U: False)  # the kernels' own check
    monkeypatch.setattr(robust, "use_numpy", lambda U: False)  # Bulyan's, in the rule's module
    for k, fn in calls.items():
        torch.testing.assert_close(fn(), want[k], equal_nan=True, msg=k)


# ------------------------------------------------------------------ executors and bench
def test_ray_task_gpu_share():
    from fedarena.studies.executors import ray_gpus

    def job(device=None):
        return {"config": {} if device is None else {"fl": {"device": device}}}

    assert ray_gpus([job("cuda")], workers=4, cluster_gpus=1) == 0.25
    assert ray_gpus([job(), job("auto")], workers=1, cluster_gpus=2) == 1.0
    assert ray_gpus([job("cuda")], workers=4, cluster_gpus=0) == 0.0  # none to ask for: the run says why
    assert ray_gpus([job("cpu"), job()], workers=2, cluster_gpus=1) == 0.0


def test_bench_samples_the_runs_gpu():
    from fedarena.bench.lockstep import smi_id

    assert smi_id(torch.device("cuda", 1), visible="") == "1"
    assert smi_id(torch.device("cuda", 1), visible="3,5") == "5"
    assert smi_id(torch.device("cuda", 0), visible="GPU-abc, GPU-def") == "GPU-abc"


def test_poisonedfl_rows_on_the_models_device():
    """PoisonedFL keeps its state on the CPU; its rows come back on the global model's
    device (here the CPU, unchanged values)."""
    from fedarena.attacks.base import DataInfo, RoundView
    from fedarena.attacks.poisonedfl import PoisonedFL
    from fedarena.core.layout import ParamLayout

    atk = PoisonedFL()
    atk.setup(DataInfo(10, (1, 8, 8)), torch.Generator().manual_seed(0))
    d = 40
    lay = ParamLayout.from_params({"w": torch.zeros(d)})
    view = RoundView(
        round=1,
        layout=lay,
        global_params=torch.zeros(d),
        prev_update=torch.ones(d),
        malicious_ids=torch.tensor([1, 2]),
        num_clients=5,
        own_updates=torch.zeros(2, d),
        benign_updates=None,
        lr=1.0,
        algorithm="fedavg",
        generator=torch.Generator().manual_seed(1),
    )
    rows = atk.craft(view)
    assert rows.shape == (2, d) and rows.device == view.global_params.device
    assert np.isfinite(rows.numpy()).all()
