"""Pieces shared by the mrvae-cli commands: the data-dir option and friendly errors."""
from __future__ import annotations

import contextlib
import errno
import functools
import sys
import warnings
from typing import Iterator

import click

from linvae.dataroot import DataIntegrityError, DatasetMissingError

data_dir_option = click.option(
    "--data-dir", type=click.Path(file_okay=False), envvar="MRVAE_DATA", default=None,
    help="Data root (default: $MRVAE_DATA, else ~/.cache/mrvae/data).")


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn errors a user can cause and fix into ``click.ClickException`` (one clear message, exit
    code 1, no traceback) and print each distinct warning once on stderr."""
    # ValueError covers linvae.conditioning.BetaRangeError and deep.train.ConfigError
    expected = (DatasetMissingError, DataIntegrityError, ValueError, FileNotFoundError, FloatingPointError)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        except Exception as exc:
            # a RunError can only come from deep.train.runs once it is imported: looking it up here keeps
            # commands that never touch a run (e.g. `figures`) free of torch
            runs = sys.modules.get("deep.train.runs")
            trackers = sys.modules.get("deep.train.trackers")
            if isinstance(exc, expected) or (runs is not None and isinstance(exc, runs.RunError)) or (
                    trackers is not None and isinstance(exc, trackers.TrackerUnavailableError)):
                raise click.ClickException(str(exc)) from None
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                where = f" writing {exc.filename}" if exc.filename else ""
                raise click.ClickException(
                    f"{exc.strerror or exc}{where}: free some space and run the command again (a training run "
                    "continues from its last checkpoint with `mrvae-cli deep resume RUN`)") from None
            raise
        finally:
            seen = set()
            for w in caught:
                msg = str(w.message)
                if msg in seen or issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning)):
                    continue
                seen.add(msg)
                click.echo(f"Warning: {msg}", err=True)


def friendly_errors(func):
    """Decorator form of :func:`user_errors`."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with user_errors():
            return func(*args, **kwargs)

    return wrapper


def _parse_list(text: str, option: str, cast: type, what: str) -> tuple:
    try:
        values = tuple(cast(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected a comma-separated list of {what}, got {text!r}", param_hint=option)
    if not values:
        raise click.BadParameter("needs at least one value", param_hint=option)
    return values


def parse_floats(text: str, option: str) -> tuple[float, ...]:
    """``"1e-2,3e-3"`` -> ``(0.01, 0.003)``; a click usage error otherwise."""
    return _parse_list(text, option, float, "numbers")


def parse_ints(text: str, option: str) -> tuple[int, ...]:
    """``"0,1,2"`` -> ``(0, 1, 2)``; a click usage error otherwise."""
    return _parse_list(text, option, int, "integers")
