"""Name tables of the model side, free of torch so that the configuration and the command line can offer
them as choices without importing torch (the definitions live in the modules named below)."""
from __future__ import annotations

__all__ = ["DISTORTION_NAMES"]

#: The keys of :data:`deep.models.objectives.DISTORTIONS` (same order; a test holds them equal).
DISTORTION_NAMES = ("bernoulli", "sse", "half_sse", "gaussian_nll")
