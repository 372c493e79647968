"""Fig. 6: active units (top) and FID (bottom) against beta, MR-VAE vs beta-VAEs trained with KL annealing.

Reads the ``fig6`` manifest: ``active_units`` from each rd.json (units with Var_x E_q[z_u] >= 0.01), and a
``fid`` array where the evaluation wrote one. Without one (no Inception-v3 FID weights on this machine, or
a grey-scale dataset) the panel shows the reason recorded in the rd.json's ``estimators.fid``.
Usage: ``python -m paper_figures.fig6 [RESULTS_ROOT] [OUT_PREFIX]``.
"""
from __future__ import annotations

from pathlib import Path

from .style import (COLORS, figure_main, group_curve, load_manifest, manifest_caption, new_grid,
                    no_complete_runs, note, plot_curve, save, schedule_color)

REQUIRED = ("fig6",)
OPTIONAL: tuple[str, ...] = ()
DATASETS = (("omniglot", "Omniglot"), ("svhn", "SVHN"), ("celeba64", "CelebA64"))
FID_MISSING = "FID not computed (rd.json has no 'fid' array; evaluate with fid_samples > 0)"


def plot(results_root: str | Path, out_prefix: str | Path) -> list[Path]:
    """Draw AU vs beta and FID vs beta for each dataset of the manifest; returns the PNG and PDF paths."""
    m = load_manifest(results_root, "fig6")
    curves, missing = {}, {}
    for ds, _ in DATASETS:
        for kind in ("mr", "beta_linear"):
            key = f"{ds}_resnet_{kind}"
            g = next((g for g in m["groups"] if g["key"] == key), None)
            if g is None:
                continue
            if g["status"] == "unavailable":
                missing[ds] = g.get("reason") or "unavailable"
                continue
            c = group_curve(m, key, fields=("active_units",), optional=("fid",))
            if c is not None:
                curves[key] = c
    if not curves:
        raise no_complete_runs(m)
    fig, axes = new_grid(2, len(DATASETS), 3.4 * len(DATASETS), 6.2)
    fid_found = False
    for j, (ds, title) in enumerate(DATASETS):
        ax_au, ax_fid = axes[0, j], axes[1, j]
        pair = [curves.get(f"{ds}_resnet_{k}") for k in ("mr", "beta_linear")]
        pair = [c for c in pair if c is not None]
        if not pair:
            why = missing.get(ds, "no complete runs")
            short = why if len(why) < 160 else why[:157] + "..."
            note(ax_au, f"{title}: not available\n{short}")
            note(ax_fid, f"{title}: not available")
            ax_au.set_title(f"{title} (ResNet)", fontsize=9)
            continue
        for c in pair:
            label = "MR-VAE (one model)" if c.kind == "mr" else f"{c.label} ({len(c.beta)} models)"
            plot_curve(ax_au, c, color=schedule_color(c), label=label, x="beta", y="active_units")
        latent = next((c.latent_dim for c in pair if c.latent_dim), None)
        if latent:
            ax_au.axhline(latent, color=COLORS["exact"], lw=0.8, ls=":", label=f"latent dimension ({latent})")
        ax_au.set_xscale("log")
        ax_au.set_xlabel("β")
        ax_au.set_ylabel("active units (count)")
        ax_au.set_title(f"{title} (ResNet)", fontsize=9)
        ax_au.legend(fontsize=7)
        with_fid = [c for c in pair if c.has("fid")]
        if with_fid:
            fid_found = True
            for c in with_fid:
                plot_curve(ax_fid, c, color=schedule_color(c), x="beta", y="fid")
            ax_fid.set_xscale("log")
            ax_fid.set_xlabel("β")
            ax_fid.set_ylabel("FID (lower is better)")
            ax_fid.legend(fontsize=7)
        else:
            why = next((str(rd.get("estimators", {}).get("fid")) for c in pair for rd in c.rd
                        if isinstance(rd.get("estimators"), dict) and rd["estimators"].get("fid")), None)
            if ds == "omniglot" and not why:
                note(ax_fid, f"{title}: no FID (the paper reports FID for SVHN and CelebA only)")
            else:
                note(ax_fid, f"{title}: FID {why}" if why else f"{title}: {FID_MISSING}")
    extra = "AU: Var_x E_q[z_u] >= 0.01 on the test set"
    if not fid_found:
        extra += "; FID missing (see the FID panels for the reason)"
    caption = manifest_caption([m], list(curves.values()), extra)
    return save(fig, out_prefix, caption=caption)


def main(argv: list[str] | None = None) -> None:
    figure_main(plot, "fig6", "fig6", argv)


if __name__ == "__main__":
    main()
