"""Exact rate-distortion curve of a linear-Gaussian DECODER (any decoder, not only the optimum).

The oracle for annealed importance sampling (:mod:`deep.evaluate.ais`, Huang et al. 2020).  Model, in the
conventions of :mod:`linvae.closed_form` (paper-notes section 2):

    p(z) = N(0, I_k),   p(x | z) = N(D z + mu, sigma2 I_n),
    d(x, z) = -log p(x | z) = ||x - mu - D z||^2 / (2 sigma2)   [+ (n/2) log(2 pi sigma2) if include_constant]

For a Lagrange multiplier lam >= 0 the intermediate ("tempered") distribution

    q_lam(z | x) = p(z) exp(-lam d(x, z)) / Z(lam, x),     Z(lam, x) = E_{p(z)} exp(-lam d(x, z))

is Gaussian.  With a = lam / sigma2 and the thin SVD  D = U diag(S) V^T  (s = S^2, the eigenvalues of D^T D):

    covariance  Sigma = (I + a D^T D)^{-1} = V diag(1 / (1 + a s)) V^T
    mean        m     = a Sigma D^T (x - mu) = V diag(a S / (1 + a s)) U^T (x - mu)

and with y = U^T (x - mu) (k,) and r2 = ||x - mu||^2, per example (nats):

    D(lam) = E_q[d]        = [ r2 - ||y||^2 + sum_i ( y_i^2 / (1 + a s_i)^2 + s_i / (1 + a s_i) ) ] / (2 sigma2)
    R(lam) = KL(q || p)    = 1/2 sum_i [ 1/(1 + a s_i) - 1 + log(1 + a s_i) + a^2 s_i y_i^2 / (1 + a s_i)^2 ]
    log Z(lam)             = -lam D(lam) - R(lam)

(the last line holds for every distribution of this form: KL(q||p) = E_q[log q - log p] = -lam E_q[d] - log Z).
Along the curve dD/dR = -1/lam, lam = 1 gives the exact posterior p(z|x) and log Z(1) = log p(x) when the
constant is included.  Averaged over data, only r2 and y_i^2 enter, so the data's second moment M about mu
suffices: E r2 = tr M and E y_i^2 = (U^T M U)_ii.

lam = 1/beta is the point a beta-VAE targets: D + beta R is minimised over q(z|x) by q_{1/beta}, with minimum
-beta log Z(1/beta).  At the joint optimum of the linear beta-VAE (D^T D diagonal) the beta-VAE's own (R, D)
is exactly this curve's point at lam = 1/beta.

Everything is float64 numpy.  Rank-deficient decoders (zero singular values) are handled exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["DecoderGeometry", "decoder_geometry", "tempered_posterior", "decoder_rd", "expected_decoder_rd"]


@dataclass(frozen=True)
class DecoderGeometry:
    """Thin SVD of a decoder ``D`` (n, k): ``left`` U (n, k), ``singular`` S (k,), ``right`` V (k, k)."""

    left: np.ndarray
    singular: np.ndarray
    right: np.ndarray

    @property
    def gram_eigvals(self) -> np.ndarray:
        """Eigenvalues ``s = S^2`` of ``D^T D`` (k,)."""
        return self.singular ** 2


def decoder_geometry(decoder: np.ndarray) -> DecoderGeometry:
    """Thin SVD of the decoder weight ``(n, k)`` (requires ``n >= k``)."""
    decoder = np.asarray(decoder, dtype=np.float64)
    if decoder.ndim != 2:
        raise ValueError(f"decoder must be a matrix (n, k), got shape {decoder.shape}")
    n, k = decoder.shape
    if n < k:
        raise ValueError(f"decoder (n={n}, k={k}) must have n >= k")
    u, s, vt = np.linalg.svd(decoder, full_matrices=False)
    return DecoderGeometry(u, s, vt.T)


def _lams(lam) -> np.ndarray:
    lam = np.atleast_1d(np.asarray(lam, dtype=np.float64))
    if lam.ndim != 1 or np.any(~np.isfinite(lam)) or np.any(lam < 0):
        raise ValueError("lam must be finite and >= 0")
    return lam


def tempered_posterior(decoder: np.ndarray, x: np.ndarray, mean: np.ndarray, lam: float,
                       sigma2: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(N, k)`` and covariance ``(k, k)`` of ``q_lam(z|x)`` for data ``x`` (N, n)."""
    (lam,) = _lams(lam)
    decoder = np.asarray(decoder, dtype=np.float64)
    xc = np.atleast_2d(np.asarray(x, dtype=np.float64)) - np.asarray(mean, dtype=np.float64)
    k = decoder.shape[1]
    a = lam / sigma2
    precision = np.eye(k) + a * decoder.T @ decoder
    cov = np.linalg.inv(precision)
    return a * xc @ decoder @ cov, 0.5 * (cov + cov.T)


def _rd_from_moments(geom: DecoderGeometry, lam: np.ndarray, r2: np.ndarray, y2: np.ndarray, n: int,
                     sigma2: float, include_constant: bool) -> dict[str, np.ndarray]:
    """``r2`` (...,) and ``y2`` (..., k) -> rate, distortion, log_partition of shape (..., L)."""
    s = geom.gram_eigvals                                     # (k,)
    a = (lam / sigma2)[:, None]                               # (L, 1)
    one_as = 1.0 + a * s                                      # (L, k)
    y2 = y2[..., None, :]                                     # (..., 1, k)
    resid = r2[..., None] - y2.sum(-1) + np.sum(y2 / one_as ** 2 + s / one_as, axis=-1)
    distortion = resid / (2.0 * sigma2)                       # (..., L)
    rate = 0.5 * np.sum(1.0 / one_as - 1.0 + np.log1p(a * s) + a ** 2 * s * y2 / one_as ** 2, axis=-1)
    if include_constant:
        distortion = distortion + 0.5 * n * math.log(2.0 * math.pi * sigma2)
    return {"lam": lam, "rate": rate, "distortion": distortion, "log_partition": -lam * distortion - rate}


def decoder_rd(decoder: np.ndarray, x: np.ndarray, mean: np.ndarray, lam, sigma2: float = 1.0,
               include_constant: bool = False) -> dict[str, np.ndarray]:
    """Exact per-example curve of the decoder ``(n, k)`` on data ``x`` ``(N, n)`` at multipliers ``lam`` ``(L,)``.

    Returns ``lam`` (L,) and ``rate``, ``distortion``, ``log_partition`` of shape (N, L), nats per example;
    ``log_partition`` is ``log E_p exp(-lam d)`` with ``d`` in the same convention as ``distortion``.
    """
    lam = _lams(lam)
    geom = decoder_geometry(decoder)
    xc = np.atleast_2d(np.asarray(x, dtype=np.float64)) - np.asarray(mean, dtype=np.float64)
    y = xc @ geom.left
    return _rd_from_moments(geom, lam, np.sum(xc ** 2, axis=-1), y ** 2, xc.shape[1], sigma2, include_constant)


def expected_decoder_rd(decoder: np.ndarray, moment: np.ndarray, lam, sigma2: float = 1.0,
                        include_constant: bool = False) -> dict[str, np.ndarray]:
    """The curve averaged over data whose second moment about the decoder's ``mu`` is ``moment`` (n, n)
    (:func:`linvae.closed_form.second_moment`): ``rate``, ``distortion``, ``log_partition`` of shape (L,)."""
    lam = _lams(lam)
    geom = decoder_geometry(decoder)
    moment = np.asarray(moment, dtype=np.float64)
    y2 = np.einsum("ni,nm,mi->i", geom.left, moment, geom.left)
    return _rd_from_moments(geom, lam, np.asarray(np.trace(moment)), y2, moment.shape[0], sigma2,
                            include_constant)
