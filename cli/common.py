"""Pieces shared by the mrvae-cli commands: the data-dir option and friendly errors."""
from __future__ import annotations

import functools
import warnings

import click

from linvae.conditioning import BetaRangeError
from linvae.dataroot import DataIntegrityError, DatasetMissingError

#: errors a user can cause and fix; shown as one clear line instead of a traceback
USER_ERRORS: tuple[type[BaseException], ...] = (DatasetMissingError, DataIntegrityError, BetaRangeError,
                                                ValueError, FileNotFoundError, FloatingPointError)

data_dir_option = click.option(
    "--data-dir", type=click.Path(file_okay=False), envvar="MRVAE_DATA", default=None,
    help="Data root (default: $MRVAE_DATA, else ~/.cache/mrvae/data).")


def friendly_errors(func):
    """Turn user errors into ``click.ClickException`` (exit code 1, one message, no traceback)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("default")
                return func(*args, **kwargs)
        except click.ClickException:
            raise
        except USER_ERRORS as err:
            raise click.ClickException(f"{type(err).__name__}: {err}") from err

    return wrapper


def _parse_list(text: str, option: str, cast: type, what: str) -> tuple:
    try:
        values = tuple(cast(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated {what}, got {text!r}", param_hint=option)
    if not values:
        raise click.BadParameter("needs at least one value", param_hint=option)
    return values


def parse_floats(text: str, option: str) -> tuple[float, ...]:
    """``"1e-2,3e-3"`` -> ``(0.01, 0.003)``; a click usage error otherwise."""
    return _parse_list(text, option, float, "numbers")


def parse_ints(text: str, option: str) -> tuple[int, ...]:
    """``"0,1,2"`` -> ``(0, 1, 2)``; a click usage error otherwise."""
    return _parse_list(text, option, int, "integers")
