"""Executors: where a study's runs play. Each yields one result per finished run.

* :func:`local_results` -- in this process (``workers=1``) or a pool of worker processes;
  a worker plays many runs (no start-up per run, the dataset is loaded once per worker).
* :func:`ray_results` -- the same runs as Ray tasks, on a local Ray or the cluster at
  ``address`` (``pip install "fedarena[ray]"``). Run folders are written by the workers,
  so on a multi-node cluster the sweep folder must be on a shared file system.

:func:`run_job` plays one run in its folder: it continues an unfinished run with the
same config from its checkpoint, and starts afresh when the folder holds another config.
:func:`run_group` plays runs that share a model in lockstep
(:mod:`fedarena.run.lockstep`: their local training and evaluation are batched), each in
its own folder; the executors hand out such groups (:func:`job_groups`), so sweeps and
``fedarena reproduce`` get the batching without any change to their specs.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Iterator, Optional

from ..config import dump_config, from_tree
from ..errors import ConfigError, DamagedFileError


_STOPPING = False  # set in a worker process by Ctrl-C: it starts no further run


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """``job``: ``{"run_id", "config" (tree), "out", "plot"}`` -> ``{"run", "summary"}``."""
    from ..run.records import open_run_dir, read_summary
    from ..run.runner import execute

    if _STOPPING:
        raise KeyboardInterrupt
    out = Path(job["out"])
    try:
        cfg = from_tree(job["config"])
        same = (out / "config.yaml").is_file() and (out / "config.yaml").read_bytes() == dump_config(cfg).encode()
        result = None
        if same:
            try:
                result = execute(out, resume=True, plot=job.get("plot", False))
            except DamagedFileError:  # a damaged checkpoint or record: the run is played again from round 0
                result = None
        if result is None:
            result = execute(open_run_dir(out, overwrite=True), cfg, plot=job.get("plot", False))
        summary = result.summary
    except KeyboardInterrupt:
        raise
    except Exception as e:  # the run's summary.json says error; the study goes on
        try:
            summary = read_summary(out)
        except ConfigError:  # damaged: the error below is what the sweep records
            summary = {}
        summary.update(status="error", error=str(e) if isinstance(e, ConfigError) else f"{type(e).__name__}: {e}")
    return {"run": job["run_id"], "summary": summary}


def run_group(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Play ``jobs`` (compatible: see :func:`job_groups`) in lockstep, each in its folder;
    if the group fails, each run is played on its own (:func:`run_job`), so one broken
    run cannot take the others with it."""
    if _STOPPING:
        raise KeyboardInterrupt
    if len(jobs) == 1:
        return [run_job(jobs[0])]
    from ..run.lockstep import architecture
    from ..run.records import open_run_dir
    from ..run.runner import RunFolder, execute_many

    try:
        folders = []
        for job in jobs:
            out = Path(job["out"])
            cfg = from_tree(job["config"])
            same = (out / "config.yaml").is_file() and (out / "config.yaml").read_text() == dump_config(cfg)
            folders.append(
                RunFolder(out, resume=True, plot=job.get("plot", False))
                if same
                else RunFolder(open_run_dir(out, overwrite=True), cfg, plot=job.get("plot", False))
            )
        live = [f for f in folders if f.finished is None]
        if len({architecture(f.sim) for f in live}) > 1:
            raise ValueError("the runs do not share a model")
        results = execute_many(folders)
    except KeyboardInterrupt:
        raise
    except Exception:  # noqa: BLE001 - replayed run by run; each run's own error lands in its summary
        return [run_job(job) for job in jobs]
    return [{"run": job["run_id"], "summary": r.summary} for job, r in zip(jobs, results)]


def job_groups(jobs: list[dict[str, Any]], max_runs: int = 64, parts: int = 1) -> list[list[dict[str, Any]]]:
    """``jobs`` in lockstep groups (:func:`fedarena.run.lockstep.groups`: same model, data,
    cohort size, algorithm and device) of at most ``max_runs``, split further so that
    there are at least ``parts`` groups when there are that many jobs (one per worker)."""
    from ..run.lockstep import groups

    if not jobs:
        return []
    cfgs, alone = [], []
    for i, job in enumerate(jobs):
        try:
            cfgs.append((i, from_tree(job["config"])))
        except ConfigError:
            alone.append([job])  # run_job reports the error in its folder
    size = max(1, min(max_runs, -(-len(cfgs) // max(1, parts))))
    out = [[jobs[cfgs[j][0]] for j in g] for g in groups([c for _, c in cfgs], size)]
    return out + alone


def _init_worker(threads: int) -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    signal.signal(signal.SIGINT, _on_sigint)


def _on_sigint(signum, frame) -> None:
    """Ctrl-C in a worker: interrupt the current run (it writes what it has) and start
    no queued one, so the pool drains at once."""
    global _STOPPING
    _STOPPING = True
    raise KeyboardInterrupt


def threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def local_results(jobs: list[dict[str, Any]], workers: int = 1) -> Iterator[dict[str, Any]]:
    if workers <= 1 or len(jobs) <= 1:
        for group in job_groups(jobs):
            yield from run_group(group)
        return
    ctx = multiprocessing.get_context("spawn")
    groups = job_groups(jobs, parts=workers)
    with ProcessPoolExecutor(
        min(workers, len(groups)), mp_context=ctx, initializer=_init_worker, initargs=(threads_per_worker(workers),)
    ) as pool:
        futures = [pool.submit(run_group, group) for group in groups]
        try:
            for fut in as_completed(futures):
                yield from fut.result()
        finally:
            for fut in futures:
                fut.cancel()


def ray_gpus(group: list[dict[str, Any]], workers: int, cluster_gpus: float) -> float:
    """GPUs a Ray task playing ``group`` asks for: a share of the cluster's GPUs (at most
    one) when a run of the group uses ``fl.device`` cuda or auto, else none. Ray hides the
    GPUs from a task that asks for none (``CUDA_VISIBLE_DEVICES`` empty), where
    ``fl.device=cuda`` would fail and ``auto`` would fall back to the CPU."""
    if cluster_gpus <= 0:
        return 0.0
    fls = [(job.get("config") or {}).get("fl") for job in group]
    if not any(isinstance(fl, dict) and fl.get("device") in ("cuda", "auto") for fl in fls):
        return 0.0
    return min(1.0, cluster_gpus / max(1, workers))


def ray_results(
    jobs: list[dict[str, Any]], workers: int = 1, address: Optional[str] = None
) -> Iterator[dict[str, Any]]:
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend", "ray is not installed", 'local, or pip install "fedarena[ray]"') from None
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            kwargs["address"] = address
        else:
            kwargs["num_cpus"] = max(1, workers)
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ConfigError(
                "--address",
                f"cannot connect to Ray ({str(e).splitlines()[0]})",
                "ray://host:10001 or host:6379 of a running cluster, or no --address",
            ) from None
        started = True
    remote = ray.remote(num_cpus=1, max_retries=0)(run_group)
    gpus = float(ray.cluster_resources().get("GPU", 0.0))
    pending = [
        remote.options(num_gpus=ray_gpus(group, workers, gpus)).remote(group)
        for group in job_groups(jobs, parts=max(1, workers))
    ]
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield from ray.get(done[0])
    finally:
        for ref in pending:
            ray.cancel(ref)
        if started:
            ray.shutdown()


def results(
    jobs: list[dict[str, Any]], workers: int = 1, backend: str = "local", address: Optional[str] = None
) -> Iterator[dict[str, Any]]:
    if backend == "local":
        if address:
            raise ConfigError("--address", "only applies to --backend ray", "drop --address, or --backend ray")
        return local_results(jobs, workers)
    if backend == "ray":
        return ray_results(jobs, workers, address)
    raise ConfigError("--backend", f"unknown backend {backend!r}", "local, ray")
