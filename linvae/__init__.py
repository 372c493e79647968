"""Linear VAE toolkit and the conditioning core shared by every MR-VAE in mrvae.

The re-exports below load :mod:`linvae.conditioning` (and so torch) on first use only, so torch-free
modules such as :mod:`linvae.names` and :mod:`linvae.dataroot` import without torch.
"""
from __future__ import annotations

from typing import Any

__all__ = ["BetaRange", "BetaRangeError", "Gate", "HyperMLP", "sigmoid_gate", "sqrt_gate"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import conditioning

        return getattr(conditioning, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
