"""``mrvae-cli linear ...``: the closed-form linear VAE, its symbolic checks and Fig. 4."""
from __future__ import annotations

import click


@click.group()
def linear() -> None:
    """Linear VAE: exact theory (closed form, sympy) and the linear MR-VAE of Fig. 4."""
