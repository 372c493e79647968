"""Objectives of the deep beta-VAEs and MR-VAEs: rate (Gaussian KL), distortions and the loss.

Conventions (paper section 1; written into every result file through :attr:`Distortion.description`)
-----------------------------------------------------------------------------------------------------
* ``rate``: closed-form ``KL(N(mu, diag exp(log_var)) || N(0, I))`` summed over latents, nats, shape ``(B,)``.
* ``distortion``: summed over every pixel of an example, shape ``(B,)``.  The decoder always returns
  ``logits``; the mean image is ``sigmoid(logits)``.

  - ``"bernoulli"``: Bernoulli NLL (binary cross-entropy with logits, numerically stable); the targets may be
    grey values in [0, 1].  A true NLL in nats.
  - ``"sse"``: the paper's colour-image distortion: sum of squared errors of ``sigmoid(logits)`` against
    ``x`` in [0, 1], no 1/2 factor and no constant.  NOT a normalised NLL (it is the Gaussian NLL with
    sigma^2 = 1/2 minus a constant), so beta means something else than under a true NLL.
  - ``"half_sse"``: ``1/2`` SSE (the Gaussian NLL with sigma^2 = 1 without its constant).
  - ``"gaussian_nll"``: Gaussian NLL with sigma^2 = 1: ``1/2 SSE + n/2 log(2 pi)`` (n pixels); a true NLL.
* ``loss = mean_b (distortion_b + beta_b * rate_b)`` with one beta per example (``(B,)``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "Distortion",
    "DISTORTIONS",
    "UnknownDistortionError",
    "NotALikelihoodError",
    "gaussian_kl",
    "get_distortion",
    "bernoulli_distortion",
    "sse_distortion",
    "half_sse_distortion",
    "gaussian_nll_distortion",
    "vae_loss",
    "LOG_2PI",
    "DISTORTION_TEXT",
    "iw_nll",
]

LOG_2PI = math.log(2.0 * math.pi)


class UnknownDistortionError(ValueError):
    """Raised for a distortion name that is not in :data:`DISTORTIONS`."""


class NotALikelihoodError(ValueError):
    """Raised when a log-likelihood is asked of a distortion that is not a true negative log-likelihood."""


def _per_example_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension but the first: ``(B, ...) -> (B,)``."""
    return t.reshape(t.shape[0], -1).sum(dim=1)


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors (float16 / bfloat16 outputs of a layer under ``torch.autocast``) upcast to
    float32, so rates and distortions are summed in float32 under mixed precision; other dtypes as is."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _check_shapes(logits: torch.Tensor, x: torch.Tensor) -> None:
    if logits.shape != x.shape:
        raise ValueError(f"decoder output shape {tuple(logits.shape)} does not match data shape {tuple(x.shape)}")


def gaussian_kl(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """Rate ``KL(N(mu, diag exp(log_var)) || N(0, I))`` in nats, summed over latents.

    ``mu``, ``log_var``: ``(B, K)`` (or ``(B, ...)``); returns ``(B,)`` (at least float32: half-precision
    inputs from layers under ``torch.autocast`` are upcast before the sum).
    """
    if mu.shape != log_var.shape:
        raise ValueError(f"mu {tuple(mu.shape)} and log_var {tuple(log_var.shape)} differ in shape")
    mu, log_var = _at_least_float32(mu), _at_least_float32(log_var)
    kl = 0.5 * (mu.pow(2) + torch.exp(log_var) - 1.0 - log_var)
    return _per_example_sum(kl)


def bernoulli_distortion(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Bernoulli NLL ``-sum [x log sigmoid(l) + (1 - x) log(1 - sigmoid(l))]`` in nats, ``(B,)``."""
    _check_shapes(logits, x)
    logits = _at_least_float32(logits)
    return _per_example_sum(F.binary_cross_entropy_with_logits(logits, x, reduction="none"))


def sse_distortion(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The paper's colour distortion: ``sum (sigmoid(logits) - x)^2`` (no 1/2, no constant), ``(B,)``."""
    _check_shapes(logits, x)
    return _per_example_sum((torch.sigmoid(_at_least_float32(logits)) - x).pow(2))


def half_sse_distortion(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``1/2 sum (sigmoid(logits) - x)^2``, ``(B,)``."""
    return 0.5 * sse_distortion(logits, x)


def gaussian_nll_distortion(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Gaussian NLL with mean ``sigmoid(logits)`` and sigma^2 = 1: ``1/2 SSE + n/2 log 2 pi`` nats, ``(B,)``."""
    n = x[0].numel()
    return half_sse_distortion(logits, x) + 0.5 * n * LOG_2PI


@dataclass(frozen=True)
class Distortion:
    """A named distortion ``(logits, x) -> (B,)`` with what a result file needs to know about it."""

    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    is_nll: bool
    description: str

    def __call__(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.fn(logits, x)

    def log_likelihood(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``log p(x|z)`` in nats, ``(B,)``; only for true negative log-likelihoods."""
        if not self.is_nll:
            raise NotALikelihoodError(
                f"distortion {self.name!r} is not a normalised negative log-likelihood, so log p(x|z) "
                f"(and IW-NLL) is undefined for it; use one of "
                f"{sorted(k for k, d in DISTORTIONS.items() if d.is_nll)}")
        return -self.fn(logits, x)

    def to_dict(self) -> dict:
        return {"name": self.name, "is_nll": self.is_nll, "description": self.description}


DISTORTIONS: dict[str, Distortion] = {
    "bernoulli": Distortion(
        "bernoulli", bernoulli_distortion, True,
        "Bernoulli NLL (binary cross-entropy with logits) summed over pixels, nats per example"),
    "sse": Distortion(
        "sse", sse_distortion, False,
        "sum of squared errors of sigmoid(logits) vs x in [0,1] over pixels (paper's code; no 1/2, "
        "no constant; not a normalised NLL)"),
    "half_sse": Distortion(
        "half_sse", half_sse_distortion, False,
        "1/2 sum of squared errors of sigmoid(logits) vs x in [0,1] over pixels (Gaussian sigma^2=1 NLL "
        "without its constant)"),
    "gaussian_nll": Distortion(
        "gaussian_nll", gaussian_nll_distortion, True,
        "Gaussian NLL, mean sigmoid(logits), sigma^2=1: 1/2 SSE + n/2 log(2 pi), nats per example"),
}


def get_distortion(name: str) -> Distortion:
    """The :class:`Distortion` called ``name``; :class:`UnknownDistortionError` lists the valid names."""
    try:
        return DISTORTIONS[name]
    except (KeyError, TypeError):
        raise UnknownDistortionError(
            f"unknown distortion {name!r}; choose one of {sorted(DISTORTIONS)}") from None


def vae_loss(distortion: torch.Tensor, rate: torch.Tensor, beta: torch.Tensor | float) -> torch.Tensor:
    """``mean_b (distortion_b + beta_b * rate_b)``: scalar.  ``beta``: ``(B,)`` or a scalar."""
    if distortion.shape != rate.shape or distortion.dim() != 1:
        raise ValueError(f"distortion {tuple(distortion.shape)} and rate {tuple(rate.shape)} must both be (B,)")
    beta = torch.as_tensor(beta, dtype=rate.dtype, device=rate.device)
    if beta.dim() > 1 or (beta.dim() == 1 and beta.shape[0] not in (1, rate.shape[0])):
        raise ValueError(f"beta must be a scalar or (B,) with B={rate.shape[0]}, got {tuple(beta.shape)}")
    return (distortion + beta * rate).mean()


#: One-line definitions of the distortions, written into every run's conventions.
DISTORTION_TEXT = {
    "bernoulli": "Bernoulli negative log-likelihood summed over pixels (nats)",
    "sse": "sum of squared errors over pixels in [0, 1] (the reference code's MSE sum; no 1/2, no constant)",
    "half_sse": "1/2 sum of squared errors over pixels in [0, 1] (Gaussian NLL with sigma^2 = 1 minus its constant)",
    "gaussian_nll": "Gaussian negative log-likelihood summed over pixels (nats)",
}


# ----------------------------------------------------------------------------------------------------
# importance-weighted NLL of a single Gaussian latent
# ----------------------------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------------------------
# importance-weighted NLL
# ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def iw_nll(x: torch.Tensor, encode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
           log_likelihood: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], k: int = 1000, *,
           chunk: int = 100, generator: torch.Generator | None = None) -> torch.Tensor:
    """Importance-weighted NLL ``-log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x)``, ``z_i ~ q(.|x)``; ``(B,)`` nats
    (float64).

    ``encode(x) -> (mu, log_var)`` (an :class:`deep.models.convnets.EncoderOutput` works), each ``(B, K)``;
    ``log_likelihood(x_rep, z) -> (M,)`` with ``x_rep`` the batch repeated ``c`` times (``M = c * B``, sample
    index major) and ``z`` ``(M, K)``.  Samples are drawn ``chunk`` at a time and combined with a running
    float64 log-sum-exp, without gradients.  For a model: ``encode=lambda x: model.encode(x, beta)``,
    ``log_likelihood=lambda x, z: model.log_likelihood(x, z, beta)``.
    """
    if k < 1 or chunk < 1:
        raise ValueError(f"k and chunk must be >= 1, got k={k}, chunk={chunk}")
    mu, log_var = encode(x)
    b, latent = mu.shape
    std = torch.exp(0.5 * log_var)
    lse = torch.full((b,), -math.inf, dtype=torch.float64, device=mu.device)
    done = 0
    while done < k:
        c = min(chunk, k - done)
        eps = torch.randn((c, b, latent), generator=generator, dtype=mu.dtype, device=mu.device)
        z = mu + std * eps  # (c, B, K)
        log_q = -0.5 * (LOG_2PI + log_var + eps.pow(2)).to(torch.float64).sum(-1)  # (c, B)
        log_prior = -0.5 * (LOG_2PI + z.pow(2)).to(torch.float64).sum(-1)
        x_rep = x.unsqueeze(0).expand(c, *x.shape).reshape(c * b, *x.shape[1:])
        log_lik = log_likelihood(x_rep, z.reshape(c * b, latent)).to(torch.float64).reshape(c, b)
        log_w = log_lik + log_prior - log_q
        lse = torch.logaddexp(lse, torch.logsumexp(log_w, dim=0))
        done += c
    return -(lse - math.log(k))
