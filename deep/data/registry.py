"""The dataset registry: which function loads each dataset's splits.

Register a dataset of your own with :func:`register_dataset`; the trainer and the evaluator load every split
through :func:`load_dataset`. Loaders are given as functions or as ``"module:function"`` strings imported
on first use, so a dataset whose module (or optional dependency) is absent fails only when asked for.

A loader is ``load_split(name, split, data_dir=None, download=False, **options) -> data`` where ``data`` has
``len(data)``, ``data.get_batch(index, train=bool, generator=None)`` (a ``(B, ...)`` tensor or a batch object
with ``len``, ``to(device)`` and ``select(index)``) and ``data.meta()`` (a JSON-able description of the
protocol); optionally ``batches(perm, batch_size)`` (training batch order, e.g. length bucketing),
``evaluation_index(n, seed)`` (which examples an evaluation of ``n`` examples uses, in order; default the
first ``n``), ``evaluation_batches(index, batch_size)`` (their grouping; default consecutive chunks) and
``factor_grid(...)`` (a complete factor grid, for MIG).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["DatasetSpec", "UnknownDatasetError", "register_dataset", "load_dataset", "dataset_spec",
           "dataset_names", "resolve"]


class UnknownDatasetError(ValueError):
    """Raised for a dataset name that is not registered (the message lists the registered ones)."""


@dataclass(frozen=True)
class DatasetSpec:
    """One registered dataset: its loader, the family it trains with by default (``None``: the image default,
    ``resnet``) and the TrainConfig values recommended for it (the CLI applies them to options left unset)."""

    name: str
    loader: str | Callable[..., Any]
    default_family: str | None = None
    recommended: dict = field(default_factory=dict)
    description: str = ""


_DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(name: str, loader: str | Callable[..., Any], *, default_family: str | None = None,
                     recommended: dict | None = None, description: str = "", replace: bool = False) -> DatasetSpec:
    """Register dataset ``name`` (see the module docstring for the loader's contract); returns its spec.

    ``replace=False`` refuses to overwrite a registered name (pass ``replace=True`` on purpose)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset name must be a non-empty string, got {name!r}")
    if name in _DATASETS and not replace:
        raise ValueError(f"dataset {name!r} is already registered (pass replace=True to replace it)")
    spec = DatasetSpec(name, loader, default_family, dict(recommended or {}), description)
    _DATASETS[name] = spec
    return spec


def unregister_dataset(name: str) -> None:
    """Remove a registered dataset (tests, plugins)."""
    _DATASETS.pop(name, None)


def resolve(target: str | Callable[..., Any], error: type[Exception] = ValueError) -> Callable[..., Any]:
    """Import ``"package.module:function"`` and return the function (a callable is returned as is).

    A missing module raises ``error`` naming it, so an optional family that is not installed fails with a
    readable message."""
    if callable(target):
        return target
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise error(f"{target} is not available: module {module_name} is missing") from None
        raise
    try:
        return getattr(module, attr)
    except AttributeError:
        raise error(f"{module_name} has no {attr!r} (needed as {target})") from None


def dataset_names() -> list[str]:
    """Every registered dataset, in registration order."""
    return list(_DATASETS)


def dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name``; an unknown name lists the registered ones."""
    try:
        return _DATASETS[name]
    except KeyError:
        raise UnknownDatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(_DATASETS)}") from None


def load_dataset(name: str, split: str, *, data_dir: str | None = None, download: bool = False,
                 **options: Any) -> Any:
    """Split ``split`` of dataset ``name`` through its registered loader."""
    return resolve(dataset_spec(name).loader, UnknownDatasetError)(name, split, data_dir=data_dir,
                                                                    download=download, **options)


# -- the datasets of the paper ------------------------------------------------------------------------
for _name in ("mnist", "omniglot", "cifar10", "svhn", "celeba64"):
    register_dataset(_name, "deep.data.images:load_split")
# App. C.2.1: Adam, batch 2048, beta range [0.1, 10], beta on the total correlation only
register_dataset("dsprites", "deep.data.dsprites:load_split", default_family="mlp",
                 recommended={"objective": "tcvae", "batch_size": 2048, "beta_a": 0.1, "beta_b": 10.0})
#: Yahoo's ``enc_gate_lambda`` (docs/yahoo.md): at the cpu budget the beta-VAEs' posterior mean follows
#: ``c / (c + beta)`` with ``c ~ 0.03`` (fit to the beta = 0.01 and 0.1 runs).
YAHOO_ENC_GATE_LAMBDA = 0.03
# He et al. 2019 / paper: batch 32, gradient norm clipped at 5, LR halved on a validation plateau; ours (docs/yahoo.md):
# the MR encoder's last-state gate starts as the linear-VAE response lambda / (lambda + beta)
# (--model-option enc_gate_lambda=null gives the paper's open gates)
register_dataset("yahoo", "deep.data.text:load_split", default_family="lstm",
                 recommended={"batch_size": 32, "grad_clip": 5.0, "lr_schedule": "plateau",
                              "model_options": {"enc_gate_lambda": YAHOO_ENC_GATE_LAMBDA}})
