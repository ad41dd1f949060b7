"""``fedarena bench``'s plan: the sections ``only`` may name and the workloads of a
full, quick or tiny (test-suite) run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

#: what ``only`` may name
SECTIONS = ("training", "memory", "aggregators", "lockstep", "flower", "end_to_end", "constrained_epoch")


@dataclass
class Workload:
    name: str
    model: str
    input_shape: tuple[int, ...]
    clients: int
    samples: int
    batch_size: int = 32
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    reps: Optional[int] = None  # repetitions after the warm-up (None: the plan's)


@dataclass
class BenchPlan:
    training: list[Workload]
    agg_configs: list[tuple[int, int]]  # (n, d)
    reps: int
    gemm_size: int
    memory: bool
    end_to_end: bool
    lockstep: str = "off"  # off | tiny | quick | default
    flower: bool = False


def make_plan(quick: bool, scale: str = "default") -> BenchPlan:
    """The workloads of a run. ``scale="tiny"`` is the test-suite's seconds-long version."""
    mlp = Workload("mlp-digits", "mlp", (1, 8, 8), 20, 72, note="mlp 64-64-10, 20 clients x 72 samples")
    cnn = Workload("cnn-fmnist", "cnn", (1, 28, 28), 10, 600, note="LeNet-5, 10 clients x 600 samples")
    if scale == "tiny":
        return BenchPlan(
            [Workload("mlp-digits", "mlp", (1, 8, 8), 6, 72), Workload("cnn-fmnist", "cnn", (1, 28, 28), 2, 64)],
            [(25, 10_000)],
            1,
            128,
            False,
            False,
            lockstep="tiny",
        )
    if quick:
        return BenchPlan([mlp, cnn], [(25, 100_000), (100, 100_000)], 3, 512, False, False, lockstep="quick")
    wide = dict(hidden=(200,))
    scaling = [
        Workload(
            f"clients-{k}",
            "mlp",
            (1, 28, 28),
            k,
            60,
            model_kwargs=wide,
            note=f"mlp 784-200-10, {k} clients x 60 samples",
        )
        for k in (10, 100, 1000)
    ]
    resnet = Workload(
        "resnet18-cifar",
        "resnet18",
        (3, 32, 32),
        4,
        16,
        batch_size=16,
        model_kwargs={"norm": "group"},
        reps=1,
        note="ResNet-18 with GroupNorm (BatchNorm models train on the sequential path), 4 clients x 16 samples",
    )
    return BenchPlan(
        [mlp, cnn, resnet, *scaling],
        [(25, 100_000), (25, 1_000_000), (100, 100_000), (100, 1_000_000)],
        3,
        1024,
        True,
        True,
        lockstep="default",
        flower=True,
    )


__all__ = ["SECTIONS", "BenchPlan", "Workload", "make_plan"]
