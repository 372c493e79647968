"""The conditioning core of MR-VAEs: beta ranges, beta sampling, the standardised
hyper-input and the gates.

Every beta-conditioned model in this project (the linear VAE here and every family in
``deep/``) imports these pieces; none keeps a copy.

Conventions
-----------
* ``beta`` is the weight on the rate, always > 0.
* The training range is ``[a, b]``; ``log beta`` is sampled uniformly on ``[log a, log b]``.
* The hyper-input is ``u = (log beta - mid) / scale`` with ``mid = (log a + log b) / 2`` and
  ``scale = half_range / sqrt(3)``, ``half_range = (log b - log a) / 2``, so that
  ``u ~ U(-sqrt(3), sqrt(3))`` has mean 0 and variance 1 (paper section 3.4).
* A gate maps ``u`` (shape ``(B,)`` or ``(B, 1)``) to one factor per channel, shape ``(B, C)``,
  and multiplies the pre-activation ``x`` of shape ``(B, C)``, ``(B, C, H, W)`` or any shape whose
  ``channel_dim`` has size C.  beta is always passed explicitly: ``model(x, beta)``.
"""
from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .names import BETA_DENSITY_SHAPES, BETA_SAMPLING, GATE_DIRECTIONS, GATE_KIND_NAMES

SQRT3 = math.sqrt(3.0)

__all__ = [
    "BetaRange",
    "BetaRangeError",
    "sigmoid_gate",
    "sqrt_gate",
    "GATE_DIRECTIONS",
    "GATE_KINDS",
    "Gate",
    "GateContext",
    "check_gate_kinds",
    "beta_batch",
    "as_beta_range",
    "GatedModel",
    "GatedLinear",
    "GatedConv2d",
    "GatedConvTranspose2d",
    "gate_parameter_groups",
    "hyper_parameters",
    "project_gates_",
    "HyperMLP",
    "gate_bias_for_value",
    "BETA_SAMPLING",
    "BETA_DENSITY_SHAPES",
    "fold_scale",
    "scaled_conv",
    "scaled_linear",
    "scaled_batch_norm",
]


class BetaRangeError(ValueError):
    """Raised for an invalid beta range or an invalid beta value."""


@dataclass(frozen=True)
class BetaRange:
    """Log-uniform training range ``[a, b]`` of beta, with ``0 < a < b``."""

    a: float = 0.01
    b: float = 10.0

    def __post_init__(self) -> None:
        a, b = float(self.a), float(self.b)
        if not (math.isfinite(a) and math.isfinite(b)):
            raise BetaRangeError(f"beta range must be finite, got a={self.a}, b={self.b}")
        if a <= 0:
            raise BetaRangeError(f"beta range needs a > 0 (log-uniform sampling), got a={self.a}")
        if a >= b:
            raise BetaRangeError(f"beta range needs a < b, got a={self.a}, b={self.b}")
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", b)

    # -- the fixed affine map between log beta and u ------------------------------------
    @property
    def log_a(self) -> float:
        return math.log(self.a)

    @property
    def log_b(self) -> float:
        return math.log(self.b)

    @property
    def mid(self) -> float:
        """Centre of ``[log a, log b]``."""
        return 0.5 * (self.log_a + self.log_b)

    @property
    def half_range(self) -> float:
        """Half the width of ``[log a, log b]``."""
        return 0.5 * (self.log_b - self.log_a)

    @property
    def scale(self) -> float:
        """Standard deviation of ``log beta`` under the log-uniform law: ``half_range / sqrt(3)``."""
        return self.half_range / SQRT3

    def standardize(self, beta: torch.Tensor | float) -> torch.Tensor:
        """Hyper-input ``u`` for ``beta`` (same shape); ``u`` in ``[-sqrt 3, sqrt 3]`` on the range."""
        beta = torch.as_tensor(beta, dtype=torch.get_default_dtype()) if not torch.is_tensor(beta) else beta
        if torch.any(beta <= 0):
            raise BetaRangeError("beta must be > 0")
        return (torch.log(beta) - self.mid) / self.scale

    def unstandardize(self, u: torch.Tensor | float) -> torch.Tensor:
        """Inverse of :meth:`standardize`: beta for hyper-input ``u``."""
        u = torch.as_tensor(u, dtype=torch.get_default_dtype()) if not torch.is_tensor(u) else u
        return torch.exp(u * self.scale + self.mid)

    # -- sampling and grids --------------------------------------------------------------
    def sample(
        self,
        n: int,
        *,
        per: str = "example",
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        power: float = 1.0,
        shape: str = "uniform",
    ) -> torch.Tensor:
        """Draw ``n`` betas, log-uniform on ``[a, b]``; shape ``(n,)``.

        ``per="example"`` draws one beta per example (the reference code's choice);
        ``per="batch"`` draws one beta and repeats it ``n`` times (the paper's Algorithm 1);
        ``per="stratified"`` draws one beta per example from each of ``n`` equal slices of
        ``[log a, log b]``, in random order: every beta is still log-uniform, the batch covers the whole
        range (both ends included) and the batch mean of the objective has lower variance.

        ``power`` p reshapes the density: ``log beta = log a + (log b - log a) * v ** p`` with ``v`` the uniform
        (or stratified) draw. ``p = 1`` is log-uniform (the paper); ``p > 1`` puts more mass at small beta
        (a fraction ``q ** (1 / p)`` of the draws falls in the lowest fraction ``q`` of the log range; p = 2: half
        in the lowest quarter); ``p < 1`` more at large beta.

        ``shape="arcsine"`` first maps the draw to ``v = sin(pi v / 2) ** 2``, which is Beta(1/2, 1/2)
        distributed: a fraction ``(2 / pi) asin(sqrt(q))`` of the draws in the lowest (and as many in the
        highest) fraction ``q`` of the log range (q = 0.1: 0.205 at each end, against 0.1 log-uniform; the
        middle fifth gets 0.128 against 0.2). It has the p = 2 density's ``1 / sqrt`` rise at both ends. The
        map is increasing, so stratified draws stay one per slice of its quantiles.
        """
        if not (power > 0 and math.isfinite(power)):
            raise ValueError(f"power must be a finite number > 0, got {power!r}")
        if per not in BETA_SAMPLING:
            raise ValueError(f"per must be one of {BETA_SAMPLING}, got {per!r}")
        if shape not in BETA_DENSITY_SHAPES:
            raise ValueError(f"shape must be one of {BETA_DENSITY_SHAPES}, got {shape!r}")
        dtype = dtype or torch.get_default_dtype()
        m = 1 if per == "batch" else n
        u01 = torch.rand(m, generator=generator, dtype=dtype, device="cpu")
        if per == "stratified":
            slot = torch.randperm(n, generator=generator, device="cpu").to(dtype)
            u01 = (slot + u01) / n
        if shape == "arcsine":
            u01 = torch.sin(u01 * (math.pi / 2)).square()
        if power != 1.0:
            u01 = u01.pow(power)
        u01 = u01.to(device or "cpu")
        log_beta = self.log_a + (self.log_b - self.log_a) * u01
        beta = torch.exp(log_beta)
        return beta.expand(n).clone() if per == "batch" else beta

    def grid(self, n: int = 20) -> torch.Tensor:
        """``n`` log-spaced betas from a to b (float64), shape ``(n,)``."""
        if n < 1:
            raise ValueError("grid needs n >= 1")
        return torch.logspace(math.log10(self.a), math.log10(self.b), n, dtype=torch.float64)

    def contains(self, beta: torch.Tensor | float, rtol: float = 1e-9) -> bool:
        beta = torch.as_tensor(beta, dtype=torch.float64)
        return bool(torch.all((beta >= self.a * (1 - rtol)) & (beta <= self.b * (1 + rtol))))

    def check(self, beta: torch.Tensor | float, what: str = "model") -> None:
        """Warn when ``beta`` leaves the trained range (the response is extrapolated there)."""
        if not self.contains(beta):
            warnings.warn(
                f"beta outside the {what}'s trained range [{self.a:g}, {self.b:g}]: "
                "the MR-VAE extrapolates there and its outputs are not trained",
                stacklevel=2,
            )

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "sampling": "log-uniform",
                "hyper_input": "u = (log beta - mid) / (half_range / sqrt(3))",
                "mid": self.mid, "scale": self.scale}


# ----------------------------------------------------------------------------------------
# gate functions
# ----------------------------------------------------------------------------------------
def sigmoid_gate(x: torch.Tensor) -> torch.Tensor:
    """Encoder gate ``1 / (1 + exp(-x))``, in (0, 1)."""
    return torch.sigmoid(x)


class _SqrtGateFn(torch.autograd.Function):
    """``sqrt(relu(1 - exp(x)))`` with a finite gradient at the kink (x -> 0-)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        one_minus = -torch.expm1(x)  # 1 - e^x, accurate near 0
        y = torch.sqrt(torch.clamp(one_minus, min=0.0))
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x, y = ctx.saved_tensors
        tiny = torch.finfo(y.dtype).eps ** 0.5
        d = -torch.exp(x) / (2.0 * torch.clamp(y, min=tiny))
        return grad * torch.where(x < 0, d, torch.zeros_like(d))


def sqrt_gate(x: torch.Tensor) -> torch.Tensor:
    """Decoder gate ``sqrt(relu(1 - exp(x)))``, in [0, 1); exactly 0 for x >= 0.

    Its gradient is ``-e^x / (2 y)`` for x < 0 (clamped near the kink) and 0 for x >= 0.
    """
    return _SqrtGateFn.apply(x)


def gate_bias_for_value(kind: str, value: float) -> float:
    """Pre-activation at which gate ``kind`` outputs ``value`` (used to initialise gates open)."""
    if not 0.0 < value < 1.0:
        raise ValueError("gate init value must lie in (0, 1)")
    if kind == "sigmoid":
        return math.log(value / (1.0 - value))
    if kind == "sqrt":
        return math.log(1.0 - value * value)
    raise ValueError(f"no bias rule for gate kind {kind!r}")


#: Gate functions by kind (names listed torch-free in :data:`linvae.names.GATE_KIND_NAMES`).
GATE_KINDS: dict[str, Callable[[torch.Tensor], torch.Tensor] | None] = {
    "sigmoid": sigmoid_gate,
    "sqrt": sqrt_gate,
    "film": None,  # scale-and-shift, handled in Gate
}
if tuple(GATE_KINDS) != GATE_KIND_NAMES:  # pragma: no cover - guards whoever adds a gate kind
    raise ImportError("linvae.names.GATE_KIND_NAMES must list the keys of linvae.conditioning.GATE_KINDS")


def check_gate_kinds(error: type[Exception] = ValueError, **kinds: str | None) -> None:
    """Raise ``error`` naming the argument when a gate kind (e.g. ``enc_gate="relu"``) is not in :data:`GATE_KINDS`
    (``None``, no gate, is accepted)."""
    for what, kind in kinds.items():
        if kind is not None and kind not in GATE_KINDS:
            raise error(f"unknown {what} kind {kind!r}; choose one of {sorted(GATE_KINDS)}")


class HyperMLP(nn.Module):
    """A small MLP from the hyper-input to gate pre-activations (ablation of App. D).

    ``hidden=()`` is the paper's default linear map ``w * u + b``.
    """

    def __init__(self, out_features: int, hidden: Sequence[int] = (), in_features: int = 1,
                 activation: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), activation()]
            width = h
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(width, out_features)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(h))


def _as_hyper_batch(u: torch.Tensor) -> torch.Tensor:
    """``(B,)`` or ``(B, F)`` -> ``(B, F)``."""
    if u.dim() == 0:
        return u.reshape(1, 1)
    if u.dim() == 1:
        return u.unsqueeze(-1)
    if u.dim() == 2:
        return u
    raise ValueError(f"hyper-input must have shape (B,) or (B, F), got {tuple(u.shape)}")


class Gate(nn.Module):
    """Per-channel beta gate: ``gate(hyper(u)) * x`` (or FiLM ``(1 + g) * x + s``).

    Parameters
    ----------
    features: number of channels C.
    kind: ``"sigmoid"`` (encoders), ``"sqrt"`` (decoders) or ``"film"`` (ablation).
    hidden: hidden widths of the hyper network; ``()`` is the paper's affine map of u.
    in_features: width of the hyper-input (1 for u itself; larger for shared hyper features).
    init_value: gate output at initialisation for every u (the gate starts open, never dead).
    channel_dim: dimension of ``x`` that holds the C channels (1 for ``(B, C)`` and ``(B, C, H, W)``).
    direction: ``None`` (free, the paper's gate) or ``"increasing"`` / ``"decreasing"``: every channel's gate
        value is monotone in beta that way.  Needs the affine map of the 1-d hyper-input (``hidden=()``,
        ``in_features=1``) and kind sigmoid or sqrt; kept by :meth:`project_`, which clamps the slope
        ``w`` to the sign the direction needs (call it after every optimiser step; the trainer does).
        The exact linear-VAE decoder gate is ``decreasing`` (paper-notes 2.5).

    ``forward(x, u)``: ``x`` of shape ``(B, ..., C, ...)`` and ``u`` of shape ``(B,)`` or
    ``(B, in_features)``; returns a tensor shaped like ``x``.
    """

    def __init__(self, features: int, kind: str = "sigmoid", *, hidden: Sequence[int] = (),
                 in_features: int = 1, init_value: float = 0.9, channel_dim: int = 1,
                 activation: type[nn.Module] = nn.ReLU, direction: str | None = None) -> None:
        super().__init__()
        if kind not in GATE_KINDS:
            raise ValueError(f"unknown gate kind {kind!r}; choose from {sorted(GATE_KINDS)}")
        if direction is not None and direction not in GATE_DIRECTIONS:
            raise ValueError(f"unknown gate direction {direction!r}; choose None or one of {GATE_DIRECTIONS}")
        self.direction = direction
        self.features = features
        self.kind = kind
        self.channel_dim = channel_dim
        out = 2 * features if kind == "film" else features
        self.hyper = HyperMLP(out, hidden=hidden, in_features=in_features, activation=activation)
        if direction is not None and not self.affine:
            raise ValueError("a monotone gate needs kind sigmoid or sqrt and the affine map of the 1-d "
                             f"hyper-input (hidden=(), in_features=1); got kind={kind!r}, hidden={tuple(hidden)}, "
                             f"in_features={in_features}")
        with torch.no_grad():
            self.hyper.out.weight.zero_()
            if kind == "film":
                self.hyper.out.bias.zero_()  # identity map at init: scale 1, shift 0
            else:
                self.hyper.out.bias.fill_(gate_bias_for_value(kind, init_value))

    def factors(self, u: torch.Tensor) -> torch.Tensor:
        """Gate values, shape ``(B, C)`` (``(B, 2C)`` for FiLM: scale, shift)."""
        pre = self.hyper(_as_hyper_batch(u).to(self.hyper.out.weight.dtype))
        if self.kind == "film":
            scale, shift = pre.chunk(2, dim=-1)
            return torch.cat([1.0 + scale, shift], dim=-1)
        return GATE_KINDS[self.kind](pre)  # type: ignore[misc]

    def _broadcast(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        dim = self.channel_dim % x.dim()
        if x.shape[dim] != self.features:
            raise ValueError(f"gate has {self.features} channels but x has {x.shape[dim]} "
                             f"on dim {dim} (shape {tuple(x.shape)})")
        if g.shape[0] != x.shape[0]:
            if g.shape[0] != 1:
                raise ValueError(f"hyper-input batch {g.shape[0]} does not match x batch {x.shape[0]}")
        shape = [g.shape[0]] + [1] * (x.dim() - 1)
        shape[dim] = self.features
        return g.reshape(shape)

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        g = self.factors(u)
        if self.kind == "film":
            scale, shift = g.chunk(2, dim=-1)
            return self._broadcast(scale, x) * x + self._broadcast(shift, x)
        return self._broadcast(g, x) * x

    def project_(self) -> None:
        """Keep a monotone gate monotone in beta (a projected-gradient step; no-op for a free gate).

        The gate value is ``f(w u + b)`` with ``u`` increasing in beta; ``sigmoid`` increases and ``sqrt``
        decreases in its argument, so the sign of ``w`` fixes the direction."""
        if self.direction is None:
            return
        w_nonnegative = (self.kind == "sigmoid") == (self.direction == "increasing")
        with torch.no_grad():
            if w_nonnegative:
                self.hyper.out.weight.clamp_(min=0.0)
            else:
                self.hyper.out.weight.clamp_(max=0.0)

    @property
    def affine(self) -> bool:
        """Whether the gate is ``f(w u + b)`` of the 1-d hyper-input, f sigmoid or sqrt (what monotone
        gates and :meth:`init_linear_vae_response_` need)."""
        return self.kind != "film" and not len(self.hyper.body) and self.hyper.out.in_features == 1

    def init_decreasing_(self, slope: float) -> None:
        """Start every channel closing as beta grows: slope ``w = -slope`` (sigmoid) or ``+slope`` (sqrt) of the
        pre-activation ``w u + b`` per unit of the hyper-input ``u`` (which spans ``[-sqrt 3, sqrt 3]`` over the
        trained range); the bias, hence the gate value at the range's centre ``u = 0``, is kept. The exact
        linear-VAE gates decrease in beta (paper-notes 2.5), and so do the trained Conv/ResNet gates (docs/recipe.md).
        ``slope = 0`` is the default start, the same gate value at every beta."""
        if not self.affine:
            raise ValueError("a decreasing gate initialisation needs a sigmoid or sqrt gate with the affine hyper "
                             f"map (hidden=(), in_features=1); got kind {self.kind!r}")
        if not math.isfinite(slope) or slope < 0:
            raise ValueError(f"the initial gate slope must be a finite number >= 0, got {slope!r}")
        with torch.no_grad():
            self.hyper.out.weight.fill_(-slope if self.kind == "sigmoid" else slope)

    def init_linear_vae_response_(self, lam: float | torch.Tensor, beta_range: "BetaRange",
                                  channels: slice = slice(None)) -> None:
        """Start ``channels`` as the exact linear VAE's response to beta for an eigenvalue ``lam`` (a number,
        or one per channel); ``beta_range`` is the range whose hyper-input the gate receives.

        Paper-notes 2.5 (Theorem 1), with ``eta = log beta`` and ``u = (eta - mid) / scale``:

        * sigmoid (encoder) gate ``sigmoid(log lam - eta) = lam / (lam + beta)``: ``w = -scale``,
          ``b = log lam - mid`` (the proof's encoder gate, slope -1 in ``log beta``, with ``S_ii^2 = lam``);
        * sqrt (decoder) gate ``sqrt(relu(1 - exp(eta - log lam))) = sqrt((1 - beta / lam)_+)``: ``w = scale``,
          ``b = mid - log lam`` (the proof's decoder gate, exactly 0 from ``beta = lam`` on: collapse).

        Both decrease in beta; ``w`` and ``b`` stay trainable (a free gate is not kept monotone)."""
        if not self.affine:
            raise ValueError("the linear-VAE gate initialisation needs a sigmoid or sqrt gate with the affine "
                             f"hyper-map (hidden=()); got kind {self.kind!r} with {len(self.hyper.body)} hidden "
                             "hyper layers")
        lam = torch.as_tensor(lam, dtype=self.hyper.out.bias.dtype)
        if not bool(torch.all(lam > 0)) or not bool(torch.all(torch.isfinite(lam))):
            raise ValueError(f"the linear-VAE gate eigenvalue must be a finite number > 0, got {lam.tolist()}")
        sign = -1.0 if self.kind == "sigmoid" else 1.0
        with torch.no_grad():
            self.hyper.out.weight[channels] = sign * beta_range.scale
            self.hyper.out.bias[channels] = sign * (beta_range.mid - torch.log(lam))

    def extra_repr(self) -> str:
        extra = f", direction={self.direction}" if self.direction else ""
        return f"features={self.features}, kind={self.kind}, channel_dim={self.channel_dim}{extra}"


def as_beta_range(value: "BetaRange | dict | Sequence[float]") -> "BetaRange":
    """A :class:`BetaRange` from a BetaRange, a dict ``{"a": .., "b": ..}`` (as stored in model configs) or a
    pair ``(a, b)``; anything else raises :class:`BetaRangeError` saying which forms are accepted."""
    if isinstance(value, BetaRange):
        return value
    if isinstance(value, dict):
        try:
            return BetaRange(float(value["a"]), float(value["b"]))
        except KeyError:
            raise BetaRangeError(f"beta_range dict needs keys 'a' and 'b', got {sorted(value)}") from None
    try:
        a, b = value  # type: ignore[misc]
    except (TypeError, ValueError):
        raise BetaRangeError(f"beta_range must be a BetaRange, a dict {{'a':..,'b':..}} or a pair (a, b); "
                             f"got {value!r}") from None
    return BetaRange(float(a), float(b))


class GatedModel:
    """Mixin for beta-conditioned ``nn.Module``s: ``config`` (a copy of ``self._config``, the JSON-able keyword
    arguments that rebuild the model), ``hyper_input(beta, batch, like)``, ``gates()``, ``num_gated_channels``
    and ``project_gates_()``.

    The host sets ``is_mr`` (bool) and ``beta_range`` (:class:`BetaRange`); a plain beta-VAE (``is_mr=False``)
    gets ``None`` from :meth:`hyper_input` and its gated layers run ungated.
    """

    _config: dict
    is_mr: bool
    beta_range: BetaRange

    @property
    def config(self) -> dict:
        """JSON-able keyword arguments that rebuild this architecture (a copy)."""
        return copy.deepcopy(self._config)

    def hyper_input(self, beta: "torch.Tensor | float", batch: int, like: torch.Tensor) -> torch.Tensor | None:
        """The standardised hyper-input ``u = beta_range.standardize(beta)``: ``(batch,)`` for a ``(batch,)``
        tensor of betas, ``(1,)`` for one beta shared by the batch (a float or a 1-element tensor; gated layers
        then fold their gates into their weights); ``None`` for a plain beta-VAE. ``like`` gives the dtype and
        device."""
        beta = beta_batch(beta, batch, like, keep_one=True)
        if not getattr(self, "is_mr", True):
            return None
        return self.beta_range.standardize(beta)

    def gates(self) -> list["Gate"]:
        """Every gate module (empty for a plain beta-VAE)."""
        return [m for m in self.modules() if isinstance(m, Gate)]  # type: ignore[attr-defined]

    @property
    def num_gated_channels(self) -> int:
        return sum(g.features for g in self.gates())

    def project_gates_(self) -> None:
        """Apply every gate's constraint (:meth:`Gate.project_`); trainers call it after each optimiser step."""
        project_gates_(self)  # type: ignore[arg-type]


def hyper_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of ``model``'s hyper-networks: every :class:`Gate` and every module flagged
    ``is_hyper = True`` (e.g. a shared hyper-input trunk)."""
    seen: set[int] = set()
    out = []
    for mod in model.modules():
        if isinstance(mod, Gate) or getattr(mod, "is_hyper", False):
            for p in mod.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
    return out


def gate_parameter_groups(model: nn.Module, lr: float, hyper_lr_mult: float = 1.0) -> list[dict]:
    """Optimiser parameter groups: the base weights at ``lr`` and the gates' hyper-networks
    (:func:`hyper_parameters`) at ``lr * hyper_lr_mult`` (the second group only when the model has gates).

    With one learning rate the gates of an MR-VAE (one scalar pair per channel, starting beta-independent)
    learn far slower than the weights they scale; a multiplier lets them keep up. Use it in your own loop::

        opt = torch.optim.Adam(gate_parameter_groups(model, lr=1e-3, hyper_lr_mult=30.0))
    """
    hyper = hyper_parameters(model)
    ids = {id(p) for p in hyper}
    base = [p for p in model.parameters() if id(p) not in ids]
    groups = [{"params": base, "lr": lr}]
    if hyper:
        groups.append({"params": hyper, "lr": lr * hyper_lr_mult})
    return groups


def project_gates_(model: nn.Module) -> None:
    """Apply the constraint of every gate of ``model`` (:meth:`Gate.project_`: monotone gates keep their slope's
    sign); call it after each optimiser step. A no-op for free gates."""
    for m in model.modules():
        if isinstance(m, Gate):
            m.project_()


def beta_batch(beta: torch.Tensor | float, batch: int, like: torch.Tensor, *,
               keep_one: bool = False) -> torch.Tensor:
    """``beta`` as a ``(batch,)`` tensor with ``like``'s dtype and device: a float or a 0-dim / 1-element
    tensor is broadcast, a ``(batch,)`` tensor is kept; anything else raises ``ValueError``.

    ``keep_one``: a single beta stays ``(1,)`` (one beta shared by the batch, so gates can be folded into
    their layers' weights, see :func:`fold_scale`)."""
    beta = torch.as_tensor(beta, dtype=like.dtype, device=like.device)
    if beta.dim() == 0 or (beta.dim() == 1 and beta.shape[0] == 1):
        return beta.reshape(1) if keep_one else beta.reshape(1).expand(batch)
    if beta.dim() == 1 and beta.shape[0] == batch:
        return beta
    raise ValueError(f"beta must be a float, a 0-dim tensor or a (B,) tensor with B={batch}; "
                     f"got shape {tuple(beta.shape)}")


class GateContext:
    """Gate factors of many gates for one hyper-input ``u`` ``(B,)`` (or ``(1,)``: one beta for the whole
    batch), computed together.

    Affine gates (``hidden=()``, 1-d hyper-input) of the same kind are evaluated in one pass: their
    hyper weights and biases are concatenated and ``gate(u * w + b)`` is computed once for all of them,
    then split per gate (the same numbers as :meth:`Gate.factors`). A network with tens of gates thereby
    runs a handful of small ops per forward instead of several per gate (the per-op overhead dominated
    the MR cost of small CPU batches). Other gates (hidden hyper layers, FiLM) are evaluated one by one.
    """

    def __init__(self, u: torch.Tensor, gates: Sequence[Gate]) -> None:
        self.u = u
        #: one hyper-input for the whole batch (``u`` has one row): the factors are ``(1, C)`` and a layer
        #: may fold them into its weights instead of scaling its output (see ``deep.models.convnets``)
        self.shared = u.shape[0] == 1
        self._factors: dict[int, torch.Tensor] = {}
        fused: dict[str, list[Gate]] = {}
        for g in gates:
            if (g.kind in ("sigmoid", "sqrt") and len(g.hyper.body) == 0 and g.hyper.out.in_features == 1
                    and self.u.dim() == 1):
                fused.setdefault(g.kind, []).append(g)
        for kind, group in fused.items():
            w = torch.cat([g.hyper.out.weight.reshape(-1) for g in group])
            b = torch.cat([g.hyper.out.bias for g in group])
            values = GATE_KINDS[kind](torch.addcmul(b, self.u.to(w.dtype).unsqueeze(1), w))  # (B, sum C)
            for g, f in zip(group, values.split([g.features for g in group], dim=1)):
                self._factors[id(g)] = f

    def factors(self, gate: Gate) -> torch.Tensor:
        """Gate values ``(B, C)`` of ``gate``."""
        f = self._factors.get(id(gate))
        return gate.factors(self.u) if f is None else f

    def apply(self, gate: Gate, x: torch.Tensor) -> torch.Tensor:
        """``gate(x, u)``: ``x`` times the gate per channel (``gate.channel_dim``)."""
        f = self._factors.get(id(gate))
        if f is None:
            return gate(x, self.u)
        return gate._broadcast(f, x) * x


# ----------------------------------------------------------------------------------------------------
# folding a gate into its layer (one beta for the whole batch)
# ----------------------------------------------------------------------------------------------------
def fold_scale(gate: Gate | None, context: "torch.Tensor | GateContext | None") -> torch.Tensor | None:
    """The factors ``(C,)`` of ``gate`` to fold into its layer's weights, or ``None`` when it cannot be folded:
    no gate, no shared :class:`GateContext` (one beta for the whole batch), or a FiLM gate (it adds a shift)."""
    if gate is None or not isinstance(context, GateContext) or not context.shared or gate.kind == "film":
        return None
    return context.factors(gate).reshape(-1)


def scaled_conv(conv: nn.Module, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``conv(x) * scale`` per output channel, computed as a conv with scaled weights and bias (a gate folded
    into its layer when the whole batch shares one beta).

    ``scale`` ``(C_out,)`` multiplies each filter (the paper's ``sigma(.) (.)_row W_base``, App. B.1): the cost
    is one pass over the weights instead of one over the output feature map. ``conv``: ``nn.Conv2d`` or
    ``nn.ConvTranspose2d`` (groups 1).
    """
    bias = conv.bias * scale if conv.bias is not None else None
    if isinstance(conv, nn.ConvTranspose2d):
        if conv.groups != 1:
            raise ValueError("scaled_conv supports transposed convolutions with groups=1 only")
        return F.conv_transpose2d(x, conv.weight * scale.reshape(1, -1, 1, 1), bias, conv.stride, conv.padding,
                                  conv.output_padding, 1, conv.dilation)
    return conv._conv_forward(x, conv.weight * scale.reshape(-1, 1, 1, 1), bias)


def scaled_batch_norm(bn: nn.BatchNorm2d, h: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``bn(h) * scale`` per channel, with ``scale`` folded into the affine weight and bias; running
    statistics are updated exactly as ``bn(h)`` would update them."""
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    use_batch = bn.training or bn.running_mean is None
    track = not bn.training or bn.track_running_stats
    weight = bn.weight * scale if bn.weight is not None else scale
    bias = bn.bias * scale if bn.bias is not None else None
    return F.batch_norm(h, bn.running_mean if track else None, bn.running_var if track else None, weight, bias,
                        use_batch, momentum, bn.eps)


def scaled_linear(linear: nn.Linear, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``linear(x) * scale`` per output feature (``scale`` ``(out,)``), computed with scaled weights and bias."""
    return F.linear(x, linear.weight * scale.unsqueeze(1), linear.bias * scale if linear.bias is not None else None)


# ----------------------------------------------------------------------------------------------------
# multi-rate layers: a layer and its gate (drop-in for nn.Linear / nn.Conv2d / nn.ConvTranspose2d)
# ----------------------------------------------------------------------------------------------------
class _GatedLayer(nn.Module):
    """A layer followed by a per-output-channel :class:`Gate` of the hyper-input ``u``.

    ``forward(x, u)``: ``u`` is ``(B,)`` (one beta per example: the gate multiplies the output), ``(1,)`` (one
    beta for the whole batch: the gate is folded into the layer's weights and bias, the paper's row-scaled
    ``W_base``), a :class:`GateContext` (precomputed factors of many gates), or ``None`` (a plain beta-VAE:
    no gate). ``gate=None`` at construction builds the plain layer (``.gate`` is then ``None``).
    """

    layer: nn.Module

    def _make_gate(self, features: int, gate: str | None, gate_options: dict) -> None:
        self.gate = Gate(features, gate, **gate_options) if gate else None

    def _scaled(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, u: "torch.Tensor | GateContext | None" = None) -> torch.Tensor:
        if self.gate is None or u is None:
            return self.layer(x)
        context = u if isinstance(u, GateContext) else GateContext(u, [self.gate])
        scale = fold_scale(self.gate, context)
        if scale is not None:
            return self._scaled(x, scale)
        return context.apply(self.gate, self.layer(x))


class GatedLinear(_GatedLayer):
    """``nn.Linear`` with a beta gate per output feature: ``gate(u) * (W x + b)`` (paper Eq. 6/8).

    ``gate``: ``"sigmoid"`` (encoders), ``"sqrt"`` (decoders), ``"film"`` or ``None`` (no gate). Other keyword
    arguments (``direction``, ``hidden``, ``init_value``, ``in_features`` of the hyper-input) go to :class:`Gate`.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, gate: str | None = "sigmoid",
                 **gate_options) -> None:
        super().__init__()
        self.layer = nn.Linear(in_features, out_features, bias=bias)
        self._make_gate(out_features, gate, gate_options)

    def _scaled(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return scaled_linear(self.layer, x, scale)


class GatedConv2d(_GatedLayer):
    """``nn.Conv2d`` with a beta gate per output channel (paper App. B.1: one scalar pair per filter).

    Positional and keyword arguments of ``nn.Conv2d``; ``gate`` and the :class:`Gate` options as in
    :class:`GatedLinear`. Folding into the weights needs ``groups=1``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, *, gate: str | None = "sigmoid", **gate_options) -> None:
        super().__init__()
        self.layer = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        self._make_gate(out_channels, gate, gate_options)

    def _scaled(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return scaled_conv(self.layer, x, scale)


class GatedConvTranspose2d(_GatedLayer):
    """``nn.ConvTranspose2d`` with a beta gate per output channel (``groups=1``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 output_padding=0, bias: bool = True, *, gate: str | None = "sqrt", **gate_options) -> None:
        super().__init__()
        self.layer = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride, padding, output_padding,
                                        bias=bias)
        self._make_gate(out_channels, gate, gate_options)

    def _scaled(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return scaled_conv(self.layer, x, scale)
