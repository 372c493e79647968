"""Which code builds, feeds and evaluates each model family of the one deep trainer.

The trainer (:mod:`deep.train`) and the evaluator (:mod:`deep.evaluate`) know nothing about images, text
or hierarchies: they look the dataset and the architecture up here. Entries are ``"module:function"``
strings imported on first use, so a family whose module is absent only fails when it is asked for.

* ``DATASET_LOADERS[name]``: ``load_split(name, split, data_dir=None, download=False, **options)`` returning
  a data object (``len``, ``get_batch(index, train=, generator=)``, ``meta()``, ``protocol``; optional
  ``batches(perm, batch_size)`` for length bucketing).
* ``ARCHS[name]``: an :class:`ArchSpec` with ``build(config, data) -> nn.Module``,
  ``rebuild(model_config) -> nn.Module`` (from ``model.config``, for evaluation), an optional ``evaluate``
  sweep ``(model, data, betas, *, batch_size, iw_k, seed, max_examples, progress, **unused) -> dict``
  (``None``: :func:`deep.evaluate.rd_sweep`) and the datasets it accepts.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["ArchSpec", "ARCHS", "DATASET_LOADERS", "DEFAULT_ARCH", "RECOMMENDED", "UnknownArchError",
           "resolve", "arch_spec", "dataset_loader", "valid_datasets", "check_dataset_arch",
           "recommended_settings"]

_IMAGE_BINARY = ("mnist", "omniglot")
_IMAGE_ALL = ("mnist", "omniglot", "cifar10", "svhn", "celeba64")


@dataclass(frozen=True)
class ArchSpec:
    """How one architecture is built, rebuilt and evaluated (``module:function`` strings)."""

    name: str
    build: str | Callable[..., Any]
    rebuild: str | Callable[..., Any]
    evaluate: str | Callable[..., Any] | None
    datasets: tuple[str, ...]
    description: str


ARCHS: dict[str, ArchSpec] = {
    "conv": ArchSpec("conv", "deep.models.convnets:build_from_config", "deep.models.convnets:rebuild", None, _IMAGE_ALL,
                     "pythae-benchmark convolutional encoder/decoder"),
    "resnet": ArchSpec("resnet", "deep.models.convnets:build_from_config", "deep.models.convnets:rebuild", None, _IMAGE_ALL,
                       "pythae-benchmark ResNet encoder/decoder"),
    "nvae": ArchSpec("nvae", "deep.models.nvae.model:build", "deep.models.nvae.model:rebuild", "deep.models.nvae.model:sweep",
                     _IMAGE_BINARY + ("celeba64",), "hierarchical NVAE (Vahdat & Kautz 2020)"),
    "lstm": ArchSpec("lstm", "deep.models.text:build", "deep.models.text:rebuild", "deep.models.text:sweep", ("yahoo",),
                     "autoregressive LSTM text VAE (He et al. 2019)"),
    "mlp": ArchSpec("mlp", "deep.models.tcvae:build", "deep.models.tcvae:rebuild", "deep.models.tcvae:sweep", ("dsprites",),
                    "MLP beta-TCVAE (Chen et al. 2018)"),
}

DATASET_LOADERS: dict[str, str | Callable[..., Any]] = {
    **{name: "deep.data.images:load_split" for name in _IMAGE_ALL},
    "dsprites": "deep.data.dsprites:load_split",
    "yahoo": "deep.models.text:load_split",
}

#: The architecture each dataset trains with when none is given.
DEFAULT_ARCH = {"dsprites": "mlp", "yahoo": "lstm"}

#: Recommended TrainConfig values per dataset or architecture (the paper's App. C settings that differ
#: from the image defaults); the CLI applies them to every option the user did not set.
RECOMMENDED: dict[str, dict[str, Any]] = {
    # App. C.2.1: Adam, batch 2048, beta range [0.1, 10], beta on the total correlation only
    "dsprites": {"objective": "tcvae", "batch_size": 2048, "beta_a": 0.1, "beta_b": 10.0},
    # He et al. 2019 / paper: batch 32, gradient norm clipped at 5, LR halved on a validation plateau
    "yahoo": {"batch_size": 32, "grad_clip": 5.0, "lr_schedule": "plateau"},
}


def recommended_settings(dataset: str, arch: str, model_options: dict | None = None) -> dict[str, Any]:
    """Recommended TrainConfig values for ``dataset`` trained with ``arch`` (dataset entries first, then
    the architecture's; an architecture module may add ``recommended_settings(dataset, model_options)``)."""
    out = dict(RECOMMENDED.get(dataset, {}))
    out.update(RECOMMENDED.get(arch, {}))
    spec = ARCHS.get(arch)
    if spec is not None and isinstance(spec.build, str):
        module_name = spec.build.partition(":")[0]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            module = None
        hook = getattr(module, "recommended_settings", None)
        if hook is not None:
            out.update(hook(dataset, dict(model_options or {})))
    return out


class UnknownArchError(ValueError):
    """An architecture or dataset/architecture pair this code does not have (lists the valid ones)."""


def resolve(target: str | Callable[..., Any]) -> Callable[..., Any]:
    """Import ``"package.module:function"`` and return the function (a callable is returned as is, so
    users and tests can register functions directly).

    A missing module raises :class:`UnknownArchError` naming it, so an optional family that is not
    installed fails with a readable message.
    """
    if callable(target):
        return target
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise UnknownArchError(f"{target} is not available: module {module_name} is missing") from None
        raise
    try:
        return getattr(module, attr)
    except AttributeError:
        raise UnknownArchError(f"{module_name} has no {attr!r} (needed as {target})") from None


def arch_spec(arch: str) -> ArchSpec:
    """The :class:`ArchSpec` of ``arch``; unknown names list the valid ones."""
    try:
        return ARCHS[arch]
    except KeyError:
        raise UnknownArchError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHS)}") from None


def valid_datasets() -> list[str]:
    """Every dataset some architecture can train on."""
    return list(DATASET_LOADERS)


def dataset_loader(name: str) -> Callable[..., Any]:
    """The ``load_split`` function of dataset ``name``."""
    if name not in DATASET_LOADERS:
        from deep.data.images import UnknownDatasetError

        raise UnknownDatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASET_LOADERS)}")
    return resolve(DATASET_LOADERS[name])


def check_dataset_arch(dataset: str, arch: str) -> None:
    """Raise a clear error when ``arch`` cannot train on ``dataset``."""
    if dataset not in DATASET_LOADERS:
        from deep.data.images import UnknownDatasetError

        raise UnknownDatasetError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASET_LOADERS)}")
    spec = arch_spec(arch)
    if dataset not in spec.datasets:
        fits = [a for a, s in ARCHS.items() if dataset in s.datasets]
        raise UnknownArchError(f"architecture {arch!r} does not train on {dataset!r}; for {dataset} choose "
                               f"--arch {' or '.join(fits)}")
