"""Mutual Information Gap (MIG; Chen et al. 2018): the reference definition and two named variants.

For factors ``v_k`` (class indices on a labelled set) and latents ``z_j`` of an encoder
``q(z|x)``, with ``I_kj = I(z_j; v_k)`` in nats,

    MIG = mean_k ( I_k(1) - I_k(2) ) / H(v_k)

where ``I_k(1) >= I_k(2)`` are the two largest ``I_kj`` over the latents.  The three functions differ
in which factors are averaged, how ``I_kj`` is estimated and what ``H(v_k)`` is:

* :func:`mig_chen` -- **the reference** (Chen et al. 2018, their dSprites metric; the MR-VAE paper's
  Fig. 8; result key ``mig``).  ``I_kj`` by the sampling estimator (below), clamped at ``>= 0``;
  ``H(v_k) = log |v_k|`` on the FULL factor grid.  On dSprites: the four factors scale, orientation,
  posX, posY (:data:`DSPRITES_MIG_FACTORS`; shape is left out) of the complete 737,280-image grid, so
  ``H(v_k) = log 6, log 40, log 32, log 32``.  On any smaller grid (e.g. the 46,080-image sub-grid)
  it is not the reference: :func:`plan_mig` then leaves ``mig`` out and says why.
* :func:`mig_all_factors` -- our variant (result key ``mig_all_factors``; called ``mig_sampling``
  before): the same estimator on whatever complete grid is evaluated (on dSprites data of 46,080 or
  more images: the 3x6x10x16x16 sub-grid), averaged over ALL its factors (shape included),
  normalised by that grid's own ``log |v_k|`` (sub-grid: log 3, log 6, log 10, log 16, log 16), MI
  not clamped.  Computable where the reference is not; not comparable with published MIGs.
* :func:`mig_discrete` -- the discretised-mean variant (as in Locatello et al.'s library): each
  latent's posterior means in ``n_bins`` (20) equal-width bins, ``I_kj`` the discrete mutual
  information of the bin codes and the factor, ``H(v_k)`` the empirical entropy.  Any labelled set;
  factors with more values than bins (full-grid orientation 40, positions 32) cannot reach 1.

The sampling estimator (:func:`sampling_mutual_information`) of ``I(z_j; v_k) = H(z_j) - H(z_j | v_k)``
uses the encoder's full posterior over a COMPLETE factor grid, ``q(z_j) = 1/N sum_n q(z_j|x_n)`` and
``q(z_j | v) = 1/|X_v| sum_{n in X_v} q(z_j|x_n)``, with the SAME samples ``z_s ~ q(z|x_s)`` of S random
grid images for both entropies: ``I_kj = mean_s [log q(z_sj | v_k(s)) - log q(z_sj)]``.  It has the
same expectation as Chen et al.'s two separate entropy estimates (uniform grid: the conditional
entropy averaged over the values of ``v_k`` with equal weights) and far less Monte-Carlo noise.

:func:`plan_mig` and :func:`mig_metrics` are what an evaluation loop calls: the first decides once per
data set which grid each MIG is computed on, the second computes all of them at one beta from an
encoder, encoding each grid image once.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from deep.models.objectives import LOG_2PI

__all__ = ["MIGResult", "GridError", "MIGPlan", "DSPRITES_FACTOR_SIZES", "DSPRITES_MIG_FACTORS",
           "is_complete_grid", "log_mean_density_1d", "sampling_mutual_information", "mig_chen",
           "mig_all_factors", "mig_discrete", "mig_from_mi", "discretize", "discrete_entropy",
           "discrete_mutual_information", "plan_mig", "mig_metrics", "MIG_RESULT_KEYS"]

#: factor sizes of the full dSprites grid (shape, scale, orientation, posX, posY): 737,280 images
DSPRITES_FACTOR_SIZES: tuple[int, ...] = (3, 6, 40, 32, 32)
#: the factors Chen et al. (2018) average the dSprites MIG over (shape is left out)
DSPRITES_MIG_FACTORS: tuple[str, ...] = ("scale", "orientation", "posX", "posY")
#: the per-beta keys :func:`mig_metrics` returns
MIG_RESULT_KEYS: tuple[str, ...] = ("mig", "mig_per_factor", "mig_top_latents", "mig_all_factors",
                                    "mig_all_factors_per_factor", "mig_all_factors_top_latents",
                                    "mig_discrete", "mig_discrete_per_factor")


class GridError(ValueError):
    """The labels do not form a complete factor grid (needed by the sampling estimator)."""


@dataclass
class MIGResult:
    """One MIG estimate.  ``mutual_information`` is ``(n_factors, latent_dim)`` nats (as estimated,
    before any clamping), ``gaps`` the normalised gap per factor, ``top_latents`` the most informative
    latent per factor, ``factor_entropy`` ``H(v_k)`` in nats; all over the factors ``factor_names``
    the MIG averages."""

    variant: str
    mig: float
    gaps: list[float]
    mutual_information: list[list[float]]
    factor_entropy: list[float]
    top_latents: list[int]
    grid: str
    n_examples: int
    factor_names: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------
def _np_classes(classes: np.ndarray | torch.Tensor) -> np.ndarray:
    c = classes.detach().cpu().numpy() if torch.is_tensor(classes) else np.asarray(classes)
    c = np.asarray(c, dtype=np.int64)
    if c.ndim != 2:
        raise ValueError(f"classes must be (N, n_factors), got shape {c.shape}")
    return c


def is_complete_grid(classes: np.ndarray | torch.Tensor, factor_sizes: Sequence[int]) -> bool:
    """Whether ``classes`` ``(N, F)`` holds every combination of ``factor_sizes`` exactly once."""
    c = _np_classes(classes)
    sizes = tuple(int(s) for s in factor_sizes)
    if c.shape[1] != len(sizes) or c.shape[0] != int(np.prod(sizes)):
        return False
    if c.min(initial=0) < 0 or np.any(c.max(axis=0) >= np.asarray(sizes)):
        return False
    flat = np.ravel_multi_index(tuple(c.T), sizes)
    return bool(np.unique(flat).size == c.shape[0])


def mig_from_mi(mi: np.ndarray, factor_entropy: Sequence[float], *, clamp: bool = False
                ) -> tuple[float, list[float], list[int]]:
    """``(MIG, normalised gap per factor, top latent per factor)`` from ``mi`` ``(F, K)`` nats.

    ``clamp=True`` takes every ``I_kj`` as ``max(I_kj, 0)`` first, as Chen et al. do (a Monte-Carlo
    estimate can fall below 0, which would widen a gap); a factor with ``H(v_k) = 0`` has gap 0."""
    mi = np.asarray(mi, dtype=np.float64)
    h = np.asarray(factor_entropy, dtype=np.float64)
    if mi.ndim != 2 or mi.shape[0] != h.size:
        raise ValueError(f"mi must be (n_factors, latent_dim) with n_factors = {h.size}, got {mi.shape}")
    if mi.shape[1] < 2:
        raise ValueError("MIG needs at least two latent dimensions")
    if clamp:
        mi = np.maximum(mi, 0.0)
    order = np.argsort(-mi, axis=1)
    top = np.take_along_axis(mi, order[:, :2], axis=1)
    gaps = np.where(h > 0, (top[:, 0] - top[:, 1]) / np.where(h > 0, h, 1.0), 0.0)
    return float(gaps.mean()), gaps.tolist(), order[:, 0].tolist()


def log_mean_density_1d(z: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor, *,
                        max_elements: int = 1 << 23) -> torch.Tensor:
    """``log (1/N) sum_n N(z_sj; mu_nj, exp(log_var_nj))`` for every sample s and latent j:
    ``z`` ``(S, K)``, ``mu`` / ``log_var`` ``(N, K)`` -> ``(S, K)`` (float32 work, chunks of
    samples so that a chunk holds at most ``max_elements`` values)."""
    n, k = mu.shape
    mu = mu.float()
    inv_var = torch.exp(-log_var.float())
    const = -0.5 * (LOG_2PI + log_var.float())
    per = max(1, int(max_elements) // max(1, n * k))
    out = []
    for s in range(0, z.shape[0], per):
        zc = z[s:s + per].float().unsqueeze(1)                       # (c, 1, K)
        t = const - 0.5 * (zc - mu).pow(2) * inv_var                # (c, N, K)
        out.append(torch.logsumexp(t, dim=1) - math.log(n))
    return torch.cat(out) if out else torch.empty(0, k)


def _factor_indices(factors: Sequence[int | str] | None, names: Sequence[str], n_f: int) -> list[int]:
    if factors is None:
        return list(range(n_f))
    out = []
    for f in factors:
        if isinstance(f, str):
            if f not in names:
                raise ValueError(f"factor {f!r} is not one of the factor names {list(names)}")
            out.append(list(names).index(f))
        else:
            if not 0 <= int(f) < n_f:
                raise ValueError(f"factor index {f} out of range for {n_f} factors")
            out.append(int(f))
    if not out or len(set(out)) != len(out):
        raise ValueError(f"factors must be distinct and non-empty, got {list(factors)}")
    return out


# ----------------------------------------------------------------------------------------------------
# the sampling estimator of I(z_j; v_k) (Chen et al. 2018)
# ----------------------------------------------------------------------------------------------------
def sampling_mutual_information(mu: torch.Tensor, log_var: torch.Tensor, classes: np.ndarray | torch.Tensor,
                                factor_sizes: Sequence[int], *, factors: Sequence[int] | None = None,
                                n_samples: int = 10_000, generator: torch.Generator | None = None,
                                max_elements: int = 1 << 23) -> tuple[np.ndarray, dict[str, Any]]:
    """``I(z_j; v_k)`` in nats, ``(len(factors), K)``, by the paired sampling estimator on a complete grid.

    ``mu``, ``log_var``: ``(N, K)`` Gaussian posteriors of every grid image; ``classes``: ``(N, F)``
    factor classes, a complete grid of ``factor_sizes`` (:class:`GridError` otherwise), rows in any
    order; ``factors``: indices of the factors to estimate (default all).  ``min(n_samples, N)`` grid
    images are drawn without replacement and one ``z ~ q(z|x)`` each; ``I_kj = mean_s [log q(z_sj |
    v_k(s)) - log q(z_sj)]``.  Cost ``O(n_samples x N x K)``.  Also returns ``{"n_samples",
    "entropy_of_latents"}`` (``H(z_j)`` estimates, nats).
    """
    c = _np_classes(classes)
    sizes = tuple(int(s) for s in factor_sizes)
    mu = torch.as_tensor(mu).detach().cpu()
    log_var = torch.as_tensor(log_var).detach().cpu()
    if mu.shape != log_var.shape or mu.dim() != 2 or mu.shape[0] != c.shape[0]:
        raise ValueError(f"mu {tuple(mu.shape)}, log_var {tuple(log_var.shape)} and classes {c.shape} must "
                         f"describe the same N examples")
    if not is_complete_grid(c, sizes):
        raise GridError(f"the sampling MIG needs a complete factor grid of sizes {sizes} "
                        f"({int(np.prod(sizes))} distinct combinations); got {c.shape[0]} examples that do "
                        f"not cover it exactly once. Use the full or sub-grid, or mig_discrete")
    n_f = len(sizes)
    sel = _factor_indices(factors, (), n_f)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    order = np.argsort(np.ravel_multi_index(tuple(c.T), sizes))       # rows in C-ordered grid
    mu, log_var, c = mu[order].float(), log_var[order].float(), c[order]
    n, k_lat = mu.shape
    s_n = min(int(n_samples), n)
    pick = torch.randperm(n, generator=gen)[:s_n]
    eps = torch.randn((s_n, k_lat), generator=gen)
    z = mu[pick] + torch.exp(0.5 * log_var[pick]) * eps                 # one z per picked example
    v_of = torch.as_tensor(c[pick.numpy()])                             # (S, F) factors of the samples
    scale_t = torch.exp(-0.5 * log_var).T.contiguous() * math.sqrt(0.5)   # (K, N): 1 / (sqrt(2) sigma)
    const_t = (-0.5 * (LOG_2PI + log_var)).T.contiguous()                 # (K, N)
    mu_t = mu.T.contiguous()
    per = max(1, int(max_elements) // max(1, n * k_lat))
    tiny = torch.finfo(torch.float32).tiny
    sum_log_q = torch.zeros(k_lat, dtype=torch.float64)
    sum_gain = torch.zeros((len(sel), k_lat), dtype=torch.float64)
    for s0 in range(0, s_n, per):
        zc = z[s0:s0 + per]
        cnt = zc.shape[0]
        dens = zc.unsqueeze(2) - mu_t                                      # (c, K, N)
        dens.mul_(scale_t).square_()
        torch.sub(const_t, dens, out=dens)                                 # log q(z_cj | x_n)
        top = dens.amax(dim=2)                                             # (c, K)
        w = dens.sub_(top.unsqueeze(2)).exp_().view(cnt, k_lat, *sizes)    # scaled densities, grid
        log_q = torch.log(w.sum(dim=tuple(range(2, n_f + 2))).clamp_min(tiny)) + top - math.log(n)
        sum_log_q += log_q.double().sum(dim=0)
        for row, f in enumerate(sel):
            axes = tuple(a + 2 for a in range(n_f) if a != f)
            per_value = w.sum(dim=axes)                                     # (c, K, size_f)
            idx = v_of[s0:s0 + cnt, f].view(-1, 1, 1).expand(-1, k_lat, 1)
            own = per_value.gather(2, idx).squeeze(2)                       # (c, K)
            log_q_cond = torch.log(own.clamp_min(tiny)) + top - math.log(n / sizes[f])
            sum_gain[row] += (log_q_cond - log_q).double().sum(dim=0)
    mi = (sum_gain / s_n).numpy()
    h_z = (-sum_log_q / s_n)
    return mi, {"n_samples": s_n, "entropy_of_latents": h_z.tolist()}


_ESTIMATOR = ("I(z_j; v_k) = mean over sampled z of log q(z_j | v_k) - log q(z_j), paired samples "
              "(H(z_j) - H(z_j | v_k) with common z)")


def mig_chen(mu: torch.Tensor, log_var: torch.Tensor, classes: np.ndarray | torch.Tensor,
             factor_sizes: Sequence[int], *, factors: Sequence[int | str] | None = None,
             factor_names: Sequence[str] = (), n_samples: int = 10_000,
             generator: torch.Generator | None = None, grid: str = "factor grid",
             max_elements: int = 1 << 23) -> MIGResult:
    """MIG as Chen et al. (2018) define it: the reference (the MR-VAE paper's Fig. 8 metric).

    ``I(z_j; v_k)`` by :func:`sampling_mutual_information` on the complete grid ``classes`` ``(N, F)``
    of ``factor_sizes``, clamped at ``>= 0``; ``H(v_k) = log |v_k|``; the gap averaged over
    ``factors`` (indices, or names from ``factor_names``; default all).  It is the reference only
    when the grid is the data set's full grid: on dSprites call it on all 737,280 images
    (:data:`DSPRITES_FACTOR_SIZES`) with ``factors=DSPRITES_MIG_FACTORS`` (``H = log 6, log 40,
    log 32, log 32``); on a sub-grid the normaliser is the sub-grid's and the value is not Chen et
    al.'s (use :func:`mig_all_factors`, which says so).
    """
    c = _np_classes(classes)
    sizes = tuple(int(s) for s in factor_sizes)
    names = list(factor_names)
    sel = _factor_indices(factors, names, len(sizes))
    mi, det = sampling_mutual_information(mu, log_var, c, sizes, factors=sel, n_samples=n_samples,
                                          generator=generator, max_elements=max_elements)
    h_v = [math.log(sizes[k]) for k in sel]
    mig, gaps, top = mig_from_mi(mi, h_v, clamp=True)
    return MIGResult("Chen et al. 2018 (reference)", mig, gaps, mi.tolist(), h_v, top, grid, int(c.shape[0]),
                     [names[k] for k in sel] if names else [],
                     {**det, "estimator": _ESTIMATOR, "factor_sizes": list(sizes), "factors": sel,
                      "clamped": "I(z_j; v_k) clamped at >= 0 before the gap (Chen et al.)",
                      "normaliser": "H(v_k) = log |v_k| of this grid (the reference when it is the full grid)"})


def mig_all_factors(mu: torch.Tensor, log_var: torch.Tensor, classes: np.ndarray | torch.Tensor,
                    factor_sizes: Sequence[int], *, n_samples: int = 10_000,
                    generator: torch.Generator | None = None, grid: str = "factor grid",
                    factor_names: Sequence[str] = (), max_elements: int = 1 << 23) -> MIGResult:
    """Our MIG variant (result key ``mig_all_factors``, formerly ``mig_sampling``): the sampling
    estimator on the given complete grid, EVERY factor (dSprites: shape included), ``H(v_k) = log |v_k|``
    of THIS grid (sub-grid: log 3, 6, 10, 16, 16), MI not clamped.  Not Chen et al.'s MIG
    (:func:`mig_chen`) unless the grid is full, has only the reference's factors and no estimate is
    negative; arguments as there."""
    c = _np_classes(classes)
    sizes = tuple(int(s) for s in factor_sizes)
    mi, det = sampling_mutual_information(mu, log_var, c, sizes, n_samples=n_samples, generator=generator,
                                          max_elements=max_elements)
    h_v = [math.log(s) for s in sizes]
    mig, gaps, top_latents = mig_from_mi(mi, h_v)
    return MIGResult("all factors of the evaluated grid, its own H(v_k), unclamped (our variant)", mig, gaps,
                     mi.tolist(), h_v, top_latents, grid, int(c.shape[0]), list(factor_names),
                     {**det, "estimator": _ESTIMATOR, "factor_sizes": list(sizes),
                      "normaliser": "H(v_k) = log |v_k| of the evaluated grid (uniform factors of a grid)"})


# ----------------------------------------------------------------------------------------------------
# the discretised-mean variant
# ----------------------------------------------------------------------------------------------------
def discretize(values: np.ndarray | torch.Tensor, n_bins: int = 20) -> np.ndarray:
    """Bin codes ``(N, K)`` in ``0..n_bins-1``: each column cut into ``n_bins`` equal-width bins
    between its minimum and maximum (numpy's histogram edges; a constant column is one bin)."""
    x = values.detach().cpu().numpy() if torch.is_tensor(values) else np.asarray(values)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"values must be (N, K), got shape {x.shape}")
    if n_bins < 2:
        raise ValueError("n_bins must be >= 2")
    out = np.empty(x.shape, dtype=np.int64)
    for j in range(x.shape[1]):
        edges = np.histogram_bin_edges(x[:, j], bins=n_bins)
        out[:, j] = np.clip(np.digitize(x[:, j], edges[1:-1]), 0, n_bins - 1)
    return out


def discrete_entropy(codes: np.ndarray) -> float:
    """Empirical entropy (nats) of integer codes ``(N,)``."""
    counts = np.bincount(np.asarray(codes, dtype=np.int64) - int(np.min(codes)))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def discrete_mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """Empirical mutual information (nats) of two integer code vectors ``(N,)``."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"codes must be two (N,) vectors, got {a.shape} and {b.shape}")
    a = a - a.min()
    b = b - b.min()
    nb = int(b.max()) + 1
    joint = np.bincount(a * nb + b, minlength=(int(a.max()) + 1) * nb).reshape(-1, nb).astype(np.float64)
    joint /= joint.sum()
    pa = joint.sum(axis=1, keepdims=True)
    pb = joint.sum(axis=0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * (np.log(joint[nz]) - np.log((pa @ pb)[nz]))).sum())


def mig_discrete(mu: np.ndarray | torch.Tensor, classes: np.ndarray | torch.Tensor,
                 factor_sizes: Sequence[int] | None = None, *, n_bins: int = 20, grid: str = "labelled set",
                 factor_names: Sequence[str] = ()) -> MIGResult:
    """MIG from posterior means ``mu`` ``(N, K)`` discretised into ``n_bins`` bins per latent and
    factor classes ``(N, F)`` (any labelled set; ``factor_sizes`` is only recorded)."""
    c = _np_classes(classes)
    codes = discretize(mu, n_bins)
    if codes.shape[0] != c.shape[0]:
        raise ValueError(f"mu has {codes.shape[0]} rows but classes {c.shape[0]}")
    mi = np.array([[discrete_mutual_information(codes[:, j], c[:, k]) for j in range(codes.shape[1])]
                   for k in range(c.shape[1])])
    h_v = [discrete_entropy(c[:, k]) for k in range(c.shape[1])]
    mig, gaps, top = mig_from_mi(mi, h_v)
    return MIGResult("discretised posterior means", mig, gaps, mi.tolist(), h_v, top, grid, int(c.shape[0]),
                     list(factor_names), {"n_bins": int(n_bins),
                                          "factor_sizes": list(factor_sizes) if factor_sizes else None,
                                          "normaliser": "empirical H(v_k)"})


# ----------------------------------------------------------------------------------------------------
# which grid each MIG is computed on, and all of them at one beta (what an evaluation loop calls)
# ----------------------------------------------------------------------------------------------------
Grid = tuple  # (rows (N,) into the data set, classes (N, F), factor sizes, description)


@dataclass
class MIGPlan:
    """Where the MIGs of one data set are computed (:func:`plan_mig`).

    ``reference_grid``: the full grid for ``mig`` (:func:`mig_chen`) over ``reference_factors``
    (indices), or ``None`` with ``reference_note`` saying why; ``grid``: the grid of
    ``mig_all_factors`` and ``mig_discrete``, or ``None`` with ``grid_note``."""

    reference_grid: Grid | None
    reference_factors: list[int]
    reference_note: str | None
    grid: Grid | None
    grid_note: str | None
    factor_names: list[str]

    @property
    def computes_any(self) -> bool:
        return self.reference_grid is not None or self.grid is not None

    @property
    def reference_factor_names(self) -> list[str]:
        return [self.factor_names[k] for k in self.reference_factors] if self.factor_names else []

    def describe(self, n_samples: int, n_bins: int) -> dict[str, str]:
        """One sentence per result key (``mig``, ``mig_all_factors``, ``mig_discrete``)."""
        if self.reference_grid is not None:
            sizes = self.reference_grid[2]
            hs = ", ".join(f"log {sizes[k]}" for k in self.reference_factors)
            ref = (f"MIG as Chen et al. 2018 define it (the reference; MR-VAE paper Fig. 8): factors "
                   f"{', '.join(self.reference_factor_names) or self.reference_factors}, I(z_j; v_k) from "
                   f"{n_samples} paired samples of q(z|x) over the full grid, clamped at >= 0, normalised by "
                   f"H(v_k) = {hs}; grid: {self.reference_grid[3]}")
        else:
            ref = self.reference_note or "not computed"
        if self.grid is not None:
            desc = self.grid[3]
            hs = ", ".join(f"log {s}" for s in self.grid[2])
            var = (f"our MIG variant (not Chen et al.'s): every factor of the evaluated grid "
                   f"({', '.join(self.factor_names) or len(self.grid[2])}), the same sampling estimator "
                   f"({n_samples} samples), MI not clamped, normalised by this grid's H(v_k) = {hs}; grid: {desc}")
            dis = (f"MIG, discretised posterior means ({n_bins} equal-width bins per latent), discrete MI with "
                   f"every factor normalised by its empirical H(v_k); grid: {desc}")
        else:
            var = dis = self.grid_note or "not computed"
        return {"mig": ref, "mig_all_factors": var, "mig_discrete": dis}


def plan_mig(data: Any, grid: str = "auto", *, reference: bool = True,
             full_grid_sizes: Sequence[int] = DSPRITES_FACTOR_SIZES,
             reference_factors: Sequence[str | int] = DSPRITES_MIG_FACTORS) -> MIGPlan:
    """Decide the grids of the MIGs of ``data`` (a set with ``factor_grid(which)`` returning ``(rows,
    classes, factor_sizes, description)`` or ``None``, and ``factor_names``, as
    :class:`deep.data.dsprites.DSpritesData`).

    ``mig`` (the reference) is computed iff ``reference`` and the whole set is a complete grid of
    ``full_grid_sizes`` (default the full dSprites grid), over ``reference_factors`` (default scale,
    orientation, posX, posY).  ``mig_all_factors`` and ``mig_discrete`` use ``data.factor_grid(grid)``
    (``"auto"``: the whole set if it is a complete grid of at most 50,000 images, else the sub-grid).
    """
    get_grid = getattr(data, "factor_grid", None)
    names = [str(n) for n in getattr(data, "factor_names", ())]
    what = getattr(data, "grid", "this data set")
    var = get_grid(grid) if callable(get_grid) else None
    var_note = None if var is not None else (
        f"MIG not computed: {what} is not a complete factor grid (use source=subgrid, full or generated)")
    full_sizes = tuple(int(s) for s in full_grid_sizes)
    ref, factors, ref_note = None, [], None
    if not reference:
        ref_note = "mig (Chen et al. 2018) not requested (mig_reference=False)"
    else:
        whole = get_grid("full") if callable(get_grid) else None
        if whole is None or tuple(int(s) for s in whole[2]) != full_sizes:
            got = "not a complete factor grid" if whole is None else \
                f"a grid of sizes {'x'.join(str(s) for s in whole[2])}"
            ref_note = (f"mig (Chen et al. 2018) not computed: it is defined on the full factor grid "
                        f"{'x'.join(str(s) for s in full_sizes)} ({int(np.prod(full_sizes)):,} images) and "
                        f"{what} is {got} (dSprites: source=full or source=generated); mig_all_factors is "
                        f"our variant on the evaluated grid")
        else:
            try:
                factors = _factor_indices(tuple(reference_factors), names, len(full_sizes))
            except ValueError as err:
                ref_note = f"mig (Chen et al. 2018) not computed: {err}"
            else:
                ref = whole
    return MIGPlan(ref, factors, ref_note, var, var_note, names)


def _positions(rows: torch.Tensor, within: torch.Tensor) -> torch.Tensor | None:
    """Positions of ``rows`` in ``within`` (both data-set row indices), or ``None`` if some are absent."""
    rows, within = torch.as_tensor(rows).long(), torch.as_tensor(within).long()
    if rows.numel() == 0 or within.numel() == 0:
        return None
    size = int(max(rows.max(), within.max())) + 1
    pos = torch.full((size,), -1, dtype=torch.long)
    pos[within] = torch.arange(within.numel())
    out = pos[rows]
    return None if bool((out < 0).any()) else out


def mig_metrics(plan: MIGPlan, encode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], *,
                n_samples: int = 10_000, n_bins: int = 20, seed: int = 1,
                max_elements: int = 1 << 23) -> dict[str, Any]:
    """Every MIG of :data:`MIG_RESULT_KEYS` for one encoder (one beta): ``mig`` (reference), ``mig_all_factors``
    and ``mig_discrete`` with per-factor gaps and top latents (``None`` where the plan has no grid).

    ``encode(rows)`` returns ``(mu, log_var)`` ``(len(rows), K)`` for data-set rows; each image is encoded
    once (the variant grid is taken from the full grid's encodings when it lies inside it).  Each
    sampling estimate draws from ``torch.Generator().manual_seed(seed)``."""
    out: dict[str, Any] = {k: None for k in MIG_RESULT_KEYS}
    ref, var = plan.reference_grid, plan.grid
    enc_ref = encode(ref[0]) if ref is not None else None
    if var is not None:
        pos = _positions(var[0], ref[0]) if ref is not None else None
        enc_var = (enc_ref[0][pos], enc_ref[1][pos]) if pos is not None else encode(var[0])
    names = plan.factor_names
    if ref is not None:
        r = mig_chen(enc_ref[0], enc_ref[1], ref[1], ref[2], factors=plan.reference_factors, factor_names=names,
                     n_samples=n_samples, generator=torch.Generator().manual_seed(seed), grid=ref[3],
                     max_elements=max_elements)
        out.update(mig=r.mig, mig_per_factor=r.gaps, mig_top_latents=r.top_latents)
    if var is not None:
        a = mig_all_factors(enc_var[0], enc_var[1], var[1], var[2], n_samples=n_samples,
                            generator=torch.Generator().manual_seed(seed), grid=var[3], factor_names=names,
                            max_elements=max_elements)
        d = mig_discrete(enc_var[0], var[1], var[2], n_bins=n_bins, grid=var[3], factor_names=names)
        out.update(mig_all_factors=a.mig, mig_all_factors_per_factor=a.gaps, mig_all_factors_top_latents=a.top_latents,
                   mig_discrete=d.mig, mig_discrete_per_factor=d.gaps)
    return out
