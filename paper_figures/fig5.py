"""Fig. 5: test rate-distortion curves, MR-VAE (one model, line) vs beta-VAEs (one model per beta, markers).

Reads the manifests of ``fig5_mnist``, ``fig5_omniglot``, ``fig5_yahoo`` and ``fig5_nvae`` under the results
root (whichever exist; at least one) and the rd.json files they list; draws one panel per dataset and
architecture (NVAE CelebA64 in bits per dimension). Never trains.
Usage: ``python -m paper_figures.fig5 [RESULTS_ROOT] [OUT_PREFIX]``.
"""
from __future__ import annotations

import math
from pathlib import Path

from .claim import write_for_group
from .style import (MissingResultsError, figure_main, group_curve, is_unavailable,
                    load_manifest, manifest_caption, new_grid, note, plot_curve, rate_axis_label, save,
                    schedule_color)

REQUIRED: tuple[str, ...] = ()
OPTIONAL = ("fig5_mnist", "fig5_omniglot", "fig5_yahoo", "fig5_nvae")


def collect_panels(results_root: str | Path) -> tuple[list[dict], list[dict]]:
    """``(panels, manifests)``: each panel is ``{"title", "curves", "note"}`` in manifest and group order."""
    manifests = [m for m in (load_manifest(results_root, n, required=False) for n in OPTIONAL) if m is not None]
    if not manifests:
        raise MissingResultsError(f"no Fig. 5 manifest under {Path(results_root) / 'manifests'} "
                                  f"(expected one of {', '.join(OPTIONAL)})", list(OPTIONAL))
    panels: list[dict] = []
    for m in manifests:
        if is_unavailable(m):
            panels.append({"title": m.get("title", m["experiment"]), "curves": [],
                           "note": m.get("reason") or "unavailable"})
            continue
        by_title: dict[str, dict] = {}
        for g in m["groups"]:
            title = g.get("panel") or g["key"]
            panel = by_title.get(title)
            if panel is None:
                panel = by_title[title] = {"title": title, "curves": [], "note": "", "unavailable": []}
                panels.append(panel)
            if g["status"] == "unavailable":
                panel["unavailable"].append(f"{g.get('label', g['key'])}: {g.get('reason')}")
                continue
            curve = group_curve(m, g["key"])
            if curve is not None:
                panel["curves"].append(curve)
        for panel in by_title.values():
            if not panel["curves"]:
                panel["note"] = "\n".join(panel["unavailable"]) or "no complete runs yet"
    return panels, manifests


def plot(results_root: str | Path, out_prefix: str | Path) -> list[Path]:
    """Draw every Fig. 5 panel whose results exist; returns the PNG and PDF paths."""
    panels, manifests = collect_panels(results_root)
    n = len(panels)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = new_grid(nrows, ncols, 3.6 * ncols, 3.1 * nrows + 0.5)
    all_curves = []
    for ax, panel in zip(axes.flat, panels):
        ax.set_title(panel["title"], fontsize=9)
        if not panel["curves"]:
            note(ax, f"{panel['title']}\n{panel['note']}")
            continue
        for c in panel["curves"]:
            if c.kind != "mr":
                plot_curve(ax, c, color=schedule_color(c), label=f"{c.label} ({len(c.beta)} models)")
            else:
                plot_curve(ax, c, color=schedule_color(c), label=f"{c.label} (one model)")
            all_curves.append(c)
        xl, yl = rate_axis_label(panel["curves"][0].group)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.legend(fontsize=7)
        if panel.get("unavailable"):
            ax.text(0.98, 0.55, "not run: " + "; ".join(u.split(":")[0] for u in panel["unavailable"]),
                    transform=ax.transAxes, ha="right", fontsize=6, color="gray")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    caption = manifest_caption(manifests, all_curves,
                               "test set; MR-VAE: one model queried at each beta; beta-VAEs: one model per beta")
    paths = save(fig, out_prefix, caption=caption)
    out_prefix = Path(out_prefix)
    for m in manifests:   # the claim's numbers next to the figure, one file per panel with both groups
        for g in m.get("groups", []):
            if g.get("kind") == "mr" and g["key"].endswith("_mr"):
                prefix = g["key"][:-3]
                dataset, _, arch = prefix.partition("_")
                paths += write_for_group(m, dataset, arch, out_prefix.with_name(f"{out_prefix.name}_{prefix}"),
                                         title=f"Fig. 5: {g.get('panel') or prefix}, one MR-VAE vs the β-VAEs",
                                         protocol=manifest_caption([m]))
    return paths


def main(argv: list[str] | None = None) -> None:
    figure_main(plot, "fig5", "fig5", argv)


if __name__ == "__main__":
    main()
