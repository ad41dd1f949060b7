"""Client-side defenses (``defense.client``): benign clients change their own local training.

Each is a component registered in :data:`fedarena.registry.CLIENT_DEFENSES` (``fedarena
list client-defenses``): its keyword-only parameters are flat ``defense.*`` keys, like a
stage's, and it builds a :class:`~fedarena.core.recipe.StepHook` run after every local SGD step, on the
stacked ``(k, ...)`` parameters of all clients trained together, so it runs on the
vectorized path as well as the sequential one with the same arithmetic (tested). None
falls back to the sequential path (models with BatchNorm buffers train sequentially
anyway). Malicious clients never apply them (LeadFL reference code, spec decision A18).
They compose with every server-side aggregator.

"Weight" tensors are the parameters whose name contains ``weight`` (convolution and
linear weights and normalisation scales; biases excluded), as in the LeadFL reference code.
A step is "first" when its batch starts a pass over the client's data (an epoch); the
reference code keeps no regulariser state across epochs and does not regularise the
first batch of an epoch.

* ``leadfl`` -- LeadFL (Zhu, Roos, Chen, ICML 2023), three variants
  (``defense.client_variant``, spec Sec. 2 and decision A3):

  - ``ref`` (default): the authors' code (the report's Algorithm 2 made exact, spec
    Sec. 2.3). After the SGD step, except on an epoch's first batch, per weight tensor
    ``v = W - W_prev - g_old - lr * 1`` and the regulariser gradient is
    ``alpha * v / ||v||_F`` (the gradient of ``alpha * sum_p ||v_p||_F``); it is added to
    the step's task gradient (the code does not zero the gradients: ``double_task_step``,
    default True; False adds only the regulariser, and only weight tensors then take the
    second step), clipped element-wise to ``[-q, q]`` and applied as a second SGD step
    (with the recipe's momentum). ``g_old`` is the last gradient applied (task gradient
    on an epoch's first batch, the clipped sum otherwise) and ``W_prev`` the parameters
    after the previous batch.
  - ``a3``: the report's Algorithm 3, literally: ``g~ = grad L(W~)`` on the same batch at
    the post-step parameters ``W~``, ``H = (g~ - g) / lr``,
    ``W <- W~ - lr * alpha * clamp(1 - lr * H, -q, q)`` on weight tensors, every step.
    (With momentum ``W~`` is the momentum step; the report's has none.)
  - ``a1n``: the report's Eq. (5)-(6) read as the gradient of the scalar ``||1 - lr H||``
    with ``lr H = W_i - W~ + dW_i`` (spec decision A3): ``v = 1 + W~ - W_i - dW_i``,
    ``W <- W~ - lr * alpha * clip(v / ||v||_F, q)`` per weight tensor, not on an epoch's
    first batch.

  Parameters: ``defense.regular_weight`` (alpha, default 0.4) and
  ``defense.pert_strength`` (q, default 0.2).
* ``ldp`` -- the LeadFL code's "LDP" baseline (spec Sec. 2.5): after the SGD step, except on
  an epoch's first batch, ``W <- W + lr * N`` on weight tensors, ``N ~ Laplace(0, s)``
  per entry, ``s = defense.pert_strength``. Noise injection only: no clipping, no privacy
  accounting.
* ``fl-wbc`` -- FL-WBC (Sun et al., NeurIPS 2021) as in the LeadFL code: the same noise,
  zeroed where ``|g_i - g_{i-1}| > |N|`` (the previous step's task gradient of the same
  epoch).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Optional

import torch

from ..core.recipe import HookStep, StepHook
from ..errors import ConfigError
from ..registry import CLIENT_DEFENSES, config_check

LEADFL_VARIANTS = ("ref", "a3", "a1n")


def weight_indices(names: list[str]) -> list[int]:
    """Positions of the "weight" tensors (name contains ``weight``; the reference's filter)."""
    return [i for i, n in enumerate(names) if "weight" in n]


def _per_client(t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(k,)`` -> broadcastable against ``t`` ``(k, ...)``."""
    return v.reshape(-1, *([1] * (t.dim() - 1))).to(t.dtype)


def _tensor_norm(v: torch.Tensor) -> torch.Tensor:
    """Per-client Frobenius norm of a stacked tensor, broadcastable against it."""
    return v.reshape(v.shape[0], -1).norm(dim=1).reshape(-1, *([1] * (v.dim() - 1)))


def _regularised(s: HookStep) -> torch.Tensor:
    """``(k,)`` float: clients that regularise this step (active, not an epoch's first batch)."""
    return (~s.first).to(s.active.dtype) * s.active


def laplace(shape, scale: float, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """Laplace(0, scale) samples by inversion of one uniform draw per entry."""
    u = torch.rand(shape, generator=generator, dtype=dtype) - 0.5
    return -scale * torch.sign(u) * torch.log((1 - 2 * u.abs()).clamp_min(torch.finfo(dtype).tiny))


@dataclass(frozen=True)
class LeadFLRef(StepHook):
    """LeadFL as in the authors' code (spec Sec. 2.3); see the module docstring."""

    alpha: float = 0.4
    q: float = 0.2
    double_task_step: bool = True

    def init(self, names, params):
        w = weight_indices(names)
        return {
            "w": w,
            "old": {i: torch.zeros_like(params[i]) for i in w},
            "g_old": {i: torch.zeros_like(params[i]) for i in w},
        }

    def __call__(self, s: HookStep):
        st, lr, w = s.state, s.recipe.lr, s.state["w"]
        m = _regularised(s)
        total = [g.clone() if self.double_task_step else torch.zeros_like(g) for g in s.grads]
        for i in w:
            v = s.params[i] - st["old"][i] - st["g_old"][i] - lr
            total[i] = total[i] + self.alpha * v / (_tensor_norm(v) + 1e-12)
        clipped = [t.clamp(-self.q, self.q) for t in total]
        bufs = s.bufs
        if bool(m.any()):
            idx = list(range(len(s.params))) if self.double_task_step else w
            sub = s.step([clipped[i] for i in idx], None if bufs is None else [bufs[i] for i in idx], m, idx)
            if bufs is not None:
                bufs = list(bufs)
                for j, i in enumerate(idx):
                    bufs[i] = sub[j]
        for i in w:
            mi = _per_client(s.params[i], m)
            st["g_old"][i] = mi * clipped[i] + (1 - mi) * s.grads[i]
            st["old"][i] = s.params[i].clone()
        return bufs


@dataclass(frozen=True)
class LeadFLA3(StepHook):
    """The report's Algorithm 3 (finite-difference Hessian at a lookahead); module docstring."""

    alpha: float = 0.4
    q: float = 0.2

    def init(self, names, params):
        return {"w": weight_indices(names)}

    def __call__(self, s: HookStep):
        lr = s.recipe.lr
        g_look = s.regrad()
        for i in s.state["w"]:
            h = (g_look[i] - s.grads[i]) / lr
            r = (1 - lr * h).clamp(-self.q, self.q)
            s.params[i].sub_(_per_client(r, s.active) * (lr * self.alpha * r))
        return s.bufs


@dataclass(frozen=True)
class LeadFLA1N(StepHook):
    """The report's Eq. (5)-(6) as a normalised gradient (spec decision A3); module docstring."""

    alpha: float = 0.4
    q: float = 0.2

    def init(self, names, params):
        w = weight_indices(names)
        return {"w": w, "old": {i: params[i].clone() for i in w}, "older": {i: params[i].clone() for i in w}}

    def __call__(self, s: HookStep):
        st, lr = s.state, s.recipe.lr
        m = _regularised(s)
        for i in st["w"]:
            p = s.params[i]
            v = 1 + p - st["old"][i] - (st["old"][i] - st["older"][i])
            r = (v / (_tensor_norm(v) + 1e-12)).clamp(-self.q, self.q)
            p.sub_(_per_client(p, m) * (lr * self.alpha * r))
            st["older"][i], st["old"][i] = st["old"][i], p.clone()
        return s.bufs


@dataclass(frozen=True)
class NoiseDefense(StepHook):
    """LDP (``mask_by_gradient_change=False``) and FL-WBC (True); module docstring."""

    scale: float = 0.2
    mask_by_gradient_change: bool = False

    def init(self, names, params):
        w = weight_indices(names)
        return {"w": w, "g_old": {i: torch.zeros_like(params[i]) for i in w}}

    def __call__(self, s: HookStep):
        st, lr = s.state, s.recipe.lr
        m = _regularised(s)
        on = m.bool().tolist()
        for i in st["w"]:
            p = s.params[i]
            if any(on):
                noise = torch.stack(
                    [
                        laplace(p.shape[1:], self.scale, g, p.dtype) if o else torch.zeros(p.shape[1:], dtype=p.dtype)
                        for o, g in zip(on, s.generators)
                    ]
                ).to(p.device)
                if self.mask_by_gradient_change:
                    noise = torch.where(
                        (s.grads[i] - st["g_old"][i]).abs() > noise.abs(), torch.zeros_like(noise), noise
                    )
                p.add_(_per_client(p, m) * (lr * noise))
            st["g_old"][i] = s.grads[i].clone()
        return s.bufs


class ClientDefense:
    """A client-side defense: what benign clients add to their local training.

    Registered in :data:`fedarena.registry.CLIENT_DEFENSES` under its ``defense.client``
    name; its keyword-only constructor parameters (with defaults) are flat ``defense.*``
    keys, validated by the registry's types and by the constructor (one-line
    :class:`~fedarena.errors.ConfigError`)."""

    def hook(self) -> Optional[StepHook]:
        """The step hook benign clients run after every local step (None: train plainly)."""
        return None


@CLIENT_DEFENSES.register("none")
class NoClientDefense(ClientDefense):
    """No client-side defense: benign clients train as the recipe says."""


def _check_strength(pert_strength: float) -> float:
    if not pert_strength > 0:
        raise ConfigError("defense.pert_strength", f"must be > 0 (got {pert_strength})", "> 0")
    return float(pert_strength)


@CLIENT_DEFENSES.register("leadfl")
class LeadFL(ClientDefense):
    """LeadFL (Zhu, Roos, Chen, ICML 2023): a per-step regulariser of the local Hessian.

    ``client_variant``: ``ref`` the authors' code, ``a3`` the report's Algorithm 3, ``a1n``
    its Eq. (5)-(6) as a normalised gradient; ``regular_weight`` alpha, ``pert_strength``
    the clip q, ``double_task_step`` (ref) the code's un-zeroed task gradient in the second
    step. See :mod:`fedarena.defenses.client`."""

    def __init__(
        self,
        *,
        client_variant: Literal["ref", "a3", "a1n"] = "ref",
        regular_weight: float = 0.4,
        pert_strength: float = 0.2,
        double_task_step: bool = True,
    ):
        if client_variant not in LEADFL_VARIANTS:
            raise ConfigError(
                "defense.client_variant", f"unknown LeadFL variant {client_variant!r}", ", ".join(LEADFL_VARIANTS)
            )
        if not regular_weight >= 0:
            raise ConfigError("defense.regular_weight", f"must be >= 0 (got {regular_weight})", ">= 0")
        self.variant, self.alpha, self.q = client_variant, float(regular_weight), _check_strength(pert_strength)
        self.double_task_step = bool(double_task_step)

    def hook(self) -> StepHook:
        if self.variant == "a3":
            return LeadFLA3(self.alpha, self.q)
        if self.variant == "a1n":
            return LeadFLA1N(self.alpha, self.q)
        return LeadFLRef(self.alpha, self.q, self.double_task_step)


@CLIENT_DEFENSES.register("ldp")
class LDP(ClientDefense):
    """Local Laplace noise on the weights after every step (the LeadFL code's LDP baseline).

    Scale ``pert_strength``; noise injection only, no clipping and no privacy accounting."""

    def __init__(self, *, pert_strength: float = 0.2):
        self.scale = _check_strength(pert_strength)

    def hook(self) -> StepHook:
        return NoiseDefense(self.scale, False)


@CLIENT_DEFENSES.register("fl-wbc")
class FLWBC(ClientDefense):
    """FL-WBC (Sun et al., NeurIPS 2021) as in the LeadFL code: LDP's noise, zeroed where
    the task gradient changed more than the noise since the previous step."""

    def __init__(self, *, pert_strength: float = 0.2):
        self.scale = _check_strength(pert_strength)

    def hook(self) -> StepHook:
        return NoiseDefense(self.scale, True)


def stale_default(key: str, value: Any) -> bool:
    """Whether ``defense.<key>`` holds the default of every client-side defense that reads it.

    Such a key, set while the chosen client-side defense does not read it, is accepted and
    ignored: ``config.yaml`` files written before the client-side defenses were registered
    components hold ``client_variant``, ``regular_weight``, ``pert_strength`` and
    ``double_task_step`` at their defaults whatever ``defense.client`` is."""
    return all(CLIENT_DEFENSES.params(name)[key].default == value for name in CLIENT_DEFENSES.owners()[key])


def build_client_defense(defense: Mapping[str, Any]) -> ClientDefense:
    """The client-side defense of a flat ``defense`` dict (``client`` and ``defense.*`` keys).

    The chosen defense (``client``, default ``none``) gets the keys it reads; a
    client-side defense's key that it does not read is a one-line error, unless it holds
    the default (:func:`stale_default`). Keys of no client-side defense are left alone
    (they belong to the aggregator and the stages)."""
    name = defense.get("client", "none")
    CLIENT_DEFENSES.get(name)  # unknown name: a one-line error first
    mine, owners = CLIENT_DEFENSES.params(name), CLIENT_DEFENSES.owners()
    values = {}
    for key, value in defense.items():
        if key in mine:
            values[key] = value
        elif key in owners and not stale_default(key, value):
            readers = " or ".join(owners[key])
            raise ConfigError(
                f"defense.{key}",
                f"only applies when defense.client is {readers} (got defense.client={name!r})",
                f"set defense.client to {', '.join(owners[key])}, or drop this key",
            )
    return CLIENT_DEFENSES.build(name, values)


def client_hook(defense: Any) -> Optional[StepHook]:
    """The step hook of a config's ``defense`` section (``None`` for ``defense.client=none``)."""
    return build_client_defense({"client": defense.client, **defense.params()}).hook()


@config_check
def check_client_defense_config(cfg: Any) -> None:
    """``defense.client`` and its parameters are valid, and have local steps to act on."""
    if client_hook(cfg.defense) is not None and cfg.fl.algorithm == "fedsgd":
        raise ConfigError("defense.client", "a client-side defense needs local steps (fl.algorithm=fedavg)", "none")


__all__ = [
    "ClientDefense",
    "NoClientDefense",
    "LeadFL",
    "LDP",
    "FLWBC",
    "build_client_defense",
    "client_hook",
    "stale_default",
    "LEADFL_VARIANTS",
    "LeadFLRef",
    "LeadFLA3",
    "LeadFLA1N",
    "NoiseDefense",
    "laplace",
    "weight_indices",
]
