"""The training configuration: :class:`TrainConfig`, one JSON-able dataclass shared unchanged by every run
of a comparison, its validation and the run-folder naming rules."""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from linvae.names import BETA_DENSITY_SHAPES, BETA_SAMPLING, GATE_KIND_NAMES

from deep.protocol import BASELINE_BETAS  # the paper's 10 baseline betas, defined once (torch-free)

if TYPE_CHECKING:  # torch-free at import: the CLI builds its options and help from this module
    import torch

    from linvae.conditioning import BetaRange

__all__ = ["ConfigError", "TrainConfig", "KL_SCHEDULES", "KL_SCHEDULE_UNITS", "LR_SCHEDULES", "OBJECTIVES",
           "OPTIMIZERS", "PRECISIONS", "RECIPES", "RECIPE_FIELDS", "recipe_values", "LOSS_NORMALIZATIONS",
           "BASELINE_BETAS", "RUNTIME_FIELDS", "VAL_BETAS", "LOGGERS", "resolve_device", "run_dir_for", "load_config",
           "config_diff", "field_help", "gate_lr_mult_text", "field_choices", "precision_problem"]

KL_SCHEDULES = ("constant", "linear", "cyclical")


KL_SCHEDULE_UNITS = ("step", "epoch")


LR_SCHEDULES = ("cosine", "plateau", "constant")


OBJECTIVES = ("elbo", "tcvae")


OPTIMIZERS = ("adam", "adamax")
#: How an MR-VAE's per-example losses are weighted across beta (see TrainConfig.loss_normalization).
LOSS_NORMALIZATIONS = ("none", "per_beta")
#: Training recipes of MR-VAEs: the values a config takes for the fields it leaves unset (None).
#: ``paper`` is the paper's exact recipe (one learning rate for everything, free gates, one log-uniform beta per
#: example as in the reference code, the plain mean loss); ``mrvae`` is this project's default, chosen by the
#: measurements in docs/recipe.md (stratified beta sampling: lower mean delta than per-example sampling in 4 of
#: 6 paired comparisons there, -0.48 nats on average). ``monotone_decoder`` is read by the families that have
#: monotone decoder gates (Conv/ResNet). A family may take other values of a recipe (``recipe_overrides`` of
#: :func:`deep.models.registry.register_family`; :func:`recipe_values`): under ``mrvae`` the ResNet family
#: trains its gates at 100x (lower mean delta than 30x at 6 of 6 seeds in docs/recipe.md), while 30x stays the
#: shared value (100x collapses the Yahoo LSTM's rate at small beta; other families are not measured at 100x).
RECIPES: dict[str, dict[str, Any]] = {
    "mrvae": {"hyper_lr_mult": 30.0, "beta_sampling": "stratified", "beta_density_power": 1.0,
              "loss_normalization": "none", "monotone_decoder": True},
    "paper": {"hyper_lr_mult": 1.0, "beta_sampling": "example", "beta_density_power": 1.0,
              "loss_normalization": "none", "monotone_decoder": False},
}
#: The TrainConfig fields a recipe sets when they are left at None.
RECIPE_FIELDS = ("hyper_lr_mult", "beta_sampling", "beta_density_power", "loss_normalization")


def recipe_values(recipe: str, arch: str | None = None) -> dict[str, Any]:
    """What training recipe ``recipe`` sets for family ``arch``: its :data:`RECIPES` entry, with the values
    the family registered for it (``register_family(..., recipe_overrides=...)``) in place of the shared ones."""
    from deep.models.registry import family_recipe_overrides

    values = dict(RECIPES[recipe])
    own = family_recipe_overrides(arch, recipe) if arch is not None else {}
    unknown = sorted(set(own) - set(values))
    if unknown:
        raise ConfigError(f"family {arch!r} overrides {unknown} of recipe {recipe!r}, which sets only "
                          f"{sorted(values)}")
    values.update(own)
    return values


def gate_lr_mult_text(recipe: str = "mrvae") -> str:
    """The gate learning-rate multipliers ``recipe`` gives, as help and budget texts write them: the shared
    value, then each registered family's own, e.g. ``"x30 (x100 for resnet)"``."""
    from deep.models.registry import family_names, family_recipe_overrides

    shared = RECIPES[recipe]["hyper_lr_mult"]
    own = [(arch, family_recipe_overrides(arch, recipe).get("hyper_lr_mult")) for arch in family_names()]
    own_text = ", ".join(f"x{mult:g} for {arch}" for arch, mult in own if mult is not None and mult != shared)
    return f"x{shared:g}" + (f" ({own_text})" if own_text else "")


#: Numeric precisions of training (:mod:`deep.train.distributed` implements them).
PRECISIONS = ("fp32", "bf16", "fp16")




#: Config fields that may change between a run and its resumption (they do not change the maths).
#: ``precision`` is one of them so a run can continue on other hardware (each epoch's precision is logged).
RUNTIME_FIELDS = frozenset({"device", "num_threads", "out_dir", "data_dir", "run_name", "n_betas",
                            "iw_k", "eval_batch_size", "download", "val_max_examples", "precision",
                            "eval_options", "eval_examples", "keep_checkpoints", "log"})

#: Experiment trackers ``log`` may name (metrics.jsonl is always written and stays the source of truth).
LOGGERS = ("none", "tensorboard")


#: Betas (log-spaced over the trained range) at which an MR-VAE's validation loss is averaged.
VAL_BETAS = 5


class ConfigError(ValueError):
    """An invalid training configuration (the message names the field and the valid values)."""


# -- the lists a field may choose from, read when asked (the registry can grow at run time) -----------------
def _dataset_names() -> tuple[str, ...]:
    from deep.models.registry import valid_datasets

    return tuple(valid_datasets())


def _arch_names() -> tuple[str, ...]:
    from deep.models.registry import family_names

    return tuple(family_names())


def _distortion_names() -> tuple[str, ...]:
    from deep.models.names import DISTORTION_NAMES

    return DISTORTION_NAMES


def _gate_names() -> tuple[str, ...]:
    return GATE_KIND_NAMES


def _doc(default: Any = dataclasses.MISSING, help: str | Callable[[], str] = "", *,
         choices: Sequence[str] | Callable[[], Sequence[str]] | None = None,
         factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field with its one-line documentation (``metadata["help"]``, shown by ``--help``; a function
    for a text that names registry values, read when asked) and,
    for enumerated fields, ``metadata["choices"]``: a tuple (checked by :meth:`TrainConfig.validate`) or a
    function returning the names (model-side names: datasets, architectures, gates, distortions; the
    family that builds the model checks them)."""
    meta = {"help": help, "choices": choices}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


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

    Every field carries a one-line description (``field_help(name)``); ``mrvae-cli deep train`` builds
    its options, defaults and help from these fields.
    """

    dataset: str = _doc("omniglot", "Dataset (mnist: the static binary MNIST).", choices=_dataset_names)
    arch: str = _doc("resnet", "Model family: conv, resnet (images), nvae (mnist/omniglot/celeba64), mlp "
                     "(dsprites), lstm (yahoo).", choices=_arch_names)
    mr: bool = _doc(True, "An MR-VAE (one model for the whole beta range) or, when false, a beta-VAE at beta.")
    recipe: str = _doc("mrvae", lambda: (
        "Training recipe of an MR-VAE, for the options left unset: mrvae (this project's default: gate learning "
        f"rate {gate_lr_mult_text('mrvae')}, stratified beta sampling, decoder gates non-increasing in beta; "
        "docs/recipe.md) or paper (the paper's exact recipe: one learning rate, one beta per example, free "
        "gates)."), choices=tuple(RECIPES))
    beta: float = _doc(1.0, "beta of a beta-VAE (weight on the rate).")
    beta_a: float = _doc(0.01, "Lower end of the MR-VAE's training range of beta (log-uniform).")
    beta_b: float = _doc(10.0, "Upper end of the MR-VAE's training range of beta.")
    beta_sampling: str | None = _doc(
        None, "One beta per example (reference code), per minibatch (paper's Algorithm 1), or per "
        "example stratified over the range (each batch covers [a, b] evenly; same log-uniform marginal). "
        "Default: the recipe's (mrvae stratified, paper example).", choices=BETA_SAMPLING)
    beta_density_power: float | None = _doc(
        None, "Shape of the MR-VAE's beta density: log beta = log a + (log b - log a) * U^p; 1 is log-uniform "
        "(the paper), p > 1 puts more samples at small beta (p = 2: half in the lowest quarter of the log range). "
        "Default: the recipe's.")
    beta_density_shape: str = _doc(
        "uniform", "Law of the standardised log beta U before the power: uniform (log-uniform beta) or arcsine "
        "(U ~ Beta(1/2, 1/2): more samples at both ends of the range, fewer in the middle; 0.205 of them in each "
        "outer tenth of the log range). An ablation option, not part of a recipe.", choices=BETA_DENSITY_SHAPES)
    loss_normalization: str | None = _doc(
        None, "MR-VAE loss weighting across beta: none (the paper: mean of D + beta R); per_beta: each "
        "example's loss divided by a running mean of the loss in its beta bin (8 bins in log beta), so every "
        "part of the range weighs alike in the gradient. Default: the recipe's.", choices=LOSS_NORMALIZATIONS)
    kl_schedule: str = _doc("constant", "KL weight schedule: constant; linear (0 -> beta over the first "
                            "kl_warmup_fraction); cyclical (kl_cycles ramps).", choices=KL_SCHEDULES)
    kl_schedule_unit: str = _doc("step", "The KL schedule advances per optimisation step or per epoch "
                                 "(reference code).", choices=KL_SCHEDULE_UNITS)
    kl_warmup_fraction: float = _doc(0.3, "Fraction of training over which the linear KL schedule ramps "
                                     "0 -> 1, in (0, 1].")
    kl_cycles: int = _doc(4, "Number of cycles of the cyclical KL schedule (Fu et al. 2019).")
    kl_cycle_ratio: float = _doc(0.5, "Fraction of each cyclical-schedule cycle spent ramping 0 -> 1, in "
                                 "(0, 1].")
    epochs: int = _doc(10, "Training epochs (the paper trains 200; the default is CPU-sized).")
    batch_size: int = _doc(128, "Global minibatch size (split over torchrun processes).")
    lr: float = _doc(1e-3, "Peak learning rate.")
    hyper_lr_mult: float | None = _doc(None, "Learning-rate multiplier for the MR gates' hyper-networks "
                                       "(they train at lr * hyper_lr_mult). Default: the recipe's for the family "
                                       "(mrvae 30, 100 for resnet; paper 1).")
    lr_warmup_epochs: float = _doc(0.0, "Linear learning-rate warm-up (epochs), then the lr schedule.")
    lr_schedule: str = _doc("cosine", "cosine: decay to min_lr per step; plateau: x plateau_factor when the "
                            "validation loss stalls for plateau_patience epochs; constant.", choices=LR_SCHEDULES)
    min_lr: float = _doc(1e-6, "End of the cosine decay.")
    plateau_patience: int = _doc(2, "Epochs without improvement before the plateau schedule lowers the lr.")
    plateau_factor: float = _doc(0.5, "Factor the plateau schedule multiplies the lr by, in (0, 1).")
    optimizer: str = _doc("adam", "Optimiser.", choices=OPTIMIZERS)
    weight_decay: float = _doc(0.0, "Weight decay of the optimiser.")
    grad_clip: float | None = _doc(None, "Clip the gradient norm at this value (default: off).")
    latent_dim: int | None = _doc(None, "Latent dimensions (default: the dataset's, e.g. 32/256/64).")
    distortion: str | None = _doc(None, "Distortion (default: bernoulli for binary images, sse for colour).",
                                  choices=_distortion_names)
    enc_gate: str = _doc("sigmoid", "MR encoder gate kind.", choices=_gate_names)
    dec_gate: str = _doc("sqrt", "MR decoder gate kind.", choices=_gate_names)
    hyper_hidden: tuple[int, ...] = _doc((), "Hidden widths of the gates' hyper-network (App. D ablation); "
                                         "empty: the paper's linear map w * u + b.")
    objective: str = _doc("elbo", "tcvae: beta weighs the total correlation only (beta-TCVAE; dsprites "
                          "default).", choices=OBJECTIVES)
    model_options: dict = _doc(help="Architecture options (e.g. preset=small for nvae, dropout=0.5 for lstm, "
                               "monotone_decoder=false for free decoder gates in conv/resnet MR-VAEs; "
                               "default: the recipe's, non-increasing in beta for mrvae).", factory=dict)
    seed: int = _doc(0, "Random seed (initialisation, data order, beta draws).")
    device: str = _doc("auto", "auto, cpu, cuda or cuda:N.")
    data_dir: str | None = _doc(None, "Data root (default: $MRVAE_DATA, else ~/.cache/mrvae/data).")
    out_dir: str = _doc("runs", "Parent folder of the run folders.")
    run_name: str | None = _doc(None, "Run folder name (default: derived from the settings).")
    keep_checkpoints: int = _doc(2, "Keep the checkpoints of the last N epochs (checkpoint-eNNNN.pt); a corrupt "
                                 "latest one falls back to the previous. 1: checkpoint.pt only.")
    log: str = _doc("none", "Also log per-epoch metrics and the evaluated RD curve to an experiment tracker "
                    "(tensorboard: pip install -e '.[tb]'); metrics.jsonl is always written.", choices=LOGGERS)
    n_betas: int = _doc(20, "Betas on the evaluated RD curve (MR-VAE).")
    iw_k: int = _doc(0, "Importance samples for the IW-NLL (0: off; it costs k decoder passes per beta).")
    eval_batch_size: int = _doc(100, "Test images per evaluation batch (batched MR passes hold up to 256 rows "
                                "on CPU, 8192 on CUDA).")
    eval_examples: int | None = _doc(None, "Evaluate on the first N test examples (default: the whole test set); "
                                     "resume and deep evaluate use it too.")
    max_train_examples: int | None = _doc(None, "Train on a fixed subset of N examples (a reduced protocol, "
                                          "labelled in the results).")
    val_split: str | None = _doc(None, "Split scored after every epoch (val_loss in metrics.jsonl; drives the "
                                 "plateau lr schedule), e.g. valid.")
    val_max_examples: int | None = _doc(None, "Validate on the first N examples only (>= 2).")
    num_threads: int | None = _doc(None, "torch CPU threads.")
    data_options: dict = _doc(help="Dataset options (e.g. train_split=valid for yahoo, source=subgrid for "
                              "dsprites).", factory=dict)
    eval_options: dict = _doc(help="Options of the family's evaluation sweep (e.g. mig_samples=2000).",
                              factory=dict)
    download: bool = _doc(False, "Download missing dataset files (needs the network).")
    precision: str = _doc("fp32", "Mixed precision: bf16 autocast (CPU or GPU) or fp16 autocast with loss "
                          "scaling (GPU only); rate, distortion and loss stay float32.", choices=PRECISIONS)

    def __post_init__(self) -> None:
        if self.recipe in RECIPES:   # fields left unset take the recipe's values (an unknown recipe: validate())
            values = recipe_values(self.recipe, self.arch)
            for name in RECIPE_FIELDS:
                if getattr(self, name) is None:
                    setattr(self, name, values[name])
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

        for f in dataclasses.fields(self):  # the enumerated fields: one list per field, in its metadata
            choices = f.metadata.get("choices")
            if isinstance(choices, tuple) and getattr(self, f.name) not in choices:
                raise bad(f.name, f"choose from {list(choices)}")
        if self.mr:
            from linvae.conditioning import BetaRange  # torch: imported only when a config is checked

            BetaRange(self.beta_a, self.beta_b)  # raises BetaRangeError with a clear message
        if not (isinstance(self.beta, (int, float)) and math.isfinite(self.beta) and self.beta > 0):
            raise bad("beta", "beta must be a finite number > 0")
        if not 0 < self.kl_warmup_fraction <= 1:
            raise bad("kl_warmup_fraction", "must lie in (0, 1]")
        if self.kl_cycles < 1 or not 0 < self.kl_cycle_ratio <= 1:
            raise ConfigError("cyclical schedule needs kl_cycles >= 1 and kl_cycle_ratio in (0, 1]")
        if int(self.plateau_patience) < 0 or not 0 < self.plateau_factor < 1:
            raise ConfigError("plateau schedule needs plateau_patience >= 0 and plateau_factor in (0, 1)")
        if self.val_max_examples is not None and self.val_max_examples < 2:
            raise bad("val_max_examples", "must be >= 2 (or None for the whole validation split)")
        if self.eval_examples is not None and self.eval_examples < 2:
            raise bad("eval_examples", "must be >= 2 (or None for the whole test split)")
        if int(self.keep_checkpoints) < 1:
            raise bad("keep_checkpoints", "must be >= 1 (1 keeps checkpoint.pt only)")
        for name in ("epochs", "batch_size", "n_betas", "eval_batch_size"):
            if int(getattr(self, name)) < 1:
                raise bad(name, "must be a positive integer")
        if self.iw_k < 0:
            raise bad("iw_k", "must be >= 0 (0 disables the importance-weighted NLL)")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise bad("lr", "must be > 0")
        if not (self.hyper_lr_mult > 0 and math.isfinite(self.hyper_lr_mult)):
            raise bad("hyper_lr_mult", "must be > 0")
        if not (self.beta_density_power > 0 and math.isfinite(self.beta_density_power)):
            raise bad("beta_density_power", "must be a finite number > 0 (1: log-uniform)")
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
        problem = precision_problem(self.precision, "cpu" if self.device == "cpu" else None)
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
        """A copy with ``changes``; changing the ``recipe`` or the ``arch`` (whose family may override the
        recipe) moves every recipe field still at the old value to the new one (fields set to other values
        stay)."""
        moved = any(k in changes and changes[k] != getattr(self, k) for k in ("recipe", "arch"))
        if moved and self.recipe in RECIPES:
            old = recipe_values(self.recipe, self.arch)
            for name in RECIPE_FIELDS:
                if name not in changes and getattr(self, name) == old[name]:
                    changes[name] = None
        return dataclasses.replace(self, **changes)

    def recipe_value(self, name: str) -> Any:
        """The recipe's value of a model-side setting (e.g. ``monotone_decoder``) for this config's family."""
        return recipe_values(self.recipe, self.arch)[name]

    @property
    def beta_range(self) -> BetaRange:
        from linvae.conditioning import BetaRange

        return BetaRange(self.beta_a, self.beta_b)

    def default_run_name(self) -> str:
        """``<dataset>_<arch>_<mr|beta<b>_<schedule>>[_n<N>]_e<epochs>_lr<lr>_seed<seed>``."""
        kind = "mr" if self.mr else f"beta{self.beta:.4g}_{self.kl_schedule}"
        reduced = f"_n{self.max_train_examples}" if self.max_train_examples else ""
        return f"{self.dataset}_{self.arch}_{kind}{reduced}_e{self.epochs}_lr{self.lr:g}_seed{self.seed}"


# ------------------------------------------------------------------------------------------
# building blocks
# ------------------------------------------------------------------------------------------
# ------------------------------------------------------------------------------------------
# mixed precision
# ------------------------------------------------------------------------------------------
def precision_problem(precision: str, device: torch.device | str | None) -> str | None:
    """Why ``precision`` cannot run on ``device`` (a message naming the fix), or ``None`` when it can.
    ``device=None`` checks the name only."""
    if precision not in PRECISIONS:
        return f"invalid precision={precision!r}: choose from {list(PRECISIONS)}"
    if device is None:
        return None
    import torch  # only when a device is given

    dev = torch.device(device)
    if precision == "fp16" and dev.type != "cuda":
        return ("precision 'fp16' needs a CUDA GPU (float16 autocast with loss scaling); on CPU use "
                "--precision bf16 or fp32")
    if precision == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "this GPU does not support bfloat16: use --precision fp16 or fp32"
    return None


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU raises ConfigError."""
    import torch

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
    """The fields (other than :data:`RUNTIME_FIELDS`) whose values differ, one ``"name: checkpoint=.., now=.."``
    line each."""
    from .runs import jsonable

    try:  # fields added since the checkpoint was written take their defaults
        saved = TrainConfig.from_dict(saved).to_dict()
    except (TypeError, ValueError):
        pass
    keys = sorted((set(saved) | set(now)) - RUNTIME_FIELDS)
    return [f"{k}: checkpoint={saved.get(k)!r}, now={now.get(k)!r}" for k in keys
            if jsonable(saved.get(k)) != jsonable(now.get(k))]


def recipe_settings(config: "TrainConfig") -> dict | None:
    """What an MR-VAE's recipe sets for its family (:func:`recipe_values`, model-side settings included), as
    recorded in a run's ``config.json`` (``recipe_settings``); None for a beta-VAE, which has no gates."""
    return recipe_values(config.recipe, config.arch) if config.mr and config.recipe in RECIPES else None


def recipe_change(recorded: dict, config: "TrainConfig") -> str | None:
    """Why a finished run (its ``config.json`` content ``recorded``) is not a run of ``config``'s recipe as the
    recipe is defined now, or None. Run folder names hold the recipe's name only, so a finished MR run of a
    recipe whose settings have changed since would otherwise be taken for a run of the new settings. Runs
    written before ``recipe_settings`` was recorded are not checked."""
    then, now = recorded.get("recipe_settings"), recipe_settings(config)
    if then is None or now is None or then == now:
        return None
    diff = ", ".join(f"{k}: then {then.get(k)!r}, now {now.get(k)!r}" for k in sorted(set(then) | set(now))
                     if then.get(k) != now.get(k))
    return f"it was trained when recipe {config.recipe!r} set other values ({diff})"


def load_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The TrainConfig stored in a run folder's ``config.json``."""
    from .runs import RunError, RunPaths, read_json

    paths = RunPaths(run_dir)
    if not paths.config.exists():
        raise RunError(f"{paths.root} is not a run folder (no config.json); pass the folder that "
                       "`mrvae-cli deep train` printed")
    return TrainConfig.from_dict(read_json(paths.config)["config"])


def field_help(name: str) -> str:
    """The one-line description of TrainConfig field ``name``."""
    text = _FIELDS[name].metadata.get("help", "")
    return text() if callable(text) else text


def field_choices(name: str) -> tuple[str, ...] | None:
    """The names TrainConfig field ``name`` may take (``None`` for a free value); model-side lists
    (datasets, architectures, gates, distortions) are read from their registries now."""
    choices = _FIELDS[name].metadata.get("choices")
    return tuple(choices() if callable(choices) else choices) if choices is not None else None


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
