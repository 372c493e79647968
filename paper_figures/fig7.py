"""Fig. 7: decoder means of prior samples across beta (rows beta = 10, 1, 0.1, 0.01; the same z in every
column), one MR-VAE vs the beta-VAEs trained at those betas.

Reads the ``fig7`` manifest and the image grids that :func:`deep.evaluate.save_image_grids` wrote next to
each result file (``rd_fig7.json`` of the MR-VAE: one row per beta; ``rd.json`` of each beta-VAE).
Usage: ``python -m paper_figures.fig7 [RESULTS_ROOT] [OUT_PREFIX]``.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .style import (FIG7_BETAS, FIG7_RESULTS, RD_RESULTS, MalformedResultsError, figure_main, find_group,
                    load_manifest, manifest_caption, new_grid, no_complete_runs, note, read_json_object, save)

REQUIRED = ("fig7",)
OPTIONAL: tuple[str, ...] = ()
DATASETS = (("omniglot", "Omniglot"), ("svhn", "SVHN"), ("celeba64", "CelebA64"))
ROW_BETAS = FIG7_BETAS  # the betas fig7's extra evaluation (FIG7_RESULTS) was run at


def _runs(group: dict) -> list[dict]:
    runs = [r for r in group["runs"] if r.get("status") == "complete"]
    lr = group.get("selected_lr")
    if lr is not None:
        runs = [r for r in runs if r.get("lr") is None or math.isclose(r["lr"], lr, rel_tol=1e-9)]
    return sorted(runs, key=lambda r: r.get("seed", 0))


def _image_entries(rd_path: Path) -> tuple[list[dict], Path, dict]:
    rd = read_json_object(rd_path)
    images = rd.get("images")
    if not isinstance(images, dict) or not images.get("per_beta") or "folder" not in images:
        raise MalformedResultsError(f"{rd_path}: no image grids ('images.per_beta' and 'images.folder' are "
                                    "needed; evaluate with images enabled)")
    for e in images["per_beta"]:
        if not isinstance(e, dict) or "beta" not in e or "samples" not in e:
            raise MalformedResultsError(f"{rd_path}: 'images.per_beta' entries need 'beta' and 'samples'")
    return images["per_beta"], rd_path.parent / images["folder"], rd


def _read_png(path: Path) -> np.ndarray:
    import matplotlib.image as mpimg

    if not path.exists():
        raise MalformedResultsError(f"{path}: image listed in a result file does not exist")
    try:
        img = mpimg.imread(path)
    except Exception as err:  # noqa: BLE001 - any decoding failure is a malformed input
        raise MalformedResultsError(f"{path}: not a readable PNG ({err})") from err
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return img[..., :3].astype(float)


def _closest(entries: list[tuple[float, object]], beta: float, tol: float = math.log(1.5)):
    best = min(entries, key=lambda e: abs(math.log(e[0]) - math.log(beta)), default=None)
    if best is None or abs(math.log(best[0]) - math.log(beta)) > tol:
        return None
    return best


def mr_strips(root: Path, group: dict) -> list[tuple[float, np.ndarray]]:
    """(beta, image strip) rows of the MR-VAE for :data:`ROW_BETAS` (first seed of the selected LR)."""
    for run in _runs(group):
        path = run["results"].get(FIG7_RESULTS) or run["results"].get(RD_RESULTS)
        if not path:
            continue
        entries, folder, _ = _image_entries(root / path)
        rows = []
        for beta in ROW_BETAS:
            hit = _closest([(float(e["beta"]), e) for e in entries], beta)
            if hit is not None:
                rows.append((hit[0], _read_png(folder / hit[1]["samples"])))
        return rows
    return []


def sweep_strips(root: Path, group: dict) -> list[tuple[float, np.ndarray]]:
    """(beta, image strip) rows from the beta-VAEs closest to each of :data:`ROW_BETAS`."""
    members = [(float(r["beta"]), r) for r in _runs(group) if r.get("beta") and "rd.json" in r["results"]]
    rows = []
    for beta in ROW_BETAS:
        hit = _closest(members, beta)
        if hit is None:
            continue
        entries, folder, _ = _image_entries(root / hit[1]["results"]["rd.json"])
        rows.append((hit[0], _read_png(folder / entries[0]["samples"])))
    return rows


def _stack(rows: list[tuple[float, np.ndarray]], gap: int = 4) -> tuple[np.ndarray, list[float], list[str]]:
    width = max(img.shape[1] for _, img in rows)
    parts, centres, labels, y = [], [], [], 0
    for beta, img in rows:
        if img.shape[1] < width:
            img = np.concatenate([img, np.ones((img.shape[0], width - img.shape[1], 3))], axis=1)
        parts += [img, np.ones((gap, width, 3))]
        centres.append(y + img.shape[0] / 2)
        labels.append(f"β = {beta:.3g}")
        y += img.shape[0] + gap
    return np.concatenate(parts[:-1], axis=0), centres, labels


def plot(results_root: str | Path, out_prefix: str | Path) -> list[Path]:
    """Draw the sample grids (rows: datasets; columns: MR-VAE, beta-VAEs); returns the PNG and PDF paths."""
    m = load_manifest(results_root, "fig7")
    root = Path(m["_root"])
    panels = []
    for ds, title in DATASETS:
        mr_g, sw_g = find_group(m, f"{ds}_resnet_mr"), find_group(m, f"{ds}_resnet_beta_linear")
        if mr_g is None and sw_g is None:
            continue
        reason = next((g.get("reason") for g in (mr_g, sw_g) if g and g["status"] == "unavailable"), None)
        mr = mr_strips(root, mr_g) if mr_g and mr_g["status"] != "unavailable" else []
        sw = sweep_strips(root, sw_g) if sw_g and sw_g["status"] != "unavailable" else []
        panels.append((title, mr, sw, reason))
    if not any(mr or sw for _, mr, sw, _ in panels):
        raise no_complete_runs(m)
    fig, axes = new_grid(len(panels), 2, 9.0, 2.6 * len(panels) + 0.6)
    for i, (title, mr, sw, reason) in enumerate(panels):
        for j, (rows, name) in enumerate(((mr, "MR-VAE (one model)"), (sw, "β-VAEs (one model per β)"))):
            ax = axes[i, j]
            if not rows:
                why = reason or "no complete runs"
                note(ax, f"{title}, {name}: not available\n{why if len(why) < 150 else why[:147] + '...'}")
                continue
            img, centres, labels = _stack(rows)
            ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
            ax.set_yticks(centres)
            ax.set_yticklabels(labels, fontsize=7)
            ax.set_xticks([])
            ax.grid(False)
            ax.set_title(f"{title}: {name}", fontsize=9)
            ax.set_xlabel("prior samples: column k decodes the same z_k in every row", fontsize=7)
    caption = manifest_caption([m], None, "decoder means of z ~ N(0, I); the same z per column across beta and "
                               "across models with the same latent size and evaluation seed")
    return save(fig, out_prefix, caption=caption)


def main(argv: list[str] | None = None) -> None:
    figure_main(plot, "fig7", "fig7", argv)


if __name__ == "__main__":
    main()
