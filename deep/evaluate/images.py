"""Image grids of an evaluation: reconstructions and prior samples per beta, and across-beta grids, each row
labelled with its beta (matplotlib figures, not raw tensor grids).

Every evaluation writes its grids into a folder of its own (``results/images`` for ``rd.json``,
``results/images_<name>`` for ``rd_<name>.json``), emptied before it is written, so no grid of an earlier
evaluation is ever mixed with the new ones.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

__all__ = ["save_image_grids", "grid_figure", "beta_label", "IMAGE_SUFFIXES"]

#: Files an image folder of an evaluation may hold (what clearing it removes).
IMAGE_SUFFIXES = (".png",)


def beta_label(beta: float) -> str:
    """``"β = 0.01"`` (3 significant digits)."""
    return f"β = {beta:.3g}"


def _row_image(images: torch.Tensor, pad: int) -> torch.Tensor:
    """``(n, C, H, W)`` images in [0, 1] side by side, ``pad`` pixels of white between them: ``(H', W', C)``."""
    n, c, h, w = images.shape
    out = torch.ones(c, h + 2 * pad, n * (w + pad) + pad)
    for i in range(n):
        x0 = pad + i * (w + pad)
        out[:, pad:pad + h, x0:x0 + w] = images[i].float().clamp(0, 1)
    return out.permute(1, 2, 0)


def grid_figure(rows: Sequence[torch.Tensor], row_labels: Sequence[str], *, title: str | None = None,
                min_pixels: int = 56, dpi: int = 100) -> Any:
    """A matplotlib figure with one row of images per entry of ``rows`` (each ``(n, C, H, W)`` in [0, 1]),
    labelled on the left with ``row_labels``; each image is drawn at least ``min_pixels`` wide."""
    from matplotlib.figure import Figure      # no pyplot: no GUI backend, no global figure state

    if len(rows) != len(row_labels):
        raise ValueError(f"{len(rows)} rows but {len(row_labels)} labels")
    strips = [_row_image(r.detach().cpu(), pad=max(1, r.shape[-1] // 14)).numpy() for r in rows]
    w_img = rows[0].shape[-1]
    scale = max(1.0, min_pixels / w_img)
    height_px, width_px = strips[0].shape[0] * scale, strips[0].shape[1] * scale
    label_in, title_in = 1.1, (0.35 if title else 0.0)
    fig = Figure(figsize=(max(3.5, width_px / dpi + label_in), len(rows) * (height_px / dpi + 0.06) + title_in + 0.1),
                 dpi=dpi)
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, strip, label in zip(axes, strips, row_labels):
        grey = strip.shape[-1] == 1
        ax.imshow(strip[..., 0] if grey else strip, cmap="gray" if grey else None, vmin=0.0, vmax=1.0,
                  interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    width_in = fig.get_figwidth()
    fig.subplots_adjust(left=label_in / width_in, right=0.99, bottom=0.02, hspace=0.08,
                        top=1.0 - (title_in + 0.05) / fig.get_figheight())
    return fig


def _save(fig: Any, path: Path) -> None:
    fig.savefig(path, dpi=fig.dpi, facecolor="white")


def clear_image_folder(folder: str | os.PathLike) -> None:
    """Remove the grids an earlier evaluation left in ``folder`` (its PNG files)."""
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.iterdir():
            if p.is_file() and p.suffix in IMAGE_SUFFIXES:
                p.unlink()


def save_image_grids(images: dict, betas: Sequence[float], out_dir: str | os.PathLike) -> dict:
    """Write reconstructions and prior samples per beta, and the across-beta grids (paper Fig. 7), each
    row labelled with its beta, into ``out_dir`` (emptied of earlier grids first).

    The prior samples use the SAME z for every beta (one column per z); rows of the across-beta grids
    go from the largest beta (top) to the smallest. Returns the written file names (relative to ``out_dir``),
    ``rows_beta_order``, ``row_labels`` and ``folder`` (``out_dir``'s name).
    """
    out_dir = Path(out_dir)
    recon, prior, inputs = images.get("recon"), images.get("prior"), images.get("inputs")
    if inputs is None or not recon or recon[0] is None:
        return {}
    out_dir.mkdir(parents=True, exist_ok=True)
    clear_image_folder(out_dir)
    written: dict[str, Any] = {"per_beta": []}
    for j, beta in enumerate(betas):
        tag = f"{j:02d}_beta{beta:.3g}"
        rp = out_dir / f"recon_{tag}.png"
        sp = out_dir / f"samples_{tag}.png"
        _save(grid_figure([inputs, recon[j]], ["input", beta_label(beta)], title="reconstructions"), rp)
        _save(grid_figure([prior[j]], [beta_label(beta)], title="prior samples"), sp)
        written["per_beta"].append({"beta": beta, "recon": rp.name, "samples": sp.name})
    order = sorted(range(len(betas)), key=lambda j: -betas[j])
    labels = [beta_label(betas[j]) for j in order]
    across_s = out_dir / "samples_across_beta.png"
    across_r = out_dir / "recon_across_beta.png"
    _save(grid_figure([prior[j] for j in order], labels,
                      title="prior samples across beta (the same z in each column)"), across_s)
    _save(grid_figure([inputs] + [recon[j] for j in order], ["input"] + labels,
                      title="reconstructions across beta"), across_r)
    written["samples_across_beta"] = across_s.name
    written["recon_across_beta"] = across_r.name
    written["rows_beta_order"] = [betas[j] for j in order]
    written["row_labels"] = labels
    written["folder"] = out_dir.name
    return written
