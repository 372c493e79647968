"""Building blocks of the hierarchical NVAE (Vahdat & Kautz 2020) with optional MR-VAE gates.

Everything here is written from the NVAE paper's description:

* :class:`GatedConv` / :class:`GatedLinear`: a convolution (linear layer) whose output is multiplied per
  channel by a :class:`linvae.conditioning.Gate` of the hyper-input ``u`` in an MR-NVAE (paper-notes 7.12:
  every convolution and the SE blocks are gated).  A conv also keeps the persistent vectors of the power
  iteration that estimates the largest singular value of its weight (spectral regularisation, NVAE 3.2).
* :class:`GateContext`: the gate factors of ALL gates of a model for one batch of hyper-inputs, computed
  with one fused affine map and one gate function per gate kind (identical values to ``Gate.factors``; it
  keeps the MR overhead to the one extra multiply per layer that the paper counts).
* :class:`SqueezeExcite`, :class:`EncoderCell` (BN-Swish-conv3x3-BN-Swish-conv3x3-SE, residual) and
  :class:`DecoderCell` (BN-conv1x1 expand-BN-Swish-depthwise 5x5-BN-Swish-conv1x1-BN-SE, residual),
  :class:`EncCombiner` (``f + conv1x1(h)``) and :class:`DecCombiner` (``conv1x1([h, z])``).
* Residual normal distributions: :func:`residual_normal_kl` (analytic, per group) and
  :func:`normal_log_density`.
* Likelihoods: :class:`BernoulliLikelihood` and :class:`LogisticMixtureLikelihood` (discretised logistic
  mixture, 256 bins, channels coupled autoregressively within a pixel as in PixelCNN++).

Shapes: images ``(B, C, H, W)``; gate factors ``(B, C)``; hyper-input ``u`` ``(B,)``.  All log densities and
negative log-likelihoods are in nats.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from linvae.conditioning import Gate, GateContext, fold_scale, scaled_conv, scaled_linear

from deep.models.objectives import bernoulli_distortion

__all__ = [
    "SOFT_CLAMP",
    "soft_clamp",
    "GateContext",
    "GatedConv",
    "GatedLinear",
    "SqueezeExcite",
    "EncoderCell",
    "DecoderCell",
    "EncCombiner",
    "DecCombiner",
    "residual_normal_kl",
    "normal_log_density",
    "BernoulliLikelihood",
    "LogisticMixtureLikelihood",
    "logistic_mixture_log_prob",
    "logistic_mixture_channels",
]

#: Bound of the soft clamp ``b * tanh(x / b)`` applied to means and log-scales of every latent normal.
SOFT_CLAMP = 5.0
LOG_2PI = math.log(2.0 * math.pi)


def soft_clamp(x: torch.Tensor, bound: float = SOFT_CLAMP) -> torch.Tensor:
    """``bound * tanh(x / bound)``: the identity near 0, smoothly bounded to ``(-bound, bound)``."""
    return bound * torch.tanh(x / bound)


# ----------------------------------------------------------------------------------------------------
# gates
# ----------------------------------------------------------------------------------------------------
def _maybe_gate(gate: Gate | None, h: torch.Tensor, ctx: GateContext | None) -> torch.Tensor:
    if gate is None:
        return h
    if ctx is None:
        raise ValueError("an MR layer needs the hyper-input: pass a GateContext")
    return ctx.apply(gate, h)


def _unit(v: torch.Tensor) -> torch.Tensor:
    """``v / |v|`` (a meta tensor, which has no values, is returned as is: normalising it costs seconds)."""
    return v if v.device.type == "meta" else v / v.norm().clamp_min(1e-12)


class GatedConv(nn.Module):
    """``Conv2d`` ('same' padding) followed, in an MR model, by a per-channel gate of ``u``.

    Also holds the persistent power-iteration vectors ``sn_u`` ``(C_out,)`` and ``sn_v``
    ``(C_in / groups * k * k,)`` used by :meth:`spectral_norm` (largest singular value of the weight
    reshaped to ``(C_out, C_in / groups * k * k)``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, *,
                 groups: int = 1, bias: bool = True, gate_kind: str | None = None,
                 hyper_hidden: Sequence[int] = ()) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, groups=groups,
                              bias=bias)
        self.gate = Gate(out_channels, gate_kind, hidden=tuple(hyper_hidden)) if gate_kind else None
        fan = (in_channels // groups) * kernel * kernel
        self.register_buffer("sn_u", _unit(torch.randn(out_channels)))
        self.register_buffer("sn_v", _unit(torch.randn(fan)))

    def forward(self, x: torch.Tensor, ctx: GateContext | None) -> torch.Tensor:
        g = fold_scale(self.gate, ctx)
        if g is not None:
            return scaled_conv(self.conv, x, g)
        return _maybe_gate(self.gate, self.conv(x), ctx)

    def forward_unscaled(self, x: torch.Tensor, ctx: GateContext | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(conv(x), factors)`` with the multiplicative gate factors ``(B, C)`` NOT yet applied, so that a
        caller can fold them into a later per-channel scale; ``factors`` is ``None`` when there is nothing left
        to apply (no gate, a FiLM gate, which is applied here, or one beta for the batch: folded here)."""
        g = fold_scale(self.gate, ctx)
        if g is not None:
            return scaled_conv(self.conv, x, g), None
        h = self.conv(x)
        if self.gate is None:
            return h, None
        if self.gate.kind not in ("sigmoid", "sqrt"):
            return _maybe_gate(self.gate, h, ctx), None
        if ctx is None:
            raise ValueError("an MR layer needs the hyper-input: pass a GateContext")
        return h, ctx.factors(self.gate)

    def spectral_norm(self, iterations: int = 1, update: bool = True) -> torch.Tensor:
        """Estimate of the largest singular value of the reshaped weight (scalar, differentiable in the weight).

        ``iterations`` power-iteration steps run without gradient from the stored vectors (``update``
        stores the new ones); the estimate ``u^T W v`` is then computed with gradient.
        """
        w = self.conv.weight.reshape(self.conv.weight.shape[0], -1)
        u, v = self.sn_u, self.sn_v
        with torch.no_grad():
            for _ in range(iterations):
                v = F.normalize(w.t() @ u, dim=0, eps=1e-12)
                u = F.normalize(w @ v, dim=0, eps=1e-12)
            if update and iterations > 0:
                self.sn_u.copy_(u)
                self.sn_v.copy_(v)
        return torch.dot(u, w @ v)


class GatedLinear(nn.Module):
    """``Linear`` followed, in an MR model, by a per-feature gate of ``u`` (used inside the SE blocks)."""

    def __init__(self, in_features: int, out_features: int, *, gate_kind: str | None = None,
                 hyper_hidden: Sequence[int] = ()) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.gate = Gate(out_features, gate_kind, hidden=tuple(hyper_hidden)) if gate_kind else None

    def forward(self, x: torch.Tensor, ctx: GateContext | None) -> torch.Tensor:
        g = fold_scale(self.gate, ctx)
        if g is not None:
            return scaled_linear(self.linear, x, g)
        return _maybe_gate(self.gate, self.linear(x), ctx)


# ----------------------------------------------------------------------------------------------------
# cells
# ----------------------------------------------------------------------------------------------------
class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: ``x * sigmoid(fc2(relu(fc1(mean_hw x))))``, hidden ``max(C // 16, 4)``;
    both linears gated in an MR model."""

    def __init__(self, channels: int, *, gate_kind: str | None = None, hyper_hidden: Sequence[int] = (),
                 reduction: int = 16, min_hidden: int = 4) -> None:
        super().__init__()
        hidden = max(channels // reduction, min_hidden)
        self.fc1 = GatedLinear(channels, hidden, gate_kind=gate_kind, hyper_hidden=hyper_hidden)
        self.fc2 = GatedLinear(hidden, channels, gate_kind=gate_kind, hyper_hidden=hyper_hidden)

    def forward(self, x: torch.Tensor, ctx: GateContext | None) -> torch.Tensor:
        return x * self.scale(x, ctx)[:, :, None, None]

    def scale(self, x: torch.Tensor, ctx: GateContext | None,
              in_scale: torch.Tensor | None = None) -> torch.Tensor:
        """Per-channel factors ``(B, C)`` of the SE block for the input ``x * in_scale`` (``in_scale``: ``(B, C)``
        or ``None``), times ``in_scale``: ``SE(x * a) == x * scale(x, ctx, a)`` without forming ``x * a``
        (the squeeze is a mean, so ``mean(x * a) = a * mean(x)``)."""
        m = x.mean(dim=(2, 3))
        if in_scale is not None:
            m = m * in_scale
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(m, ctx)), ctx))
        return s if in_scale is None else s * in_scale


def _bn(channels: int, momentum: float) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=momentum)


class EncoderCell(nn.Module):
    """Residual encoder cell ``skip(x) + res_scale * SE(conv3x3(Swish(BN(conv3x3(Swish(BN(x)))))))``.

    ``stride=2`` halves the resolution (first conv strided; the skip is a strided conv1x1), and a change of
    channels uses a conv1x1 skip; otherwise the skip is the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, use_se: bool = True,
                 gate_kind: str | None = None, hyper_hidden: Sequence[int] = (), res_scale: float = 0.1,
                 bn_momentum: float = 0.05) -> None:
        super().__init__()
        kw = dict(gate_kind=gate_kind, hyper_hidden=hyper_hidden)
        self.res_scale = float(res_scale)
        self.bn1 = _bn(in_channels, bn_momentum)
        self.conv1 = GatedConv(in_channels, out_channels, 3, stride, **kw)
        self.bn2 = _bn(out_channels, bn_momentum)
        self.conv2 = GatedConv(out_channels, out_channels, 3, **kw)
        self.se = SqueezeExcite(out_channels, **kw) if use_se else None
        self.skip = (GatedConv(in_channels, out_channels, 1, stride, **kw)
                     if stride != 1 or in_channels != out_channels else None)

    def forward(self, x: torch.Tensor, ctx: GateContext | None) -> torch.Tensor:
        h = self.conv1(F.silu(self.bn1(x)), ctx)
        s = x if self.skip is None else self.skip(x, ctx)
        if self.se is None:
            return s + self.res_scale * self.conv2(F.silu(self.bn2(h)), ctx)
        # conv2's gate, the SE factors and res_scale are one per-channel product: one pass over h
        h, gate = self.conv2.forward_unscaled(F.silu(self.bn2(h)), ctx)
        scale = self.se.scale(h, ctx, gate) * self.res_scale
        return torch.addcmul(s, h, scale[:, :, None, None])


class DecoderCell(nn.Module):
    """Residual decoder cell (inverted residual with a depthwise 5x5 conv), width ``expansion * C_out``::

        h = BN(conv1x1(Swish(BN(dwconv5x5(Swish(BN(conv1x1(BN(x)))))))));  out = skip(x) + res_scale * SE(h)

    ``upsample=True`` first doubles the resolution (nearest neighbour); a change of channels uses a conv1x1
    skip.
    """

    def __init__(self, in_channels: int, out_channels: int, *, upsample: bool = False, expansion: int = 6,
                 use_se: bool = True, gate_kind: str | None = None, hyper_hidden: Sequence[int] = (),
                 res_scale: float = 0.1, bn_momentum: float = 0.05) -> None:
        super().__init__()
        kw = dict(gate_kind=gate_kind, hyper_hidden=hyper_hidden)
        width = int(expansion) * out_channels
        self.upsample = bool(upsample)
        self.res_scale = float(res_scale)
        self.bn0 = _bn(in_channels, bn_momentum)
        self.expand = GatedConv(in_channels, width, 1, **kw)
        self.bn1 = _bn(width, bn_momentum)
        self.depthwise = GatedConv(width, width, 5, groups=width, **kw)
        self.bn2 = _bn(width, bn_momentum)
        self.project = GatedConv(width, out_channels, 1, **kw)
        self.bn3 = _bn(out_channels, bn_momentum)
        self.se = SqueezeExcite(out_channels, **kw) if use_se else None
        self.skip = GatedConv(in_channels, out_channels, 1, **kw) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, ctx: GateContext | None) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        h = self.expand(self.bn0(x), ctx)
        h = self.depthwise(F.silu(self.bn1(h)), ctx)
        h = self.project(F.silu(self.bn2(h)), ctx)
        h = self.bn3(h)
        s = x if self.skip is None else self.skip(x, ctx)
        if self.se is None:
            return s + self.res_scale * h
        return torch.addcmul(s, h, (self.se.scale(h, ctx) * self.res_scale)[:, :, None, None])


class EncCombiner(nn.Module):
    """Combine an encoder feature ``f`` with the decoder state ``h`` of the same scale: ``f + conv1x1(h)``."""

    def __init__(self, enc_channels: int, dec_channels: int, *, gate_kind: str | None = None,
                 hyper_hidden: Sequence[int] = ()) -> None:
        super().__init__()
        self.conv = GatedConv(dec_channels, enc_channels, 1, gate_kind=gate_kind, hyper_hidden=hyper_hidden)

    def forward(self, f: torch.Tensor, h: torch.Tensor, ctx: GateContext | None) -> torch.Tensor:
        return f + self.conv(h, ctx)


class DecCombiner(nn.Module):
    """Feed a latent sample ``z`` into the decoder state ``h``: ``conv1x1(concat[h, z])``."""

    def __init__(self, channels: int, latent_channels: int, *, gate_kind: str | None = None,
                 hyper_hidden: Sequence[int] = ()) -> None:
        super().__init__()
        self.conv = GatedConv(channels + latent_channels, channels, 1, gate_kind=gate_kind,
                              hyper_hidden=hyper_hidden)

    def forward(self, h: torch.Tensor, z: torch.Tensor, ctx: GateContext | None) -> torch.Tensor:
        return self.conv(torch.cat([h, z], dim=1), ctx)


# ----------------------------------------------------------------------------------------------------
# residual normal distributions
# ----------------------------------------------------------------------------------------------------
def residual_normal_kl(delta_mu: torch.Tensor, delta_log_sigma: torch.Tensor,
                       prior_log_sigma: torch.Tensor) -> torch.Tensor:
    """Analytic ``KL(q || p)`` summed over all but the batch dimension, ``(B,)`` nats, for the residual
    parameterisation ``mu_q = mu_p + delta_mu``, ``sigma_q = sigma_p * exp(delta_log_sigma)``::

        KL = sum [ 0.5 * (delta_mu^2 / sigma_p^2 + exp(2 delta_log_sigma) - 1) - delta_log_sigma ]
    """
    term = 0.5 * (delta_mu.pow(2) * torch.exp(-2.0 * prior_log_sigma) + torch.exp(2.0 * delta_log_sigma)
                  - 1.0) - delta_log_sigma
    return term.reshape(term.shape[0], -1).sum(dim=1)


def normal_log_density(z: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """``log N(z; mu, exp(log_sigma)^2)`` summed over all but the batch dimension, ``(B,)`` nats."""
    lp = -0.5 * ((z - mu) * torch.exp(-log_sigma)).pow(2) - log_sigma - 0.5 * LOG_2PI
    return lp.reshape(lp.shape[0], -1).sum(dim=1)


# ----------------------------------------------------------------------------------------------------
# likelihoods p(x | z)
# ----------------------------------------------------------------------------------------------------
class BernoulliLikelihood:
    """Bernoulli pixels; the decoder outputs one logit per pixel and channel."""

    name = "bernoulli"
    description = "Bernoulli NLL (binary cross-entropy with logits) summed over pixels, nats per example"

    def __init__(self, channels: int) -> None:
        self.channels = int(channels)

    @property
    def out_channels(self) -> int:
        return self.channels

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``-log p(x|z)`` ``(B,)`` nats (float32) for images ``x`` ``(B, C, H, W)`` in [0, 1]."""
        return bernoulli_distortion(params.float(), x.float())

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """Mean image in [0, 1]."""
        return torch.sigmoid(params)

    def to_dict(self) -> dict:
        return {"name": self.name, "is_nll": True, "description": self.description}


def logistic_mixture_channels(n_mixtures: int, channels: int) -> int:
    """Decoder output channels of a discretised logistic mixture: logits ``M``, means ``M C``, log-scales
    ``M C`` and ``M C (C - 1) / 2`` channel-coupling coefficients (``10 M`` for RGB)."""
    return n_mixtures * (1 + 2 * channels + channels * (channels - 1) // 2)


def _log_diff_sigmoid(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``log(sigmoid(a) - sigmoid(b))`` for ``a > b``, stable everywhere:
    ``sigmoid(a) - sigmoid(b) = sigmoid(a) * sigmoid(-b) * (1 - exp(b - a))``."""
    return F.logsigmoid(a) + F.logsigmoid(-b) + torch.log(-torch.expm1(b - a))


def logistic_mixture_log_prob(params: torch.Tensor, x: torch.Tensor, n_mixtures: int,
                              n_bins: int = 256, min_log_scale: float = -7.0) -> torch.Tensor:
    """Per-pixel log-probability ``(B, H, W)`` (nats) of a discretised logistic mixture.

    ``x`` ``(B, C, H, W)`` holds values ``k / (n_bins - 1)``, ``k = 0..n_bins-1``; it is mapped to ``y = 2x - 1``
    in [-1, 1] with bins of half-width ``1 / (n_bins - 1)``.  ``params`` ``(B, M (1 + 2C + C(C-1)/2), H, W)``:
    mixture logits, means, log-scales and tanh'd coupling coefficients; within component k the mean of channel
    c is ``mu_kc + sum_{j<c} coeff_kcj * y_j`` (autoregressive over channels).  The edge bins take the whole
    tail (``y = -1``: ``P(Y < -1 + h)``; ``y = 1``: ``P(Y > 1 - h)``), so the probabilities of the
    ``n_bins^C`` values of a pixel sum to 1.
    """
    b, c, h, w = x.shape
    m = int(n_mixtures)
    n_coef = c * (c - 1) // 2
    if params.shape != (b, logistic_mixture_channels(m, c), h, w):
        raise ValueError(f"logistic mixture params must be {(b, logistic_mixture_channels(m, c), h, w)}, "
                         f"got {tuple(params.shape)}")
    logit_pi = params[:, :m]
    means = params[:, m:m + m * c].reshape(b, m, c, h, w)
    log_s = params[:, m + m * c:m + 2 * m * c].reshape(b, m, c, h, w).clamp(min=min_log_scale)
    coef = torch.tanh(params[:, m + 2 * m * c:].reshape(b, m, n_coef, h, w))
    y = (2.0 * x - 1.0).unsqueeze(1)  # (B, 1, C, H, W)
    if c > 1:
        adjusted = [means[:, :, 0]]
        k = 0
        for ch in range(1, c):
            mu_c = means[:, :, ch]
            for j in range(ch):
                mu_c = mu_c + coef[:, :, k] * y[:, :, j]
                k += 1
            adjusted.append(mu_c)
        means = torch.stack(adjusted, dim=2)
    half = 1.0 / (n_bins - 1)
    inv_s = torch.exp(-log_s)
    centred = y - means
    upper = inv_s * (centred + half)
    lower = inv_s * (centred - half)
    lp = torch.where(y < -1.0 + half, F.logsigmoid(upper),
                     torch.where(y > 1.0 - half, F.logsigmoid(-lower), _log_diff_sigmoid(upper, lower)))
    lp = lp.sum(dim=2) + torch.log_softmax(logit_pi, dim=1)  # (B, M, H, W)
    return torch.logsumexp(lp, dim=1)


class LogisticMixtureLikelihood:
    """Discretised logistic mixture over ``n_bins`` (256) values per channel, ``n_mixtures`` (10) components."""

    name = "logistic_mixture"

    def __init__(self, channels: int, n_mixtures: int = 10, n_bins: int = 256) -> None:
        self.channels = int(channels)
        self.n_mixtures = int(n_mixtures)
        self.n_bins = int(n_bins)
        self.description = (f"discretised logistic mixture ({self.n_mixtures} components, {self.n_bins} bins, "
                            "channels coupled within a pixel) NLL summed over pixels, nats per example")

    @property
    def out_channels(self) -> int:
        return logistic_mixture_channels(self.n_mixtures, self.channels)

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``-log p(x|z)`` ``(B,)`` nats (float32) for images ``x`` ``(B, C, H, W)`` with values ``k / 255``."""
        lp = logistic_mixture_log_prob(params.float(), x.float(), self.n_mixtures, self.n_bins)
        return -lp.reshape(lp.shape[0], -1).sum(dim=1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """Approximate mean image in [0, 1]: mixture-weighted component means, channel coupling applied to
        the means of the previous channels."""
        b, _, h, w = params.shape
        m, c = self.n_mixtures, self.channels
        pi = torch.softmax(params[:, :m], dim=1)  # (B, M, H, W)
        means = params[:, m:m + m * c].reshape(b, m, c, h, w)
        coef = torch.tanh(params[:, m + 2 * m * c:].reshape(b, m, c * (c - 1) // 2, h, w))
        out: list[torch.Tensor] = []
        k = 0
        for ch in range(c):
            mu_c = means[:, :, ch]
            for j in range(ch):
                mu_c = mu_c + coef[:, :, k] * out[j].unsqueeze(1)
                k += 1
            out.append((pi * mu_c).sum(dim=1).clamp(-1.0, 1.0))
        return (torch.stack(out, dim=1) + 1.0) / 2.0

    def to_dict(self) -> dict:
        return {"name": self.name, "is_nll": True, "description": self.description,
                "n_mixtures": self.n_mixtures, "n_bins": self.n_bins}
