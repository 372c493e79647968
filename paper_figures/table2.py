"""Table 2: lowest test negative ELBO (rate + distortion, nats) with its rate and distortion, for MNIST and
Omniglot, ConvNet and ResNet, beta-VAEs vs MR-VAEs, next to the paper's numbers.

The beta-VAE row takes the lowest -ELBO over all baseline runs (both KL schedules when present); the MR-VAE
row the lowest point of its evaluated curve (mean over seeds in both cases). Reads the ``table2`` manifest,
or else the ``fig5_mnist`` / ``fig5_omniglot`` manifests (the same runs). Writes ``<out>.md`` and ``.csv``.
Usage: ``python -m paper_figures.table2 [RESULTS_ROOT] [OUT_PREFIX]``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .style import (MissingResultsError, figure_main, group_curve, load_manifest, manifest_caption,
                    no_complete_runs, write_table)

REQUIRED: tuple[str, ...] = ()
OPTIONAL = ("table2", "fig5_mnist", "fig5_omniglot")
#: The paper's Table 2 (paper-notes §4.2): (-ELBO, rate, distortion).
PAPER = {
    ("mnist", "resnet", "beta"): (89.63, 29.17, 60.46), ("mnist", "conv", "beta"): (96.35, 18.33, 78.03),
    ("mnist", "resnet", "mr"): (87.89, 27.07, 60.82), ("mnist", "conv", "mr"): (93.51, 28.50, 65.00),
    ("omniglot", "resnet", "beta"): (111.07, 34.98, 76.09), ("omniglot", "conv", "beta"): (114.73, 34.11, 80.62),
    ("omniglot", "resnet", "mr"): (107.78, 34.36, 73.41), ("omniglot", "conv", "mr"): (110.98, 34.21, 76.77),
}
ORDER = [(d, a, k) for d in ("mnist", "omniglot") for k, a in
         (("beta", "resnet"), ("beta", "conv"), ("mr", "resnet"), ("mr", "conv"))]
MODEL_NAMES = {("beta", "resnet"): "β-VAE ResNet", ("beta", "conv"): "β-VAE CNN",
               ("mr", "resnet"): "MR-ResNet", ("mr", "conv"): "MR-CNN"}

COLUMNS = [("data", "Data"), ("model", "Model"), ("neg_elbo", "−ELBO"), ("rate", "Rate"),
           ("distortion", "Distortion"), ("beta", "β at the minimum"), ("schedule", "KL schedule"),
           ("paper_neg_elbo", "paper −ELBO"), ("paper_rate", "paper Rate"), ("paper_distortion", "paper Distortion"),
           ("delta", "−ELBO − paper"), ("comparable", "comparable with the paper?")]


def _manifests(results_root) -> list[dict]:
    t2 = load_manifest(results_root, "table2", required=False)
    if t2 is not None:
        return [t2]
    found = [m for m in (load_manifest(results_root, n, required=False) for n in ("fig5_mnist", "fig5_omniglot"))
             if m is not None]
    if not found:
        raise MissingResultsError(f"no Table 2 inputs under {Path(results_root) / 'manifests'} (table2, or "
                                  "fig5_mnist / fig5_omniglot)", ["table2"])
    return found


def _minimum(curves: list) -> dict | None:
    best = None
    for c in curves:
        neg = np.asarray(c["rate"]) + np.asarray(c["distortion"])
        j = int(np.argmin(neg))
        if best is None or neg[j] < best["neg_elbo"]:
            best = {"neg_elbo": float(neg[j]), "rate": float(c["rate"][j]), "distortion": float(c["distortion"][j]),
                    "beta": float(c.beta[j]), "schedule": c.group.get("schedule") or "—", "curve": c}
    return best


def collect_rows(results_root) -> tuple[list[dict], list[dict], list]:
    """Table rows, the manifests read and the curves used."""
    manifests = _manifests(results_root)
    rows, used = [], []
    for dataset, arch, kind in ORDER:
        curves, src = [], None
        for m in manifests:
            if m.get("status") == "unavailable":
                continue
            keys = [f"{dataset}_{arch}_mr"] if kind == "mr" else [f"{dataset}_{arch}_beta_{s}"
                                                                  for s in ("constant", "linear", "cyclical")]
            for key in keys:
                c = group_curve(m, key)
                if c is not None:
                    curves.append(c)
                    src = m
        best = _minimum(curves)
        paper = PAPER[(dataset, arch, kind)]
        row = {"data": {"mnist": "MNIST", "omniglot": "Omniglot"}[dataset], "model": MODEL_NAMES[(kind, arch)],
               "paper_neg_elbo": paper[0], "paper_rate": paper[1], "paper_distortion": paper[2]}
        if best is None:
            row.update(comparable="not run")
        else:
            used += curves
            protos = " ".join(best["curve"].protocols).lower()
            why = []
            if not src.get("paper_protocol"):
                why.append(f"{src['preset']} preset (reduced budget)")
            if "substitute" in protos:
                why.append("substitute data")
            row.update({k: best[k] for k in ("neg_elbo", "rate", "distortion", "beta", "schedule")},
                       delta=best["neg_elbo"] - paper[0],
                       comparable="yes" if not why else "no: " + ", ".join(why))
            if kind == "mr":
                row["schedule"] = "— (one model)"
        rows.append(row)
    return rows, manifests, used


def plot(results_root: str | Path, out_prefix: str | Path) -> list[Path]:
    """Write ``<out_prefix>.md`` and ``.csv``; returns their paths."""
    rows, manifests, used = collect_rows(results_root)
    if not used:
        raise no_complete_runs(manifests[0])
    caption = ("Lowest test negative ELBO = rate + distortion (nats), mean over seeds; one-sample distortion. "
               + manifest_caption(manifests, used))
    return write_table(rows, COLUMNS, out_prefix, title="Table 2: lowest test negative ELBO (nats)",
                       caption=caption)


def main(argv: list[str] | None = None) -> None:
    figure_main(plot, "table2", "table2", argv)


if __name__ == "__main__":
    main()


def missing_inputs(results_root: str | Path) -> list[str]:
    """Experiments to run for a complete table: none when ``table2`` or both fig5 manifests exist."""
    from .style import manifest_path

    if manifest_path(results_root, "table2").exists():
        return []
    missing = [n for n in ("fig5_mnist", "fig5_omniglot") if not manifest_path(results_root, n).exists()]
    return ["table2"] if len(missing) == 2 else missing
