"""Fig. 9 (App. D): ablations of the MR-VAE on Omniglot (ResNet), test RD curves.

Left: the hyper-network that maps the standardised log beta to the gate pre-activations (linear map, the
default; 2-layer MLP; shared 2-layer MLP; 5-layer MLP). Middle: the encoder gate function (sigmoid, the
default; sqrt; FiLM) with the default sqrt decoder gates. Right: the decoder gate function (sqrt, the
default; sigmoid; FiLM) with the default sigmoid encoder gates. A variant this code base cannot build is
listed in its panel with the reason recorded in the ``fig9`` manifest, never drawn.
Usage: ``python -m paper_figures.fig9 [RESULTS_ROOT] [OUT_PREFIX]``.
"""
from __future__ import annotations

from pathlib import Path

from .style import (CYCLE, figure_main, group_curve, load_manifest, manifest_caption, new_grid,
                    no_complete_runs, note, plot_curve, save)

REQUIRED = ("fig9",)
OPTIONAL: tuple[str, ...] = ()
PANELS = (("hypernetwork", "hyper-network architecture"), ("encoder gate", "encoder gate function"),
          ("decoder gate", "decoder gate function"))


def plot(results_root: str | Path, out_prefix: str | Path) -> list[Path]:
    """Draw the three ablation panels; returns the PNG and PDF paths."""
    m = load_manifest(results_root, "fig9")
    content: dict[str, dict] = {p: {"curves": [], "unavailable": []} for p, _ in PANELS}
    for g in m["groups"]:
        panel = (g.get("params") or {}).get("panel") or g.get("panel")
        if panel not in content:
            continue
        if g["status"] == "unavailable":
            content[panel]["unavailable"].append((g.get("label", g["key"]), g.get("reason") or "unavailable"))
            continue
        c = group_curve(m, g["key"])
        if c is not None:
            content[panel]["curves"].append(c)
    curves = [c for v in content.values() for c in v["curves"]]
    if not curves:
        raise no_complete_runs(m)
    fig, axes = new_grid(1, 3, 12.0, 4.0)
    unavailable_text = []
    for ax, (panel, title) in zip(axes[0], PANELS):
        ax.set_title(f"Omniglot (ResNet): {title}", fontsize=9)
        entry = content[panel]
        for i, c in enumerate(entry["curves"]):
            plot_curve(ax, c, color=CYCLE[i % len(CYCLE)], lw=1.6)
        for label, reason in entry["unavailable"]:
            unavailable_text.append(f"{label}: {reason}")
        if entry["curves"]:
            ax.set_xlabel("rate (nats)")
            ax.set_ylabel("distortion (nats)")
            ax.legend(fontsize=7)
            if entry["unavailable"]:
                ax.text(0.98, 0.6, "not run: " + ", ".join(lbl for lbl, _ in entry["unavailable"])
                        + "\n(reason in the caption)", transform=ax.transAxes, ha="right", fontsize=6,
                        color="gray")
        else:
            note(ax, "no complete runs" + "".join(f"\n{lbl}: not run" for lbl, _ in entry["unavailable"]))
    extra = "not run: " + "; ".join(unavailable_text) if unavailable_text else ""
    caption = manifest_caption([m], curves, extra)
    return save(fig, out_prefix, caption=caption)


def main(argv: list[str] | None = None) -> None:
    figure_main(plot, "fig9", "fig9", argv)


if __name__ == "__main__":
    main()
