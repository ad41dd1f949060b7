"""``curves.png``: what a run reached, round by round.

Top panel: accuracies (main, backdoor, source class) in [0, 1]. Bottom panel: the test
loss (left axis) and the defense's main diagnostic (right axis, the first scalar
``defense_*`` key of ``metrics.jsonl``). The x-axis uses the round numbers of
``metrics.jsonl`` (0-based, as written there). A single evaluated round shows as a
point; a run that stopped early shows a dashed line where it stopped and says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

ACCURACIES = (
    ("main_acc", "main accuracy"),
    ("backdoor_acc", "backdoor accuracy"),
    ("base_acc", "source-class accuracy"),
)


def main_diagnostic(metrics: list[dict]) -> Optional[str]:
    """The defense diagnostic plotted: the first numeric ``defense_*`` key of the rows."""
    for m in metrics:
        for k, v in m.items():
            if k.startswith("defense_") and isinstance(v, (int, float)) and not isinstance(v, bool):
                return k
    return None


def _series(metrics: list[dict], key: str) -> list[float]:
    return [float("nan") if m.get(key) is None else float(m[key]) for m in metrics]


def plot_curves(metrics: list[dict], path: Path, title: str = "", summary: Optional[dict[str, Any]] = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(6.4, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    rounds = [m["round"] for m in metrics]
    style = {"marker": "o", "markersize": 4} if len(rounds) <= 20 else {}
    for key, label in ACCURACIES:
        vals = _series(metrics, key)
        if any(v == v for v in vals):
            ax.plot(rounds, vals, label=label, **style)
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)

    loss = _series(metrics, "loss")
    lines = []
    if any(v == v for v in loss):
        lines += ax2.plot(rounds, loss, color="tab:gray", label="test loss", **style)
    ax2.set_ylabel("test loss")
    ax2.set_xlabel("round (as in metrics.jsonl)")
    ax2.grid(alpha=0.3)
    diag = main_diagnostic(metrics)
    if diag:
        ax3 = ax2.twinx()
        lines += ax3.plot(rounds, _series(metrics, diag), color="tab:purple", label=diag, **style)
        ax3.set_ylabel(diag.removeprefix("defense_"), color="tab:purple")
    if lines:
        ax2.legend(lines, [ln.get_label() for ln in lines], loc="best", fontsize=8)

    status = (summary or {}).get("status", "ok")
    if summary and status != "ok":
        stop = summary.get("rounds_completed", 0)
        for a in (ax, ax2):
            a.axvline(stop, color="tab:red", linestyle="--", linewidth=1)
        ax.text(stop, 0.5, f"{status} at round {stop} ", color="tab:red", fontsize=8, va="center", ha="right")
    from matplotlib.ticker import MaxNLocator

    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    shown = rounds + ([summary.get("rounds_completed", 0)] if summary and status != "ok" else [])
    if not rounds:
        ax.text(0.5, 0.8, "no evaluated round", transform=ax.transAxes, ha="center", va="center")
    if len(set(shown)) <= 1:
        x = shown[0] if shown else 0
        ax.set_xlim(x - 1, x + 1)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
