"""Fig. 8: sensitivity of the MR-VAE to its sampling range [a, b] (left: b = 10, a varies; middle: a = 0.01,
b varies; Omniglot ResNet test RD curves) and MIG against beta for beta-TCVAE vs MR-VAE on dSprites (right).

Reads the ``fig8_sensitivity`` manifest (required) and ``fig8_tcvae`` (optional; the right panel says what
to run when it is missing). Each sensitivity curve covers its own beta range; the area under each test RD
curve (distortion integrated over rate, nats^2) is computed over the curve's own rate span and over the rate
span the curves of a panel share, and written to ``<out>_areas.csv`` / ``.md``.
Usage: ``python -m paper_figures.fig8 [RESULTS_ROOT] [OUT_PREFIX]``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .style import (COLORS, CYCLE, figure_main, group_curve, is_unavailable, load_manifest, manifest_caption,
                    new_grid, no_complete_runs, note, plot_curve, run_command, save, write_table)

REQUIRED = ("fig8_sensitivity",)
OPTIONAL = ("fig8_tcvae",)
#: the first key every curve has is plotted: the reference first, then our variants (labelled as such)
MIG_KEYS = (("mig", "MIG (Chen et al. 2018: full grid; scale, orientation, posX, posY)"),
            ("mig_all_factors", "MIG variant (all factors of the evaluated grid, its own H(v_k))"),
            ("mig_sampling", "MIG variant (all factors of the evaluated grid; older result files)"),
            ("mig_discrete", "MIG variant (discretised posterior means)"))


def rd_area(rate: Sequence[float], distortion: Sequence[float], lo: float | None = None,
            hi: float | None = None) -> float:
    """Area under a rate-distortion curve, ``∫ D dR`` (nats^2), by the trapezoid rule over the points sorted
    by rate; with ``lo``/``hi`` the curve is linearly interpolated and integrated over [lo, hi] only
    (which must lie inside the curve's rate span). A single point has area 0."""
    r = np.asarray(rate, dtype=float).reshape(-1)
    d = np.asarray(distortion, dtype=float).reshape(-1)
    if r.shape != d.shape or r.size == 0:
        raise ValueError(f"rate and distortion must be non-empty and of equal length, got {r.size} and {d.size}")
    order = np.argsort(r, kind="stable")
    r, d = r[order], d[order]
    a = r[0] if lo is None else float(lo)
    b = r[-1] if hi is None else float(hi)
    if a < r[0] - 1e-12 or b > r[-1] + 1e-12 or a > b:
        raise ValueError(f"integration range [{a}, {b}] must lie inside the rate span [{r[0]}, {r[-1]}]")
    if b == a:
        return 0.0
    inside = (r > a) & (r < b)
    xs = np.concatenate([[a], r[inside], [b]])
    ys = np.interp(xs, r, d)
    return float(np.sum(0.5 * (ys[1:] + ys[:-1]) * np.diff(xs)))


def area_rows(curves: list, panel: str) -> list[dict]:
    """Per curve: beta range, rate span, area over its own span, mean distortion over it, and the area
    over the rate span shared by all curves of the panel (None when the spans do not overlap)."""
    spans = [(float(np.min(c["rate"])), float(np.max(c["rate"]))) for c in curves]
    lo = max(s[0] for s in spans) if spans else None
    hi = min(s[1] for s in spans) if spans else None
    common = lo is not None and hi is not None and hi > lo
    rows = []
    for c, (r0, r1) in zip(curves, spans):
        area = rd_area(c["rate"], c["distortion"])
        rows.append({"panel": panel, "curve": c.label, "a": c.group["params"].get("a"),
                     "b": c.group["params"].get("b"), "beta_min": float(np.min(c.beta)),
                     "beta_max": float(np.max(c.beta)), "rate_min": r0, "rate_max": r1, "area": area,
                     "mean_distortion": area / (r1 - r0) if r1 > r0 else float(np.mean(c["distortion"])),
                     "common_rate_min": lo if common else None, "common_rate_max": hi if common else None,
                     "area_common": rd_area(c["rate"], c["distortion"], lo, hi) if common else None})
    return rows


AREA_COLUMNS = [("panel", "panel"), ("curve", "curve"), ("a", "a"), ("b", "b"), ("rate_min", "rate min (nats)"),
                ("rate_max", "rate max (nats)"), ("area", "area over own span (nats²)"),
                ("mean_distortion", "mean distortion over own span (nats)"),
                ("common_rate_min", "shared span min"), ("common_rate_max", "shared span max"),
                ("area_common", "area over shared span (nats²)")]


def _sensitivity_curves(m: dict) -> dict[str, list]:
    panels: dict[str, list] = {"left": [], "middle": []}
    for g in m["groups"]:
        if g["kind"] != "mr" or g["status"] == "unavailable":
            continue
        c = group_curve(m, g["key"])
        if c is None:
            continue
        where = g.get("params", {}).get("panel", "both")
        for p in ("left", "middle"):
            if where in (p, "both"):
                panels[p].append(c)
    panels["left"].sort(key=lambda c: c.group["params"].get("a", 0))
    panels["middle"].sort(key=lambda c: -c.group["params"].get("b", 0))
    return panels


def _mig_panel(ax, tc: dict | None, results_root) -> list:
    ax.set_title("dSprites: MIG vs β (higher is better)", fontsize=9)
    if tc is None:
        note(ax, "β-TCVAE / MIG results not found;\nrun: " + run_command("fig8_tcvae", results_root=results_root))
        return []
    if is_unavailable(tc):
        note(ax, f"β-TCVAE / MIG: {tc.get('reason') or 'unavailable'}")
        return []
    opt = tuple(k for k, _ in MIG_KEYS)
    curves = [c for c in (group_curve(tc, g["key"], fields=(), optional=opt) for g in tc["groups"]
                          if g["status"] != "unavailable") if c is not None]
    key = next((k for k, _ in MIG_KEYS if curves and all(c.has(k) for c in curves)), None)
    if not curves or key is None:
        note(ax, "fig8_tcvae: no complete runs with a MIG array yet")
        return curves
    for c in curves:
        color = COLORS["mr"] if c.kind == "mr" else COLORS["beta"]
        label = ("MR-VAE (one model)" if c.kind == "mr" else f"{c.label} ({len(c.beta)} models)")
        plot_curve(ax, c, color=color, label=label, x="beta", y=key, marker="o")
    ax.set_xscale("log")
    ax.set_xlabel("β (weight of the total-correlation term)")
    ax.set_ylabel(dict(MIG_KEYS)[key] + ", normalised by H(v_k)", fontsize=7)
    n_seeds = max(c.n_seeds for c in curves)
    ax.legend(fontsize=7, title=f"mean ± std over {n_seeds} seed(s)", title_fontsize=7)
    return curves


def plot(results_root: str | Path, out_prefix: str | Path) -> list[Path]:
    """Draw the three panels and write the area table; returns the PNG, PDF, CSV and MD paths."""
    m = load_manifest(results_root, "fig8_sensitivity")
    tc = load_manifest(results_root, "fig8_tcvae", required=False)
    panels = _sensitivity_curves(m)
    if not panels["left"] and not panels["middle"]:
        raise no_complete_runs(m)
    fig, axes = new_grid(1, 3, 12.0, 4.0)
    rows = []
    titles = {"left": "b = 10, a varies", "middle": "a = 0.01, b varies"}
    for ax, p in zip(axes[0][:2], ("left", "middle")):
        curves = panels[p]
        ax.set_title(f"Omniglot (ResNet): {titles[p]}", fontsize=9)
        if not curves:
            note(ax, "no complete runs for this panel")
            continue
        prow = area_rows(curves, p)
        rows += prow
        for i, (c, r) in enumerate(zip(curves, prow)):
            area = f"{r['area']:,.0f}" if abs(r["area"]) >= 100 else f"{r['area']:.3g}"
            plot_curve(ax, c, color=CYCLE[i % len(CYCLE)], label=f"[{r['a']:g}, {r['b']:g}]: area {area}")
        ax.set_xlabel("rate (nats)")
        ax.set_ylabel("distortion (nats)")
        ax.legend(fontsize=7, title="β range [a, b]: ∫D dR (nats²)", title_fontsize=7)
    tc_curves = _mig_panel(axes[0][2], tc, results_root)
    all_curves = panels["left"] + [c for c in panels["middle"] if all(c is not x for x in panels["left"])]
    caption = manifest_caption([m] + ([tc] if tc is not None else []), all_curves + tc_curves,
                               "each curve evaluated over its own β range; areas in " + Path(out_prefix).name
                               + "_areas.csv")
    paths = save(fig, out_prefix, caption=caption)
    out_prefix = Path(out_prefix)
    paths += write_table(rows, AREA_COLUMNS, out_prefix.with_name(out_prefix.name + "_areas"),
                         title="Fig. 8: area under each test RD curve", caption=caption)
    return paths


def main(argv: list[str] | None = None) -> None:
    figure_main(plot, "fig8", "fig8", argv)


if __name__ == "__main__":
    main()
