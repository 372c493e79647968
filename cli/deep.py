"""``mrvae-cli deep ...``: deep MR-VAEs and beta-VAE baselines."""
from __future__ import annotations

import click


@click.group()
def deep() -> None:
    """Deep MR-VAEs (Conv, ResNet, ...): train, sweep baselines, evaluate."""
