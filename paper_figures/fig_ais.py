"""AIS rate-distortion curves of each beta's decoder vs the encoder's (R, D) points (Huang et al. 2020).

Reads only an AIS results JSON file (written by ``deep.evaluate.ais.ais_results_json``).
Usage: ``python -m paper_figures.fig_ais RESULTS.json OUT_PREFIX``.

Schema (arrays indexed by beta; every value nats per example, in the model's distortion units)::

    kind                      "mrvae ais rd"
    beta                      [m]        positive
    rate, distortion          [m]        the encoder's (R, D) at each beta (the evaluator's numbers)
    ais_lam                   [m][L_j]   lam schedule of beta_j's AIS curve (q_lam ∝ p(z) exp(-lam d))
    ais_rate, ais_distortion  [m][L_j]   AIS curve of beta_j's decoder (mean over examples)
    ais_rate_se, ais_distortion_se  [m][L_j]  optional Monte Carlo standard errors
    ais_rate_at_beta, ais_distortion_at_beta  [m]  the AIS point at lam = 1/beta
    inference_gap             [m]        (D_enc + beta R_enc) + beta log Z_AIS(1/beta)  (nats of the beta-VAE loss)
    bdmc_gap                  [m]        optional (entries may be null): BDMC gap on log Z at bdmc_lam
    bdmc_lam                  [m]        optional, the lam of each BDMC run
    conventions               {name: text}  optional, shown nowhere but kept with the numbers
    protocol.label            text       the caption (budget, data, AIS settings)

Iso-ELBO lines D + R = const (slope -1) are drawn in grey: at beta = 1 the negative ELBO is R + D.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from .style import COLORS, MalformedResultsError, new_figure, read_json_object, save

KIND = "mrvae ais rd"
PER_BETA = ("rate", "distortion", "ais_rate_at_beta", "ais_distortion_at_beta", "inference_gap")
CURVES = ("ais_lam", "ais_rate", "ais_distortion")


def _numbers(path: Path, name: str, values, n: int | None, allow_none: bool = False) -> np.ndarray:
    if not isinstance(values, list) or (n is not None and len(values) != n):
        raise MalformedResultsError(f"{path}: '{name}' must be a list with one entry per beta ({n})")
    out = []
    for v in values:
        if v is None and allow_none:
            out.append(math.nan)
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise MalformedResultsError(f"{path}: '{name}' holds a non-finite or non-numeric value {v!r}")
        out.append(float(v))
    return np.asarray(out, dtype=float)


def load_ais_results(path: str | Path) -> dict:
    """Read and check an AIS results file; arrays become numpy (curves: lists of arrays)."""
    path = Path(path)
    data = read_json_object(path)
    if data.get("kind") != KIND:
        raise MalformedResultsError(f"{path}: not an AIS results file (kind={data.get('kind')!r}, expected {KIND!r})")
    if "beta" not in data:
        raise MalformedResultsError(f"{path}: lacks 'beta'")
    beta = _numbers(path, "beta", data["beta"], None)
    if beta.size == 0 or np.any(beta <= 0):
        raise MalformedResultsError(f"{path}: 'beta' must be a non-empty list of positive numbers")
    out = {"beta": beta, "_path": str(path)}
    for name in PER_BETA:
        if name not in data:
            raise MalformedResultsError(f"{path}: lacks the array '{name}'")
        out[name] = _numbers(path, name, data[name], beta.size)
    for name in ("bdmc_gap", "bdmc_lam"):
        if data.get(name) is not None:
            out[name] = _numbers(path, name, data[name], beta.size, allow_none=True)
    for name in CURVES + ("ais_rate_se", "ais_distortion_se"):
        if name not in data:
            if name in CURVES:
                raise MalformedResultsError(f"{path}: lacks the array '{name}'")
            continue
        rows = data[name]
        if not isinstance(rows, list) or len(rows) != beta.size:
            raise MalformedResultsError(f"{path}: '{name}' must be a list (one AIS curve per beta)")
        out[name] = [_numbers(path, f"{name}[{j}]", r, None) for j, r in enumerate(rows)]
    for j in range(beta.size):
        n = out["ais_lam"][j].size
        if any(out[c][j].size != n for c in CURVES if c in out):
            raise MalformedResultsError(f"{path}: the AIS curve of beta={beta[j]:g} has arrays of different lengths")
    protocol = data.get("protocol")
    out["label"] = (protocol.get("label") if isinstance(protocol, dict) else None) or ""
    out["conventions"] = data.get("conventions") or {}
    return out


def _iso_elbo(ax, rates: np.ndarray, dists: np.ndarray, xlim, ylim, n_lines: int = 7) -> None:
    totals = rates + dists
    lo, hi = float(np.min(totals)), float(np.max(totals))
    pad = max(0.15 * (hi - lo), 1.0)
    for j, c in enumerate(np.linspace(lo - pad, hi + pad, n_lines)):
        xs = np.array(xlim)
        ax.plot(xs, c - xs, color="0.6", lw=0.6, ls=":", zorder=0,
                label="iso-ELBO: D + R = const" if j == 0 else None)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)


def plot(results_path: str | Path, out_prefix: str | Path) -> list[Path]:
    """Left: encoder (R, D) per beta, each decoder's AIS curve, the AIS point at lam = 1/beta, iso-ELBO lines.
    Right: inference gap per beta (with beta x BDMC gap when present). Returns the PNG and PDF paths."""
    import matplotlib.pyplot as plt

    r = load_ais_results(results_path)
    beta = r["beta"]
    order = np.argsort(beta)
    fig, (ax, ax2) = new_figure(10.0, 4.2, ncols=2)
    from matplotlib.colors import LogNorm

    cmap = plt.get_cmap("viridis")
    norm = LogNorm(vmin=beta.min(), vmax=beta.max() if beta.max() > beta.min() else beta.min() * 10)
    colors = [cmap(0.9 * norm(b)) for b in beta]
    for j in order:
        ax.plot(r["ais_rate"][j], r["ais_distortion"][j], color=colors[j], lw=1.0, alpha=0.9,
                label="AIS curve of each β's decoder" if j == order[0] else None)
        ax.plot([r["rate"][j], r["ais_rate_at_beta"][j]], [r["distortion"][j], r["ais_distortion_at_beta"][j]],
                color=colors[j], lw=0.8, ls="--")
        ax.scatter([r["ais_rate_at_beta"][j]], [r["ais_distortion_at_beta"][j]], s=28, facecolors="white",
                   edgecolors=[colors[j]], zorder=4, label="AIS point at λ = 1/β" if j == order[0] else None)
    ax.plot(r["rate"][order], r["distortion"][order], "-o", color=COLORS["mr"], ms=4, lw=1.5, zorder=5,
            label="encoder (R, D) per β")
    rates = np.concatenate([r["rate"], r["ais_rate_at_beta"]])
    dists = np.concatenate([r["distortion"], r["ais_distortion_at_beta"]])
    rpad = 0.15 * (rates.max() - rates.min()) + 1.0
    dpad = 0.15 * (dists.max() - dists.min()) + 1.0
    xlim = (max(0.0, rates.min() - rpad), rates.max() + rpad)
    ylim = (dists.min() - dpad, dists.max() + dpad)
    _iso_elbo(ax, r["rate"], r["distortion"], xlim, ylim)
    ax.set_xlabel("rate R (nats)")
    ax.set_ylabel("distortion D (nats)")
    ax.set_title("encoders vs their decoders' AIS RD curves")
    ax.legend(fontsize=7, loc="upper right")
    from matplotlib.colors import ListedColormap

    sm = plt.cm.ScalarMappable(cmap=ListedColormap(cmap(np.linspace(0, 0.9, 256))), norm=norm)
    fig.colorbar(sm, ax=ax, label="β of the decoder", fraction=0.05, pad=0.02)

    gap = r["inference_gap"][order]
    ax2.semilogx(beta[order], gap, "o-", color=COLORS["mr"], ms=4, label="inference gap (encoder loss − AIS)")
    if "bdmc_gap" in r and np.any(np.isfinite(r["bdmc_gap"])):
        bd = beta[order] * r["bdmc_gap"][order]
        ok = np.isfinite(bd)
        ax2.fill_between(beta[order][ok], gap[ok], gap[ok] + np.maximum(bd[ok], 0.0), color=COLORS["mr"], alpha=0.2,
                         lw=0, label="+ β × BDMC gap (AIS bias bound)")
    ax2.axhline(0.0, color="0.5", lw=0.8)
    ax2.set_xlabel("β")
    ax2.set_ylabel("D + βR − (−β log Z_AIS(1/β))  (nats)")
    ax2.set_title("encoder loss above its decoder's optimum")
    ax2.legend(fontsize=7)
    caption = r["label"] or "AIS rate-distortion (protocol label missing from the results file)"
    return save(fig, out_prefix, caption=caption)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        raise SystemExit("usage: python -m paper_figures.fig_ais RESULTS.json OUT_PREFIX")
    try:
        paths = plot(argv[0], argv[1])
    except MalformedResultsError as err:
        raise SystemExit(f"error: {err}")
    for p in paths:
        print(p)


if __name__ == "__main__":
    main()
