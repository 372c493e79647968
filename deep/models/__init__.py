"""Model families and the contract they share with the trainer and the evaluator.

* :mod:`deep.models.base`: :class:`MultiRateVAE` (the contract; its docstring shows how to write a family),
  :class:`GaussianLatentVAE` (one Gaussian latent: write ``encode`` and ``decode``), the output types;
* :mod:`deep.models.registry`: :func:`register_family` and the lookups the trainer uses;
* the families of the paper: :mod:`~deep.models.convnets` (Conv/ResNet), :mod:`~deep.models.nvae`,
  :mod:`~deep.models.text` (LSTM), :mod:`~deep.models.tcvae` (beta-TCVAE MLPs);
* :mod:`deep.models.objectives`: rate (KL), distortions, the IW-NLL estimator.
"""
from .base import (DecoderOutput, EncoderOutput, EvaluationOptionError, GaussianLatentVAE, MultiRateVAE,
                   VAEOutput)
from .objectives import gaussian_kl, get_distortion
from .registry import FamilySpec, UnknownArchError, register_family

__all__ = ["MultiRateVAE", "GaussianLatentVAE", "VAEOutput", "EncoderOutput", "DecoderOutput",
           "EvaluationOptionError", "register_family", "FamilySpec", "UnknownArchError", "gaussian_kl",
           "get_distortion"]
