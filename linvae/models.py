"""Two-layer linear VAEs (paper Eq. 10), many independent models stacked into one computation.

One :class:`StackedLinearVAE` holds ``S x G`` independent models: ``S`` groups that each see
their own minibatch stream (one group per seed) and ``G`` models per group (one per beta or
learning rate).  Every parameter has leading shape ``(S, G)``; a step on all models costs a few
batched matrix products, so the 231 trainings of App. C.1 run as one vectorised computation.

Model, per example and per model (sigma2 = 1, data centred by the training mean):
    mean of q(z|x):  m = E2(beta) E1(beta) x,                    E1: (k, n), E2: (k, k)
    variance of q:   c = C2(beta) C1(beta),                       C1, C2 diagonal, (k,)
    mean of p(x|z):  D2(beta) D1(beta) z,                         D1: (k, k), D2: (n, k)
An MR model gates every factor by rows with the conditioning core (Eq. 6):
``factor(beta) = gate(w * u + b) (.)_row base`` with ``u`` the standardised hyper-input.
Encoder factors (E1, E2) use ``encoder_gate`` (paper: sigmoid; sqrt represents the joint optimum
exactly), covariance factors (C1, C2) ``covariance_gate`` (paper: sigmoid; our ``exp_min`` gate
``exp(min(x, 0))`` represents the joint optimum's variances ``min(1, beta / lam)`` exactly), decoder
factors (D1, D2) the sqrt gate.  A beta-VAE uses the bases alone (no gates).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .closed_form import LinearVAEParams
from .conditioning import GATE_KINDS, BetaRange, gate_bias_for_value


__all__ = ["StackedLinearVAE", "LinearOutput", "exp_min_gate", "LINEAR_GATES", "ENCODER_GATES",
           "COVARIANCE_GATES"]

# factor name -> gate side: encoder weights use ``encoder_gate``, covariances ``covariance_gate`` (a
# variance must stay > 0: sigmoid or exp_min, never the sqrt gate, which reaches 0), decoder ``decoder_gate``
_FACTORS = {"E1": "enc", "E2": "enc", "C1": "cov", "C2": "cov", "D1": "dec", "D2": "dec"}


def exp_min_gate(x: torch.Tensor) -> torch.Tensor:
    """Covariance gate ``exp(min(x, 0))`` in (0, 1], equal to ``1 - sqrt_gate(x)**2``.

    With pre-activation ``log beta - log lam`` it is ``min(1, beta / lam)``: the posterior variance of
    the linear VAE's joint optimum (paper-notes 2.4), which no sigmoid (product) represents exactly.
    Flat (zero gradient) at 1 for x >= 0, as the sqrt gate is flat at 0 there.
    """
    return torch.exp(torch.clamp(x, max=0.0))


#: gate kinds of the linear MR-VAE: the core's sigmoid and sqrt gates, and the exp-min covariance gate
LINEAR_GATES = {"sigmoid": GATE_KINDS["sigmoid"], "sqrt": GATE_KINDS["sqrt"], "exp_min": exp_min_gate}
ENCODER_GATES = ("sigmoid", "sqrt")
COVARIANCE_GATES = ("sigmoid", "exp_min")


def _bias_for_value(kind: str, value: float) -> float:
    return math.log(value) if kind == "exp_min" else gate_bias_for_value(kind, value)


@dataclass
class LinearOutput:
    """Per-example rate and distortion (nats), shape ``(S, G, B)``."""

    rate: torch.Tensor
    distortion: torch.Tensor


class StackedLinearVAE(nn.Module):
    """``groups x models`` independent two-layer linear VAEs of data dim ``n`` and latent ``k``."""

    def __init__(self, groups: int, models: int, data_dim: int, latent_dim: int, *, mr: bool,
                 beta_range: BetaRange | None = None, encoder_gate: str = "sigmoid",
                 covariance_gate: str = "sigmoid", decoder_gate: str = "sqrt", gate_init: float = 0.9,
                 init_log_variance: float = 0.0,
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        for kind in (encoder_gate, decoder_gate):
            if kind not in ("sigmoid", "sqrt"):
                raise ValueError(f"linear MR-VAE gates must be 'sigmoid' or 'sqrt', got {kind!r}")
        if covariance_gate not in COVARIANCE_GATES:
            raise ValueError(f"covariance gates must be one of {COVARIANCE_GATES}, got {covariance_gate!r}")
        self.groups, self.models, self.data_dim, self.latent_dim = groups, models, data_dim, latent_dim
        self.mr = mr
        self.beta_range = beta_range or BetaRange()
        self.encoder_gate, self.decoder_gate = encoder_gate, decoder_gate
        self.covariance_gate = covariance_gate
        s, g, n, k = groups, models, data_dim, latent_dim

        def orthogonal(rows: int, cols: int) -> torch.Tensor:
            """``(S, G, rows, cols)`` random matrices with orthonormal rows or columns (Saxe et al. 2014):
            the latent directions start distinct, which avoids the plateaus of deep linear nets."""
            a = torch.randn(s * g, max(rows, cols), min(rows, cols), generator=generator, dtype=torch.float64)
            q, r = torch.linalg.qr(a)
            q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
            q = q if rows >= cols else q.transpose(-1, -2)
            return q.reshape(s, g, rows, cols).to(dtype)

        self.E1 = nn.Parameter(orthogonal(k, n))
        self.E2 = nn.Parameter(orthogonal(k, k))
        self.D1 = nn.Parameter(orthogonal(k, k))
        self.D2 = nn.Parameter(orthogonal(n, k))
        # log c = log_C1 + log_C2 starts at init_log_variance (0: the prior's unit variance)
        self.log_C1 = nn.Parameter(torch.full((s, g, k), 0.5 * init_log_variance, dtype=dtype))
        self.log_C2 = nn.Parameter(torch.full((s, g, k), 0.5 * init_log_variance, dtype=dtype))
        if mr:
            rows = {"E1": k, "E2": k, "C1": k, "C2": k, "D1": k, "D2": n}
            for name in _FACTORS:
                kind = self._gate_kind(name)
                self.register_parameter(f"w_{name}", nn.Parameter(torch.zeros(s, g, rows[name], dtype=dtype)))
                self.register_parameter(f"b_{name}", nn.Parameter(
                    torch.full((s, g, rows[name]), _bias_for_value(kind, gate_init), dtype=dtype)))

    # -- gates ------------------------------------------------------------------------------
    def _gate_kind(self, name: str) -> str:
        side = _FACTORS[name]
        return {"enc": self.encoder_gate, "cov": self.covariance_gate, "dec": self.decoder_gate}[side]

    def gate(self, name: str, u: torch.Tensor) -> torch.Tensor:
        """Gate values of factor ``name`` for hyper-inputs ``u`` of shape ``(S, G, B)``: ``(S, G, B, rows)``."""
        w, b = getattr(self, f"w_{name}"), getattr(self, f"b_{name}")
        pre = u.unsqueeze(-1) * w.unsqueeze(-2) + b.unsqueeze(-2)
        return LINEAR_GATES[self._gate_kind(name)](pre)

    # -- training objective ---------------------------------------------------------------
    def forward(self, x: torch.Tensor, beta: torch.Tensor, noise: torch.Tensor) -> LinearOutput:
        """Rate and a one-sample distortion estimate for centred data.

        x: ``(S, B, n)`` (group s's minibatch); beta: ``(S, G, B)`` or broadcastable;
        noise: standard normal ``(S, G, B, k)`` for the reparameterised sample.
        """
        h = torch.einsum("sbn,sgkn->sgbk", x, self.E1)
        if self.mr:
            u = self.beta_range.standardize(beta).expand(*self.E1.shape[:2], x.shape[1])
            h = h * self.gate("E1", u)
        m = torch.matmul(h, self.E2.transpose(-1, -2))
        log_c = (self.log_C1 + self.log_C2).unsqueeze(-2)
        if self.mr:
            m = m * self.gate("E2", u)
            c = torch.exp(log_c) * self.gate("C1", u) * self.gate("C2", u)
            log_c = torch.log(c)
        else:
            c = torch.exp(log_c)
        z = m + torch.sqrt(c) * noise
        rate = 0.5 * (m.pow(2) + c - log_c - 1.0).sum(-1)
        if not self.mr:
            # 1/2 |x - D z|^2 = 1/2 |x|^2 - (D^T x).z + 1/2 z^T (D^T D) z with D = D2 D1: only (B, k)
            # tensors and large GEMMs, never the (S, G, B, n) reconstruction (same value, same sample)
            d2x = torch.einsum("sbn,sgnk->sgbk", x, self.D2)
            dtx = torch.matmul(d2x, self.D1)
            gram = self.D1.transpose(-1, -2) @ (self.D2.transpose(-1, -2) @ self.D2) @ self.D1
            quad = (torch.matmul(z, gram) * z).sum(-1)
            distortion = 0.5 * x.pow(2).sum(-1).unsqueeze(1) - (dtx * z).sum(-1) + 0.5 * quad
            return LinearOutput(rate=rate, distortion=distortion)
        # MR: the per-example row gates of D2 need the reconstruction itself
        y = torch.matmul(z, self.D1.transpose(-1, -2)) * self.gate("D1", u)
        y = torch.matmul(y, self.D2.transpose(-1, -2)) * self.gate("D2", u)
        distortion = 0.5 * (x.unsqueeze(1) - y).pow(2).sum(-1)
        return LinearOutput(rate=rate, distortion=distortion)

    # -- matrices at a fixed beta (exact evaluation) -------------------------------------------
    @torch.no_grad()
    def matrices(self, beta: float) -> dict[str, torch.Tensor]:
        """The composed matrices of every model at one beta (float64): ``encoder`` (S, G, k, n),
        ``variances`` (S, G, k), ``decoder`` (S, G, n, k)."""
        p = {name: t.detach().double() for name, t in self.named_parameters()}
        e1, e2, d1, d2 = p["E1"], p["E2"], p["D1"], p["D2"]
        c = torch.exp(p["log_C1"] + p["log_C2"])
        if self.mr:
            u = float(self.beta_range.standardize(torch.tensor(float(beta), dtype=torch.float64)))

            def g(name: str) -> torch.Tensor:
                return LINEAR_GATES[self._gate_kind(name)](p[f"w_{name}"] * u + p[f"b_{name}"])
            e1 = g("E1").unsqueeze(-1) * e1
            e2 = g("E2").unsqueeze(-1) * e2
            d1 = g("D1").unsqueeze(-1) * d1
            d2 = g("D2").unsqueeze(-1) * d2
            c = c * g("C1") * g("C2")
        return {"encoder": e2 @ e1, "variances": c, "decoder": d2 @ d1}

    def params_at(self, beta: float, group: int, model: int, mean: np.ndarray) -> LinearVAEParams:
        """One model's matrices at ``beta`` as :class:`LinearVAEParams` (numpy, float64)."""
        mats = self.matrices(beta)
        return LinearVAEParams(encoder=mats["encoder"][group, model].numpy(),
                               variances=mats["variances"][group, model].numpy(),
                               decoder=mats["decoder"][group, model].numpy(), mean=mean)

    def flops_per_example(self) -> int:
        """Matmul FLOPs of one forward + backward pass for one example and one model (3x forward)."""
        n, k = self.data_dim, self.latent_dim
        return 3 * 2 * (n * k + k * k + k * k + n * k)
