"""``fedarena bench``: how fast the engine trains clients and the robust rules aggregate.

Three measurements, in one process, on the same inputs (``benchmarks/README.md`` explains
how to read them):

1. **Local training** (``training.<workload>``): client-epochs per second of

   * the *engine*: :func:`fedarena.core.local.train_vectorized` with automatic chunk
     size and strategy (or :func:`~fedarena.core.local.train_sequential` for models
     with buffers, as the :class:`~fedarena.run.simulation.Simulation` does);
   * the *sequential* reference: a plain PyTorch loop, one model and one
     ``torch.optim.SGD`` per client, the way most FL code trains clients;
   * the *batched* bound: one model trained on all clients' batches stacked into one
     batch per step (same samples, same number of steps): the compute-bound ceiling of
     training these clients on this machine.

   plus ``speedup_vs_sequential``, ``fraction_of_batched_bound``, the FLOPs of one
   client-epoch (forward + backward, counted with ``torch.utils.flop_counter``), the
   measured GEMM peak (``gemm.gflops``) and ``fraction_of_gemm_peak``. The engine's
   updates are also compared with the sequential reference (``max_abs_diff_vs_sequential``).
2. **Aggregators** (``aggregators.<rule>``): seconds per call of every registered robust
   rule for ``n`` updates of ``d`` coordinates, and of a straightforward reference written
   here (NumPy median / sort, pairwise-loop Krum, per-client loops for Weiszfeld and
   centered clipping), ``speedup_vs_reference`` (at the largest ``n x d`` measured), plus
   the physical yardsticks ``yardsticks``: one memory pass (the mean) and one Gram GEMM.
3. **End-to-end** (``end_to_end``): 100 rounds of Fashion-MNIST through the Simulation.
4. **Lockstep** (``lockstep``, :mod:`fedarena.bench.lockstep`): studies played one run after
   another vs in lockstep (a fall-of-cc subset and a 64-run digits sweep), as ratios.
5. **Flower** (``flower``, :mod:`fedarena.bench.flower`): the same LeNet workload through
   fedarena and Flower's Ray simulation, alternating (when ``flwr`` is installed).

Timings are the best of a few repetitions, the three training variants interleaved, so
ratios measured in one run are meaningful on a shared machine even when absolute numbers
move. Nothing here changes what the library computes.

One module per section: :mod:`~fedarena.bench.training`, :mod:`~fedarena.bench.memory`,
:mod:`~fedarena.bench.aggregators`, :mod:`~fedarena.bench.end_to_end`,
:mod:`~fedarena.bench.lockstep`, :mod:`~fedarena.bench.flower` and
:mod:`~fedarena.bench.constrained` (AutoAdapt's constrained epoch); :mod:`~fedarena.bench.plan`
(the workloads), :mod:`~fedarena.bench.timing`, :mod:`~fedarena.bench.report` (targets and
``bench.md``) and :mod:`~fedarena.bench.runner` (:func:`run_bench`, what ``fedarena bench`` calls).
The lockstep and Flower sections are imported only when they run.
"""

from .aggregators import (
    BYZFL_SECONDS,
    ROBUST_RULES,
    bench_aggregators,
    pairwise_loop,
    ref_bulyan,
    ref_cc,
    ref_krum,
    ref_multi_krum,
    ref_rfa,
    references,
)
from .constrained import bench_constrained
from .end_to_end import bench_end_to_end, find_data_root
from .memory import bench_memory, memory_child
from .plan import SECTIONS, BenchPlan, Workload, make_plan
from .report import targets, to_markdown
from .runner import run_bench
from .timing import gemm_peak, timed
from .training import batched_bound, bench_training, flops_per_sample, sequential_reference

__all__ = [
    "BYZFL_SECONDS",
    "ROBUST_RULES",
    "SECTIONS",
    "BenchPlan",
    "Workload",
    "batched_bound",
    "bench_aggregators",
    "bench_constrained",
    "bench_end_to_end",
    "bench_memory",
    "bench_training",
    "find_data_root",
    "flops_per_sample",
    "gemm_peak",
    "make_plan",
    "memory_child",
    "pairwise_loop",
    "ref_bulyan",
    "ref_cc",
    "ref_krum",
    "ref_multi_krum",
    "ref_rfa",
    "references",
    "run_bench",
    "sequential_reference",
    "targets",
    "timed",
    "to_markdown",
]
