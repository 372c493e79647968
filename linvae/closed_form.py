"""Closed form of the linear beta-VAE (paper section 2.2, App. A; paper-notes section 2).

Model (one-layer view; the two-layer model of Eq. 10 composes to the same matrices):
    p(x | z) = N(D z + mu, sigma2 I),   q(z | x) = N(E (x - mu), diag(c)),   p(z) = N(0, I)
with x in R^n, z in R^k, the posterior covariance diagonal and shared by every x.

Units and conventions: rate and distortion in nats per example.  The distortion drops the
constant (n/2) log(2 pi sigma2) unless ``include_constant=True`` (Fig. 4 plots it without).
All arithmetic is float64.  Data covariances may be rank-deficient (MNIST has only ~712
non-zero eigenvalues of 784): zero eigenvalues are exact zeros here and are never inverted.

The joint optimum (paper-notes 2.4), with eigenvalues lam_1 >= ... of the data covariance S
and eigenvectors U:
    D*(beta) = U_k diag(sqrt((lam - beta s2)_+)),   E*(beta) = diag(sqrt((lam - beta s2)_+) / lam) U_k^T,
    c*(beta) = min(1, beta s2 / lam),   R = 1/2 sum_{lam > beta s2} log(lam / (beta s2)),
where s2 = sigma2 (paper: sigma2 = 1).  Best responses to a fixed decoder (Eqs. 21-22):
    E*(D) = (D^T D + beta s2 I)^{-1} D^T,   c*(D) = beta s2 / (diag(D^T D) + beta s2).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Spectrum",
    "LinearVAEParams",
    "joint_optimum",
    "best_response",
    "expected_rate_distortion",
    "expected_loss",
    "optimal_rate_distortion",
    "rd_curve",
    "second_moment",
]


def second_moment(x: np.ndarray, center: np.ndarray) -> np.ndarray:
    """``(1/N) sum_i (x_i - center)(x_i - center)^T`` for ``x`` of shape ``(N, n)``; float64 ``(n, n)``."""
    xc = np.asarray(x, dtype=np.float64) - np.asarray(center, dtype=np.float64)
    return xc.T @ xc / xc.shape[0]


@dataclass
class Spectrum:
    """Mean and eigendecomposition of a data covariance (float64).

    ``eigvals`` (n,) descending, exact zeros below the numerical rank; ``eigvecs`` (n, n) columns.
    The covariance is the biased one, ``(1/N) X_c^T X_c``, which is what the expected loss uses.
    """

    mean: np.ndarray
    eigvals: np.ndarray
    eigvecs: np.ndarray
    n_samples: int
    rank: int

    @classmethod
    def from_covariance(cls, cov: np.ndarray, mean: np.ndarray, n_samples: int,
                        rtol: float | None = None) -> "Spectrum":
        cov = np.asarray(cov, dtype=np.float64)
        if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
            raise ValueError(f"covariance must be square, got shape {cov.shape}")
        cov = 0.5 * (cov + cov.T)
        lam, vec = np.linalg.eigh(cov)
        order = np.argsort(lam)[::-1]
        lam, vec = lam[order], vec[:, order]
        rtol = cov.shape[0] * np.finfo(np.float64).eps if rtol is None else rtol
        tol = rtol * max(float(lam[0]), 0.0)
        lam = np.where(lam > tol, lam, 0.0)
        return cls(np.asarray(mean, dtype=np.float64), lam, vec, int(n_samples), int((lam > 0).sum()))

    @classmethod
    def from_data(cls, x: np.ndarray) -> "Spectrum":
        """Spectrum of data ``x`` of shape ``(N, n)``."""
        x = np.asarray(x, dtype=np.float64)
        mean = x.mean(axis=0)
        return cls.from_covariance(second_moment(x, mean), mean, x.shape[0])

    @property
    def dim(self) -> int:
        return self.eigvals.shape[0]

    @property
    def covariance(self) -> np.ndarray:
        return (self.eigvecs * self.eigvals) @ self.eigvecs.T

    @property
    def total_variance(self) -> float:
        return float(self.eigvals.sum())

    def top(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` eigenvalues ``(k,)`` and eigenvectors ``(n, k)``."""
        if not 1 <= k <= self.dim:
            raise ValueError(f"latent dimension must be in [1, {self.dim}], got {k}")
        return self.eigvals[:k], self.eigvecs[:, :k]


@dataclass
class LinearVAEParams:
    """A linear VAE at one beta: encoder ``E`` (k, n), posterior variances ``c`` (k,),
    decoder ``D`` (n, k), data mean ``mean`` (n,)."""

    encoder: np.ndarray
    variances: np.ndarray
    decoder: np.ndarray
    mean: np.ndarray


def _check_beta(beta: float) -> float:
    beta = float(beta)
    if not (beta > 0 and math.isfinite(beta)):
        raise ValueError(f"beta must be a finite positive number, got {beta}")
    return beta


def joint_optimum(spectrum: Spectrum, beta: float, latent_dim: int,
                  sigma2: float = 1.0) -> LinearVAEParams:
    """The joint minimiser of the expected beta-VAE loss (rotation R = I)."""
    beta = _check_beta(beta) * sigma2
    lam, u = spectrum.top(latent_dim)
    active = lam > beta
    d_scale = np.sqrt(np.where(active, lam - beta, 0.0))
    e_scale = np.where(active, d_scale / np.where(active, lam, 1.0), 0.0)
    c = np.where(active, beta / np.where(active, lam, 1.0), 1.0)
    return LinearVAEParams(encoder=e_scale[:, None] * u.T, variances=c,
                           decoder=u * d_scale[None, :], mean=spectrum.mean.copy())


def best_response(decoder: np.ndarray, beta: float, sigma2: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Encoder and posterior variances that minimise the loss for a fixed decoder ``(n, k)``:
    ``E = (D^T D + beta s2 I)^{-1} D^T`` (k, n) and ``c = beta s2 / (diag(D^T D) + beta s2)`` (k,)."""
    beta = _check_beta(beta) * sigma2
    decoder = np.asarray(decoder, dtype=np.float64)
    gram = decoder.T @ decoder
    k = gram.shape[0]
    encoder = np.linalg.solve(gram + beta * np.eye(k), decoder.T)
    return encoder, beta / (np.diag(gram) + beta)


def expected_rate_distortion(params: LinearVAEParams, moment: np.ndarray, sigma2: float = 1.0,
                             include_constant: bool = False):
    """Exact expected rate and distortion (nats per example) by direct evaluation of the
    objective (paper-notes 2.2), for data whose second moment about ``params.mean`` is
    ``moment`` (n, n); use :func:`second_moment` for held-out data.

    ``params`` may hold stacks of models (leading batch dims on ``encoder`` (..., k, n),
    ``variances`` (..., k), ``decoder`` (..., n, k)); the results then have those leading dims.
    Plain floats are returned for a single model.
    """
    e = np.asarray(params.encoder, dtype=np.float64)
    c = np.asarray(params.variances, dtype=np.float64)
    d = np.asarray(params.decoder, dtype=np.float64)
    if np.any(c <= 0):
        raise ValueError("posterior variances must be positive")
    k, n = e.shape[-2:]
    em = e @ moment                                            # (..., k, n)
    quad = np.sum(em * e, axis=(-2, -1))                       # tr(E M E^T)
    cross = np.sum(em * np.swapaxes(d, -1, -2), axis=(-2, -1))  # tr(D E M)
    gram = np.swapaxes(d, -1, -2) @ d                          # D^T D
    recon = np.sum(gram * (em @ np.swapaxes(e, -1, -2)), axis=(-2, -1))  # tr(D E M E^T D^T)
    noise = np.sum(np.diagonal(gram, axis1=-2, axis2=-1) * c, axis=-1)  # tr(D C D^T)
    rate = 0.5 * (-np.sum(np.log(c), axis=-1) + quad + c.sum(-1) - k)
    distortion = 0.5 * (np.trace(moment) - 2.0 * cross + recon + noise) / sigma2
    if include_constant:
        distortion = distortion + 0.5 * n * math.log(2 * math.pi * sigma2)
    if np.ndim(rate) == 0:
        return float(rate), float(distortion)
    return rate, distortion


def expected_loss(params: LinearVAEParams, moment: np.ndarray, beta: float, sigma2: float = 1.0) -> float:
    """``distortion + beta * rate`` (constant dropped), nats per example."""
    rate, distortion = expected_rate_distortion(params, moment, sigma2)
    return distortion + _check_beta(beta) * rate


def optimal_rate_distortion(spectrum: Spectrum, beta: float, latent_dim: int, sigma2: float = 1.0,
                            include_constant: bool = False) -> tuple[float, float]:
    """Closed-form rate and distortion of the joint optimum on the data it was fit to."""
    bs = _check_beta(beta) * sigma2
    lam = spectrum.eigvals[:latent_dim]
    active = lam[lam > bs]
    rate = 0.5 * float(np.sum(np.log(active / bs)))
    distortion = 0.5 * (spectrum.total_variance - float(np.sum(active - bs))) / sigma2
    if include_constant:
        distortion += 0.5 * spectrum.dim * math.log(2 * math.pi * sigma2)
    return rate, distortion


def rd_curve(spectrum: Spectrum, betas: np.ndarray, latent_dim: int, sigma2: float = 1.0,
             moment: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Exact RD curve on a beta grid: arrays ``beta``, ``rate``, ``distortion``, ``loss``.

    With ``moment`` (second moment of other data about ``spectrum.mean``), the optimum fit to
    ``spectrum`` is evaluated on that data instead (e.g. the test set).
    """
    betas = np.asarray(betas, dtype=np.float64)
    rates, dists = np.empty_like(betas), np.empty_like(betas)
    for i, beta in enumerate(betas):
        if moment is None:
            rates[i], dists[i] = optimal_rate_distortion(spectrum, beta, latent_dim, sigma2)
        else:
            rates[i], dists[i] = expected_rate_distortion(
                joint_optimum(spectrum, beta, latent_dim, sigma2), moment, sigma2)
    return {"beta": betas, "rate": rates, "distortion": dists, "loss": dists + betas * rates}
