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
beta-TCVAE at that beta.  Evaluation (:func:`deep.evaluate.rd_sweep`) runs one beta at a time.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from linvae.conditioning import check_gate_kinds, BetaRange, Gate, beta_batch

from .base import DecoderOutput, EncoderOutput, GaussianLatentVAE
from .objectives import LOG_2PI, get_distortion

__all__ = [
    "ESTIMATORS", "OBJECTIVES", "DEFAULT_BETA_RANGE", "TCDecomposition", "TCVAEOutput",
    "gaussian_log_density", "mws_log_weights", "mss_log_weights", "tc_decomposition",
    "MLPEncoder", "MLPDecoder", "TCVAE", "build_model", "build", "rebuild",
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


class TCVAE(GaussianLatentVAE):
    """beta-TCVAE (``mr=False``) or MR-beta-TCVAE (``mr=True``) with the MLPs of Chen et al.

    ``model(x, beta)`` -> :class:`TCVAEOutput`; ``beta`` a float or ``(B,)`` tensor (ignored by a
    plain beta-TCVAE, where the trainer's weight carries it).  Build with :func:`build_model`;
    ``build_model(**model.config)`` rebuilds it.

    Evaluation options (``--eval-option``): ``tc_batch_size`` (default 1,000: the TC estimators need large
    batches, so evaluation batches hold at least that many examples) and ``report_estimator`` (``mws`` /
    ``mss``; default the model's). The evaluation's MI, TC and dim-KL use N = the evaluated split's size.
    """

    objectives: ClassVar[tuple[str, ...]] = ("elbo", "tcvae")
    #: the TC estimate mixes the examples of a batch: never several betas in one pass
    beta_batching: ClassVar[bool] = False
    #: I(x; z) is quadratic in the examples: 5,000 by default
    evaluation_defaults: ClassVar[dict] = {"mi_examples": 5000}

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
        self._eval_options = {"tc_batch_size": 1000, "report_estimator": None}

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

    def conventions(self) -> dict[str, str]:
        return {**super().conventions(), "objective": OBJECTIVES[self.objective_name]}

    def forward(self, x: torch.Tensor, beta: torch.Tensor | float, *, noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> TCVAEOutput:
        """One reparameterised sample per example and the decomposition over the batch (N = the model's
        ``dataset_size``)."""
        out = super().forward(x, beta, noise=noise, generator=generator)
        return _with_terms(out, self.dataset_size, self.estimator)

    def objective(self, out: TCVAEOutput, weight: torch.Tensor | float) -> torch.Tensor:
        """Per-example loss ``(B,)``: ``distortion + mi + weight * tc + dim_kl`` (``"tcvae"``) or
        ``distortion + weight * rate`` (``"elbo"``); ``weight`` = KL factor x beta, ``(B,)``."""
        if self.objective_name == "elbo":
            return out.distortion + weight * out.rate
        return out.distortion + out.mi + weight * out.tc + out.dim_kl

    def train_metrics(self, out: TCVAEOutput) -> dict[str, torch.Tensor]:
        """Per-example ``mi``, ``tc``, ``dim_kl`` (nats) for the epoch logs."""
        return {"mi": out.mi, "tc": out.tc, "dim_kl": out.dim_kl}

    def loss(self, x: torch.Tensor, beta: torch.Tensor | float, *,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, TCVAEOutput]:
        """Mean objective at ``beta`` and the forward output."""
        out = self(x, beta, generator=generator)
        return self.objective(out, beta_batch(beta, x.shape[0], out.rate)).mean(), out

    # -- evaluation hooks ---------------------------------------------------------------------------------
    def set_evaluation_options(self, *, tc_batch_size: int | None = 1000, report_estimator: str | None = None,
                               **unknown: Any) -> None:
        if unknown:
            super().set_evaluation_options(**unknown)
        if report_estimator is not None and report_estimator not in ESTIMATORS:
            raise ValueError(f"unknown report_estimator {report_estimator!r}; choose one of {sorted(ESTIMATORS)}")
        self._eval_options = {"tc_batch_size": tc_batch_size, "report_estimator": report_estimator}

    def evaluation_batch_size(self, requested: int) -> int:
        tc = self._eval_options.get("tc_batch_size")
        return max(int(requested), int(tc)) if tc else int(requested)

    def eval_terms(self, out: TCVAEOutput, x: torch.Tensor, beta: torch.Tensor, *,
                   dataset_size: int) -> dict[str, torch.Tensor]:
        """MI, TC, dim-KL and the one-sample KL with N = the evaluated split's size (estimator: the
        ``report_estimator`` option, else the model's), and the objective at ``beta`` from them."""
        est = self._eval_options.get("report_estimator") or self.estimator
        terms = _with_terms(out, max(int(dataset_size), out.z.shape[0]), est)
        weight = beta_batch(beta, out.rate.shape[0], out.rate)
        return {"loss": self.objective(terms, weight), "mi": terms.mi, "tc": terms.tc, "dim_kl": terms.dim_kl,
                "kl_sample": terms.kl_sample}

    def summarize(self, result: dict, data: Any) -> dict:
        est = self._eval_options.get("report_estimator") or self.estimator
        n_data = len(data)
        return {"estimators": {
            "loss": f"the training objective at beta: {OBJECTIVES[self.objective_name]}",
            "mi": f"index-code MI E[log q(z|x) - log q(z)], {ESTIMATORS[est]}, minibatches of "
                  f"{result.get('batch_size')} in a random order, N = {n_data}",
            "tc": "total correlation E[log q(z) - sum_j log q(z_j)], same estimator",
            "dim_kl": "dimension-wise KL E[sum_j log q(z_j) - log p(z)], same estimator",
            "kl_sample": "one-sample KL estimate log q(z|x) - log p(z) = mi + tc + dim_kl",
        }}


def _with_terms(out: Any, dataset_size: int, estimator: str) -> TCVAEOutput:
    """``out`` (a forward output with ``mu``, ``log_var``, ``z``) with the decomposition over its batch."""
    z, mu, log_var = out.z, out.mu, out.log_var
    dec = tc_decomposition(z, mu, log_var, int(dataset_size), estimator) if z.shape[0] > 1 \
        else _single_example_terms(z, mu, log_var)
    return TCVAEOutput(out.mu, out.log_var, out.z, out.logits, out.rate, out.distortion,
                       dec.mi, dec.tc, dec.dim_kl, dec.log_qz_x - dec.log_pz)


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
    check_gate_kinds(enc_gate=enc_gate, dec_gate=dec_gate)
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
