"""``bulyan-ref``: the "Bulyan" of the LeadFL reference code (not El Mhamdi et al.'s Bulyan).

The LeadFL authors' code (``fltk/strategy/aggregation/bulyan.py``; the LeadFL spec Sec. 1.5
and decision A8, ``../shared/specs/reference-code-facts.md`` section 3 "Server
aggregators") scores every model by the sum of the 7 smallest entries of its row of
squared distances, its own 0 included (so its 6 nearest others: Krum's score with
``n - f - 2 = 6``, i.e. ``f = 2`` for ``n = 10``), sorts the scores ascending and returns
the plain mean of the models at sorted positions 1, 2 and 3: the best-scoring model is
*dropped* and the next three averaged. There is no coordinate-wise step.

Parameters: ``neighbours`` (default 6: nearest others in the score), ``skip`` (default 1:
best scores dropped) and ``keep`` (default 3: rows averaged). With the defaults it needs
``n >= 7`` rows (6 neighbours) and ``n >= 4`` (positions 1..3). Ties keep client order
(stable sort). ``weights``: the accept mask. Faulty (NaN/Inf) rows score +inf and come
last, so they are averaged only when fewer finite rows than ``skip + keep`` exist, and
then not at all (the mean leaves them out).

The reference code runs it on whole models; on updates it is the same (distances and
plain means are translation-invariant).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..registry import DEFENSES
from .base import Aggregate, Aggregator, RoundContext
from ..core.robust_kernels import krum_scores, lowest_scores, pairwise_sq_distances, row_sq_norms
from ..core.robust_kernels import mean_of


@DEFENSES.register("bulyan-ref")
class BulyanRef(Aggregator):
    """The LeadFL code's "Bulyan": mean of the Krum-score ranks 2-4 (6 nearest others; best one dropped)."""

    def __init__(self, *, neighbours: int = 6, skip: int = 1, keep: int = 3):
        for key, v, lo in (("neighbours", neighbours, 1), ("skip", skip, 0), ("keep", keep, 1)):
            if int(v) != v or v < lo:
                raise ConfigError(
                    f"defense.{key}", f"must be an integer >= {lo} (got {v})", "reference: neighbours 6, skip 1, keep 3"
                )
        self.neighbours, self.skip, self.keep = int(neighbours), int(skip), int(keep)

    def validate(self, n: int, f: int) -> None:
        need = max(self.neighbours + 1, self.skip + self.keep)
        if n < need:
            raise ConfigError(
                "fl.clients_per_round",
                f"bulyan-ref with neighbours={self.neighbours}, skip={self.skip}, "
                f"keep={self.keep} needs at least {need} rows per round (got {n})",
                f">= {need}",
            )

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        n = U.shape[0]
        sq, bad = row_sq_norms(U)
        D = pairwise_sq_distances(U, sq, bad)
        # krum_scores sums the r - f - 2 nearest others: pick f so that this is `neighbours`
        scores = krum_scores(D, n - 2 - self.neighbours)
        order = lowest_scores(scores, n, bad)
        idx = order[self.skip : self.skip + self.keep]
        idx = idx[~bad[idx]]
        mask = torch.zeros(n, dtype=torch.bool, device=U.device)
        mask[idx] = True
        return Aggregate(
            mean_of(U, idx, bad),
            mask,
            {"selected": int(idx.numel()), "dropped_best": int(order[0]) if self.skip else -1},
        )
