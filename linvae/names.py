"""Name tables of the conditioning core, free of torch so that configurations and the command line can
list and validate them without importing torch (:mod:`linvae.conditioning` holds what the names mean)."""
from __future__ import annotations

__all__ = ["BETA_SAMPLING", "BETA_DENSITY_SHAPES", "GATE_KIND_NAMES", "GATE_DIRECTIONS"]

#: How :meth:`linvae.conditioning.BetaRange.sample` draws a batch of betas: one per example (the reference
#: code), one per batch (the paper's Algorithm 1) or one per example stratified over the range.
BETA_SAMPLING = ("example", "batch", "stratified")

#: The law of the standardised log beta v in [0, 1] before the density power of
#: :meth:`linvae.conditioning.BetaRange.sample`: uniform (log-uniform beta, the paper) or arcsine
#: (Beta(1/2, 1/2): more draws at both ends of the range, fewer in the middle).
BETA_DENSITY_SHAPES = ("uniform", "arcsine")

#: The gate kinds of :data:`linvae.conditioning.GATE_KINDS` (same names, same order).
GATE_KIND_NAMES = ("sigmoid", "sqrt", "film")

#: Monotone gate directions (in beta); ``None`` is the free gate of the paper.
GATE_DIRECTIONS = ("increasing", "decreasing")
