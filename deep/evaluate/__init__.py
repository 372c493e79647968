"""Evaluation of trained runs: rate-distortion curves over beta and their metrics.

* :mod:`deep.evaluate.loop`: :func:`rd_sweep`, the one evaluation loop (every family, through the hooks of
  :class:`deep.models.MultiRateVAE`) and its seeded noise;
* :mod:`deep.evaluate.run`: :func:`evaluate_run` (a run folder -> ``results/rd.json``);
* :mod:`deep.evaluate.trained`: :func:`load_run` (a run folder -> a model to query at any beta: encode, decode,
  reconstruct, sample, rate and distortion, RD curve, the beta of a target rate or distortion);
* :mod:`deep.evaluate.metrics`, :mod:`deep.evaluate.disentangle`, :mod:`deep.evaluate.beta_metrics`: the
  estimators (AU, MI, FID, MIG);
* :mod:`deep.evaluate.images`: image grids.
"""
from .loop import AU_THRESHOLD, rd_sweep
from .run import evaluate_run, load_eval_data, load_run_model
from .trained import BetaSearch, TargetOutOfRangeError, TrainedModel, load_run

__all__ = ["evaluate_run", "rd_sweep", "load_run_model", "load_eval_data", "AU_THRESHOLD", "load_run",
           "TrainedModel", "BetaSearch", "TargetOutOfRangeError"]
