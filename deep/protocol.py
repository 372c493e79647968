"""The paper's protocol constants (App. C), defined once and torch-free.

They sit at the bottom of ``deep`` so that the trainer (:mod:`deep.train.config`), the experiment registry
(:mod:`deep.experiments.registry`) and the figure scripts (through :mod:`deep.experiments.manifest`) all read
the same values without importing anything that trains or builds a model. Importing this module imports
nothing heavy (no numpy, no torch).
"""
from __future__ import annotations

__all__ = ["BASELINE_BETAS", "PAPER_LRS", "PAPER_SEEDS"]

#: The paper's 10 baseline betas, log-spaced in [0.01, 10] (``np.logspace(-2, 1, 10)``; run-folder hashes
#: depend on these exact floats).
BASELINE_BETAS: tuple[float, ...] = tuple(10.0 ** (-2.0 + i * (3.0 / 9.0)) if i < 9 else 10.0 for i in range(10))
#: The paper's learning-rate grid (App. C), selected at beta = 1 on the validation split.
PAPER_LRS: tuple[float, ...] = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5)
#: The paper's seeds (3 per configuration, mean reported).
PAPER_SEEDS: tuple[int, ...] = (0, 1, 2)
