"""Shared figure style and I/O for the paper figures (matplotlib, Agg backend)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"mr": "#1f77b4", "beta": "#d62728", "beta_anneal": "#ff7f0e", "exact": "black", "vae": "#2ca02c"}


class MalformedResultsError(ValueError):
    """A result file is missing fields a figure needs, or is not valid JSON."""


def load_results(path: str | Path, required: dict[str, list[str]]) -> dict:
    """Read a results JSON file and check that ``required[section]`` keys exist."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise MalformedResultsError(f"{path} is not valid JSON: {err}") from err
    for section, keys in required.items():
        if section not in data or not isinstance(data[section], dict):
            raise MalformedResultsError(f"{path}: missing section '{section}'")
        missing = [k for k in keys if k not in data[section]]
        if missing:
            raise MalformedResultsError(f"{path}: section '{section}' lacks {missing}")
    return data


def new_figure(width: float = 5.0, height: float = 3.8, ncols: int = 1):
    """A figure with ``ncols`` axes in the shared style; returns ``(fig, axes)``."""
    plt.rcParams.update({"font.size": 9, "axes.grid": True, "grid.alpha": 0.3})
    return plt.subplots(1, ncols, figsize=(width, height), constrained_layout=True)


def save(fig, out_prefix: str | Path, caption: str | None = None) -> list[Path]:
    """Write ``<out_prefix>.png`` and ``.pdf``; the caption line states the protocol."""
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    if caption:
        fig.text(0.01, 0.005, caption, fontsize=6, ha="left", va="bottom", wrap=True)
        fig.get_layout_engine().set(rect=(0, 0.06, 1, 0.94))
    paths = [out_prefix.with_suffix(".png"), out_prefix.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths
