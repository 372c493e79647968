"""Fig. 1: Omniglot ResNet test RD curve — standard VAE (beta = 1), beta-VAEs with and without KL annealing,
and one MR-VAE — with the table of parameter counts and training times.

Reads the ``fig1`` manifest and the rd.json files it lists (training times and parameter counts come from
the manifest, copied from each run's summary.json). Writes ``<out>.png``, ``<out>.pdf`` and the table as
``<out>_table.md`` / ``<out>_table.csv``. Usage: ``python -m paper_figures.fig1 [RESULTS_ROOT] [OUT_PREFIX]``.

The reference fig1.py appears to swap the two baseline legend labels (paper-notes §7.7); here the KL-annealing
label goes to the runs trained with the linear KL warm-up.
"""
from __future__ import annotations

import math
from pathlib import Path

from .claim import BASELINES_RESULTS, claim_numbers, write_claim
from .style import (COLORS, Curve, figure_main, group_curve, load_manifest, manifest_caption, new_grid,
                    no_complete_runs, note, plot_curve, save, schedule_color, write_table)

REQUIRED = ("fig1",)
OPTIONAL: tuple[str, ...] = ()
KEYS = {"mr": "omniglot_resnet_mr", "constant": "omniglot_resnet_beta_constant",
        "linear": "omniglot_resnet_beta_linear"}
#: Fig. 1's table in the paper (parameter exponents corrected, paper-notes §4.2).
PAPER_TABLE = {"vae": (1_881_000, 4832.0), "constant": (15_040_000, 38492.0), "linear": (15_040_000, 38640.0),
               "mr": (1_884_000, 5040.0)}


def _vae_run(curve: Curve) -> dict | None:
    """The complete run of the constant sweep closest to beta = 1 (the standard VAE)."""
    runs = [r for r in curve.group["runs"] if r.get("status") == "complete" and r.get("beta")]
    if curve.group.get("selected_lr") is not None:
        runs = [r for r in runs if math.isclose(r["lr"], curve.group["selected_lr"], rel_tol=1e-9)]
    if not runs:
        return None
    best = min(runs, key=lambda r: abs(math.log(r["beta"])))
    return best if abs(math.log(best["beta"])) < 1e-6 else None


def table_rows(curves: dict[str, Curve | None]) -> list[dict]:
    """Rows of the Fig. 1 table: method, parameters, training time (s), full RD curve, paper values."""
    rows = []
    const = curves.get("constant")
    if const is not None:
        vae = _vae_run(const)
        if vae is not None:
            i = min(range(len(const.beta)), key=lambda j: abs(math.log(const.beta[j])))
            rows.append({"method": "Standard VAE (β = 1)", "params": vae.get("n_params"),
                         "time_s": vae.get("train_time_s"), "full_curve": "no",
                         "neg_elbo": float(const.mean["distortion"][i] + const.mean["rate"][i]),
                         "paper_params": PAPER_TABLE["vae"][0], "paper_time_s": PAPER_TABLE["vae"][1]})
    for key, name in (("constant", "β-VAEs"), ("linear", "β-VAEs (KL annealing)")):
        c = curves.get(key)
        if c is None:
            continue
        n = len(c.beta)
        params = c.n_params * n if c.n_params is not None else None
        rows.append({"method": f"{name}, {n} runs", "params": params, "time_s": c.train_time_s,
                     "full_curve": "partial", "neg_elbo": float(min(c.mean["distortion"] + c.mean["rate"])),
                     "paper_params": PAPER_TABLE[key][0], "paper_time_s": PAPER_TABLE[key][1]})
    mr = curves.get("mr")
    if mr is not None:
        rows.append({"method": "MR-VAE (one run)", "params": mr.n_params, "time_s": mr.train_time_s,
                     "full_curve": "yes", "neg_elbo": float(min(mr.mean["distortion"] + mr.mean["rate"])),
                     "paper_params": PAPER_TABLE["mr"][0], "paper_time_s": PAPER_TABLE["mr"][1]})
    return rows


COLUMNS = [("method", "Method"), ("params", "Parameters"), ("time_s", "Training time (s)"),
           ("full_curve", "Full RD curve?"), ("neg_elbo", "lowest −ELBO (nats)"),
           ("paper_params", "paper: parameters"), ("paper_time_s", "paper: time (s, P100)")]


def plot(results_root: str | Path, out_prefix: str | Path) -> list[Path]:
    """Draw the RD panel and the table panel; returns the PNG, PDF, MD and CSV paths."""
    m = load_manifest(results_root, "fig1")
    curves = {k: group_curve(m, key) for k, key in KEYS.items()}
    drawn = [c for c in curves.values() if c is not None]
    if not drawn:
        raise no_complete_runs(m)
    fig, axes = new_grid(1, 2, 10.0, 4.2, width_ratios=[1.1, 1.0])
    ax, axt = axes[0]
    for key in ("constant", "linear"):
        c = curves[key]
        if c is not None:
            plot_curve(ax, c, color=schedule_color(c), label=f"{c.label} ({len(c.beta)} runs)")
    const = curves["constant"]
    if const is not None and _vae_run(const) is not None:
        i = min(range(len(const.beta)), key=lambda j: abs(math.log(const.beta[j])))
        ax.plot([const.mean["rate"][i]], [const.mean["distortion"][i]], "*", ms=12, color=COLORS["vae"],
                label="standard VAE (β = 1)", zorder=4)
    if curves["mr"] is not None:
        plot_curve(ax, curves["mr"], color=COLORS["mr"], label="MR-VAE (one run)")
    ax.set_xlabel("rate (nats)")
    ax.set_ylabel("distortion (nats)")
    ax.set_title("Omniglot (ResNet), test set")
    ax.legend(fontsize=7)
    rows = table_rows(curves)
    axt.axis("off")
    axt.grid(False)
    if rows:
        def fmt(v, kind):
            if v is None:
                return "–"
            if kind == "params":
                return f"{v / 1e6:.2f} M"
            return f"{v:,.1f} s" if v < 100 else f"{v:,.0f} s"
        cells = [[r["method"].replace(", ", "\n"), fmt(r["params"], "params"), fmt(r["time_s"], "time"),
                  r["full_curve"], f"{fmt(r['paper_params'], 'params')}\n{fmt(r['paper_time_s'], 'time')}"]
                 for r in rows]
        tab = axt.table(cellText=cells, colLabels=["Method", "Parameters", "Training\ntime", "Full RD\ncurve?",
                                                   "paper\n(P100)"],
                        colWidths=[0.36, 0.16, 0.16, 0.13, 0.19], loc="center", cellLoc="left")
        tab.auto_set_font_size(False)
        tab.set_fontsize(7)
        tab.scale(1.0, 2.6)
        axt.set_title("parameters and training time (this machine)", fontsize=9)
    else:
        note(axt, "no timing records")
    extra = ""
    mr_t = curves["mr"].train_time_s if curves["mr"] is not None else None
    vae_t = next((r["time_s"] for r in rows if r["method"].startswith("Standard")), None)
    if mr_t and vae_t:
        extra = f"MR-VAE training time {100 * (mr_t / vae_t - 1):+.1f}% vs the beta = 1 VAE (paper: +4.2%)"
    for r in rows:
        if r["method"].startswith("β-VAEs,") and mr_t and r["time_s"]:
            extra += f"; the beta-VAE sweep costs {r['time_s'] / mr_t:.1f}x the MR-VAE"
    claim, claim_kl = None, None
    if curves["mr"] is not None and const is not None:
        mr_b = group_curve(m, KEYS["mr"], results=BASELINES_RESULTS) or curves["mr"]
        claim = claim_numbers(mr_b.beta, mr_b["rate"], mr_b["distortion"], const.beta, const["rate"],
                              const["distortion"])
        extra += (("; " if extra else "") + f"Δ(β) = (D+βR)_MR − (D+βR)_β-VAE ≤ 0 at {claim['wins']} of "
                  f"{claim['n']} β, coverage R_MR/R_β-VAE at β = {claim['coverage_beta']:.3g}: {claim['coverage']:.2f}")
        anneal = curves.get("linear")
        if anneal is not None:   # the same numbers against the beta-VAEs trained with KL annealing
            claim_kl = claim_numbers(mr_b.beta, mr_b["rate"], mr_b["distortion"], anneal.beta, anneal["rate"],
                                     anneal["distortion"])
            extra += (f" (against the KL-annealed β-VAEs: {claim_kl['wins']} of {claim_kl['n']}, "
                      f"{claim_kl['coverage']:.2f})")
    caption = manifest_caption([m], drawn, (extra + "; " if extra else "")
                               + "times measured on a shared machine: compare ratios, not seconds")
    paths = save(fig, out_prefix, caption=caption)
    out_prefix = Path(out_prefix)
    paths += write_table(rows, COLUMNS, out_prefix.with_name(out_prefix.name + "_table"),
                         title="Fig. 1 table: parameters and training time", caption=caption)
    if claim is not None:
        paths += write_claim(claim, out_prefix, title="Fig. 1: Omniglot ResNet, one MR-VAE vs the β-VAEs",
                             protocol=caption)
    if claim_kl is not None:
        paths += write_claim(claim_kl, out_prefix.with_name(out_prefix.name + "_kl_annealing"),
                             title="Fig. 1: Omniglot ResNet, one MR-VAE vs the β-VAEs trained with KL annealing",
                             protocol=caption)
    return paths


def main(argv: list[str] | None = None) -> None:
    figure_main(plot, "fig1", "fig1", argv)


if __name__ == "__main__":
    main()
