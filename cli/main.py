"""``mrvae-cli``: the command-line entry point (thin wrappers over library calls)."""
from __future__ import annotations

import click

from .deep import deep
from .experiments import register as register_experiments
from .linear import linear


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mrvae")
def cli() -> None:
    """Multi-Rate VAEs: train once, get the full rate-distortion curve."""


cli.add_command(linear)
cli.add_command(deep)
register_experiments(cli)

if __name__ == "__main__":  # pragma: no cover
    cli()
