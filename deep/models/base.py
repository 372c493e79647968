"""The contract between a model family and the trainer / evaluator: :class:`MultiRateVAE`.

The trainer (:func:`deep.train.train`) and the evaluator (:func:`deep.evaluate.evaluate_run`,
:func:`deep.evaluate.rd_sweep`) use a model only through the names this module defines. A family is a
subclass of :class:`MultiRateVAE` plus two functions registered with
:func:`deep.models.register_family` (build it from a :class:`deep.train.TrainConfig`, rebuild it from its
``config``). Everything else has a default.

Writing your own family
-----------------------
A beta-conditioned VAE needs a forward pass ``model(x, beta)`` that returns the per-example ``rate`` and
``distortion`` (nats). Gate the layers you want to depend on beta with the multi-rate layers of the
conditioning core and feed them ``u = self.hyper_input(beta, batch, like)``::

    import torch
    from torch import nn
    from linvae.conditioning import BetaRange, GatedConv2d, GatedLinear
    from deep.models import MultiRateVAE, VAEOutput, gaussian_kl, get_distortion

    class MyVAE(MultiRateVAE):
        def __init__(self, mr=True, latent_dim=16, beta_range=(0.01, 10.0)):
            super().__init__()
            self.is_mr, self.latent_dim = mr, latent_dim
            self.beta_range = BetaRange(*beta_range)
            self._config = {"mr": mr, "latent_dim": latent_dim, "beta_range": list(beta_range)}
            enc, dec = ("sigmoid", "sqrt") if mr else (None, None)      # None: an ungated beta-VAE layer
            self.conv = GatedConv2d(1, 32, 4, stride=2, padding=1, gate=enc)
            self.head = nn.Linear(32 * 14 * 14, 2 * latent_dim)
            self.fc = GatedLinear(latent_dim, 784, gate=dec)
            self.distortion_fn = get_distortion("bernoulli")

        def forward(self, x, beta, *, noise=None):
            u = self.hyper_input(beta, x.shape[0], x)      # standardised log beta; None for a beta-VAE
            h = torch.relu(self.conv(x, u)).flatten(1)
            mu, log_var = self.head(h).chunk(2, dim=1)
            noise = torch.randn_like(mu) if noise is None else noise
            z = mu + torch.exp(0.5 * log_var) * noise
            logits = self.fc(z, u).reshape(x.shape)
            return VAEOutput(mu, log_var, z, logits, gaussian_kl(mu, log_var), self.distortion_fn(logits, x))

``model(x, beta)`` accepts a ``(B,)`` tensor of betas (one per example) or one number for the whole batch
(the gated layers then fold their gates into their weights). The trainer's loss is
``mean(distortion + beta * rate)`` unless the family overrides :meth:`MultiRateVAE.objective`.
``docs/examples/own_vae.py`` trains such a model with the project's trainer.

The optional hooks, each with a default (override only what your family needs):

========================  ==================================================================================
hook                      used by / default
========================  ==================================================================================
``objectives``            objectives the family trains (``TrainConfig.objective``); default ``("elbo",)``
``objective``             per-example training loss ``(B,)``; default ``distortion + weight * rate``
``train_metrics``         extra per-epoch means for ``metrics.jsonl``; default none
``parameter_groups``      optimiser groups (gates at ``lr * hyper_lr_mult``); default
                          :func:`linvae.conditioning.gate_parameter_groups`
``project_gates_``        after each optimiser step (monotone gates); from :class:`~linvae.conditioning.GatedModel`
``conventions``           units and definitions written into ``config.json``
``sample_noise``          the evaluator's seeded noise for one batch; default ``N(0, I)`` ``(B, latent_dim)``
``beta_batching``         whether one pass may hold several betas (rows independent); default True
``posterior``             ``(mu, log_var, z)`` for active units and mutual information; default from the output
``eval_terms``            per-example extras averaged per beta (e.g. per-group KL, TC terms); default none
``evaluation_batch_size``   examples per evaluation batch (estimators that need large batches); default as asked
``iw_nll``                importance-weighted NLL ``(B,)``; default from ``encode`` / ``log_likelihood``
``decoder_distortion``    ``d(x, z)`` of the decoder for AIS rate-distortion curves; from ``decode`` (one latent)
``encode``                ``(mu, log_var)`` of ``q(z|x)`` (MIG, IW-NLL); optional
``log_likelihood``        ``log p(x|z)`` ``(B,)`` (IW-NLL); optional
``reconstruct``/``sample``  mean images for image grids and FID; optional
``summarize``             derived per-beta arrays (bits/dim, perplexity) and estimator notes; default none
``set_evaluation_options``  family options of an evaluation (``--eval-option``); default: none accepted
``check_data``            refuse data that does not fit the model (another vocabulary); default: no check
========================  ==================================================================================
"""
from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from linvae.conditioning import BetaRange, GatedModel, gate_parameter_groups

from .objectives import DISTORTION_TEXT, NotALikelihoodError, gaussian_kl, iw_nll

__all__ = ["MultiRateVAE", "GaussianLatentVAE", "VAEOutput", "EncoderOutput", "DecoderOutput", "EvaluationOptionError",
           "RATE_DEFINITION", "repeat_rows", "batch_size_of"]

#: The rate of every single-latent family (written into config.json and result files).
RATE_DEFINITION = ("nats per example: analytic KL(q(z|x) || N(0, I)) summed over latent dims, mean over "
                   "examples")


class EncoderOutput(NamedTuple):
    """Diagonal Gaussian posterior ``q(z|x)``: ``mu``, ``log_var`` of shape ``(B, K)``."""

    mu: torch.Tensor
    log_var: torch.Tensor


class DecoderOutput(NamedTuple):
    """Logits of ``p(x|z)`` (shape of x); the mean image is ``sigmoid(logits)``."""

    logits: torch.Tensor

    @property
    def mean(self) -> torch.Tensor:
        """Mean image in [0, 1] (Bernoulli probabilities or Gaussian mean)."""
        return torch.sigmoid(self.logits)


class VAEOutput(NamedTuple):
    """One-sample forward pass: posterior, the sample z, the decoder logits, and per-example ``rate`` and
    ``distortion`` ``(B,)`` in nats (distortion in the units of the model's distortion).

    Families with other outputs return their own named tuple; the contract needs only ``rate`` and
    ``distortion`` (``(B,)``)."""

    mu: torch.Tensor
    log_var: torch.Tensor
    z: torch.Tensor
    logits: torch.Tensor
    rate: torch.Tensor
    distortion: torch.Tensor


class EvaluationOptionError(ValueError):
    """An evaluation option (``--eval-option``) that neither the evaluator nor the family accepts."""


class MultiRateVAE(GatedModel, nn.Module):
    """Base class of every beta-VAE / MR-VAE the trainer and the evaluator run (see the module docstring).

    Attributes a family sets in ``__init__``: ``is_mr`` (bool), ``beta_range``
    (:class:`linvae.conditioning.BetaRange`, the trained range of an MR-VAE), ``latent_dim`` (int) and
    ``_config`` (JSON-able keyword arguments of its rebuild function, exposed as ``config``).
    """

    #: Objectives (``TrainConfig.objective``) this family can train; the trainer refuses any other.
    objectives: ClassVar[tuple[str, ...]] = ("elbo",)
    #: Defaults of evaluation options for this family (e.g. ``{"mi_examples": 5000}``).
    evaluation_defaults: ClassVar[dict] = {}
    #: Whether one forward pass may hold several betas (its rows are independent given beta); False when
    #: a per-batch estimator mixes examples (beta-TCVAE's total correlation).
    beta_batching: ClassVar[bool] = True

    is_mr: bool = False
    beta_range: BetaRange = BetaRange()
    latent_dim: int = 0

    # -- the one required method -------------------------------------------------------------------------
    def forward(self, x: Any, beta: torch.Tensor | float, *, noise: Any = None) -> Any:
        """One reparameterised sample per example at ``beta`` (``(B,)`` or one number).

        Returns an output with ``rate`` and ``distortion`` ``(B,)`` (nats per example). ``noise``: the
        standard-normal draws of the sample, as :meth:`sample_noise` returns them (``None``: drawn here).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement forward(x, beta, *, noise=None)")

    # -- training hooks ----------------------------------------------------------------------------------
    def objective(self, out: Any, weight: torch.Tensor) -> torch.Tensor:
        """Per-example training loss ``(B,)``; ``weight`` ``(B,)`` is the KL-schedule factor times beta."""
        return out.distortion.float() + weight * out.rate.float()

    def train_metrics(self, out: Any) -> dict[str, torch.Tensor]:
        """Extra per-example ``(B,)`` (or per-batch scalar) quantities whose epoch means go to metrics.jsonl."""
        return {}

    def parameter_groups(self, lr: float, hyper_lr_mult: float) -> list[dict]:
        """Optimiser parameter groups: base weights at ``lr``, gate hyper-networks at ``lr * hyper_lr_mult``."""
        return gate_parameter_groups(self, lr, hyper_lr_mult)

    def conventions(self) -> dict[str, str]:
        """Units and definitions written into the run's config.json (``rate``, ``distortion``,
        ``distortion_definition``, ``objective``)."""
        name = self._config.get("distortion") if hasattr(self, "_config") else None
        return {"rate": RATE_DEFINITION, "distortion": name,
                "distortion_definition": DISTORTION_TEXT.get(name or "", "see deep.models.objectives"),
                "objective": "mean over examples of distortion + beta * rate"}

    # -- evaluation hooks --------------------------------------------------------------------------------
    def sample_noise(self, n: int, generator: torch.Generator) -> Any:
        """Standard-normal noise of ``n`` samples, drawn on the CPU from ``generator`` (so the same seed gives
        the same numbers on every device), on the model's device: ``(n, latent_dim)`` by default."""
        return torch.randn((n, self.latent_dim), generator=generator).to(self._device())

    def posterior(self, out: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """``(mu, log_var, z)`` ``(B, K)`` of a forward output, for active units and I(x; z); ``None`` when
        the family has no single Gaussian latent (the evaluator then skips those metrics)."""
        if all(hasattr(out, k) for k in ("mu", "log_var", "z")):
            return out.mu, out.log_var, out.z
        return None

    def eval_terms(self, out: Any, x: Any, beta: torch.Tensor, *, dataset_size: int) -> dict[str, torch.Tensor]:
        """Per-example quantities ``(B, ...)`` the evaluator averages per beta (written under their names), for
        the output ``out`` of ``model(x, beta)``. ``dataset_size``: examples in the evaluated split. A
        ``"loss"`` term replaces the default ``distortion + beta * rate``."""
        return {}

    def evaluation_batch_size(self, requested: int) -> int:
        """Examples per evaluation batch given the requested size (a family whose estimators need large
        batches may ask for more)."""
        return requested

    def check_data(self, data: Any) -> None:
        """Raise a clear error when ``data`` does not fit this model (e.g. another vocabulary); the evaluator
        calls it before a sweep. Default: no check."""

    def set_evaluation_options(self, **options: Any) -> None:
        """Family options of an evaluation (``--eval-option KEY=VALUE``); the default accepts none."""
        if options:
            raise EvaluationOptionError(f"{type(self).__name__} takes no evaluation options; got {sorted(options)}")

    def iw_nll(self, x: Any, beta: torch.Tensor, k: int, *, generator: torch.Generator | None = None,
               max_rows: int = 4096) -> torch.Tensor:
        """Importance-weighted NLL ``-log (1/k) sum_i p(x, z_i) / q(z_i|x)`` ``(B,)`` (float64 nats) at one beta
        (``beta``: a 1-element tensor), from :meth:`encode` and :meth:`log_likelihood` (``k`` samples, at most
        ``max_rows`` decoder rows at a time). Raises :class:`NotALikelihoodError` when the distortion is not a
        true negative log-likelihood."""
        dist = getattr(self, "distortion", None)
        if dist is not None and not getattr(dist, "is_nll", True):
            raise NotALikelihoodError(f"the distortion {getattr(dist, 'name', dist)!r} is not a true negative "
                                      "log-likelihood")
        b = x.shape[0]
        one = beta.reshape(1)
        chunk = max(1, min(k, max_rows // max(1, b)))
        return iw_nll(x, lambda xx: self.encode(xx, one), lambda xr, z: self.log_likelihood(xr, z, one),
                               k=k, chunk=chunk, generator=generator)

    def decoder_distortion(self, x: Any, z: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """``d(x, z)`` ``(B,)`` of the decoder at ``beta`` for latents ``z`` ``(B, latent_dim)`` under the prior
        ``N(0, I)``, differentiable in ``z``: what annealed importance sampling of the decoder's
        rate-distortion curve needs (:mod:`deep.evaluate.ais`). Families without one raise
        ``NotImplementedError`` saying why."""
        raise NotImplementedError(f"{type(self).__name__} has no decoder_distortion(x, z, beta) hook: AIS "
                                  "rate-distortion curves need a decoder scored on latents z ~ N(0, I)")

    def has_likelihood(self) -> bool:
        """Whether :meth:`iw_nll` is defined (the distortion is a true negative log-likelihood)."""
        dist = getattr(self, "distortion", None)
        return hasattr(self, "log_likelihood") and bool(getattr(dist, "is_nll", True))

    def summarize(self, result: dict, data: Any) -> dict:
        """Derived per-beta arrays and estimator notes added to an evaluation ``result`` (e.g. bits per dim,
        perplexity); ``result`` holds the evaluator's arrays. Default: nothing."""
        return {}

    # -- helpers -----------------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")


class GaussianLatentVAE(MultiRateVAE):
    """A :class:`MultiRateVAE` with one diagonal Gaussian latent ``z`` ``(B, latent_dim)`` and a decoder that
    returns the logits of ``p(x|z)`` scored by ``self.distortion`` (a :class:`deep.models.objectives.Distortion`).

    Write ``encode(x, beta) -> EncoderOutput(mu, log_var)`` and ``decode(z, beta) -> DecoderOutput(logits)``
    (or give the model ``encoder`` and ``decoder`` modules called as ``encoder(x, u)`` / ``decoder(z, u)`` with
    the hyper-input ``u``); ``forward``, ``log_likelihood``, ``reconstruct`` and ``sample`` follow from them.
    ``data_shape`` (one example's shape), when set, is checked by :meth:`encode`."""

    distortion: Any
    data_shape: tuple[int, ...] | None = None

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` when ``x`` is not a batch of ``data_shape`` examples."""
        if self.data_shape is not None and tuple(x.shape[1:]) != tuple(self.data_shape):
            raise ValueError(f"{type(self).__name__} expects inputs of shape "
                             f"(B, {', '.join(map(str, self.data_shape))}), got {tuple(x.shape)}")

    def encode(self, x: torch.Tensor, beta: torch.Tensor | float) -> EncoderOutput:
        """Posterior ``q(z|x)`` at ``beta``: ``mu``, ``log_var`` ``(B, latent_dim)`` (default:
        ``self.encoder(x, u)``)."""
        if not hasattr(self, "encoder"):
            raise NotImplementedError(f"{type(self).__name__} must implement encode(x, beta) or have an encoder")
        self.check_input(x)
        return self.encoder(x, self.hyper_input(beta, x.shape[0], x))

    def decode(self, z: torch.Tensor, beta: torch.Tensor | float) -> DecoderOutput:
        """Logits of ``p(x|z)`` at ``beta`` (the shape of x; default: ``self.decoder(z, u)``)."""
        if not hasattr(self, "decoder"):
            raise NotImplementedError(f"{type(self).__name__} must implement decode(z, beta) or have a decoder")
        return self.decoder(z, self.hyper_input(beta, z.shape[0], z))

    def forward(self, x: torch.Tensor, beta: torch.Tensor | float, *, noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> VAEOutput:
        """One reparameterised sample ``z = mu + sigma * noise`` per example (``noise`` ``(B, K)``; drawn from
        ``generator`` when ``None``); ``rate`` and ``distortion`` ``(B,)`` nats."""
        mu, log_var = self.encode(x, beta)
        if noise is None:
            noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        z = mu + torch.exp(0.5 * log_var) * noise
        logits = self.decode(z, beta).logits
        return VAEOutput(mu, log_var, z, logits, gaussian_kl(mu, log_var), self.distortion(logits, x))

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor, beta: torch.Tensor | float) -> torch.Tensor:
        """``log p(x|z)`` ``(B,)`` nats; raises :class:`NotALikelihoodError` unless the distortion is a true
        negative log-likelihood (``bernoulli`` or ``gaussian_nll``)."""
        if not self.distortion.is_nll:
            raise NotALikelihoodError(
                f"this model's distortion {self.distortion.name!r} is not a normalised negative "
                "log-likelihood, so log p(x|z) and IW-NLL are undefined; build the model with "
                "distortion='bernoulli' or 'gaussian_nll'")
        return self.distortion.log_likelihood(self.decode(z, beta).logits, x)

    def decoder_distortion(self, x: torch.Tensor, z: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        return self.distortion(self.decode(z, beta).logits, x)

    def reconstruct(self, x: torch.Tensor, beta: torch.Tensor | float) -> torch.Tensor:
        """Mean image of ``p(x|z)`` at the posterior mean ``z = mu`` (in [0, 1])."""
        return self.decode(self.encode(x, beta).mu, beta).mean

    def sample(self, n: int, beta: torch.Tensor | float, *, noise: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean images of ``n`` prior draws ``z = noise`` (``(n, K)``; drawn from ``generator`` when ``None``)."""
        if noise is None:
            noise = torch.randn((n, self.latent_dim), generator=generator).to(self._device())
        return self.decode(noise, beta).mean


def repeat_rows(x: Any, k: int) -> Any:
    """``x`` (a tensor ``(B, ...)``, a list of such tensors, or a batch object with ``select``) repeated ``k``
    times along the batch, beta-major (rows ``j*B .. j*B + B - 1`` are copy ``j``)."""
    if k == 1:
        return x
    if torch.is_tensor(x):
        return x.repeat(k, *([1] * (x.dim() - 1)))
    if isinstance(x, (list, tuple)):
        return type(x)(repeat_rows(t, k) for t in x)
    n = len(x)
    return x.select(torch.arange(n).repeat(k))


def batch_size_of(x: Any) -> int:
    """Examples in a batch: a tensor's first dimension, or ``len()`` of a batch object."""
    return int(x.shape[0]) if hasattr(x, "shape") else len(x)
