"""The training configuration: :class:`TrainConfig`, one JSON-able dataclass shared unchanged by every run
of a comparison, its validation and the run-folder naming rules."""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from deep.protocol import BASELINE_BETAS  # the paper's 10 baseline betas, defined once (torch-free)
from linvae.conditioning import BETA_SAMPLING, BetaRange

from . import distributed as D
from .runs import RunError, RunPaths, jsonable, read_json

__all__ = ["ConfigError", "TrainConfig", "KL_SCHEDULES", "LR_SCHEDULES", "OBJECTIVES", "OPTIMIZERS",
           "PRECISIONS", "BASELINE_BETAS", "RUNTIME_FIELDS", "VAL_BETAS", "resolve_device", "run_dir_for",
           "load_config", "config_diff"]

KL_SCHEDULES = ("constant", "linear", "cyclical")


LR_SCHEDULES = ("cosine", "plateau", "constant")


OBJECTIVES = ("elbo", "tcvae")


OPTIMIZERS = ("adam", "adamax")


PRECISIONS = D.PRECISIONS




#: Config fields that may change between a run and its resumption (they do not change the maths).
#: ``precision`` is one of them so a run can continue on other hardware (each epoch's precision is logged).
RUNTIME_FIELDS = frozenset({"device", "num_threads", "out_dir", "data_dir", "run_name", "n_betas",
                            "iw_k", "eval_batch_size", "download", "val_max_examples", "precision",
                            "eval_options"})


#: Betas (log-spaced over the trained range) at which an MR-VAE's validation loss is averaged.
VAL_BETAS = 5


class ConfigError(ValueError):
    """An invalid training configuration (the message names the field and the valid values)."""


@dataclass
class TrainConfig:
    """Everything one deep run needs; JSON-able, shared unchanged by every run of a comparison.

    Units: beta and the KL weight multiply the rate in nats per example. ``epochs`` defaults to a
    CPU-sized 10 (the paper trains 200). ``kl_schedule_unit`` says whether the linear / cyclical
    KL schedule advances per optimisation step (default; smooth and meaningful for short runs) or
    per epoch (the reference code). The learning-rate warm-up and cosine decay advance per step.
    ``batch_size`` is the global batch: under ``torchrun`` with N processes each takes ``batch_size / N``
    examples of every step (:mod:`deep.train.distributed`). ``precision``: ``fp32``, ``bf16`` (autocast, CPU or
    GPU) or ``fp16`` (CUDA only, with loss scaling).
    """

    dataset: str = "omniglot"
    arch: str = "resnet"
    mr: bool = True
    beta: float = 1.0
    beta_a: float = 0.01
    beta_b: float = 10.0
    beta_sampling: str = "example"
    kl_schedule: str = "constant"
    kl_schedule_unit: str = "step"
    kl_warmup_fraction: float = 0.3
    kl_cycles: int = 4
    kl_cycle_ratio: float = 0.5
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    hyper_lr_mult: float = 30.0  # gate (hyper-network) parameters train at lr * hyper_lr_mult
    lr_warmup_epochs: float = 0.0
    lr_schedule: str = "cosine"
    min_lr: float = 1e-6
    plateau_patience: int = 2
    plateau_factor: float = 0.5
    optimizer: str = "adam"
    weight_decay: float = 0.0
    grad_clip: float | None = None
    latent_dim: int | None = None
    distortion: str | None = None
    enc_gate: str = "sigmoid"
    dec_gate: str = "sqrt"
    hyper_hidden: tuple[int, ...] = ()
    objective: str = "elbo"
    model_options: dict = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"
    data_dir: str | None = None
    out_dir: str = "runs"
    run_name: str | None = None
    n_betas: int = 20
    iw_k: int = 0
    eval_batch_size: int = 100
    max_train_examples: int | None = None
    val_split: str | None = None
    val_max_examples: int | None = None
    num_threads: int | None = None
    data_options: dict = field(default_factory=dict)
    eval_options: dict = field(default_factory=dict)  # extra keyword options of a family's sweep
    download: bool = False
    precision: str = "fp32"

    def __post_init__(self) -> None:
        self.hyper_hidden = tuple(int(h) for h in (self.hyper_hidden or ()))
        self.data_options = dict(self.data_options or {})
        self.eval_options = dict(self.eval_options or {})
        self.model_options = dict(self.model_options or {})
        self.validate()

    # -- validation and (de)serialisation ---------------------------------------------------
    def validate(self) -> "TrainConfig":
        """Raise :class:`ConfigError` (or ``BetaRangeError``) for invalid values."""
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"invalid {name}={getattr(self, name)!r}: {why}")

        if self.mr:
            BetaRange(self.beta_a, self.beta_b)  # raises BetaRangeError with a clear message
        if not (isinstance(self.beta, (int, float)) and math.isfinite(self.beta) and self.beta > 0):
            raise bad("beta", "beta must be a finite number > 0")
        if self.beta_sampling not in BETA_SAMPLING:
            raise bad("beta_sampling", f"choose from {list(BETA_SAMPLING)}")
        if self.kl_schedule not in KL_SCHEDULES:
            raise bad("kl_schedule", f"choose from {list(KL_SCHEDULES)}")
        if self.kl_schedule_unit not in ("step", "epoch"):
            raise bad("kl_schedule_unit", "choose 'step' or 'epoch'")
        if not 0 < self.kl_warmup_fraction <= 1:
            raise bad("kl_warmup_fraction", "must lie in (0, 1]")
        if self.kl_cycles < 1 or not 0 < self.kl_cycle_ratio <= 1:
            raise ConfigError("cyclical schedule needs kl_cycles >= 1 and kl_cycle_ratio in (0, 1]")
        if self.lr_schedule not in LR_SCHEDULES:
            raise bad("lr_schedule", f"choose from {list(LR_SCHEDULES)}")
        if int(self.plateau_patience) < 0 or not 0 < self.plateau_factor < 1:
            raise ConfigError("plateau schedule needs plateau_patience >= 0 and plateau_factor in (0, 1)")
        if self.objective not in OBJECTIVES:
            raise bad("objective", f"choose from {list(OBJECTIVES)}")
        if self.val_max_examples is not None and self.val_max_examples < 2:
            raise bad("val_max_examples", "must be >= 2 (or None for the whole validation split)")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"choose from {list(OPTIMIZERS)}")
        for name in ("epochs", "batch_size", "n_betas", "eval_batch_size"):
            if int(getattr(self, name)) < 1:
                raise bad(name, "must be a positive integer")
        if self.iw_k < 0:
            raise bad("iw_k", "must be >= 0 (0 disables the importance-weighted NLL)")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise bad("lr", "must be > 0")
        if not (self.hyper_lr_mult > 0 and math.isfinite(self.hyper_lr_mult)):
            raise bad("hyper_lr_mult", "must be > 0")
        if not 0 <= self.min_lr <= self.lr:
            raise bad("min_lr", f"must lie in [0, lr={self.lr}]")
        if not 0 <= self.lr_warmup_epochs <= self.epochs:
            raise bad("lr_warmup_epochs", f"must lie in [0, epochs={self.epochs}]")
        if self.weight_decay < 0:
            raise bad("weight_decay", "must be >= 0")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise bad("grad_clip", "must be > 0 (or None for no clipping)")
        if self.max_train_examples is not None and self.max_train_examples < 1:
            raise bad("max_train_examples", "must be >= 1 (or None for the full split)")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise bad("device", "choose 'auto', 'cpu', 'cuda' or 'cuda:N'")
        if self.num_threads is not None and self.num_threads < 1:
            raise bad("num_threads", "must be >= 1")
        problem = D.precision_problem(self.precision, "cpu" if self.device == "cpu" else None)
        if problem:
            raise ConfigError(problem)
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hyper_hidden"] = list(self.hyper_hidden)
        d["data_options"] = dict(self.data_options)
        d["eval_options"] = dict(self.eval_options)
        d["model_options"] = dict(self.model_options)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config fields {unknown}; valid fields: {sorted(known)}")
        return cls(**d)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    @property
    def beta_range(self) -> BetaRange:
        return BetaRange(self.beta_a, self.beta_b)

    def default_run_name(self) -> str:
        """``<dataset>_<arch>_<mr|beta<b>_<schedule>>[_n<N>]_e<epochs>_lr<lr>_seed<seed>``."""
        kind = "mr" if self.mr else f"beta{self.beta:.4g}_{self.kl_schedule}"
        reduced = f"_n{self.max_train_examples}" if self.max_train_examples else ""
        return f"{self.dataset}_{self.arch}_{kind}{reduced}_e{self.epochs}_lr{self.lr:g}_seed{self.seed}"


# ------------------------------------------------------------------------------------------
# building blocks
# ------------------------------------------------------------------------------------------
def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU raises ConfigError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return dev


def run_dir_for(config: TrainConfig) -> Path:
    """``out_dir / (run_name or the default name)``."""
    return Path(config.out_dir) / (config.run_name or config.default_run_name())


def config_diff(saved: dict, now: dict) -> list[str]:
    try:  # fields added since the checkpoint was written take their defaults
        saved = TrainConfig.from_dict(saved).to_dict()
    except (TypeError, ValueError):
        pass
    keys = sorted((set(saved) | set(now)) - RUNTIME_FIELDS)
    return [f"{k}: checkpoint={saved.get(k)!r}, now={now.get(k)!r}" for k in keys
            if jsonable(saved.get(k)) != jsonable(now.get(k))]


def load_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The TrainConfig stored in a run folder's ``config.json``."""
    paths = RunPaths(run_dir)
    if not paths.config.exists():
        raise RunError(f"{paths.root} is not a run folder (no config.json); pass the folder that "
                       "`mrvae-cli deep train` printed")
    return TrainConfig.from_dict(read_json(paths.config)["config"])


