"""Linear VAE toolkit and the conditioning core shared by every MR-VAE in mrvae.

The re-exports below load :mod:`linvae.conditioning` (and so torch) on first use only, so torch-free
modules such as :mod:`linvae.names` and :mod:`linvae.dataroot` import without torch.
"""
from __future__ import annotations

from .lazy import lazy_exports

__all__ = ["BetaRange", "BetaRangeError", "Gate", "HyperMLP", "sigmoid_gate", "sqrt_gate"]
__getattr__, __dir__ = lazy_exports(__name__, {name: "conditioning" for name in __all__})
