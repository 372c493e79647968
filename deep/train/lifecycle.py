"""What commands on an existing run folder need: its configuration, its data, and what a resume may change.

* A run records its data root as an absolute path (:func:`absolute_data_root`, called by the trainer), so
  resume, evaluate and sample work from any working directory. When the recorded root is gone (the data
  moved, another machine), :func:`run_data_root` falls back to ``--data-dir`` / ``$MRVAE_DATA`` / the default
  root and says so; ``--data-dir`` always wins.
* :func:`load_run_config` reads ``config.json``, or the configuration stored in the newest readable checkpoint
  when ``config.json`` is missing or unreadable (with a warning).
* :func:`resume_settings` applies what a resume may change: the fields of
  :data:`deep.train.config.RUNTIME_FIELDS` (device, threads, data root, evaluation settings, checkpoints kept,
  logging); anything else would train another model and is refused.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from linvae.dataroot import ENV_VAR, DatasetMissingError, resolve_data_root

from .config import RUNTIME_FIELDS, ConfigError, TrainConfig

__all__ = ["absolute_data_root", "run_data_root", "load_run_data", "load_run_config", "resume_settings"]


def absolute_data_root(data_dir: str | os.PathLike | None) -> str:
    """The data root ``data_dir`` names (else ``$MRVAE_DATA``, else the default) as an absolute path."""
    return str(resolve_data_root(data_dir).expanduser().resolve())


def run_data_root(recorded: str | None, override: str | os.PathLike | None = None) -> str:
    """The data root a command on an existing run uses: ``override`` (``--data-dir``) when given; else the
    run's recorded root when it exists; else ``$MRVAE_DATA`` or the default root, with a warning naming the
    recorded root that is gone."""
    if override:
        return absolute_data_root(override)
    if recorded and Path(recorded).expanduser().is_dir():
        return absolute_data_root(recorded)
    fallback = absolute_data_root(None)
    if recorded and absolute_data_root(recorded) != fallback:
        relative = "" if Path(recorded).is_absolute() else " (a path relative to where the run was started)"
        origin = f"${ENV_VAR}={fallback}" if os.environ.get(ENV_VAR) else f"the default data root {fallback}"
        warnings.warn(f"the run's data root {recorded}{relative} no longer exists; using {origin} (pass "
                      "--data-dir to choose another)", stacklevel=2)
    return fallback


def load_run_data(config: TrainConfig, split: str, data_dir: str | os.PathLike | None = None) -> Any:
    """Split ``split`` of an existing run's dataset from :func:`run_data_root`. When the run's root lacks the
    files and ``$MRVAE_DATA`` names another root, that root is tried next (saying so), so the advice of the
    missing-file message (``--data-dir`` / ``$MRVAE_DATA``) always works."""
    from deep.data.registry import load_dataset

    root = run_data_root(config.data_dir, data_dir)

    def load(at: str) -> Any:
        return load_dataset(config.dataset, split, data_dir=at, download=config.download, **config.data_options)

    try:
        return load(root)
    except DatasetMissingError:
        env = os.environ.get(ENV_VAR)
        if data_dir or not env or absolute_data_root(env) == root:
            raise
        warnings.warn(f"{config.dataset} ({split}) is not under the run's data root {root}; using "
                      f"${ENV_VAR}={absolute_data_root(env)}", stacklevel=2)
        return load(absolute_data_root(env))


def load_run_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The configuration of the run in ``run_dir`` (``out_dir`` / ``run_name`` pointing at it): its
    ``config.json``, or, when that is missing or unreadable, the one stored in its newest readable checkpoint
    (a warning says so; the trainer writes ``config.json`` again on resume)."""
    from .runs import RunError, RunPaths, load_latest_checkpoint, read_json

    paths = RunPaths(run_dir)
    if not paths.root.is_dir():
        raise RunError(f"run folder {paths.root} does not exist; pass the folder that `mrvae-cli deep train` "
                       "printed")
    stored = None
    problem = "is missing"
    if paths.config.exists():
        try:
            stored = read_json(paths.config)["config"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problem = f"is unreadable ({type(exc).__name__})"
    if stored is None:
        if not paths.checkpoint_files():
            raise RunError(f"{paths.root} is not a run folder (no config.json and no checkpoint); pass the folder "
                           "that `mrvae-cli deep train` printed")
        state, used = load_latest_checkpoint(paths.root)
        warnings.warn(f"{paths.config} {problem}; using the configuration stored in {used.name}", stacklevel=2)
        stored = state["config"]
    config = TrainConfig.from_dict(stored)
    return config.replace(out_dir=str(paths.root.parent), run_name=paths.root.name)


def resume_settings(config: TrainConfig, overrides: dict | None = None, *, resolve_data: bool = True) -> TrainConfig:
    """``config`` with ``overrides`` (runtime fields only; ``None`` values are ignored) and, with
    ``resolve_data``, the data root :func:`run_data_root` chooses."""
    changes = {k: v for k, v in (overrides or {}).items() if v is not None}
    fixed = sorted(set(changes) - RUNTIME_FIELDS)
    if fixed:
        raise ConfigError(f"{', '.join(fixed)} cannot change when a run is resumed (the model would be another "
                          "one); start a new run with --run-name")
    if resolve_data:
        changes["data_dir"] = run_data_root(config.data_dir, changes.get("data_dir"))
    return config.replace(**changes).validate()

