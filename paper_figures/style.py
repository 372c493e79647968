"""Shared figure style and I/O for the paper figures (matplotlib, Agg backend)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# the one manifest schema, shared with the runner (torch-free; nothing here trains or builds a model)
from deep.experiments.manifest import (FIG7_BETAS, FIG7_RESULTS, RD_RESULTS,  # noqa: E402,F401
                                       MalformedResultsError, MissingResultsError, load_manifest, manifest_path,
                                       preset_for_root, read_json_object, run_command)

COLORS = {"mr": "#1f77b4", "beta": "#d62728", "beta_anneal": "#ff7f0e", "exact": "black", "vae": "#2ca02c"}


def load_results(path: str | Path, required: dict[str, list[str]]) -> dict:
    """Read a results JSON file and check that ``required[section]`` keys exist."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise MalformedResultsError(f"{path} is not valid JSON: {err}") from err
    for section, keys in required.items():
        if section not in data or not isinstance(data[section], dict):
            raise MalformedResultsError(f"{path}: missing section '{section}'")
        missing = [k for k in keys if k not in data[section]]
        if missing:
            raise MalformedResultsError(f"{path}: section '{section}' lacks {missing}")
    return data


def new_figure(width: float = 5.0, height: float = 3.8, ncols: int = 1):
    """A figure with ``ncols`` axes in the shared style; returns ``(fig, axes)``."""
    plt.rcParams.update({"font.size": 9, "axes.grid": True, "grid.alpha": 0.3})
    return plt.subplots(1, ncols, figsize=(width, height), constrained_layout=True)


def save(fig, out_prefix: str | Path, caption: str | None = None) -> list[Path]:
    """Write ``<out_prefix>.png`` and ``.pdf``; the caption line states the protocol."""
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    if caption:
        import textwrap

        width_in, height_in = fig.get_size_inches()
        chars = max(40, int(width_in / 0.047))  # ~6 pt characters per line
        lines = []
        for para in caption.split("\n"):
            lines += textwrap.wrap(para, chars) or [""]
        fig.text(0.01, 0.005, "\n".join(lines), fontsize=6, ha="left", va="bottom")
        bottom = min(0.45, (len(lines) * 0.105 + 0.06) / height_in)
        fig.get_layout_engine().set(rect=(0, bottom, 1, 1 - bottom))
    paths = [out_prefix.with_suffix(".png"), out_prefix.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths


# ------------------------------------------------------------------------------------------
# experiment manifests and rd.json files (written by deep.experiments.runner)
# ------------------------------------------------------------------------------------------
import math  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import numpy as np  # noqa: E402

#: Extra colours for figures with many curves (sensitivity, ablations), colour-blind friendly.
CYCLE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
MARKERS = {"constant": "^", "linear": "v", "cyclical": "s"}
SCHEDULE_LABELS = {"constant": "β-VAEs", "linear": "β-VAEs (KL annealing)", "cyclical": "β-VAEs (cyclical KL)"}


def is_unavailable(manifest: dict | None) -> bool:
    return manifest is not None and manifest.get("status") == "unavailable"


def find_group(manifest: dict, key: str) -> dict | None:
    for g in manifest["groups"]:
        if g["key"] == key:
            return g
    return None


def _finite_list(path: Path, data: dict, name: str, n: int | None) -> list[float]:
    arr = data.get(name)
    if not isinstance(arr, list):
        raise MalformedResultsError(f"{path}: '{name}' must be a list of numbers indexed by beta, "
                                    f"got {type(arr).__name__}")
    if n is not None and len(arr) != n:
        raise MalformedResultsError(f"{path}: '{name}' has {len(arr)} entries but 'beta' has {n}")
    out = []
    for v in arr:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise MalformedResultsError(f"{path}: '{name}' holds a non-finite or non-numeric value {v!r}")
        out.append(float(v))
    return out


def load_rd(path: str | Path, fields: tuple[str, ...] = ("rate", "distortion"),
            optional: tuple[str, ...] = ()) -> dict:
    """Read an ``rd.json`` (arrays indexed by beta) and check ``beta`` and ``fields``.

    Returns the parsed file with ``beta`` and every requested field as float lists; optional fields
    that are absent or ``None`` are dropped. Raises :class:`MalformedResultsError` with the file name.
    """
    path = Path(path)
    if not path.exists():
        raise MalformedResultsError(f"{path}: result file listed in the manifest does not exist")
    data = read_json_object(path)
    beta = _finite_list(path, data, "beta", None)
    if not beta or any(b <= 0 for b in beta):
        raise MalformedResultsError(f"{path}: 'beta' must be a non-empty list of positive numbers")
    data["beta"] = beta
    for name in fields:
        if name not in data:
            raise MalformedResultsError(f"{path}: lacks the array '{name}'")
        data[name] = _finite_list(path, data, name, len(beta))
    for name in optional:
        if data.get(name) is None:
            data.pop(name, None)
        else:
            data[name] = _finite_list(path, data, name, len(beta))
    data["_path"] = str(path)
    return data


@dataclass(eq=False)
class Curve:
    """One group of a manifest read back: arrays indexed by ``beta`` (ascending), mean over seeds.

    ``std`` holds the sample standard deviation over seeds (0 with one seed), ``lo``/``hi`` the min/max.
    """

    key: str
    label: str
    kind: str
    beta: np.ndarray
    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]
    lo: dict[str, np.ndarray]
    hi: dict[str, np.ndarray]
    n_seeds: int
    files: list[str]
    group: dict
    protocols: list[str] = field(default_factory=list)
    latent_dim: int | None = None
    n_examples: int | None = None
    train_time_s: float | None = None
    n_params: int | None = None
    rd: list[dict] = field(default_factory=list)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.mean[name]

    def has(self, name: str) -> bool:
        return name in self.mean


def _stats(values: list[list[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    a = np.asarray(values, dtype=float)
    std = a.std(axis=0, ddof=1) if a.shape[0] > 1 else np.zeros(a.shape[1])
    return a.mean(axis=0), std, a.min(axis=0), a.max(axis=0)


def _selected_runs(group: dict) -> list[dict]:
    lr = group.get("selected_lr")
    runs = [r for r in group["runs"] if r.get("status") == "complete"]
    if lr is not None:
        runs = [r for r in runs if r.get("lr") is None or math.isclose(float(r["lr"]), float(lr), rel_tol=1e-9)]
    return runs


def group_curve(manifest: dict, key: str, fields: tuple[str, ...] = ("rate", "distortion"),
                optional: tuple[str, ...] = (), results: str = RD_RESULTS) -> Curve | None:
    """Read group ``key`` of ``manifest``: the MR-VAE curve (rd.json per seed, same beta grid) or the
    beta-VAE sweep (one rd.json point per beta and seed), averaged over the seeds of the selected
    learning rate. ``None`` when the group is unavailable, failed, or has no complete run."""
    group = find_group(manifest, key)
    if group is None or group.get("status") == "unavailable":
        return None
    runs = [r for r in _selected_runs(group) if results in r["results"]]
    if not runs:
        return None
    root = Path(manifest["_root"])
    rds = []
    for r in runs:
        rd = load_rd(root / r["results"][results], fields, optional)
        rd["_seed"] = r.get("seed", 0)
        rd["_beta_key"] = r.get("beta")
        rds.append(rd)
    present = [o for o in optional if all(o in rd for rd in rds)]
    names = list(fields) + present + ["beta"]
    if group["kind"] == "mr":
        grid = rds[0]["beta"]
        for rd in rds[1:]:
            if len(rd["beta"]) != len(grid) or not np.allclose(rd["beta"], grid, rtol=1e-6):
                raise MalformedResultsError(f"{rd['_path']}: beta grid differs from {rds[0]['_path']}; seeds of "
                                            "one MR-VAE must be evaluated on the same betas")
        order = np.argsort(grid)
        per = {n: [np.asarray(rd[n])[order].tolist() for rd in rds] for n in names}
        n_seeds = len(rds)
    else:  # sweep: one point per member beta
        by_beta: dict[float, list[dict]] = {}
        for rd in rds:
            b = float(rd["_beta_key"] if rd["_beta_key"] is not None else rd["beta"][0])
            by_beta.setdefault(b, []).append(rd)
        betas = sorted(by_beta)
        n_seeds = min(len(v) for v in by_beta.values())
        per = {n: [[by_beta[b][s][n][0] for b in betas] for s in range(n_seeds)] for n in names}
    mean, std, lo, hi = {}, {}, {}, {}
    for n in names:
        mean[n], std[n], lo[n], hi[n] = _stats(per[n])
    beta = mean.pop("beta")
    for d in (std, lo, hi):
        d.pop("beta")
    protocols = []
    for rd in rds:
        p = rd.get("protocol")
        text = p.get("protocol") if isinstance(p, dict) else p
        if text and text not in protocols:
            protocols.append(str(text))
    model = rds[0].get("model") if isinstance(rds[0].get("model"), dict) else {}
    ev = rds[0].get("evaluation") if isinstance(rds[0].get("evaluation"), dict) else {}
    times = [r.get("train_time_s") for r in runs]
    n_params = next((r.get("n_params") for r in runs if r.get("n_params") is not None), None)
    seeds = max(1, len({r.get("seed", 0) for r in runs}))
    total_time = (sum(t for t in times if t is not None) / seeds) if all(t is not None for t in times) else None
    return Curve(key=key, label=group.get("label", key), kind=group["kind"], beta=beta, mean=mean, std=std,
                 lo=lo, hi=hi, n_seeds=n_seeds, files=[rd["_path"] for rd in rds], group=group,
                 protocols=protocols, latent_dim=model.get("latent_dim"), n_examples=ev.get("n_examples"),
                 train_time_s=total_time, n_params=n_params, rd=rds)


def manifest_caption(manifests: list[dict], curves: list[Curve] | None = None, extra: str = "") -> str:
    """One caption line: preset and budget label of each manifest, the data protocols and evaluation
    sizes read from the rd.json files, and ``extra``."""
    parts, seen = [], set()
    for m in manifests:
        if m is None:
            continue
        text = f"{m['experiment']} [{m['preset']} preset, {m['status']}]: {m['budget']}"
        if m.get("status") == "unavailable" and m.get("reason"):
            text = f"{m['experiment']}: unavailable ({m['reason']})"
        if text not in seen:
            seen.add(text)
            parts.append(text)
    protos, sizes = [], []
    for c in curves or []:
        for p in c.protocols:
            if p not in protos:
                protos.append(p)
        if c.n_examples and c.n_examples not in sizes:
            sizes.append(c.n_examples)
    if protos:
        parts.append("data: " + "; ".join(protos))
    if sizes:
        parts.append("test examples evaluated: " + ", ".join(f"{s:,}" for s in sorted(sizes)))
    seeds = sorted({c.n_seeds for c in curves or []})
    if seeds and seeds != [1]:
        parts.append(f"mean over {'/'.join(map(str, seeds))} seeds (shaded and error bars: ± 1 std)")
    if extra:
        parts.append(extra)
    return " | ".join(parts)


def new_grid(nrows: int, ncols: int, width: float, height: float, width_ratios: list[float] | None = None):
    """A ``nrows x ncols`` figure in the shared style; returns ``(fig, axes)`` with a 2-D axes array."""
    plt.rcParams.update({"font.size": 9, "axes.grid": True, "grid.alpha": 0.3, "axes.formatter.useoffset": False,
                         "legend.framealpha": 0.85})
    kw = {"gridspec_kw": {"width_ratios": width_ratios}} if width_ratios else {}
    return plt.subplots(nrows, ncols, figsize=(width, height), constrained_layout=True, squeeze=False, **kw)


def note(ax, text: str, width: int = 48) -> None:
    """Write ``text`` (wrapped to ``width`` characters) in the middle of an empty panel (a result that is
    not available)."""
    import textwrap

    lines = [w for para in str(text).split("\n") for w in (textwrap.wrap(para, width) or [""])]
    ax.text(0.5, 0.5, "\n".join(lines), ha="center", va="center", fontsize=7, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def write_table(rows: list[dict], columns: list[tuple[str, str]], out_prefix: str | Path,
                title: str = "", caption: str = "") -> list[Path]:
    """Write ``rows`` as ``<out_prefix>.md`` (Markdown, with ``title`` and ``caption``) and ``.csv``.

    ``columns``: (key, header) pairs; floats are written with 2 decimals in Markdown, full precision in CSV.
    """
    import csv

    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)

    def md(v):
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:,.2f}"
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v:,}"
        return str(v).replace("|", "\\|")

    lines = []
    if title:
        lines += [f"**{title}**", ""]
    lines.append("| " + " | ".join(h for _, h in columns) + " |")
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for r in rows:
        lines.append("| " + " | ".join(md(r.get(k)) for k, _ in columns) + " |")
    if caption:
        lines += ["", caption]
    md_path, csv_path = out_prefix.with_suffix(".md"), out_prefix.with_suffix(".csv")
    md_path.write_text("\n".join(lines) + "\n")
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([h for _, h in columns])
        for r in rows:
            w.writerow(["" if r.get(k) is None else r.get(k) for k, _ in columns])
    return [md_path, csv_path]


def figure_main(plot, name: str, default_out: str, argv: list[str] | None = None) -> None:
    """``python -m paper_figures.<name> [RESULTS_ROOT] [OUT_PREFIX]``: draw one figure, print the paths."""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) > 2 or any(a in ("-h", "--help") for a in argv):
        raise SystemExit(f"usage: python -m paper_figures.{name} [RESULTS_ROOT (default results/cpu)] "
                         f"[OUT_PREFIX (default figures/{default_out})]")
    root = argv[0] if argv else "results/cpu"
    out = argv[1] if len(argv) > 1 else f"figures/{default_out}"
    try:
        paths = plot(root, out)
    except (MissingResultsError, MalformedResultsError) as err:
        raise SystemExit(f"error: {err}")
    for p in paths:
        print(p)


def to_units(curve: Curve, name: str) -> np.ndarray:
    """``curve[name]`` in the group's plotting units: nats, or bits per dimension when ``units == "bpd"``."""
    return _convert(curve, name, curve.mean[name])


def _std_units(curve: Curve, name: str) -> np.ndarray:
    return _convert(curve, name, curve.std[name])


NAT_FIELDS = ("rate", "distortion", "neg_elbo", "loss", "iw_nll")


def _convert(curve: Curve, name: str, values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if curve.group.get("units") == "bpd" and name in NAT_FIELDS:
        dims = curve.group.get("dims")
        if not dims:
            raise MalformedResultsError(f"group {curve.key}: units 'bpd' need 'dims' (values per example)")
        return values / (float(dims) * math.log(2))
    return values


def plot_curve(ax, curve: Curve, *, color: str, label: str | None = None, x: str = "rate",
               y: str = "distortion", marker: str | None = None, lw: float = 2.0) -> None:
    """An MR-VAE curve as a line (shaded ± one std over seeds when there are several), a beta-VAE sweep as
    markers (error bars over seeds)."""
    xs = to_units(curve, x) if x != "beta" else curve.beta
    ys = to_units(curve, y)
    label = label if label is not None else curve.label
    if curve.kind == "mr":
        ax.plot(xs, ys, "-", color=color, lw=lw, label=label, zorder=2)
        if curve.n_seeds > 1:
            sd = _std_units(curve, y)
            ax.fill_between(xs, ys - sd, ys + sd, color=color, alpha=0.2, lw=0)
    else:
        xerr = _std_units(curve, x) if (curve.n_seeds > 1 and x != "beta") else None
        yerr = _std_units(curve, y) if curve.n_seeds > 1 else None
        ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt=marker or MARKERS.get(curve.group.get("schedule") or "", "^"),
                    ms=5, color=color, ls="none", label=label, zorder=3, capsize=2 if yerr is not None else 0)


def schedule_color(curve: Curve) -> str:
    if curve.kind == "mr":
        return COLORS["mr"]
    return COLORS["beta_anneal"] if curve.group.get("schedule") == "linear" else COLORS["beta"]


def rate_axis_label(group: dict) -> tuple[str, str]:
    """(x label, y label) of an RD panel for the group's dataset and units."""
    if group.get("units") == "bpd":
        return "rate (bits/dim)", "distortion (bits/dim)"
    per = "nats per sentence" if group.get("dataset") == "yahoo" else "nats"
    return f"rate ({per})", f"distortion ({per})"


def no_complete_runs(manifest: dict) -> MissingResultsError:
    """The error for a manifest whose runs are not finished (or all failed): re-run the experiment."""
    name = manifest["experiment"]
    return MissingResultsError(
        f"{manifest['_path']}: no complete runs yet (status {manifest['status']!r}); run: "
        f"{run_command(name, preset=manifest.get('preset'), results_root=manifest['_root'])}", [name])
