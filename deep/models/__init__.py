"""Model families and the contract they share with the trainer and the evaluator.

* :mod:`deep.models.base`: :class:`MultiRateVAE` (the contract; its docstring shows how to write a family),
  :class:`GaussianLatentVAE` (one Gaussian latent: write ``encode`` and ``decode``), the output types;
* :mod:`deep.models.registry`: :func:`register_family` and the lookups the trainer uses;
* the families of the paper: :mod:`~deep.models.convnets` (Conv/ResNet), :mod:`~deep.models.nvae`,
  :mod:`~deep.models.text` (LSTM), :mod:`~deep.models.tcvae` (beta-TCVAE MLPs);
* :mod:`deep.models.objectives`: rate (KL), distortions, the IW-NLL estimator.

The names below are loaded on first use, so ``import deep.models.registry`` (the CLI's choices) does not
import torch.
"""
from __future__ import annotations

from linvae.lazy import lazy_exports

#: where each re-exported name lives
_EXPORTS = {"MultiRateVAE": "base", "GaussianLatentVAE": "base", "VAEOutput": "base", "EncoderOutput": "base",
            "DecoderOutput": "base", "EvaluationOptionError": "base", "gaussian_kl": "objectives",
            "get_distortion": "objectives", "register_family": "registry", "FamilySpec": "registry",
            "UnknownArchError": "registry"}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
