"""KL-weight and learning-rate schedules of the trainer (multipliers as functions of the optimisation step)."""
from __future__ import annotations

import math

from .config import ConfigError, KL_SCHEDULES, TrainConfig

__all__ = ["schedule_factor", "kl_factor", "lr_factor"]

# ------------------------------------------------------------------------------------------
# schedules
# ------------------------------------------------------------------------------------------
def schedule_factor(schedule: str, progress: float, *, warmup_fraction: float = 0.3,
                    cycles: int = 4, ratio: float = 0.5) -> float:
    """Multiplier in [0, 1] of the KL weight at training progress ``progress`` in [0, 1].

    * ``constant``: 1.
    * ``linear``: ``min(1, progress / warmup_fraction)`` (0 -> 1 over the first 30% by default).
    * ``cyclical`` (Fu et al. 2019): ``cycles`` equal cycles; in each, ramp 0 -> 1 over the first
      ``ratio`` of the cycle, then hold 1.
    """
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return min(1.0, max(0.0, progress) / warmup_fraction)
    if schedule == "cyclical":
        period = 1.0 / cycles
        tau = (max(0.0, progress) % period) / period
        return min(1.0, tau / ratio)
    raise ConfigError(f"unknown kl_schedule {schedule!r}; choose from {list(KL_SCHEDULES)}")


def kl_factor(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """KL-schedule multiplier for optimisation ``step`` (0-based); per step or per epoch."""
    if config.kl_schedule_unit == "epoch":
        progress = (step // steps_per_epoch) / config.epochs
    else:
        progress = step / (config.epochs * steps_per_epoch)
    return schedule_factor(config.kl_schedule, progress, warmup_fraction=config.kl_warmup_fraction,
                           cycles=config.kl_cycles, ratio=config.kl_cycle_ratio)


def lr_factor(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate at ``step`` divided by ``config.lr``: linear warm-up, then cosine to min_lr
    (``lr_schedule="cosine"``) or constant (``"constant"``, and ``"plateau"``, whose halvings on a
    stalled validation loss are applied per epoch on top of this factor)."""
    total = config.epochs * steps_per_epoch
    warm = int(round(config.lr_warmup_epochs * steps_per_epoch))
    if step < warm:
        return (step + 1) / warm
    if config.lr_schedule != "cosine":
        return 1.0
    progress = min(1.0, (step - warm) / max(1, total - warm))
    lr = config.min_lr + (config.lr - config.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return lr / config.lr


