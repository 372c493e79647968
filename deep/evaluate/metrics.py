"""Evaluation estimators on tensors and small callables (testable against models with analytic answers).

* :func:`active_units`: Burda et al. (2016): unit k is active when ``Var_x(E_q[z_k|x]) >= threshold``.
* :func:`mutual_information`: ``I(x; z) = E_x E_q(z|x)[log q(z|x) - log q(z)]`` with ``q(z)`` the aggregate
  posterior ``1/N sum_j q(z|x_j)``: every sample is scored against EVERY posterior of the set (He et al.
  2019).  Scoring a sample only against its own posterior gives exactly ``log N``: a known bug.
* :func:`iw_nll`: importance-weighted NLL ``-log 1/k sum_i p(x, z_i) / q(z_i|x)`` (Burda et al.), per
  example, with a chunked float64 log-sum-exp.
* :func:`frechet_distance` and :func:`fid`: Frechet distance between Gaussians fitted to features.

The rate and the distortions themselves live in :mod:`deep.models.objectives` (``gaussian_kl``, ``DISTORTIONS``).
All quantities are in nats.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, Sequence

import numpy as np
import torch

from deep.models.objectives import LOG_2PI, gaussian_kl, iw_nll  # iw_nll: re-exported (defined with the objectives)

__all__ = [
    "evaluation_betas",
    "ActiveUnits",
    "active_units",
    "mutual_information",
    "gaussian_log_density_matrix",
    "iw_nll",
    "frechet_distance",
    "gaussian_statistics",
    "fid",
    "extract_features",
    "FIDUnavailableError",
    "inception_feature_extractor",
    "fid_weights_path",
    "gaussian_kl",
]


# ----------------------------------------------------------------------------------------------------
# active units
# ----------------------------------------------------------------------------------------------------
class ActiveUnits(NamedTuple):
    """``count`` of active units and the per-unit ``variances`` ``(K,)`` (float64) of the posterior means."""

    count: int
    variances: torch.Tensor


def evaluation_betas(betas: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """The betas of an RD sweep as a float64 tensor ``(K,)``; ValueError unless non-empty and all > 0.

    Shared by every family's sweep so they accept and reject the same inputs.
    """
    betas_t = torch.as_tensor(betas if torch.is_tensor(betas) else list(betas), dtype=torch.float64).reshape(-1)
    if betas_t.numel() == 0 or bool((betas_t <= 0).any()) or not bool(torch.isfinite(betas_t).all()):
        raise ValueError(f"betas must be a non-empty list of positive finite numbers, got {betas_t.tolist()}")
    return betas_t


def active_units(mu_all: torch.Tensor, threshold: float = 0.01) -> ActiveUnits:
    """Active units from the posterior means of a whole data set, ``mu_all`` ``(N, K)``.

    The variance over the data set is the population variance (divide by N), computed in float64; a unit
    with variance ``>= threshold`` counts as active.
    """
    if mu_all.dim() != 2 or mu_all.shape[0] < 2:
        raise ValueError(f"mu_all must be (N, K) with N >= 2, got {tuple(mu_all.shape)}")
    mu64 = mu_all.detach().to(torch.float64)
    variances = (mu64 - mu64.mean(dim=0)).pow(2).mean(dim=0)
    return ActiveUnits(int((variances >= threshold).sum()), variances)


# ----------------------------------------------------------------------------------------------------
# mutual information I(x; z) with the aggregate posterior
# ----------------------------------------------------------------------------------------------------
def gaussian_log_density_matrix(z: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """``log N(z_i; mu_j, diag exp(log_var_j))`` for every pair: ``z`` ``(M, K)``, ``mu``/``log_var`` ``(N, K)``
    -> ``(M, N)`` float64, computed with matrix products (no ``(M, N, K)`` intermediate)."""
    z = z.to(torch.float64)
    mu = mu.to(torch.float64)
    log_var = log_var.to(torch.float64)
    inv_var = torch.exp(-log_var)  # (N, K)
    quad = (z.pow(2) @ inv_var.T) - 2.0 * (z @ (mu * inv_var).T) + (mu.pow(2) * inv_var).sum(dim=1)
    const = (log_var.sum(dim=1) + mu.shape[1] * LOG_2PI)  # (N,)
    return -0.5 * (quad + const)


def mutual_information(mu: torch.Tensor, log_var: torch.Tensor, z: torch.Tensor, *,
                       chunk: int = 1024) -> float:
    """``I(x; z)`` in nats under the aggregate posterior of the given set of N examples.

    ``mu``, ``log_var``: ``(N, K)`` posterior parameters; ``z``: ``(N, K)`` one sample from each ``q(.|x_i)``
    (or ``(S, N, K)``: S samples each).  Estimate:
    ``mean_i [E_q log q(z|x_i)] - mean_i log( 1/N sum_j q(z_i|x_j) )``, where the first term is the closed-form
    negative entropy ``-1/2 sum_k (log 2 pi + 1 + log_var_ik)`` and the second scores every sample against
    every posterior of the set (``chunk`` rows of samples at a time).  The value is at most ``log N``.
    """
    if mu.shape != log_var.shape or mu.dim() != 2:
        raise ValueError(f"mu and log_var must both be (N, K); got {tuple(mu.shape)} and {tuple(log_var.shape)}")
    n = mu.shape[0]
    samples = z.reshape(-1, z.shape[-1])
    if z.shape[-1] != mu.shape[1] or samples.shape[0] % n != 0 or (z.dim() >= 2 and z.shape[-2] != n):
        raise ValueError(f"z must be (N, K) or (S, N, K) matching mu {tuple(mu.shape)}, got {tuple(z.shape)}")
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    neg_entropy = (-0.5 * (LOG_2PI + 1.0 + log_var.to(torch.float64))).sum(dim=1).mean()
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, samples.shape[0], chunk):
        block = gaussian_log_density_matrix(samples[start:start + chunk].detach(), mu.detach(), log_var.detach())
        total = total + (torch.logsumexp(block, dim=1) - math.log(n)).sum().cpu()
    log_q_z = total / samples.shape[0]
    return float(neg_entropy.cpu() - log_q_z)




# ----------------------------------------------------------------------------------------------------
# Frechet distance / FID
# ----------------------------------------------------------------------------------------------------
def _sym_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(0.5 * (a + a.T))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray | torch.Tensor, cov1: np.ndarray | torch.Tensor,
                     mu2: np.ndarray | torch.Tensor, cov2: np.ndarray | torch.Tensor) -> float:
    """``||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1 C2)^{1/2})`` between two Gaussians, float64.

    ``tr (C1 C2)^{1/2}`` is computed as the sum of square roots of the eigenvalues of the symmetric PSD
    matrix ``C1^{1/2} C2 C1^{1/2}`` (same spectrum as ``C1 C2``): stable, no complex parts.
    """
    m1, m2 = (np.asarray(torch.as_tensor(m).detach().cpu(), dtype=np.float64).ravel() for m in (mu1, mu2))
    c1, c2 = (np.atleast_2d(np.asarray(torch.as_tensor(c).detach().cpu(), dtype=np.float64)) for c in (cov1, cov2))
    if m1.shape != m2.shape or c1.shape != c2.shape or c1.shape != (m1.size, m1.size):
        raise ValueError(f"shape mismatch: mu1 {m1.shape}, mu2 {m2.shape}, cov1 {c1.shape}, cov2 {c2.shape}")
    s1 = _sym_sqrt(c1)
    middle = s1 @ c2 @ s1
    eig = np.linalg.eigvalsh(0.5 * (middle + middle.T))
    tr_sqrt = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = m1 - m2
    return float(diff @ diff + np.trace(c1) + np.trace(c2) - 2.0 * tr_sqrt)


def gaussian_statistics(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` of ``features`` ``(N, D)``, float64."""
    f = np.asarray(torch.as_tensor(features).detach().cpu(), dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be (N, D) with N >= 2, got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def extract_features(images: torch.Tensor | Iterable[torch.Tensor],
              feature_extractor: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 100) -> np.ndarray:
    """``(N, D)`` float64 features of ``images`` (a tensor or an iterable of batches)."""
    batches = images.split(batch_size) if torch.is_tensor(images) else images
    out = []
    with torch.no_grad():
        for batch in batches:
            out.append(np.asarray(feature_extractor(batch).detach().cpu(), dtype=np.float64).reshape(batch.shape[0], -1))
    if not out:
        raise ValueError("no images given")
    return np.concatenate(out)


def fid(images_real: torch.Tensor | Iterable[torch.Tensor], images_fake: torch.Tensor | Iterable[torch.Tensor],
        feature_extractor: Callable[[torch.Tensor], torch.Tensor], *, batch_size: int = 100) -> float:
    """Frechet distance between Gaussians fitted to ``feature_extractor`` features of two image sets.

    ``images_*``: ``(N, C, H, W)`` tensors in [0, 1] or iterables of such batches; ``feature_extractor``:
    ``(B, C, H, W) -> (B, D)``.  The paper's FID uses the pool3 features (D = 2048) of an Inception-v3 with the
    standard FID weights (pytorch-fid / TF-FID).  Those weights are not shipped with this project and cannot
    be downloaded here; pass such an extractor to get numbers comparable with the paper.  Any other
    extractor gives a Frechet distance in its own feature space, not comparable with published FIDs.
    """
    real = extract_features(images_real, feature_extractor, batch_size)
    fake = extract_features(images_fake, feature_extractor, batch_size)
    return frechet_distance(*gaussian_statistics(real), *gaussian_statistics(fake))


# ------------------------------------------------------------------------------------------
# Inception features for FID (pytorch-fid, optional)
# ------------------------------------------------------------------------------------------
#: File name and address of the FID Inception-v3 weights (the TF-FID network ported by pytorch-fid).
FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FID_WEIGHTS_FILE


class FIDUnavailableError(RuntimeError):
    """The FID feature network cannot be built here (package or weights missing); says how to fix it."""


def fid_weights_path() -> Path:
    """Where the FID Inception weights are looked for: torch hub's checkpoint folder
    (``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub/checkpoints``)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILE


def inception_feature_extractor(device: torch.device | str = "cpu", *, download: bool = False,
                                weights: str | os.PathLike | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The standard FID feature map: pool3 features ``(B, 2048)`` of pytorch-fid's Inception-v3 with the
    TF-FID weights, for images ``(B, C, H, W)`` in [0, 1] (grey images are repeated to 3 channels; the
    network resizes to 299x299 itself).

    The weights file :data:`FID_WEIGHTS_FILE` is read from ``weights`` or :func:`fid_weights_path`; with
    ``download=True`` pytorch-fid fetches it from :data:`FID_WEIGHTS_URL`. Raises
    :class:`FIDUnavailableError` naming the package or file when either is missing.
    """
    try:
        from pytorch_fid import inception as fid_inception
    except ImportError:
        raise FIDUnavailableError("FID needs the pytorch-fid package: pip install -e \".[fid]\" "
                                  "(or pip install pytorch-fid)") from None
    target = fid_weights_path()
    if weights is not None:
        src = Path(weights)
        if not src.is_file():
            raise FIDUnavailableError(f"FID weights file {src} does not exist")
        if src.resolve() != target.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                target.unlink()
            target.symlink_to(src.resolve())
    if not target.is_file() and not download:
        raise FIDUnavailableError(
            f"FID Inception weights {FID_WEIGHTS_FILE} not found at {target}; download them from "
            f"{FID_WEIGHTS_URL} into that folder, pass their path (--fid-weights), or allow the download "
            "(--download)")
    net = fid_inception.InceptionV3([fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]],
                                    resize_input=True, normalize_input=True, use_fid_inception=True)
    net = net.to(device).eval()

    @torch.no_grad()
    def extract(images: torch.Tensor) -> torch.Tensor:
        x = images.to(device=device, dtype=torch.float32)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        return net(x)[0].flatten(1)

    return extract
