"""One trainer for every deep beta-VAE and MR-VAE family.

* :mod:`deep.train.config`: :class:`TrainConfig` (every setting of a run) and its validation;
* :mod:`deep.train.schedules`: KL-weight and learning-rate schedules;
* :mod:`deep.train.loop`: :func:`train` and :func:`resume_run`;
* :mod:`deep.train.runs`: the run folder (config.json, metrics.jsonl, checkpoints);
* :mod:`deep.train.distributed`, :mod:`deep.train.runtime`: torchrun/DDP and process settings.

Typical use::

    from deep.train import TrainConfig, train
    run_dir = train(TrainConfig(dataset="mnist", arch="resnet", epochs=5))
"""
from .config import BASELINE_BETAS, ConfigError, TrainConfig, load_config, run_dir_for
from .loop import resume_run, train

__all__ = ["TrainConfig", "ConfigError", "BASELINE_BETAS", "train", "resume_run", "load_config", "run_dir_for"]
