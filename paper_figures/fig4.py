"""Fig. 4: linear VAE on MNIST, test RD curves of the MR-VAE, the beta-VAEs and the exact optimum.

Reads only the ``results.json`` written by ``mrvae-cli linear compare``.
Usage: ``python -m paper_figures.fig4 RESULTS.json OUT_PREFIX``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .style import COLORS, load_results, new_figure, save

REQUIRED = {"closed_form": ["rate", "distortion"], "mr_vae": ["rate", "distortion"],
            "beta_vae": ["beta", "rate", "distortion"], "protocol": ["label"],
            "excess": ["beta", "mr_vae", "beta_vae_envelope"]}


def draw(r: dict):
    """The two-panel figure for loaded results ``r``; returns ``(fig, (rd_axes, excess_axes))``."""
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    fig, (ax, ax2) = new_figure(9.0, 4.2, ncols=2)
    ax.plot(r["closed_form"]["rate"], r["closed_form"]["distortion"], color=COLORS["exact"], lw=1.2,
            ls="--", label="exact optimum (closed form)")
    ax.plot(r["mr_vae"]["rate"], r["mr_vae"]["distortion"], color=COLORS["mr"], lw=2, label="MR-VAE (one model)")
    ax.scatter(r["beta_vae"]["rate"], r["beta_vae"]["distortion"], marker="^", s=30, color=COLORS["beta"],
               zorder=3, label="beta-VAEs (10 models)")
    ax.set_xlabel("rate (nats)")
    ax.set_ylabel("distortion (nats, no 2π constant)")
    ax.set_title("MNIST (linear VAE), test set")
    ax.legend(fontsize=8)
    ex = r["excess"]
    mr = 100 * np.asarray(ex["mr_vae"], dtype=float)
    env = 100 * np.asarray(ex["beta_vae_envelope"], dtype=float)
    ax2.plot(ex["beta"], mr, "o-", color=COLORS["mr"], ms=3, label="MR-VAE (one model)")
    ax2.plot(ex["beta"], env, "^-", color=COLORS["beta"], ms=3, label="best of the 10 beta-VAEs")
    ax2.axhline(1.0, color="gray", lw=0.8, ls=":", label="1% target")
    ax2.set_xscale("log")
    # a linear axis (the excess can be 0 or slightly negative on test data, so no log axis) from 0,
    # always showing the 1% target, with enough ticks to read every point off
    values = np.concatenate([mr, env])
    low = min(0.0, float(np.nanmin(values)))
    high = max(1.2, float(np.nanmax(values)))
    pad = 0.05 * (high - low)
    ax2.set_ylim(low - pad, high + pad)
    ax2.yaxis.set_major_locator(MaxNLocator(nbins=8, steps=[1, 2, 2.5, 5, 10]))
    ax2.yaxis.set_major_formatter(PercentFormatter(decimals=None))
    ax2.set_xlabel("β")
    ax2.set_ylabel("excess test loss L/L* − 1")
    ax2.set_title("distance to the closed-form optimum")
    # the legend sits below the axes, where it can never cover a point
    ax2.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=3, frameon=False,
               handlelength=1.6, columnspacing=1.0)
    return fig, (ax, ax2)


def plot(results_path: str | Path, out_prefix: str | Path) -> list[Path]:
    """Draw the RD panel and the relative-excess panel; returns the PNG and PDF paths."""
    r = load_results(results_path, REQUIRED)
    fig, _ = draw(r)
    return save(fig, out_prefix, caption=r["protocol"]["label"])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        raise SystemExit("usage: python -m paper_figures.fig4 RESULTS.json OUT_PREFIX")
    for p in plot(argv[0], argv[1]):
        print(p)


if __name__ == "__main__":
    main()
