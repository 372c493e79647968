"""Mutual Information Gap (MIG; Chen et al. 2018) in its two common variants.

For factors ``v_k`` (class indices on a labelled set) and latents ``z_j`` of an encoder
``q(z|x)``, with ``I_kj = I(z_j; v_k)`` in nats,

    MIG = mean_k ( I_k(1) - I_k(2) ) / H(v_k)

where ``I_k(1) >= I_k(2)`` are the two largest ``I_kj`` over the latents.

* :func:`mig_sampling` -- Chen et al.'s estimator (the paper's metric): ``I_kj = H(z_j) -
  H(z_j | v_k)`` with entropies of the encoder's full posterior over a COMPLETE factor grid,
  ``q(z_j) = 1/N sum_n q(z_j|x_n)`` and ``q(z_j | v) = 1/|X_v| sum_{n in X_v} q(z_j|x_n)``.
  Both entropies are estimated with the SAME samples ``z_s ~ q(z|x_s)`` of S random grid
  images: ``I_kj = mean_s [log q(z_sj | v_k(s)) - log q(z_sj)]`` (the paired form has far less
  Monte-Carlo noise than two independent entropy estimates); ``H(v_k) = log |v_k|``.
* :func:`mig_discrete` -- the discretised-mean variant (as in Locatello et al.'s library):
  each latent's posterior means are put in ``n_bins`` (20) equal-width bins, ``I_kj`` is the
  discrete mutual information of the bin codes and the factor, ``H(v_k)`` the empirical
  entropy.  Works on any labelled set; factors with more values than bins (full-grid
  orientation 40, positions 32) cannot reach a normalised MI of 1.

Both say in their result which grid they used.  On dSprites use the full grid or the regular
46,080-image sub-grid (:meth:`deep.data.dsprites.DSpritesData.factor_grid`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from deep.models.objectives import LOG_2PI

__all__ = ["MIGResult", "GridError", "is_complete_grid", "log_mean_density_1d", "mig_sampling",
           "mig_discrete", "mig_from_mi", "discretize", "discrete_entropy",
           "discrete_mutual_information"]


class GridError(ValueError):
    """The labels do not form a complete factor grid (needed by the sampling estimator)."""


@dataclass
class MIGResult:
    """One MIG estimate.  ``mutual_information`` is ``(n_factors, latent_dim)`` nats,
    ``gaps`` the normalised gap per factor, ``top_latents`` the most informative latent per
    factor, ``factor_entropy`` ``H(v_k)`` in nats."""

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


def mig_from_mi(mi: np.ndarray, factor_entropy: Sequence[float]) -> tuple[float, list[float], list[int]]:
    """``(MIG, normalised gap per factor, top latent per factor)`` from ``mi`` ``(F, K)``."""
    mi = np.asarray(mi, dtype=np.float64)
    h = np.asarray(factor_entropy, dtype=np.float64)
    if mi.shape[1] < 2:
        raise ValueError("MIG needs at least two latent dimensions")
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


# ----------------------------------------------------------------------------------------------------
# the sampling estimator (Chen et al. 2018)
# ----------------------------------------------------------------------------------------------------
def mig_sampling(mu: torch.Tensor, log_var: torch.Tensor, classes: np.ndarray | torch.Tensor,
                 factor_sizes: Sequence[int], *, n_samples: int = 10_000,
                 generator: torch.Generator | None = None, grid: str = "factor grid",
                 factor_names: Sequence[str] = (), max_elements: int = 1 << 23) -> MIGResult:
    """MIG with Chen et al.'s sampling estimator of ``I(z_j; v_k)`` on a complete factor grid.

    ``mu``, ``log_var``: ``(N, K)`` posteriors of every grid image; ``classes``: ``(N, F)``
    factor classes, a complete grid of ``factor_sizes`` (:class:`GridError` otherwise).  Each
    entropy uses ``min(n_samples, |set|)`` samples; cost ``O(n_samples x N x K)`` per factor.
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
    n_f = len(sizes)
    tiny = torch.finfo(torch.float32).tiny
    sum_log_q = torch.zeros(k_lat, dtype=torch.float64)
    sum_gain = torch.zeros((n_f, k_lat), dtype=torch.float64)
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
        for f in range(n_f):
            axes = tuple(a + 2 for a in range(n_f) if a != f)
            per_value = w.sum(dim=axes)                                     # (c, K, size_f)
            idx = v_of[s0:s0 + cnt, f].view(-1, 1, 1).expand(-1, k_lat, 1)
            own = per_value.gather(2, idx).squeeze(2)                       # (c, K)
            log_q_cond = torch.log(own.clamp_min(tiny)) + top - math.log(n / sizes[f])
            sum_gain[f] += (log_q_cond - log_q).double().sum(dim=0)
    mi = (sum_gain / s_n).numpy()
    h_z = (-sum_log_q / s_n)
    h_v = [math.log(s) for s in sizes]
    mig, gaps, top_latents = mig_from_mi(mi, h_v)
    return MIGResult("sampling (Chen et al. 2018)", mig, gaps, mi.tolist(), h_v, top_latents, grid,
                     int(c.shape[0]), list(factor_names),
                     {"n_samples": s_n, "entropy_of_latents": h_z.tolist(),
                      "estimator": "I(z_j; v_k) = mean over sampled z of log q(z_j | v_k) - log q(z_j), "
                                   "paired samples (H(z_j) - H(z_j | v_k) with common z)",
                      "factor_sizes": list(sizes),
                      "normaliser": "H(v_k) = log |v_k| (uniform factors of a grid)"})


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
