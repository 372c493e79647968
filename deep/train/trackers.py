"""Optional experiment-tracker logging (``TrainConfig.log`` / ``--log tensorboard``).

``metrics.jsonl`` and ``results/rd.json`` are always written and stay the source of truth; a tracker receives
a copy: every finished epoch's numeric metrics (step = epoch) and every evaluated RD curve (one scalar per beta,
step = beta index, and the curve as a figure). Nothing is imported unless a tracker is asked for:
``tensorboard`` needs the ``tensorboard`` package (``pip install -e ".[tb]"``), and a missing package is a
clear error before any training starts. TensorBoard event files go to ``<run>/tensorboard/``
(``tensorboard --logdir runs/``).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable

__all__ = ["TrackerUnavailableError", "open_tracker", "TensorBoardTracker", "WRITER_FACTORIES"]


class TrackerUnavailableError(ImportError):
    """The tracker asked for is not installed (the message says how to install it)."""


def _tensorboard_writer(log_dir: str) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise TrackerUnavailableError(
            f"--log tensorboard needs the tensorboard package ({exc}); install it with "
            "pip install -e \".[tb]\" (or pip install tensorboard), or train without --log") from None
    return SummaryWriter(log_dir=log_dir)


#: How each tracker's writer is made from its log folder (tests put a fake writer here).
WRITER_FACTORIES: dict[str, Callable[[str], Any]] = {"tensorboard": _tensorboard_writer}


class TensorBoardTracker:
    """Writes to a ``SummaryWriter``-like object (``add_scalar``, ``add_figure``, ``add_text``, ``flush``,
    ``close``)."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def log_epoch(self, record: dict) -> None:
        """The numeric metrics of one epoch as ``train/<name>`` at step = epoch."""
        step = int(record["epoch"])
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and math.isfinite(value):
                self.writer.add_scalar(f"train/{key}", float(value), step)
        self.writer.flush()

    def log_curve(self, results: dict, name: str = "rd") -> None:
        """An evaluated RD curve: ``<name>/rate``, ``<name>/distortion`` and ``<name>/log10_beta`` per beta
        (step = beta index, betas ascending as evaluated), a text table, and the curve as a figure."""
        betas = results["beta"]
        for j, beta in enumerate(betas):
            self.writer.add_scalar(f"{name}/log10_beta", math.log10(beta), j)
            for key in ("rate", "distortion", "neg_elbo", "iw_nll"):
                values = results.get(key)
                if isinstance(values, list) and values[j] is not None:
                    self.writer.add_scalar(f"{name}/{key}", float(values[j]), j)
        rows = "\n".join(f"| {b:.4g} | {r:.4f} | {d:.4f} |"
                         for b, r, d in zip(betas, results["rate"], results["distortion"]))
        self.writer.add_text(f"{name}/table", "| beta | rate (nats) | distortion (nats) |\n|---|---|---|\n" + rows)
        from matplotlib.figure import Figure     # no pyplot: no GUI backend, no global figure state

        fig = Figure(figsize=(4, 3))
        ax = fig.add_subplot()
        ax.plot(results["rate"], results["distortion"], "o-")
        ax.set_xlabel("rate (nats)")
        ax.set_ylabel("distortion (nats)")
        fig.tight_layout()
        self.writer.add_figure(f"{name}/curve", fig, close=False)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def open_tracker(name: str, run_dir: str | os.PathLike) -> TensorBoardTracker | None:
    """The tracker ``name`` logging into ``run_dir`` (``None`` for ``"none"``); raises
    :class:`TrackerUnavailableError` when its package is missing."""
    if not name or name == "none":
        return None
    if name not in WRITER_FACTORIES:
        raise ValueError(f"unknown tracker {name!r}; choose one of: none, {', '.join(WRITER_FACTORIES)}")
    return TensorBoardTracker(WRITER_FACTORIES[name](str(Path(run_dir) / name)))
