"""The model-family registry: how each architecture is built, rebuilt and which datasets it trains on.

Register a family of your own with :func:`register_family`; the trainer builds every model through
:func:`build_model_from_config` and the evaluator rebuilds trained models through :func:`rebuild_model`.
Builders are functions or ``"module:function"`` strings imported on first use.

* ``build(config, data) -> MultiRateVAE``: the model a :class:`deep.train.TrainConfig` describes (``data``:
  the training split, for families that size something from data, e.g. a vocabulary);
* ``rebuild(model_config) -> MultiRateVAE``: the same architecture from ``model.config`` (evaluation);
* ``datasets``: the registered datasets (:mod:`deep.data.registry`) it trains on;
* ``recommended``: TrainConfig values the CLI applies to options the user left unset, a dict or a function
  ``(dataset, model_options) -> dict``;
* ``recipe_overrides``: ``{recipe name: {setting: value}}``, the values this family takes instead of the shared
  ones of a training recipe (:data:`deep.train.config.RECIPES`), e.g. ``{"mrvae": {"hyper_lr_mult": 100.0}}``.
  Unlike ``recommended`` they hold for the library, the CLI and the experiments alike, and a run records them
  (``recipe_settings`` in its ``config.json``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from deep.data.registry import dataset_names, dataset_spec, resolve

__all__ = ["FamilySpec", "UnknownArchError", "register_family", "unregister_family", "family_spec",
           "family_names", "check_dataset_arch", "default_family", "recommended_settings",
           "build_model_from_config", "rebuild_model", "valid_datasets", "family_recipe_overrides",
           "IMAGE_FAMILY_DEFAULT"]

#: The family an image dataset trains with when none is given.
IMAGE_FAMILY_DEFAULT = "resnet"


class UnknownArchError(ValueError):
    """An architecture or dataset/architecture pair this code does not have (lists the valid ones)."""


@dataclass(frozen=True)
class FamilySpec:
    """How one architecture is built and rebuilt, and the datasets it accepts."""

    name: str
    build: str | Callable[..., Any]
    rebuild: str | Callable[..., Any]
    datasets: tuple[str, ...]
    description: str = ""
    recommended: dict | str | Callable[..., dict] | None = None
    recipe_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


_FAMILIES: dict[str, FamilySpec] = {}


def register_family(name: str, *, build: str | Callable[..., Any], rebuild: str | Callable[..., Any],
                    datasets: tuple[str, ...] | list[str], description: str = "",
                    recommended: dict | str | Callable[..., dict] | None = None,
                    recipe_overrides: Mapping[str, Mapping[str, Any]] | None = None,
                    replace: bool = False) -> FamilySpec:
    """Register architecture ``name`` (see the module docstring); returns its spec.

    ``replace=False`` refuses to overwrite a registered name (pass ``replace=True`` on purpose)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"family name must be a non-empty string, got {name!r}")
    if name in _FAMILIES and not replace:
        raise ValueError(f"family {name!r} is already registered (pass replace=True to replace it)")
    overrides = {str(recipe): dict(values) for recipe, values in (recipe_overrides or {}).items()}
    spec = FamilySpec(name, build, rebuild, tuple(datasets), description, recommended, overrides)
    _FAMILIES[name] = spec
    return spec


def unregister_family(name: str) -> None:
    """Remove a registered family (tests, plugins)."""
    _FAMILIES.pop(name, None)


def family_names() -> list[str]:
    """Every registered architecture, in registration order."""
    return list(_FAMILIES)


def family_spec(arch: str) -> FamilySpec:
    """The :class:`FamilySpec` of ``arch``; unknown names list the valid ones."""
    try:
        return _FAMILIES[arch]
    except KeyError:
        raise UnknownArchError(f"unknown architecture {arch!r}; choose one of: {', '.join(_FAMILIES)}") from None


def valid_datasets() -> list[str]:
    """Every registered dataset some architecture can train on."""
    return [d for d in dataset_names() if any(d in f.datasets for f in _FAMILIES.values())]


def default_family(dataset: str) -> str:
    """The architecture ``dataset`` trains with when none is given."""
    return dataset_spec(dataset).default_family or IMAGE_FAMILY_DEFAULT


def check_dataset_arch(dataset: str, arch: str) -> None:
    """Raise a clear error when ``dataset`` is unknown or ``arch`` cannot train on it."""
    dataset_spec(dataset)  # UnknownDatasetError lists the registered ones
    spec = family_spec(arch)
    if dataset not in spec.datasets:
        fits = [a for a, s in _FAMILIES.items() if dataset in s.datasets]
        raise UnknownArchError(f"architecture {arch!r} does not train on {dataset!r}; for {dataset} choose "
                               f"--arch {' or '.join(fits)}")


def recommended_settings(dataset: str, arch: str, model_options: dict | None = None) -> dict[str, Any]:
    """Recommended TrainConfig values for ``dataset`` trained with ``arch``: the dataset's, then the family's
    (its dict, or its function of ``(dataset, model_options)``)."""
    out = dict(dataset_spec(dataset).recommended) if dataset in dataset_names() else {}
    rec = family_spec(arch).recommended if arch in _FAMILIES else None
    if isinstance(rec, dict):
        out.update(rec)
    elif rec is not None:
        out.update(resolve(rec, UnknownArchError)(dataset, dict(model_options or {})))
    return out


def family_recipe_overrides(arch: str, recipe: str) -> dict[str, Any]:
    """The values family ``arch`` takes instead of recipe ``recipe``'s shared ones (empty when it takes them
    all, or when ``arch`` is not registered)."""
    spec = _FAMILIES.get(arch)
    return dict(spec.recipe_overrides.get(recipe, {})) if spec is not None else {}


def build_model_from_config(config: Any, data: Any = None) -> Any:
    """The model ``config`` (a :class:`deep.train.TrainConfig`) describes, built by its family; ``data`` (the
    training split) gives families what they size from data (vocabulary, N)."""
    check_dataset_arch(config.dataset, config.arch)
    return resolve(family_spec(config.arch).build, UnknownArchError)(config, data)


def rebuild_model(arch: str, model_config: dict) -> Any:
    """The architecture ``model_config`` (a trained model's ``config``) describes, rebuilt by family ``arch``."""
    return resolve(family_spec(arch).rebuild, UnknownArchError)(dict(model_config))


# -- the families of the paper ------------------------------------------------------------------------
_IMAGES = ("mnist", "omniglot", "cifar10", "svhn", "celeba64")
register_family("conv", build="deep.models.convnets:build_from_config", rebuild="deep.models.convnets:rebuild",
                datasets=_IMAGES, description="pythae-benchmark convolutional encoder/decoder")
# docs/recipe.md: gate learning rate x100 beat the shared x30 at 6 of 6 ResNet seeds (MNIST, Omniglot)
register_family("resnet", build="deep.models.convnets:build_from_config", rebuild="deep.models.convnets:rebuild",
                datasets=_IMAGES, description="pythae-benchmark ResNet encoder/decoder",
                recipe_overrides={"mrvae": {"hyper_lr_mult": 100.0}})
register_family("nvae", build="deep.models.nvae.model:build", rebuild="deep.models.nvae.model:rebuild",
                datasets=("mnist", "omniglot", "celeba64"), description="hierarchical NVAE (Vahdat & Kautz 2020)",
                recommended="deep.models.nvae.model:recommended_settings")
register_family("lstm", build="deep.models.text:build", rebuild="deep.models.text:rebuild", datasets=("yahoo",),
                description="autoregressive LSTM text VAE (He et al. 2019)")
register_family("mlp", build="deep.models.tcvae:build", rebuild="deep.models.tcvae:rebuild", datasets=("dsprites",),
                description="MLP beta-TCVAE (Chen et al. 2018)")
