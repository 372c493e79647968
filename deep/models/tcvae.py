"""beta-TCVAE and MR-beta-TCVAE on dSprites (paper section 5.4, Fig. 8 right; Chen et al. 2018).

Objective
---------
The rate ``E_x KL(q(z|x) || p(z))`` splits into three terms (Chen et al. 2018, Eq. 2):

    index-code MI  I_q(x; z)          = E[log q(z|x) - log q(z)]
    total correlation TC              = E[log q(z) - log prod_j q(z_j)]
    dimension-wise KL                 = E[log prod_j q(z_j) - log p(z)]

``q(z)`` is the aggregate posterior over the N training images.  For a minibatch of B
examples with one sample ``z_i ~ q(z|x_i)`` each, ``log q(z_i)`` and ``log q(z_i,d)`` are
estimated as ``log sum_j W_ij q(z_i|x_j)`` with the importance weights W of either estimator:

* ``"mws"`` (minibatch-weighted sampling, Chen et al. section 4.1; the estimator of the paper's
  history code, paper-notes 4.4): every pair weighted alike, ``W_ij = 1 / B``.  Chen et al.
  write ``1 / (N B)``, whose rows sum to 1/N: their ``log q(z)`` and every ``log q(z_j)`` are
  then ``log N`` lower, i.e. MI ``+log N``, TC ``+(K-1) log N``, dim-KL ``-K log N``.  Those are
  constants: every gradient is the same, and removing them puts MWS on the scale of the true
  terms (where the posteriors overlap it agrees with MSS; where each z is explained by its own
  posterior alone it over-weights that posterior, 1/B instead of 1/N).
* ``"mss"`` (minibatch-stratified sampling, Chen et al. App. C.2): with ``M = B - 1`` other
  examples per row, ``W_ii = 1/N`` (the example's own posterior, on the DIAGONAL),
  ``W_ij = (N - M) / (N M)`` for ONE designated other example ``j = (i + 1) mod B`` and
  ``W_ij = 1/M`` for the remaining ``M - 1``; each row sums to 1 and is unbiased for ``q(z_i)``
  (see :func:`mss_log_weights`).  A widely copied version writes the 1/N weights into column 0
  instead of the diagonal.

Per example the three terms sum EXACTLY to the one-sample KL estimate
``log q(z_i|x_i) - log p(z_i)`` (``kl_sample``), whatever the estimator.  The model reports
``rate`` = the closed-form KL (the project's convention, lower variance; the expectation of
``kl_sample``).  beta weights the TC only: ``loss = distortion + MI + beta TC + dim-KL``
(alpha = gamma = 1 as in the paper).

Architecture (paper App. C.2.1 and paper-notes 7.11)
----------------------------------------------------
Encoder MLP 4096 -> 1200 -> 1200 -> 2 x 10 with ReLU; decoder 10 -> 1200 -> 1200 -> 1200 -> 4096
with Tanh, Bernoulli likelihood (the decoder returns logits).  MR-beta-TCVAE: a sigmoid gate
(:class:`linvae.conditioning.Gate`) on the pre-activation of both encoder hidden layers, and a
sqrt gate on the pre-activation of the 2nd and 3rd decoder hidden layers (the first decoder
Linear, like the decoders of :mod:`deep.models.convnets`, is ungated; ``gate_first_decoder=True`` gates it
too).  Heads and the output layer are ungated.  Default beta range [0.1, 10].

With one beta per EXAMPLE (the trainer's default sampling) the posteriors of a minibatch come
from encoders at different betas, so the aggregate posterior mixes betas; with one beta per
batch (``beta_sampling="batch"``, the paper's Algorithm 1) the estimates are those of the
beta-TCVAE at that beta.  :func:`sweep` always evaluates one beta at a time.
"""
from __future__ import annotations

import math
import time
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from linvae.conditioning import GATE_KINDS, BetaRange, Gate, beta_batch, GatedModel

from .convnets import DecoderOutput, EncoderOutput
from .objectives import LOG_2PI, NotALikelihoodError, gaussian_kl, get_distortion

__all__ = [
    "ESTIMATORS", "OBJECTIVES", "DEFAULT_BETA_RANGE", "TCDecomposition", "TCVAEOutput",
    "gaussian_log_density", "mws_log_weights", "mss_log_weights", "tc_decomposition",
    "MLPEncoder", "MLPDecoder", "TCVAE", "build_model", "build", "rebuild", "sweep",
]

ESTIMATORS: dict[str, str] = {
    "mws": "minibatch-weighted sampling (Chen et al. 2018): log q(z_i) ~ logsumexp_j log q(z_i|x_j) "
           "- log B (Chen et al.'s - log(N B) minus its constant log N, which changes no gradient)",
    "mss": "minibatch-stratified sampling (Chen et al. 2018, App. C.2): weights 1/N on the diagonal, "
           "(N-M)/(N M) on one other example, 1/M on the rest (M = B - 1)",
}
OBJECTIVES: dict[str, str] = {
    "tcvae": "distortion + MI + beta * TC + dimension-wise KL (beta weights the total correlation)",
    "elbo": "distortion + beta * KL (a beta-VAE with the same MLPs)",
}
DEFAULT_BETA_RANGE = BetaRange(0.1, 10.0)
DEFAULT_DATASET_SIZE = 737_280


# ====================================================================================================
# the decomposition
# ====================================================================================================
class TCDecomposition(NamedTuple):
    """Per-example terms ``(B,)`` in nats: ``mi + tc + dim_kl == log_qz_x - log_pz`` exactly."""

    mi: torch.Tensor
    tc: torch.Tensor
    dim_kl: torch.Tensor
    log_qz_x: torch.Tensor        # log q(z_i | x_i)
    log_qz: torch.Tensor          # estimate of log q(z_i)
    log_prod_qzj: torch.Tensor    # estimate of sum_d log q(z_i,d)
    log_pz: torch.Tensor          # log N(z_i; 0, I)


def gaussian_log_density(z: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """Elementwise ``log N(z; mu, exp(log_var))`` (broadcasting), nats."""
    return -0.5 * (LOG_2PI + log_var + (z - mu).pow(2) * torch.exp(-log_var))


def mws_log_weights(batch_size: int, dataset_size: int, *, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """``(B, B)`` log importance weights of minibatch-weighted sampling: all ``-log B``.

    Chen et al. use ``-log(N B)``; the difference is the constant ``log N`` in every estimated
    ``log q(z)`` and ``log q(z_j)`` (see the module docstring).  ``dataset_size`` is only checked.
    """
    _check_sizes(batch_size, dataset_size, need_two=False)
    return torch.full((batch_size, batch_size), -math.log(batch_size), dtype=dtype, device=device)


def mss_log_weights(batch_size: int, dataset_size: int, *, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """``(B, B)`` log importance weights of minibatch-stratified sampling (Chen et al. App. C.2).

    Row i scores ``z_i ~ q(z|x_i)``: ``q(z_i) ~ 1/N q(z_i|x_i) + 1/M sum_{m in S_i} q(z_i|x_m)
    + (N - M)/(N M) q(z_i|x_{j_i})`` with ``M = B - 1``, ``j_i = (i + 1) mod B`` and ``S_i`` the
    other ``M - 1`` examples.  So ``W_ii = 1/N`` on the diagonal, ``W_{i, j_i} = (N - M)/(N M)``,
    ``1/M`` elsewhere; every row sums to 1.  For a batch drawn uniformly without replacement the
    estimate is unbiased for ``q(z_i) = 1/N sum_n q(z_i|x_n)``.  Needs ``2 <= B <= N``.
    """
    _check_sizes(batch_size, dataset_size, need_two=True)
    b, n = batch_size, dataset_size
    m = b - 1
    w = torch.full((b, b), 1.0 / m, dtype=torch.float64)
    rows = torch.arange(b)
    w[rows, (rows + 1) % b] = (n - m) / (n * m)
    w[rows, rows] = 1.0 / n
    return torch.log(w).to(dtype=dtype, device=device)


def _check_sizes(batch_size: int, dataset_size: int, need_two: bool) -> None:
    if batch_size < (2 if need_two else 1):
        raise ValueError(f"the {'MSS' if need_two else 'MWS'} estimator needs a batch of at least "
                         f"{2 if need_two else 1} examples, got {batch_size}")
    if dataset_size < batch_size:
        raise ValueError(f"dataset_size N={dataset_size} is smaller than the batch ({batch_size}); "
                         f"N must be the number of training images")


def tc_decomposition(z: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor, dataset_size: int,
                     estimator: str = "mss") -> TCDecomposition:
    """beta-TCVAE terms for a minibatch: ``z``, ``mu``, ``log_var`` ``(B, K)`` (one sample per
    example, ``z_i ~ q(z|x_i)``), ``dataset_size`` N.  Returns per-example ``(B,)`` estimates of
    MI, TC and dimension-wise KL (see the module docstring); the pairwise densities are a
    ``(B, B, K)`` tensor."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown TC estimator {estimator!r}; choose one of {sorted(ESTIMATORS)}")
    if not (z.shape == mu.shape == log_var.shape) or z.dim() != 2:
        raise ValueError(f"z, mu, log_var must all be (B, K); got {tuple(z.shape)}, {tuple(mu.shape)}, "
                         f"{tuple(log_var.shape)}")
    b = z.shape[0]
    make = mss_log_weights if estimator == "mss" else mws_log_weights
    log_w = make(b, int(dataset_size), dtype=z.dtype, device=z.device)
    pair = gaussian_log_density(z.unsqueeze(1), mu.unsqueeze(0), log_var.unsqueeze(0))  # (B, B, K)
    log_qz = torch.logsumexp(log_w + pair.sum(dim=2), dim=1)
    log_prod = torch.logsumexp(log_w.unsqueeze(2) + pair, dim=1).sum(dim=1)
    log_qz_x = gaussian_log_density(z, mu, log_var).sum(dim=1)
    log_pz = (-0.5 * (LOG_2PI + z.pow(2))).sum(dim=1)
    return TCDecomposition(log_qz_x - log_qz, log_qz - log_prod, log_prod - log_pz,
                           log_qz_x, log_qz, log_prod, log_pz)


# ====================================================================================================
# networks
# ====================================================================================================
class TCVAEOutput(NamedTuple):
    """One-sample forward pass.  ``rate``: closed-form KL ``(B,)``; ``distortion``: Bernoulli NLL
    ``(B,)``; ``mi``, ``tc``, ``dim_kl`` ``(B,)`` with ``mi + tc + dim_kl == kl_sample``, the
    one-sample KL estimate ``log q(z|x) - log p(z)``.  All in nats."""

    mu: torch.Tensor
    log_var: torch.Tensor
    z: torch.Tensor
    logits: torch.Tensor
    rate: torch.Tensor
    distortion: torch.Tensor
    mi: torch.Tensor
    tc: torch.Tensor
    dim_kl: torch.Tensor
    kl_sample: torch.Tensor


class MLPEncoder(nn.Module):
    """``in -> hidden -> hidden -> 2K`` with ReLU; optional gates on both hidden pre-activations."""

    def __init__(self, in_features: int, hidden: int, latent_dim: int, *, gate_kind: str | None,
                 hyper_hidden: Sequence[int] = ()) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, 2 * latent_dim)
        hh = tuple(hyper_hidden)
        self.gate1 = Gate(hidden, gate_kind, hidden=hh) if gate_kind else None
        self.gate2 = Gate(hidden, gate_kind, hidden=hh) if gate_kind else None

    def forward(self, x: torch.Tensor, u: torch.Tensor | None) -> EncoderOutput:
        h = self.fc1(x.flatten(1))
        h = F.relu(self.gate1(h, u) if self.gate1 is not None else h)
        h = self.fc2(h)
        h = F.relu(self.gate2(h, u) if self.gate2 is not None else h)
        mu, log_var = self.head(h).chunk(2, dim=-1)
        return EncoderOutput(mu, log_var)


class MLPDecoder(nn.Module):
    """``K -> hidden -> hidden -> hidden -> out`` with Tanh; gates on the 2nd and 3rd hidden
    pre-activations (and the 1st with ``gate_first=True``); returns logits of ``out_shape``."""

    def __init__(self, latent_dim: int, hidden: int, out_shape: Sequence[int], *, gate_kind: str | None,
                 hyper_hidden: Sequence[int] = (), gate_first: bool = False) -> None:
        super().__init__()
        self.out_shape = tuple(int(s) for s in out_shape)
        self.fc1 = nn.Linear(latent_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, math.prod(self.out_shape))
        hh = tuple(hyper_hidden)
        self.gate1 = Gate(hidden, gate_kind, hidden=hh) if (gate_kind and gate_first) else None
        self.gate2 = Gate(hidden, gate_kind, hidden=hh) if gate_kind else None
        self.gate3 = Gate(hidden, gate_kind, hidden=hh) if gate_kind else None

    def forward(self, z: torch.Tensor, u: torch.Tensor | None) -> DecoderOutput:
        h = z
        for fc, gate in ((self.fc1, self.gate1), (self.fc2, self.gate2), (self.fc3, self.gate3)):
            h = fc(h)
            h = torch.tanh(gate(h, u) if gate is not None else h)
        return DecoderOutput(self.out(h).reshape(z.shape[0], *self.out_shape))


class TCVAE(GatedModel, nn.Module):
    """beta-TCVAE (``mr=False``) or MR-beta-TCVAE (``mr=True``) with the MLPs of Chen et al.

    ``model(x, beta)`` -> :class:`TCVAEOutput`; ``beta`` a float or ``(B,)`` tensor (ignored by a
    plain beta-TCVAE, where the trainer's weight carries it).  Build with :func:`build_model`;
    ``build_model(**model.config)`` rebuilds it.
    """

    def __init__(self, *, mr: bool, latent_dim: int, hidden: int, beta_range: BetaRange,
                 estimator: str, dataset_size: int, objective: str, enc_gate: str, dec_gate: str,
                 hyper_hidden: tuple[int, ...], image_shape: tuple[int, ...], gate_first_decoder: bool) -> None:
        super().__init__()
        self.is_mr = bool(mr)
        self.latent_dim = int(latent_dim)
        self.beta_range = beta_range
        self.estimator = estimator
        self.dataset_size = int(dataset_size)
        self.objective_name = objective
        self.data_shape = tuple(int(s) for s in image_shape)
        self.distortion = get_distortion("bernoulli")
        self._config = {
            "family": "tcvae", "arch": "mlp", "mr": self.is_mr, "latent_dim": self.latent_dim,
            "hidden": int(hidden), "beta_range": {"a": beta_range.a, "b": beta_range.b},
            "estimator": estimator, "dataset_size": self.dataset_size, "objective": objective,
            "enc_gate": enc_gate, "dec_gate": dec_gate, "hyper_hidden": list(hyper_hidden),
            "image_shape": list(self.data_shape), "gate_first_decoder": bool(gate_first_decoder),
            "distortion": "bernoulli",
        }
        self.encoder = MLPEncoder(math.prod(self.data_shape), hidden, self.latent_dim,
                                  gate_kind=enc_gate if mr else None, hyper_hidden=hyper_hidden)
        self.decoder = MLPDecoder(self.latent_dim, hidden, self.data_shape, gate_kind=dec_gate if mr else None,
                                  hyper_hidden=hyper_hidden, gate_first=gate_first_decoder)

    # -- configuration ----------------------------------------------------------------------------------
    def describe(self) -> dict:
        """JSON-able description for result files."""
        return {"config": self.config, "parameters": sum(p.numel() for p in self.parameters()),
                "gated_units": sum(g.features for g in self.gates()),
                "objective": OBJECTIVES[self.objective_name], "estimator": ESTIMATORS[self.estimator],
                "gating": ("encoder: sigmoid gate on fc1, fc2 pre-activations (before ReLU); decoder: sqrt "
                           "gate on fc2, fc3 pre-activations (before Tanh)"
                           + ("; and on fc1" if self._config["gate_first_decoder"] else ""))
                if self.is_mr else "none"}

    # -- beta handling ----------------------------------------------------------------------------------
    def _beta_vector(self, beta: torch.Tensor | float, batch: int, like: torch.Tensor) -> torch.Tensor:
        return beta_batch(beta, batch, like)

    def hyper_input(self, beta: torch.Tensor | float, batch: int, like: torch.Tensor) -> torch.Tensor | None:
        """Standardised hyper-input ``u`` ``(B,)`` (MR only; ``None`` for a plain beta-TCVAE)."""
        beta = self._beta_vector(beta, batch, like)
        return self.beta_range.standardize(beta) if self.is_mr else None

    def _check_x(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"TCVAE expects inputs of shape (B, {', '.join(map(str, self.data_shape))}), "
                             f"got {tuple(x.shape)}")

    # -- model API --------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, beta: torch.Tensor | float) -> EncoderOutput:
        """Posterior ``(mu, log_var)``, each ``(B, K)``, of images ``x`` ``(B, 1, 64, 64)``."""
        self._check_x(x)
        return self.encoder(x, self.hyper_input(beta, x.shape[0], x))

    def decode(self, z: torch.Tensor, beta: torch.Tensor | float) -> DecoderOutput:
        """Bernoulli logits ``(B, 1, 64, 64)`` of ``p(x|z)`` for ``z`` ``(B, K)``."""
        return self.decoder(z, self.hyper_input(beta, z.shape[0], z))

    def forward(self, x: torch.Tensor, beta: torch.Tensor | float, *,
                generator: torch.Generator | None = None) -> TCVAEOutput:
        """One reparameterised sample per example and the decomposition over the batch."""
        self._check_x(x)
        u = self.hyper_input(beta, x.shape[0], x)
        mu, log_var = self.encoder(x, u)
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        z = mu + torch.exp(0.5 * log_var) * eps
        logits = self.decoder(z, u).logits
        dec = tc_decomposition(z, mu, log_var, self.dataset_size, self.estimator) if x.shape[0] > 1 \
            else _single_example_terms(z, mu, log_var)
        return TCVAEOutput(mu, log_var, z, logits, gaussian_kl(mu, log_var), self.distortion(logits, x),
                           dec.mi, dec.tc, dec.dim_kl, dec.log_qz_x - dec.log_pz)

    def objective(self, out: TCVAEOutput, weight: torch.Tensor | float) -> torch.Tensor:
        """Per-example loss ``(B,)``: ``distortion + mi + weight * tc + dim_kl`` (``"tcvae"``) or
        ``distortion + weight * rate`` (``"elbo"``); ``weight`` = KL factor x beta, ``(B,)``."""
        if self.objective_name == "elbo":
            return out.distortion + weight * out.rate
        return out.distortion + out.mi + weight * out.tc + out.dim_kl

    def extra_metrics(self, out: TCVAEOutput) -> dict[str, torch.Tensor]:
        """Per-example ``mi``, ``tc``, ``dim_kl`` (nats) for the epoch logs."""
        return {"mi": out.mi, "tc": out.tc, "dim_kl": out.dim_kl}

    def loss(self, x: torch.Tensor, beta: torch.Tensor | float, *,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, TCVAEOutput]:
        """Mean objective at ``beta`` and the forward output."""
        out = self(x, beta, generator=generator)
        return self.objective(out, self._beta_vector(beta, x.shape[0], out.rate)).mean(), out

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor, beta: torch.Tensor | float) -> torch.Tensor:
        """``log p(x|z)`` ``(B,)`` nats (Bernoulli)."""
        if not self.distortion.is_nll:   # pragma: no cover - always bernoulli
            raise NotALikelihoodError("the distortion is not a likelihood")
        return self.distortion.log_likelihood(self.decode(z, beta).logits, x)


def _single_example_terms(z: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor) -> TCDecomposition:
    """Batch of one: no other posteriors to estimate q(z) with; everything goes to dim-KL."""
    log_qz_x = gaussian_log_density(z, mu, log_var).sum(dim=1)
    log_pz = (-0.5 * (LOG_2PI + z.pow(2))).sum(dim=1)
    zero = torch.zeros_like(log_qz_x)
    return TCDecomposition(zero, zero, log_qz_x - log_pz, log_qz_x, log_qz_x, log_qz_x, log_pz)


# ====================================================================================================
# construction
# ====================================================================================================
_MODEL_OPTIONS = ("estimator", "hidden", "dataset_size", "gate_first_decoder")


def build_model(*, mr: bool = True, latent_dim: int = 10, hidden: int = 1200,
                beta_range: BetaRange | dict | Sequence[float] = DEFAULT_BETA_RANGE, estimator: str = "mws",
                dataset_size: int = DEFAULT_DATASET_SIZE, objective: str = "tcvae", enc_gate: str = "sigmoid",
                dec_gate: str = "sqrt", hyper_hidden: Sequence[int] = (),
                image_shape: Sequence[int] = (1, 64, 64), gate_first_decoder: bool = False,
                family: str = "tcvae", arch: str = "mlp", distortion: str = "bernoulli") -> TCVAE:
    """Build a beta-TCVAE (``mr=False``) or MR-beta-TCVAE.

    ``estimator``: ``"mws"`` (the paper's code) or ``"mss"``; ``dataset_size``: N, the number of
    training images (737,280 for full dSprites); ``objective``: ``"tcvae"`` or ``"elbo"``.
    ``family``, ``arch`` and ``distortion`` are accepted so that ``build_model(**model.config)`` works.
    """
    if family != "tcvae" or arch != "mlp":
        raise ValueError(f"deep.models.tcvae builds family 'tcvae' / arch 'mlp', not {family!r} / {arch!r}")
    if distortion not in (None, "bernoulli"):
        raise ValueError(f"the dSprites MLPs use a Bernoulli likelihood; distortion {distortion!r} is not "
                         "supported (leave it unset or use 'bernoulli')")
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown TC estimator {estimator!r}; choose one of {sorted(ESTIMATORS)}")
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r} for the MLP family; choose one of {sorted(OBJECTIVES)}")
    for what, kind in (("enc_gate", enc_gate), ("dec_gate", dec_gate)):
        if kind not in GATE_KINDS:
            raise ValueError(f"unknown {what} kind {kind!r}; choose one of {sorted(GATE_KINDS)}")
    for what, val in (("latent_dim", latent_dim), ("hidden", hidden), ("dataset_size", dataset_size)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
            raise ValueError(f"{what} must be a positive integer, got {val!r}")
    if isinstance(beta_range, dict):
        beta_range = BetaRange(float(beta_range["a"]), float(beta_range["b"]))
    elif not isinstance(beta_range, BetaRange):
        a, b = beta_range  # type: ignore[misc]
        beta_range = BetaRange(float(a), float(b))
    return TCVAE(mr=bool(mr), latent_dim=int(latent_dim), hidden=int(hidden), beta_range=beta_range,
                 estimator=estimator, dataset_size=int(dataset_size), objective=objective, enc_gate=enc_gate,
                 dec_gate=dec_gate, hyper_hidden=tuple(int(h) for h in hyper_hidden),
                 image_shape=tuple(int(s) for s in image_shape), gate_first_decoder=bool(gate_first_decoder))


def build(config: Any, data: Any) -> TCVAE:
    """Family hook: the model a ``TrainConfig`` describes, for training on ``data``.

    Uses ``config.mr``, ``config.beta_a`` / ``config.beta_b``, ``config.latent_dim`` (default 10),
    ``config.enc_gate`` / ``dec_gate`` / ``hyper_hidden``, ``config.objective`` (``"tcvae"``;
    ``"elbo"`` trains a beta-VAE with the same MLPs) and ``config.model_options``
    (``estimator``, ``hidden``, ``dataset_size``, ``gate_first_decoder``).  N defaults to
    ``len(data)`` (or ``max_train_examples`` when smaller).
    """
    opts = dict(getattr(config, "model_options", None) or {})
    unknown = sorted(set(opts) - set(_MODEL_OPTIONS))
    if unknown:
        raise ValueError(f"unknown model option(s) {unknown} for the tcvae/mlp family; accepted: "
                         f"{list(_MODEL_OPTIONS)}")
    n = len(data)
    cap = getattr(config, "max_train_examples", None)
    if cap:
        n = min(n, int(cap))
    objective = getattr(config, "objective", None) or "tcvae"
    shape = tuple(getattr(data, "shape", (1, 64, 64)))
    return build_model(mr=bool(config.mr), latent_dim=int(getattr(config, "latent_dim", None) or 10),
                       hidden=int(opts.get("hidden", 1200)),
                       beta_range=BetaRange(float(config.beta_a), float(config.beta_b)),
                       estimator=str(opts.get("estimator", "mws")),
                       dataset_size=int(opts.get("dataset_size", n)), objective=objective,
                       enc_gate=getattr(config, "enc_gate", "sigmoid"), dec_gate=getattr(config, "dec_gate", "sqrt"),
                       hyper_hidden=tuple(getattr(config, "hyper_hidden", ()) or ()), image_shape=shape,
                       gate_first_decoder=bool(opts.get("gate_first_decoder", False)),
                       distortion=getattr(config, "distortion", None) or "bernoulli")


def rebuild(model_config: dict) -> TCVAE:
    """Family hook: the architecture ``model.config`` describes (weights not loaded)."""
    return build_model(**dict(model_config))


# ====================================================================================================
# evaluation
# ====================================================================================================
def _batch_generator(seed: int, batch_no: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + batch_no * 7919 + 17)


@torch.no_grad()
def _encode_rows(model: TCVAE, data: Any, rows: torch.Tensor, beta: float, batch_size: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    device = next(model.parameters()).device
    mus, lvs = [], []
    for s in range(0, rows.numel(), batch_size):
        x = data.get_batch(rows[s:s + batch_size], train=False).to(device)
        mu, lv = model.encode(x, torch.full((x.shape[0],), beta, device=device))
        mus.append(mu.float().cpu())
        lvs.append(lv.float().cpu())
    return torch.cat(mus), torch.cat(lvs)


@torch.no_grad()
def sweep(model: TCVAE, data: Any, betas: Sequence[float] | torch.Tensor, *, batch_size: int = 1000,
          iw_k: int = 0, seed: int = 0, max_examples: int | None = None, progress: bool = False,
          mig: bool = True, mig_grid: str = "auto", mig_samples: int = 10_000, mig_bins: int = 20,
          mig_reference: bool = True, mig_full_grid_sizes: Sequence[int] | None = None,
          mi_examples: int | None = 5000, report_estimator: str | None = None,
          tc_batch_size: int | None = 1000, n_images: int = 0, **unused: Any) -> dict:
    """Rate, distortion, the TC decomposition and MIG of ``model`` at each beta on ``data``.

    Per beta (nats per example, mean over the evaluated examples): ``rate`` (closed-form KL),
    ``distortion`` (one sample, the same noise for every beta), ``neg_elbo``, ``loss`` (the
    model's objective at that beta), ``mi``, ``tc``, ``dim_kl`` (``report_estimator``, default the
    model's, on random minibatches of ``max(batch_size, tc_batch_size)`` examples -- the
    estimators need large batches -- with N = ``len(data)``), ``kl_sample``, ``iw_nll`` (``iw_k > 0``),
    ``active_units``, ``mutual_information`` (on ``mi_examples`` examples; ``None``: 5,000, the
    estimator is quadratic in it), and the MIGs of :func:`deep.evaluate.disentangle.mig_metrics`
    (``None`` with a reason in ``mig_note`` where not computable): ``mig``, Chen et al.'s reference,
    on the full grid only (``mig_full_grid_sizes``, default dSprites' 3x6x40x32x32; skipped with
    ``mig_reference=False``), and ``mig_all_factors`` / ``mig_discrete`` on the grid that
    ``data.factor_grid(mig_grid)`` gives.  ``n_images > 0`` adds ``images`` (inputs,
    reconstructions from the posterior mean and prior samples with the same z at every beta) in
    the layout of :func:`deep.evaluate.rd_sweep`.

    The evaluated examples are a seed-``seed`` random permutation of the set (all of it, or the
    first ``max_examples`` of the permutation): dSprites files are ordered by factor, so the
    first N rows would all be squares, and the TC estimators need uniformly drawn minibatches.
    """
    from deep.evaluate import disentangle as D
    from deep.evaluate import metrics as M

    device = next(model.parameters()).device
    betas_t = M.evaluation_betas(betas)
    n_all = len(data)
    n = n_all if max_examples is None else max(2, min(n_all, int(max_examples)))
    perm = torch.randperm(n_all, generator=torch.Generator().manual_seed(seed))[:n]
    n_dataset = n_all
    est = report_estimator or model.estimator
    if tc_batch_size:
        batch_size = max(int(batch_size), int(tc_batch_size))
    if est not in ESTIMATORS:
        raise ValueError(f"unknown report_estimator {est!r}; choose one of {sorted(ESTIMATORS)}")
    n_store = min(n, 5000 if mi_examples is None else int(mi_examples))
    plan = None
    if mig:
        plan = D.plan_mig(data, mig_grid, reference=mig_reference,
                          **({"full_grid_sizes": mig_full_grid_sizes} if mig_full_grid_sizes else {}))
    keys = ("rate", "distortion", "loss", "mi", "tc", "dim_kl", "kl_sample", "iw_nll")
    out: dict[str, Any] = {k: [] for k in keys}
    out.update({"active_units": [], "mutual_information": [], **{k: [] for k in D.MIG_RESULT_KEYS}})
    n_images = max(0, min(int(n_images or 0), n))
    img_x = data.get_batch(perm[:n_images], train=False).to(device) if n_images else None
    prior_z = (torch.randn((n_images, model.latent_dim), generator=_batch_generator(seed, 7)).to(device)
               if n_images else None)
    recon_images: list = []
    prior_images: list = []
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=betas_t.numel(), desc="tcvae sweep", leave=False)
    try:
        for beta in betas_t.tolist():
            sums = torch.zeros(len(keys), dtype=torch.float64)
            mus, lvs, zs = [], [], []
            for bi, s in enumerate(range(0, n, batch_size)):
                idx = perm[s:s + batch_size]
                x = data.get_batch(idx, train=False).to(device)
                bvec = torch.full((x.shape[0],), beta, device=device)
                o = _forward_seeded(model, x, bvec, seed, bi, n_dataset, est)
                loss = model.objective(o, bvec)
                iw = torch.zeros(()) if not iw_k else M.iw_nll(
                    x, lambda xx: model.encode(xx, bvec), lambda xr, zz: model.log_likelihood(
                        xr, zz, torch.full((xr.shape[0],), beta, device=device)),
                    k=int(iw_k), chunk=max(1, min(int(iw_k), 4096 // max(1, x.shape[0]))),
                    generator=_batch_generator(seed, bi + 1_000_000)).sum()
                sums += torch.stack([o.rate.double().sum().cpu(), o.distortion.double().sum().cpu(),
                                     loss.double().sum().cpu(), o.mi.double().sum().cpu(),
                                     o.tc.double().sum().cpu(), o.dim_kl.double().sum().cpu(),
                                     o.kl_sample.double().sum().cpu(), torch.as_tensor(iw).double().cpu()])
                if s < n_store:
                    m = min(n_store, s + x.shape[0]) - s
                    mus.append(o.mu[:m].float().cpu())
                    lvs.append(o.log_var[:m].float().cpu())
                    zs.append(o.z[:m].float().cpu())
            for k, v in zip(keys, (sums / n).tolist()):
                out[k].append(v)
            mu_s, lv_s, z_s = torch.cat(mus), torch.cat(lvs), torch.cat(zs)
            out["active_units"].append(M.active_units(mu_s).count)
            out["mutual_information"].append(M.mutual_information(mu_s, lv_s, z_s))
            if n_images:
                bimg = torch.full((n_images,), beta, device=device)
                recon_images.append(torch.sigmoid(model.decode(model.encode(img_x, bimg).mu, bimg).logits).cpu())
                prior_images.append(torch.sigmoid(model.decode(prior_z, bimg).logits).cpu())
            if plan is not None and plan.computes_any:
                for k, v in D.mig_metrics(plan, lambda rows: _encode_rows(model, data, rows, beta, batch_size),
                                          n_samples=mig_samples, n_bins=mig_bins, seed=seed + 1).items():
                    out[k].append(v)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    beta_list = betas_t.tolist()
    if not iw_k:
        out["iw_nll"] = None
    for k in D.MIG_RESULT_KEYS:
        if not out[k] or all(v is None for v in out[k]):
            out[k] = None
    out.update({
        "beta": beta_list,
        "log_beta": [math.log(b) for b in beta_list],
        "neg_elbo": [r + d for r, d in zip(out["rate"], out["distortion"])],
        "latent_dim": model.latent_dim,
        "n_examples": n,
        "iw_k": int(iw_k),
        "batch_size": int(batch_size),
        "mig_grid": plan.grid[3] if plan is not None and plan.grid is not None else None,
        "mig_reference_grid": (plan.reference_grid[3] if plan is not None and plan.reference_grid is not None
                               else None),
        "mig_factors": (tuple(plan.reference_factor_names) if plan is not None and plan.reference_grid is not None
                        else None),   # a tuple: per-run, not a per-beta array
        "mig_note": (("; ".join(n for n in (plan.reference_note, plan.grid_note) if n) or None)
                     if plan is not None else None),
        "factor_names": tuple(getattr(data, "factor_names", ())),
        "time_s": time.perf_counter() - t0,
        "estimators": {
            "units": "nats per example (sum over latents / pixels, mean over the evaluated examples)",
            "rate": "closed-form KL(q(z|x) || N(0, I))",
            "distortion": "Bernoulli NLL, one sample z ~ q(z|x) per example, the same noise for every beta",
            "neg_elbo": "rate + distortion",
            "loss": f"the training objective at beta: {OBJECTIVES[model.objective_name]}",
            "mi": f"index-code MI E[log q(z|x) - log q(z)], {ESTIMATORS[est]}, random minibatches of "
                  f"{batch_size}, N = {n_dataset}",
            "tc": "total correlation E[log q(z) - sum_j log q(z_j)], same estimator",
            "dim_kl": "dimension-wise KL E[sum_j log q(z_j) - log p(z)], same estimator",
            "kl_sample": "one-sample KL estimate log q(z|x) - log p(z) = mi + tc + dim_kl",
            "iw_nll": (f"importance-weighted NLL, k={iw_k}" if iw_k else "disabled (iw_k=0)"),
            "active_units": "Var over examples of E_q[z_u] >= 0.01",
            "mutual_information": f"I(x;z) against the aggregate posterior of {n_store} examples "
                                  "(deep.evaluate.metrics.mutual_information)",
            **(plan.describe(mig_samples, mig_bins) if plan is not None else {}),
        },
        "protocol": data.meta() if hasattr(data, "meta") else None,
    })
    if n_images:
        out["images"] = {"inputs": img_x.cpu(), "recon": recon_images, "prior": prior_images}
    return out


def _forward_seeded(model: TCVAE, x: torch.Tensor, beta: torch.Tensor, seed: int, bi: int,
                    dataset_size: int, estimator: str) -> TCVAEOutput:
    """Forward pass with noise drawn on the CPU from a (seed, batch)-seeded generator (the same
    noise for every beta and device) and the decomposition with N = ``dataset_size``."""
    u = model.hyper_input(beta, x.shape[0], x)
    mu, log_var = model.encoder(x, u)
    eps = torch.randn(mu.shape, generator=_batch_generator(seed, bi)).to(mu.device, mu.dtype)
    z = mu + torch.exp(0.5 * log_var) * eps
    logits = model.decoder(z, u).logits
    dec = tc_decomposition(z, mu, log_var, max(int(dataset_size), x.shape[0]), estimator) \
        if x.shape[0] > 1 else _single_example_terms(z, mu, log_var)
    return TCVAEOutput(mu, log_var, z, logits, gaussian_kl(mu, log_var), model.distortion(logits, x),
                       dec.mi, dec.tc, dec.dim_kl, dec.log_qz_x - dec.log_pz)
