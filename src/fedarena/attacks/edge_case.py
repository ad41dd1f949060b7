"""Edge-case backdoor (Wang et al., NeurIPS 2020, "Attack of the Tails") with the Invariant
Aggregator paper's variants: continuous, collude and adaptive (Wang, Dimitriadis, Koyejo,
Tople, AISTATS 2024, Sec. 6.1, App. C.1, Tables 1 and 5-7).

**Poisoning.** Malicious clients train with the same recipe as benign ones on their own
data mixed with samples of a tail set (:mod:`fedarena.data.edge_sets`) labelled
``target``. The authors' code rebuilds every batch of 64 as 56 clean + 8 tail samples.
The engine builds batches by a random permutation of a client's data, so this attack
reproduces the *share*: ``poison()`` returns the client's data plus
``n_edge = round(n * r / (1 - r))`` tail samples, ``r = edge_per_batch / batch_size``
(``mix="add"``, default: every clean sample is kept; the client takes ``1/(1-r)`` times
as many steps), or replaces a random ``r`` share of its samples (``mix="replace"``: same
number of steps, ``1 - r`` of the clean data). Each batch then holds ``r`` tail samples
in expectation (hypergeometric around 8 of 64) instead of exactly 8; the tail samples are
drawn once per client (without replacement while the pool lasts) rather than afresh
for every batch.

Tail sets (``attack.edge_set``; see :mod:`fedarena.data.edge_sets`): ``shapes``
(generated), ``mnist`` (digits of ``edge_class`` from ``edge_root``), ``inverted``,
``rare`` (the most atypical ``rare_frac`` of the test images of ``edge_class`` of
``edge_dataset``) or a ``.npz`` path; ``pool_size`` caps the attackers' pool. Files are
read from ``attack.edge_root``, else ``data.root``, else ``$FEDARENA_DATA``.

**Backdoor accuracy** is the share of the held-out tail images classified as ``target``
(all of them count: they have no true label among the task's classes; spec A25).

**Variants** (flags, combinable):

* continuous (default): the attackers poison in every round they are sampled
  (``attack.start_round``/``end_round`` bound it).
* ``collude``: all of a round's attackers send one identical update, the mean of their
  poisoned updates (spec A11; Panda et al. 2022 is only cited).
* ``adaptive``: knows the AND-mask (threat ``aggregator_aware``) and sends
  ``m * g * ||g|| / ||m * g||``: masked coordinates zeroed, the rest scaled up so the norm
  is unchanged (App. C.1). ``adaptive_mask="current"`` (default, white-box, spec A12):
  the mask the server will compute on this round's reports (benign ones plus the
  unscaled malicious ones; omniscient); ``"previous"``: the non-zero pattern of the last
  global update (from the broadcast history). ``mask_tau``/``mask_strict`` must match the
  server's rule. With ``collude`` the mean is taken first, then the rescaling.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch

from ..data.edge_sets import EdgeSet, load_edge_set
from ..core.sign_masks import adaptive_rescale, and_mask
from ..errors import ConfigError
from ..registry import ATTACKS
from .base import Attack, DataInfo, RoundView, ThreatModel
from .data_poisoning import check_classes


@ATTACKS.register("edge-case")
class EdgeCaseBackdoor(Attack):
    """Edge-case backdoor (Wang et al. 2020): tail samples labelled target mixed into local data; collude/adaptive variants."""

    def __init__(
        self,
        *,
        target: int = 9,
        edge_set: str = "shapes",
        edge_class: Optional[int] = None,
        edge_root: Optional[str] = None,
        edge_per_batch: int = 8,
        batch_size: int = 64,
        mix: Literal["add", "replace"] = "add",
        pool_size: Optional[int] = None,
        edge_seed: int = 0,
        collude: bool = False,
        adaptive: bool = False,
        adaptive_mask: Literal["current", "previous"] = "current",
        mask_tau: float = 0.2,
        mask_strict: bool = True,
        test_size: int = 2000,
        edge_dataset: Optional[str] = None,
        rare_frac: float = 0.2,
    ):
        if batch_size < 2:
            raise ConfigError("attack.batch_size", f"must be >= 2 (got {batch_size})", ">= 2, e.g. 64")
        if not 0 < edge_per_batch < batch_size:
            raise ConfigError(
                "attack.edge_per_batch",
                f"must be in 1..{batch_size - 1} (got {edge_per_batch})",
                f"1..{batch_size - 1}",
            )
        if pool_size is not None and pool_size < 1:
            raise ConfigError(
                "attack.pool_size", f"must be >= 1 (got {pool_size})", ">= 1, or unset for the whole pool"
            )
        self.target, self.edge_set_name, self.edge_class, self.edge_root = target, edge_set, edge_class, edge_root
        self.edge_per_batch, self.batch_size, self.mix = edge_per_batch, batch_size, mix
        self.pool_size, self.edge_seed, self.test_size = pool_size, edge_seed, test_size
        self.collude, self.adaptive, self.adaptive_mask = collude, adaptive, adaptive_mask
        self.mask_tau, self.mask_strict = mask_tau, mask_strict
        self.edge_dataset, self.rare_frac = edge_dataset, rare_frac
        self.threat = ThreatModel(
            knowledge="benign" if adaptive and adaptive_mask == "current" else "own",
            collude=collude,
            aggregator_aware=adaptive,
        )
        self._diag: dict[str, float] = {}

    @property
    def ratio(self) -> float:
        """Expected share of tail samples in a malicious batch, ``edge_per_batch / batch_size``."""
        return self.edge_per_batch / self.batch_size

    def setup(self, info: DataInfo, generator: torch.Generator) -> None:
        super().setup(info, generator)
        check_classes(self, info, "target")
        root = self.edge_root or getattr(info, "root", None)  # attack.edge_root, else data.root
        self.edges: EdgeSet = load_edge_set(
            self.edge_set_name,
            info.input_shape,
            root=root,
            edge_class=self.edge_class,
            seed=self.edge_seed,
            num_classes=info.num_classes,
            dataset=self.edge_dataset,
            rare_frac=self.rare_frac,
            verify=getattr(info, "verify", True),
        )
        if not self.edges.derived and self.pool_size is not None:
            self.edges.x_train = self.edges.x_train[: self.pool_size]

    def num_edge(self, n_clean: int) -> int:
        """Tail samples given to a client holding ``n_clean`` samples (at least 1)."""
        r = self.ratio
        n = n_clean * r / (1 - r) if self.mix == "add" else n_clean * r
        return max(1, int(round(n)))

    def _draw(self, pool: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
        reps = -(-n // len(pool))  # without replacement while the pool lasts
        idx = torch.cat([torch.randperm(len(pool), generator=generator) for _ in range(reps)])[:n]
        return pool[idx.to(pool.device)]

    def poison(self, x, y, client_id, generator):
        n = len(y)
        k = self.num_edge(n)
        if self.edges.derived:
            src = (
                torch.arange(n)
                if self.edges.source_class is None
                else torch.nonzero(y.cpu() == self.edges.source_class).flatten()
            )
            if len(src) == 0:  # no sample of the source class here: fall back to all own samples
                src = torch.arange(n)
            x_edge = self.edges.transform(self._draw(x[src.to(x.device)], k, generator))
        else:
            x_edge = self._draw(self.edges.x_train.to(x.device, x.dtype), k, generator)
        if self.mix == "replace":
            keep = torch.randperm(n, generator=generator)[: max(0, n - k)].to(x.device)
            x, y = x[keep], y[keep]
        y_edge = torch.full((len(x_edge),), self.target, dtype=y.dtype, device=y.device)
        return torch.cat([x, x_edge.to(x.dtype)]), torch.cat([y, y_edge])

    def backdoor_testset(self, x, y):
        if self.edges.derived:
            keep = (
                torch.ones_like(y, dtype=torch.bool)
                if self.edges.source_class is None
                else (y == self.edges.source_class)
            )
            xt = self.edges.transform(x[keep])
        else:
            xt = self.edges.x_test.to(x.device, x.dtype)
        xt = xt[: self.test_size]
        return xt, torch.full((len(xt),), self.target, dtype=y.dtype, device=y.device)

    # ------------------------------------------------------------ model-side variants
    def craft(self, view: RoundView) -> Optional[torch.Tensor]:
        if not (self.collude or self.adaptive):
            return None
        M = view.own_updates
        m = M.shape[0]
        if self.collude:
            M = M.mean(0, keepdim=True).expand(m, -1).clone()
        self._diag = {}
        if self.adaptive:
            if self.adaptive_mask == "current" and view.benign_updates is not None:
                mask = and_mask(torch.cat([view.benign_updates, M]), self.mask_tau, self.mask_strict)
            elif view.prev_update is not None:
                mask = view.prev_update != 0
            else:
                mask = torch.ones(M.shape[1], dtype=torch.bool, device=M.device)
            before = torch.linalg.vector_norm(M * mask.to(M.dtype), dim=1)
            M = adaptive_rescale(M, mask)
            full = torch.linalg.vector_norm(M, dim=1)
            self._diag = {
                "mask_pass_frac": float(mask.float().mean()),
                "scale": float((full / before.clamp_min(1e-30)).mean()),
            }
        return M

    def diagnostics(self) -> dict[str, float]:
        return dict(self._diag)
