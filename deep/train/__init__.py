"""One trainer for every deep beta-VAE and MR-VAE family.

* :mod:`deep.train.config`: :class:`TrainConfig` (every setting of a run) and its validation;
* :mod:`deep.train.schedules`: KL-weight and learning-rate schedules;
* :mod:`deep.train.loop`: :func:`train` and :func:`resume_run`;
* :mod:`deep.train.runs`: the run folder (config.json, metrics.jsonl, checkpoints);
* :mod:`deep.train.lifecycle`: an existing run's configuration and data root, what a resume may change;
* :mod:`deep.train.trackers`: optional experiment-tracker logging (``--log tensorboard``);
* :mod:`deep.train.distributed`, :mod:`deep.train.runtime`: torchrun/DDP and process settings.

Typical use::

    from deep.train import TrainConfig, train
    run_dir = train(TrainConfig(dataset="mnist", arch="resnet", epochs=5))

The names below are loaded on first use, so ``import deep.train.config`` (and ``mrvae-cli --help``) does
not import torch.
"""
from __future__ import annotations

from linvae.lazy import lazy_exports

#: where each re-exported name lives
_EXPORTS = {"TrainConfig": "config", "ConfigError": "config", "BASELINE_BETAS": "config", "load_config": "config",
            "run_dir_for": "config", "train": "loop", "resume_run": "loop", "load_run_config": "lifecycle"}

__all__ = ["TrainConfig", "ConfigError", "BASELINE_BETAS", "train", "resume_run", "load_config", "run_dir_for",
           "load_run_config"]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
