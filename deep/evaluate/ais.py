"""Rate-distortion curve of a DECODER by annealed importance sampling (AIS) with HMC transitions.

Written from the description in Huang, Makhzani, Cao & Grosse, "Evaluating Lossy Compression Rates of
Deep Generative Models" (ICML 2020); no code of theirs was used.  Only callables are needed: this module
does not import any model code, so it is tested on the exact linear decoder (:mod:`linvae.decoder_rd`).

Conventions (all per example, in the units of the distortion callable, i.e. nats for an NLL)
--------------------------------------------------------------------------------------------
* prior ``p(z) = N(0, I_k)``; distortion ``d(x, z)`` is any callable (``-log p(x|z)`` for Bernoulli or
  Gaussian decoders, the sum of squared errors for the ``sse`` family);
* ``q_lam(z|x) = p(z) exp(-lam d(x, z)) / Z(lam)``, ``Z(lam) = E_p[exp(-lam d(x, z))]`` (``Z(0) = 1``);
* ``D(lam) = E_{q_lam}[d]``, ``R(lam) = KL(q_lam || p) = -lam D(lam) - log Z(lam)``;
* ``lam = 1/beta`` is the point a beta-VAE targets: ``min_q D + beta R = -beta log Z(1/beta)``.

Estimators (one AIS run per example, ``n_chains`` chains, schedule ``0 = lam_0 < ... < lam_T``)
------------------------------------------------------------------------------------------------
``z_0 ~ p``; for ``t = 1..T``: ``log w += -(lam_t - lam_{t-1}) d(x, z_{t-1})``, then ``n_hmc`` HMC
transitions leaving ``q_{lam_t}`` invariant.  At every ``t``:

* ``log_partition = log mean_c w_c`` : a stochastic LOWER bound on ``log Z(lam_t)`` (Jensen);
* ``distortion = sum_c w~_c d(x, z_c)`` with normalised weights ``w~`` (self-normalised estimate);
* ``rate = -lam_t distortion - log_partition``.  In expectation over the AIS randomness this is an
  UPPER bound on the rate ``KL(q_AIS || p)`` of the channel "run AIS, pick a chain with probability w~"
  whose expected distortion is ``E[distortion]``; so ``(rate, distortion)`` lies on or above the decoder's
  true RD curve in expectation (extended-state argument, docs/ais.md).  ``rate + lam distortion`` is
  ``-log_partition``, an upper bound on the optimum ``-log Z``.
* ``*_se``: Monte Carlo standard errors over chains: ``log_partition_se`` by the delta method,
  ``distortion_se`` = variance of d over the chains / ESS, ``rate_se = lam distortion_se + log_partition_se``
  (conservative).  They do NOT include the bias of AIS; BDMC bounds that.

HMC: identity mass, ``n_leapfrog`` leapfrog steps, Metropolis accept/reject, one step size per
(intermediate distribution, example).  As in Huang et al., a FIRST run adapts the step sizes towards
``target_accept`` (``log eps += adapt_rate (mean acceptance probability - target)``); they are then FROZEN
and a SECOND run with a new seed produces the estimates (adaptation would otherwise make the weights depend
on the samples and void the bound).

Bidirectional Monte Carlo (:func:`bdmc`): on data simulated from the model at the last ``lam`` of the
schedule (``z* ~ p``, ``x ~ p_lam(x|z*)`` such that ``q_lam(z|x)`` is its exact posterior, so ``z*`` is an
exact sample of it), forward AIS gives a lower bound and reverse AIS (started at ``z*``, annealed from
``lam_T`` down to 0) an upper bound on ``log Z(lam_T)``; their gap bounds the error of ``log Z`` and hence of
``rate`` at that ``lam`` (for the same ``distortion``).  For Gaussian/SSE decoders such data exist at every
``lam`` (``x ~ N(f(z), s2 / lam)``); for Bernoulli decoders only at ``lam = 1`` (``x ~ Bernoulli``).

Shapes: ``x`` is ``(N, *event)``; the latent state is ``(chains, B, k)``; the distortion callable is called
as ``distortion(x_rows, z_rows)`` with ``x_rows`` ``(M, *event)`` and ``z_rows`` ``(M, k)`` (``M =
chains * B``, chain-major) and must return ``(M,)``; it must be differentiable in ``z``.  Put networks in
``eval()`` mode (no BatchNorm statistics updates) and, for speed, with ``requires_grad_(False)`` params.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

__all__ = ["AISSettings", "AISResult", "BDMCResult", "DistortionFn", "DistortionTarget", "make_schedule", "hmc_step",
           "ais_rd_curve", "bdmc", "gaussian_data_sampler", "bernoulli_data_sampler", "inference_gap",
           "ais_results_json", "SCHEDULES", "AIS_CONVENTIONS"]

DistortionFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SCHEDULES = ("geometric", "sigmoid", "linear")

AIS_CONVENTIONS = {
    "units": "nats per example (the distortion callable's units; sse: sum of squared errors)",
    "lam": "Lagrange multiplier; q_lam(z|x) ∝ N(z; 0, I) exp(-lam d(x, z)); lam = 1/beta is the beta-VAE's "
           "target point",
    "distortion": "self-normalised AIS estimate of E_{q_lam}[d], mean over examples",
    "rate": "-lam * distortion - log_partition: in expectation an upper bound on the rate of the AIS channel, "
            "i.e. (rate, distortion) lies on or above the decoder's RD curve",
    "log_partition": "log mean_chains exp(log w): stochastic lower bound on log E_p exp(-lam d)",
    "se": "Monte Carlo standard error over chains (delta method), mean over examples; excludes AIS bias",
    "inference_gap": "(D_enc + beta R_enc) - (-beta log_partition at lam = 1/beta), nats: the encoder's "
                     "beta-VAE loss minus the AIS estimate of the best loss any q(z|x) reaches with this "
                     "decoder (amortisation + approximation gap; underestimated by at most beta * BDMC gap)",
    "bdmc_gap": "upper (reverse AIS) minus lower (forward AIS) bound on log Z at bdmc_lam, on data simulated "
                "from the model, mean over simulated examples; bounds the AIS error of rate there",
}


# ----------------------------------------------------------------------------------------------------
# settings and schedules
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AISSettings:
    """Settings of one AIS evaluation.

    ``n_steps`` intermediate distributions T (the schedule has T+1 points from 0; ``include`` adds points);
    ``schedule``: ``geometric`` (``lam_1..lam_T`` log-spaced from ``lam_min`` to ``lam_max``), ``sigmoid``
    (Grosse et al.'s sigmoid spacing of [0, lam_max], sharpness ``sigmoid_delta``) or ``linear``.
    ``include``: extra multipliers put on the schedule (e.g. ``1/beta``) so the curve is evaluated exactly there.
    ``n_chains`` chains per example (``n_chains_adapt`` in the step-size run, default the same).
    ``batch_size`` examples per pass (rows per decoder call = chains * batch_size).
    """

    n_steps: int = 500
    lam_max: float = 100.0
    lam_min: float = 1e-3
    schedule: str = "geometric"
    sigmoid_delta: float = 4.0
    include: tuple[float, ...] = ()
    n_chains: int = 16
    n_chains_adapt: int | None = None
    n_leapfrog: int = 10
    n_hmc: int = 1
    init_step_size: float = 0.3
    target_accept: float = 0.65
    adapt_rate: float = 1.0
    min_step_size: float = 1e-5
    max_step_size: float = 1.5
    max_examples: int | None = None
    batch_size: int = 32
    seed: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {SCHEDULES}")
        for name in ("n_steps", "n_chains", "n_leapfrog", "n_hmc", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.n_chains_adapt is not None and self.n_chains_adapt < 1:
            raise ValueError("n_chains_adapt must be a positive integer or None")
        if not (self.lam_max > 0 and math.isfinite(self.lam_max)):
            raise ValueError(f"lam_max must be finite and > 0, got {self.lam_max}")
        if self.schedule == "geometric" and not (0 < self.lam_min < self.lam_max):
            raise ValueError(f"geometric schedule needs 0 < lam_min < lam_max, got {self.lam_min}, {self.lam_max}")
        if not 0 < self.target_accept < 1:
            raise ValueError("target_accept must be in (0, 1)")
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError("max_examples must be a positive integer or None")
        if any(not (0 < float(v) <= self.lam_max) for v in self.include):
            raise ValueError(f"include values must lie in (0, lam_max={self.lam_max}], got {self.include}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["include"] = list(self.include)
        return d


def make_schedule(n_steps: int, lam_max: float, shape: str = "geometric", lam_min: float = 1e-3,
                  include: Sequence[float] = (), sigmoid_delta: float = 4.0) -> np.ndarray:
    """Strictly increasing float64 schedule ``(T+1 [+ len(include)],)`` with ``lam[0] = 0``, ``lam[-1] = lam_max``."""
    t = np.arange(1, n_steps + 1, dtype=np.float64) / n_steps
    if shape == "geometric":
        inner = np.geomspace(lam_min, lam_max, n_steps) if n_steps > 1 else np.array([lam_max])
    elif shape == "sigmoid":
        sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
        lo, hi = sig(-sigmoid_delta), sig(sigmoid_delta)
        inner = lam_max * (sig(sigmoid_delta * (2 * t - 1)) - lo) / (hi - lo)
    elif shape == "linear":
        inner = lam_max * t
    else:
        raise ValueError(f"unknown schedule {shape!r}; choose one of {SCHEDULES}")
    inner[-1] = lam_max
    lam = np.concatenate([[0.0], inner, np.asarray(include, dtype=np.float64)])
    lam = np.unique(lam)  # sorted; drops exact duplicates
    keep = np.concatenate([[True], np.diff(lam) > 1e-12 * np.maximum(lam[1:], 1.0)])
    lam = lam[keep]
    return lam


def _schedule(settings: AISSettings, lam_max: float | None = None) -> np.ndarray:
    lm = settings.lam_max if lam_max is None else float(lam_max)
    return make_schedule(settings.n_steps, lm, settings.schedule, min(settings.lam_min, lm / 10),
                         [v for v in settings.include if v <= lm], settings.sigmoid_delta)


# ----------------------------------------------------------------------------------------------------
# the annealed target and the HMC kernel
# ----------------------------------------------------------------------------------------------------
class DistortionTarget:
    """``d(x, z)`` and ``grad_z d`` for a latent state ``(C, B, k)``; counts decoder evaluations."""

    def __init__(self, distortion: DistortionFn, x: torch.Tensor, n_chains: int) -> None:
        self.distortion = distortion
        self.batch = x.shape[0]
        self.chains = n_chains
        self.x_rows = x.unsqueeze(0).expand(n_chains, *x.shape).reshape(n_chains * x.shape[0], *x.shape[1:])
        self.evals = 0

    def __call__(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c, b, k = z.shape
        with torch.enable_grad():
            zz = z.detach().requires_grad_(True)
            d = self.distortion(self.x_rows, zz.reshape(c * b, k))
            if d.shape != (c * b,):
                raise ValueError(f"the distortion callable must return shape ({c * b},), got {tuple(d.shape)}")
            (grad,) = torch.autograd.grad(d.sum(), zz)
        self.evals += c * b
        return d.detach().reshape(c, b), grad.detach()


def hmc_step(z: torch.Tensor, d: torch.Tensor, grad: torch.Tensor, lam: float, step_size: torch.Tensor,
             n_leapfrog: int, target: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
             generator: torch.Generator | None = None):
    """One HMC transition leaving ``q_lam(z) ∝ N(z; 0, I) exp(-lam d(z))`` invariant.

    ``z`` ``(C, B, k)`` with its cached ``d`` ``(C, B)`` and ``grad = grad_z d`` ``(C, B, k)``; ``step_size``
    ``(B,)`` (one per example).  Returns ``(z, d, grad, accepted (C, B) bool, accept_prob (C, B))``.
    """
    eps = step_size.to(z.dtype).view(1, -1, 1)
    momentum = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
    h0 = 0.5 * (z * z).sum(-1) + lam * d + 0.5 * (momentum * momentum).sum(-1)
    p = momentum - 0.5 * eps * (z + lam * grad)
    zn, dn, gn = z, d, grad
    for i in range(n_leapfrog):
        zn = zn + eps * p
        dn, gn = target(zn)
        if i < n_leapfrog - 1:
            p = p - eps * (zn + lam * gn)
    p = p - 0.5 * eps * (zn + lam * gn)
    h1 = 0.5 * (zn * zn).sum(-1) + lam * dn + 0.5 * (p * p).sum(-1)
    log_ratio = (h0 - h1).double()
    log_ratio = torch.where(torch.isfinite(log_ratio), log_ratio, torch.full_like(log_ratio, -math.inf))
    accept_prob = torch.exp(torch.clamp(log_ratio, max=0.0))
    u = torch.rand(accept_prob.shape, generator=generator, dtype=torch.float64, device=z.device)
    accepted = u < accept_prob
    z = torch.where(accepted[..., None], zn, z)
    d = torch.where(accepted, dn, d)
    grad = torch.where(accepted[..., None], gn, grad)
    return z, d, grad, accepted, accept_prob


# ----------------------------------------------------------------------------------------------------
# one forward / reverse pass over a batch of examples
# ----------------------------------------------------------------------------------------------------
def _weights_stats(log_w: torch.Tensor, d: torch.Tensor, lam: float) -> dict[str, torch.Tensor]:
    """Per-example estimates from chain log-weights ``(C, B)`` and distortions ``(C, B)``."""
    c = log_w.shape[0]
    log_z = torch.logsumexp(log_w, 0) - math.log(c)
    w = torch.softmax(log_w, 0)
    dd = d.double()
    dist = (w * dd).sum(0)
    sum_w2 = (w * w).sum(0)
    log_z_se = torch.sqrt(torch.clamp((c * sum_w2 - 1.0) / max(c - 1, 1), min=0.0))
    # spread of d over the chains / ESS: equals sd / sqrt(C) for uniform weights; unlike the delta-method
    # sum w~^2 (d - D)^2 (or a weighted variance) it does not collapse to 0 when one chain dominates
    dist_se = torch.sqrt(dd.var(0, unbiased=c > 1) * sum_w2) if c > 1 else torch.zeros_like(dist)
    return {"log_partition": log_z, "distortion": dist, "rate": -lam * dist - log_z,
            "log_partition_se": log_z_se, "distortion_se": dist_se, "rate_se": lam * dist_se + log_z_se,
            "ess": 1.0 / sum_w2}


_STAT_KEYS = ("log_partition", "distortion", "rate", "log_partition_se", "distortion_se", "rate_se", "ess")


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False)


def _forward(target: DistortionTarget, latent_dim: int, lam: np.ndarray, settings: AISSettings,
             step_sizes: torch.Tensor | None, generator: torch.Generator, dtype: torch.dtype,
             device: torch.device, desc: str = "AIS") -> dict:
    """Forward AIS over one batch.  ``step_sizes`` ``(T, B)`` frozen, or ``None`` to adapt (returned)."""
    c, b = target.chains, target.batch
    adapt = step_sizes is None
    z = torch.randn((c, b, latent_dim), generator=generator, dtype=dtype, device=device)
    d, grad = target(z)
    log_w = torch.zeros((c, b), dtype=torch.float64, device=device)
    n_t = len(lam) - 1
    out = {key: torch.empty((n_t + 1, b), dtype=torch.float64, device=device) for key in _STAT_KEYS}
    for key, val in _weights_stats(log_w, d, 0.0).items():
        out[key][0] = val
    eps = torch.full((b,), settings.init_step_size, dtype=torch.float64, device=device)
    used = torch.empty((n_t, b), dtype=torch.float64, device=device)
    accept = torch.empty(n_t, dtype=torch.float64)
    for t in _progress(range(1, n_t + 1), settings.progress, desc):
        lam_t = float(lam[t])
        log_w = log_w - (lam_t - float(lam[t - 1])) * d.double()
        if not adapt:
            eps = step_sizes[t - 1]
        acc_sum = 0.0
        for _ in range(settings.n_hmc):
            z, d, grad, accepted, prob = hmc_step(z, d, grad, lam_t, eps, settings.n_leapfrog, target, generator)
            acc_sum += float(accepted.double().mean())
            if adapt:
                eps = torch.clamp(eps * torch.exp(settings.adapt_rate * (prob.mean(0) - settings.target_accept)),
                                  settings.min_step_size, settings.max_step_size)
        used[t - 1] = eps
        accept[t - 1] = acc_sum / settings.n_hmc
        for key, val in _weights_stats(log_w, d, lam_t).items():
            out[key][t] = val
    out["step_size"] = used
    out["accept_rate"] = accept
    out["z"] = z
    return out


def _reverse(target: DistortionTarget, z_exact: torch.Tensor, lam: np.ndarray, settings: AISSettings,
             step_sizes: torch.Tensor, generator: torch.Generator, desc: str = "reverse AIS") -> torch.Tensor:
    """Reverse AIS from exact samples ``z_exact`` ``(B, k)`` of ``q_{lam_T}``; returns the per-example
    stochastic UPPER bound on ``log Z(lam_T)`` ``(B,)``.

    The mirror image of the forward pass: for ``t = T..1``, HMC at ``lam_t`` (step sizes ``step_sizes[t-1]``,
    the same as forward), then ``log w += (lam_t - lam_{t-1}) d(z)``.  Every chain starts at the same exact
    sample; the first transitions (at ``lam_T``, which leave it exact) make the chains differ.
    ``E[exp(log w)] = Z(0) / Z(lam_T) = 1 / Z(lam_T)``, so ``-log mean_c exp(log w_c)`` is an upper bound.
    """
    c = target.chains
    z = z_exact.unsqueeze(0).expand(c, *z_exact.shape).clone()
    d, grad = target(z)
    log_w = torch.zeros(d.shape, dtype=torch.float64, device=z.device)
    n_t = len(lam) - 1
    for t in _progress(range(n_t, 0, -1), settings.progress, desc):
        for _ in range(settings.n_hmc):
            z, d, grad, _, _ = hmc_step(z, d, grad, float(lam[t]), step_sizes[t - 1], settings.n_leapfrog,
                                        target, generator)
        log_w = log_w + (float(lam[t]) - float(lam[t - 1])) * d.double()
    return -(torch.logsumexp(log_w, 0) - math.log(c))


# ----------------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------------
@dataclass
class AISResult:
    """AIS estimates of a decoder's RD curve.

    ``lam`` ``(L,)`` the schedule (``lam[0] = 0``); per-example arrays ``(N, L)`` (float64, nats):
    ``rate``, ``distortion``, ``log_partition`` and their ``*_se``, ``ess`` (effective sample size over
    chains); ``step_size`` ``(L-1, N)`` the frozen HMC step sizes; ``accept_rate`` ``(L-1,)`` mean acceptance
    in the frozen run (last batch); ``decoder_evals`` (rows through the distortion callable, both runs,
    gradients included); ``seconds`` wall time.
    """

    lam: np.ndarray
    rate: np.ndarray
    distortion: np.ndarray
    log_partition: np.ndarray
    rate_se: np.ndarray
    distortion_se: np.ndarray
    log_partition_se: np.ndarray
    ess: np.ndarray
    step_size: np.ndarray
    accept_rate: np.ndarray
    decoder_evals: int
    seconds: float
    settings: dict = field(default_factory=dict)

    @property
    def n_examples(self) -> int:
        return int(self.rate.shape[0])

    def mean(self) -> dict[str, np.ndarray]:
        """Curves averaged over examples ``(L,)``: ``lam``, ``rate``, ``distortion``, ``log_partition``, and
        the standard errors of those means (``*_se``: root-sum-square of per-example errors / N)."""
        n = self.n_examples
        out = {"lam": self.lam.copy()}
        for key in ("rate", "distortion", "log_partition"):
            out[key] = getattr(self, key).mean(0)
            out[key + "_se"] = np.sqrt(np.sum(getattr(self, key + "_se") ** 2, 0)) / n
        out["ess"] = self.ess.mean(0)
        return out

    def index_of(self, lam: float, rtol: float = 1e-9) -> int:
        """Index of ``lam`` on the schedule (put it there with ``AISSettings.include``)."""
        hits = np.flatnonzero(np.isclose(self.lam, lam, rtol=rtol, atol=0.0))
        if hits.size == 0:
            raise KeyError(f"lam={lam} is not on the schedule; add it with AISSettings(include=({lam},))")
        return int(hits[0])

    def point(self, lam: float) -> dict[str, float]:
        """Example-mean estimates at ``lam`` (on the schedule): rate, distortion, log_partition and their se."""
        i = self.index_of(lam)
        m = self.mean()
        return {k: float(v[i]) for k, v in m.items()}

    @staticmethod
    def concatenate(parts: Sequence["AISResult"]) -> "AISResult":
        """Join results of the same schedule computed on different examples."""
        first = parts[0]
        for p in parts[1:]:
            if p.lam.shape != first.lam.shape or not np.array_equal(p.lam, first.lam):
                raise ValueError("AIS results on different schedules cannot be joined")
        cat = lambda key, axis=0: np.concatenate([getattr(p, key) for p in parts], axis=axis)  # noqa: E731
        per_example = {key: cat(key) for key in _STAT_KEYS}
        return AISResult(lam=first.lam, step_size=cat("step_size", 1),
                         accept_rate=np.mean([p.accept_rate for p in parts], 0),
                         decoder_evals=sum(p.decoder_evals for p in parts), seconds=sum(p.seconds for p in parts),
                         settings=first.settings, **per_example)

    def to_dict(self, max_points: int | None = None) -> dict:
        """JSON-able example means (optionally thinned to about ``max_points`` schedule points, always keeping
        the first, the last and every ``include`` point)."""
        m = self.mean()
        idx = np.arange(len(self.lam))
        if max_points is not None and len(idx) > max_points:
            keep = set(np.unique(np.linspace(0, len(idx) - 1, max_points).round().astype(int)).tolist())
            for v in self.settings.get("include", []):
                hits = np.flatnonzero(np.isclose(self.lam, v, rtol=1e-9, atol=0.0))
                keep.update(hits.tolist())
            idx = np.array(sorted(keep))
        out = {k: v[idx].tolist() for k, v in m.items()}
        out.update({"n_examples": self.n_examples, "decoder_evals": int(self.decoder_evals),
                    "seconds": float(self.seconds), "accept_rate_mean": float(np.mean(self.accept_rate)),
                    "settings": self.settings})
        return out


@dataclass
class BDMCResult:
    """Bidirectional Monte Carlo on ``n_examples`` simulated pairs at ``lam`` (the schedule's last point).

    ``log_partition_lower`` / ``log_partition_upper`` ``(N,)``: forward / reverse AIS bounds on
    ``log Z(lam)``; ``gap = upper - lower`` (N,) nats (also the gap on ``rate`` at ``lam`` for a given
    distortion); ``forward`` the full forward :class:`AISResult` on the simulated data; ``data`` ``(N, *event)``
    and ``latents`` ``(N, k)`` the simulated pairs.
    """

    lam: float
    log_partition_lower: np.ndarray
    log_partition_upper: np.ndarray
    forward: AISResult
    seconds: float
    data: np.ndarray | None = None
    latents: np.ndarray | None = None

    @property
    def gap(self) -> np.ndarray:
        return self.log_partition_upper - self.log_partition_lower

    @property
    def mean_gap(self) -> float:
        return float(np.mean(self.gap))

    def to_dict(self) -> dict:
        return {"lam": self.lam, "gap": self.mean_gap, "gap_se": float(np.std(self.gap, ddof=1) / math.sqrt(
            len(self.gap))) if len(self.gap) > 1 else 0.0, "log_partition_lower": float(np.mean(
                self.log_partition_lower)), "log_partition_upper": float(np.mean(self.log_partition_upper)),
            "n_examples": int(len(self.gap)), "seconds": self.seconds}


# ----------------------------------------------------------------------------------------------------
# public entry points
# ----------------------------------------------------------------------------------------------------
def _generator(seed: int, batch_no: int, run: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed) * 1_000_003 + batch_no * 7919 + run)


def _dtype_of(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.is_floating_point() else torch.get_default_dtype()


def ais_rd_curve(distortion: DistortionFn, latent_dim: int, x: torch.Tensor,
                 settings: AISSettings = AISSettings()) -> AISResult:
    """AIS RD curve of one decoder on examples ``x`` ``(N, *event)`` (first ``settings.max_examples``).

    ``distortion(x_rows (M, *event), z_rows (M, k)) -> (M,)`` is ``d(x, z)`` of the decoder at ONE beta.
    Two runs per batch of ``settings.batch_size`` examples: step-size adaptation, then the frozen-step-size
    run with a new seed that produces the estimates.  The latent dtype is ``x``'s floating dtype.
    """
    if settings.max_examples is not None:
        x = x[: settings.max_examples]
    if x.shape[0] == 0:
        raise ValueError("no examples to evaluate")
    lam = _schedule(settings)
    dtype, device = _dtype_of(x), x.device
    parts = []
    for batch_no, start in enumerate(range(0, x.shape[0], settings.batch_size)):
        xb = x[start:start + settings.batch_size]
        t0 = time.perf_counter()
        adapt_target = DistortionTarget(distortion, xb, settings.n_chains_adapt or settings.n_chains)
        tuned = _forward(adapt_target, latent_dim, lam, settings, None, _generator(settings.seed, batch_no, 0, device),
                         dtype, device, desc=f"AIS step sizes [{batch_no}]")
        target = DistortionTarget(distortion, xb, settings.n_chains)
        run = _forward(target, latent_dim, lam, settings, tuned["step_size"],
                       _generator(settings.seed, batch_no, 1, device), dtype, device, desc=f"AIS [{batch_no}]")
        parts.append(_to_result(lam, run, adapt_target.evals + target.evals, time.perf_counter() - t0, settings))
    return AISResult.concatenate(parts)


def _to_result(lam: np.ndarray, run: dict, evals: int, seconds: float, settings: AISSettings) -> AISResult:
    arr = {k: run[k].T.cpu().numpy() for k in _STAT_KEYS}
    return AISResult(lam=lam, step_size=run["step_size"].cpu().numpy(), accept_rate=run["accept_rate"].numpy(),
                     decoder_evals=int(evals), seconds=float(seconds), settings=settings.to_dict(), **arr)


def gaussian_data_sampler(mean_fn: Callable[[torch.Tensor], torch.Tensor], scale2: float):
    """Simulator for :func:`bdmc` when ``d(x, z) = ||x - mean_fn(z)||^2 / (2 scale2) + const``: at ``lam`` the
    joint ``p(z) exp(-lam d)`` normalises over ``x`` to ``x ~ N(mean_fn(z), scale2 / lam)``.  The project's
    ``sse`` distortion (sum of squared errors, no 1/2) has ``scale2 = 1/2``; a Gaussian NLL with variance
    ``s2`` has ``scale2 = s2``."""
    if not scale2 > 0:
        raise ValueError("scale2 must be > 0")

    def sample(z: torch.Tensor, lam: float, generator: torch.Generator | None = None) -> torch.Tensor:
        m = mean_fn(z)
        return m + math.sqrt(scale2 / lam) * torch.randn(m.shape, generator=generator, dtype=m.dtype,
                                                         device=m.device)

    return sample


def bernoulli_data_sampler(logits_fn: Callable[[torch.Tensor], torch.Tensor]):
    """Simulator for :func:`bdmc` with a Bernoulli decoder ``d = -log Bernoulli(x; sigmoid(logits_fn(z)))``.
    Only ``lam = 1`` has a model to simulate from (``p(x|z)^lam`` does not normalise to a z-free constant)."""

    def sample(z: torch.Tensor, lam: float, generator: torch.Generator | None = None) -> torch.Tensor:
        if not math.isclose(lam, 1.0, rel_tol=1e-12):
            raise ValueError(f"BDMC for a Bernoulli decoder needs lam = 1 (exact posterior samples exist only for "
                             f"the model itself), got lam = {lam}; set lam_max=1 for the BDMC run")
        probs = torch.sigmoid(logits_fn(z))
        return torch.bernoulli(probs, generator=generator)

    return sample


def bdmc(distortion: DistortionFn, latent_dim: int, sample_data, n_examples: int,
         settings: AISSettings = AISSettings(), lam: float | None = None,
         dtype: torch.dtype | None = None, device: torch.device | str = "cpu") -> BDMCResult:
    """Bidirectional Monte Carlo at ``lam`` (default ``settings.lam_max``) on ``n_examples`` simulated pairs.

    ``sample_data(z (N, k), lam, generator) -> x (N, *event)`` simulates ``x`` such that ``z`` is an exact
    sample of ``q_lam(z|x)`` (:func:`gaussian_data_sampler`, :func:`bernoulli_data_sampler`).  The schedule is
    ``settings``' shape and length ending at ``lam``; step sizes are adapted on the simulated data, frozen, and
    reused by the forward and the reverse chain (new seeds for each).
    """
    t0 = time.perf_counter()
    lam_target = float(settings.lam_max if lam is None else lam)
    sched = _schedule(settings, lam_target)
    dtype = dtype or torch.get_default_dtype()
    device = torch.device(device)
    gen = _generator(settings.seed, 0, 10, device)
    z_star = torch.randn((n_examples, latent_dim), generator=gen, dtype=dtype, device=device)
    with torch.no_grad():
        x = sample_data(z_star, lam_target, gen)
    lowers, uppers, parts = [], [], []
    for batch_no, start in enumerate(range(0, n_examples, settings.batch_size)):
        xb, zb = x[start:start + settings.batch_size], z_star[start:start + settings.batch_size]
        t1 = time.perf_counter()
        adapt_target = DistortionTarget(distortion, xb, settings.n_chains_adapt or settings.n_chains)
        gens = [_generator(settings.seed, batch_no, salt, device) for salt in (11, 12, 13)]
        tuned = _forward(adapt_target, latent_dim, sched, settings, None, gens[0], dtype, device,
                         desc=f"BDMC step sizes [{batch_no}]")
        target = DistortionTarget(distortion, xb, settings.n_chains)
        fwd = _forward(target, latent_dim, sched, settings, tuned["step_size"], gens[1], dtype, device,
                       desc=f"BDMC forward [{batch_no}]")
        upper = _reverse(target, zb, sched, settings, tuned["step_size"], gens[2], desc=f"BDMC reverse [{batch_no}]")
        lowers.append(fwd["log_partition"][-1].cpu().numpy())
        uppers.append(upper.cpu().numpy())
        parts.append(_to_result(sched, fwd, adapt_target.evals + target.evals, time.perf_counter() - t1, settings))
    return BDMCResult(lam_target, np.concatenate(lowers), np.concatenate(uppers), AISResult.concatenate(parts),
                      time.perf_counter() - t0, x.detach().cpu().numpy(), z_star.detach().cpu().numpy())


def inference_gap(encoder_rate, encoder_distortion, beta, log_partition_at_inv_beta):
    """``(D_enc + beta R_enc) + beta log Z(1/beta)`` in nats: the encoder's beta-VAE loss minus the AIS estimate
    of the best loss any ``q(z|x)`` reaches with this decoder and prior.  Arrays broadcast (e.g. indexed by beta).
    Since AIS under-estimates ``log Z``, this under-estimates the true gap (by at most beta * the BDMC gap)."""
    beta = np.asarray(beta, dtype=np.float64)
    return (np.asarray(encoder_distortion, dtype=np.float64) + beta * np.asarray(encoder_rate, dtype=np.float64)
            + beta * np.asarray(log_partition_at_inv_beta, dtype=np.float64))


def ais_results_json(betas: Sequence[float], encoder_rate: Sequence[float], encoder_distortion: Sequence[float],
                     curves: Sequence[AISResult], bdmc_results: Sequence[BDMCResult | None] | None = None,
                     protocol: str = "", max_points: int | None = 200, extra: dict | None = None) -> dict:
    """The results file read by ``paper_figures/fig_ais.py``: arrays indexed by beta (``ais_*`` entries are
    lists over beta of lists over the lam schedule).  Each AIS curve must have ``1/beta`` on its schedule."""
    betas = [float(b) for b in betas]
    if not (len(betas) == len(encoder_rate) == len(encoder_distortion) == len(curves)):
        raise ValueError("betas, encoder rates/distortions and AIS curves must have the same length")
    bd = list(bdmc_results) if bdmc_results is not None else [None] * len(betas)
    points = [c.point(1.0 / b) for b, c in zip(betas, curves)]
    dicts = [c.to_dict(max_points) for c in curves]
    gap = inference_gap(encoder_rate, encoder_distortion, betas, [p["log_partition"] for p in points])
    out = {
        "kind": "mrvae ais rd",
        "conventions": AIS_CONVENTIONS,
        "protocol": {"label": protocol},
        "beta": betas,
        "rate": [float(v) for v in encoder_rate],
        "distortion": [float(v) for v in encoder_distortion],
        "ais_lam": [d["lam"] for d in dicts],
        "ais_rate": [d["rate"] for d in dicts],
        "ais_distortion": [d["distortion"] for d in dicts],
        "ais_rate_se": [d["rate_se"] for d in dicts],
        "ais_distortion_se": [d["distortion_se"] for d in dicts],
        "ais_rate_at_beta": [p["rate"] for p in points],
        "ais_distortion_at_beta": [p["distortion"] for p in points],
        "ais_log_partition_at_beta": [p["log_partition"] for p in points],
        "ais_rate_se_at_beta": [p["rate_se"] for p in points],
        "inference_gap": gap.tolist(),
        "bdmc_lam": [b.lam if b is not None else None for b in bd],
        "bdmc_gap": [b.mean_gap if b is not None else None for b in bd],
        "bdmc_gap_se": [b.to_dict()["gap_se"] if b is not None else None for b in bd],
        "ais_n_examples": [c.n_examples for c in curves],
        "ais_seconds": [c.seconds for c in curves],
        "ais_settings": curves[0].settings,
    }
    if extra:
        out.update(extra)
    return out
