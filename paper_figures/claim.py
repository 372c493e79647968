"""The paper's central claim as numbers: one MR-VAE against the beta-VAEs trained at each beta.

For every baseline beta (test set, nats per example):

* ``delta(beta) = (D + beta R) of the MR-VAE at beta  -  (D + beta R) of the beta-VAE trained at beta``:
  negative where the single MR-VAE beats the dedicated beta-VAE at the beta-VAE's own objective;
* ``coverage = R_MR(a) / R_beta-VAE(a)`` at the smallest baseline beta a: how far up the rate axis the MR
  curve reaches compared with the dedicated model (1 = as far).

The goal set for this project (issue 19): ``delta <= 0`` at >= 7 of the 10 betas and ``coverage >= 0.9``.
The MR-VAE's values at a baseline beta come from its evaluation at exactly that beta (the experiment presets
evaluate MR-VAEs at the 10 baseline betas, ``rd_baselines.json``); otherwise from linear interpolation in
log beta of its curve, and the output says so.

Reads only result files. ``python -m paper_figures.claim --mr MR_RD.json [MR_RD.json ...] --baselines
SWEEP_DIR_OR_RD.json... [--out PREFIX]`` for loose files (a sweep folder's ``index.json`` lists its runs; a
written ``*_claim.json`` stands for the beta-VAEs it compared against, so a new MR-VAE can be measured against
the gallery's baselines in ``docs/img/`` without their runs);
with several MR-VAEs (e.g. the cells of an ablation) it prints one markdown row per MR-VAE
(:func:`claim_table`). :func:`write_for_group` is what the Fig. 1 / Fig. 5 scripts call to write
``<figure>_claim.md`` / ``.json`` next to the figure.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from deep.experiments.manifest import read_json_object

from .style import MalformedResultsError, group_curve, load_rd

__all__ = ["claim_numbers", "claim_table", "write_claim", "write_for_group", "GOAL_DELTA_COUNT", "GOAL_COVERAGE", "main"]

#: issue 19's goal: delta <= 0 at this many of the baseline betas ...
GOAL_DELTA_COUNT = 7
#: ... and at least this coverage of the rate at the smallest beta
GOAL_COVERAGE = 0.9
BASELINES_RESULTS = "rd_baselines.json"
#: the file name ending :func:`write_claim` gives the claim's JSON (``--baselines`` reads such files as beta-VAEs)
CLAIM_SUFFIX = "_claim.json"


def _at(beta: np.ndarray, values: np.ndarray, b: float) -> tuple[float, bool]:
    """``values`` at ``b``: the evaluated value when ``b`` is on the grid, else interpolated in log beta."""
    j = np.flatnonzero(np.isclose(beta, b, rtol=1e-6, atol=0.0))
    if j.size:
        return float(values[j[0]]), False
    if not beta.min() * (1 - 1e-9) <= b <= beta.max() * (1 + 1e-9):
        raise MalformedResultsError(f"beta {b:g} lies outside the MR-VAE's evaluated betas "
                                    f"[{beta.min():g}, {beta.max():g}]")
    order = np.argsort(beta)
    return float(np.interp(math.log(b), np.log(beta[order]), values[order])), True


def claim_numbers(mr_beta: Sequence[float], mr_rate: Sequence[float], mr_distortion: Sequence[float],
                  base_beta: Sequence[float], base_rate: Sequence[float], base_distortion: Sequence[float]) -> dict:
    """delta(beta) at every baseline beta, the coverage at the smallest one and whether the goal is met."""
    mb, mr, md = (np.asarray(v, dtype=float) for v in (mr_beta, mr_rate, mr_distortion))
    order = np.argsort(np.asarray(base_beta, dtype=float))
    bb, br, bd = (np.asarray(v, dtype=float)[order] for v in (base_beta, base_rate, base_distortion))
    rows, interpolated = [], False
    for b, r_b, d_b in zip(bb, br, bd):
        r_m, i1 = _at(mb, mr, b)
        d_m, i2 = _at(mb, md, b)
        interpolated |= i1 or i2
        loss_m, loss_b = float(d_m + b * r_m), float(d_b + b * r_b)   # plain floats in the JSON and the printout
        rows.append({"beta": float(b), "mr_rate": r_m, "mr_distortion": d_m, "mr_loss": loss_m,
                     "beta_vae_rate": float(r_b), "beta_vae_distortion": float(d_b), "beta_vae_loss": loss_b,
                     "delta": loss_m - loss_b})
    wins = int(sum(r["delta"] <= 0 for r in rows))
    coverage = float(rows[0]["mr_rate"] / rows[0]["beta_vae_rate"]) if rows and rows[0]["beta_vae_rate"] > 0 else math.nan
    need = min(GOAL_DELTA_COUNT, len(rows))
    return {"rows": rows, "delta": [r["delta"] for r in rows], "betas": [r["beta"] for r in rows],
            "wins": wins, "n": len(rows), "coverage": coverage, "coverage_beta": rows[0]["beta"] if rows else None,
            "goal": {"delta_leq_0_at_least": need, "coverage_at_least": GOAL_COVERAGE,
                     "met": bool(wins >= need and coverage >= GOAL_COVERAGE)},
            "mr_values": "interpolated in log beta" if interpolated else "evaluated at every baseline beta",
            "definition": "delta(beta) = (D + beta R)_MR(beta) - (D + beta R)_beta-VAE(beta), test set, nats per "
                          "example; coverage = R_MR(a) / R_beta-VAE(a) at the smallest baseline beta a"}


def write_claim(claim: dict, out_prefix: str | Path, title: str = "", protocol: str = "") -> list[Path]:
    """``<out_prefix>_claim.json`` and ``_claim.md`` (a table per beta and the summary line)."""
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    data = {**claim, "title": title, "protocol": protocol}
    js = out_prefix.with_name(out_prefix.name + CLAIM_SUFFIX)
    js.write_text(json.dumps(data, indent=2) + "\n")
    lines = [f"### {title or 'MR-VAE vs beta-VAEs'}", ""]
    if protocol:
        lines += [protocol, ""]
    lines += ["| β | MR-VAE R | MR-VAE D | β-VAE R | β-VAE D | Δ(β) = (D+βR)_MR − (D+βR)_β-VAE |",
              "|---|---|---|---|---|---|"]
    for r in claim["rows"]:
        lines.append(f"| {r['beta']:.4g} | {r['mr_rate']:.2f} | {r['mr_distortion']:.2f} | {r['beta_vae_rate']:.2f} | "
                     f"{r['beta_vae_distortion']:.2f} | {r['delta']:+.2f} |")
    g = claim["goal"]
    lines += ["", f"Δ(β) ≤ 0 at **{claim['wins']} of {claim['n']}** β (goal ≥ {g['delta_leq_0_at_least']}); "
                  f"coverage R_MR/R_β-VAE at β = {claim['coverage_beta']:.4g}: **{claim['coverage']:.3f}** "
                  f"(goal ≥ {g['coverage_at_least']}); goal {'met' if g['met'] else 'NOT met'}. "
                  f"MR-VAE values {claim['mr_values']}.", ""]
    md = out_prefix.with_name(out_prefix.name + "_claim.md")
    md.write_text("\n".join(lines))
    return [js, md]


def claim_table(claims: dict[str, dict]) -> str:
    """A markdown table with one row per MR-VAE (``{label: claim_numbers(...)}``, all against the same
    baselines): Δ ≤ 0 count, coverage (and the MR-VAE's rate at the smallest beta), Δ at every beta, mean Δ."""
    betas = next(iter(claims.values()))["betas"] if claims else []
    for label, c in claims.items():
        if not np.allclose(c["betas"], betas, rtol=1e-6):
            raise ValueError(f"{label}: its claim is against other betas ({c['betas']}) than the first row's")
    head = ["MR-VAE", "Δ ≤ 0 at", "coverage (R_MR)"] + [f"Δ({b:.3g})" for b in betas] + ["mean Δ"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, c in claims.items():
        cells = [label, f"{c['wins']}/{c['n']}", f"{c['coverage']:.3f} ({c['rows'][0]['mr_rate']:.1f})"]
        cells += [f"{d:+.2f}" for d in c["delta"]] + [f"{float(np.mean(c['delta'])):+.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _label(path: Path) -> str:
    """A run's folder name for ``RUN/results/<file>.json``, else the path as given."""
    return path.parent.parent.name if path.parent.name == "results" else str(path)


def write_for_group(manifest: dict, dataset: str, arch: str, out_prefix: str | Path, title: str = "",
                    protocol: str = "") -> list[Path]:
    """The claim of one panel of a figure's manifest (``<dataset>_<arch>_mr`` against the constant-beta
    sweep ``<dataset>_<arch>_beta_constant``); nothing when either group has no complete result."""
    prefix = f"{dataset}_{arch}"
    mr = group_curve(manifest, f"{prefix}_mr", results=BASELINES_RESULTS) or group_curve(manifest, f"{prefix}_mr")
    base = group_curve(manifest, f"{prefix}_beta_constant")
    if mr is None or base is None:
        return []
    claim = claim_numbers(mr.beta, mr["rate"], mr["distortion"], base.beta, base["rate"], base["distortion"])
    return write_claim(claim, out_prefix, title=title, protocol=protocol)


def _claim_file_points(path: Path) -> list[tuple[float, float, float]]:
    """(beta, rate, distortion) of the beta-VAEs a ``*_claim.json`` written by :func:`write_claim` compared
    against."""
    data = read_json_object(path)
    rows = data.get("rows")
    keys = ("beta", "beta_vae_rate", "beta_vae_distortion")
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and all(k in r for k in keys)
                                                         for r in rows):
        raise MalformedResultsError(f"{path}: a claim file needs non-empty 'rows' holding {keys}")
    pts = [tuple(float(r[k]) for k in keys) for r in rows]
    if not all(math.isfinite(v) for p in pts for v in p) or any(p[0] <= 0 for p in pts):
        raise MalformedResultsError(f"{path}: a claim row has a non-finite value or a beta <= 0")
    return pts


def _baseline_points(paths: Sequence[str]) -> tuple[list[float], list[float], list[float]]:
    """(beta, rate, distortion) of beta-VAE result files, of every run a sweep folder's index.json lists, or
    of the beta-VAEs of a written ``*_claim.json`` (e.g. the gallery's, docs/img/cpu_full_warmup/: a new
    MR-VAE measured against them without their runs)."""
    files: list[Path] = []
    pts: list[tuple[float, float, float]] = []
    for p in map(Path, paths):
        if p.is_dir():
            index = json.loads((p / "index.json").read_text())
            files += [p / r["results"] for r in index["runs"] if r.get("results")]
        elif p.name.endswith(CLAIM_SUFFIX):
            pts += _claim_file_points(p)
        else:
            files.append(p)
    pts += [(rd["beta"][0], rd["rate"][0], rd["distortion"][0]) for rd in map(load_rd, files)]
    pts.sort()
    betas = [p[0] for p in pts]
    if any(math.isclose(x, y, rel_tol=1e-6) for x, y in zip(betas, betas[1:])):
        raise MalformedResultsError(f"two baselines at the same beta among {list(paths)}")
    return betas, [p[1] for p in pts], [p[2] for p in pts]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description="delta(beta) and coverage of an MR-VAE against beta-VAEs")
    ap.add_argument("--mr", nargs="+", required=True,
                    help="the MR-VAE's rd JSON (evaluated at the baseline betas); several: one table row each")
    ap.add_argument("--baselines", nargs="+", required=True,
                    help="beta-VAE rd JSON files, sweep folders, or a written *_claim.json (its beta-VAEs)")
    ap.add_argument("--out", default=None, help="write <OUT>_claim.json and <OUT>_claim.md (several --mr: "
                                                 "<OUT>_claims.json and the table <OUT>_claims.md)")
    ap.add_argument("--title", default="")
    args = ap.parse_args(argv)
    baselines = _baseline_points(args.baselines)
    claims: dict[str, dict] = {}
    for f in map(Path, args.mr):
        mr = load_rd(f)
        label = _label(f)
        if label in claims:
            label = str(f)
        claims[label] = claim_numbers(mr["beta"], mr["rate"], mr["distortion"], *baselines)
    if len(claims) == 1:
        claim = next(iter(claims.values()))
        if args.out:
            write_claim(claim, args.out, title=args.title)
        print(f"delta <= 0 at {claim['wins']}/{claim['n']} betas; coverage {claim['coverage']:.3f}; "
              f"deltas {[round(d, 2) for d in claim['delta']]}")
        return claim
    table = claim_table(claims)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_name(out.name + "_claims.json").write_text(json.dumps({"title": args.title, "claims": claims},
                                                                       indent=2) + "\n")
        out.with_name(out.name + "_claims.md").write_text((f"### {args.title}\n\n" if args.title else "") + table)
    print(table, end="")
    return claims


if __name__ == "__main__":  # pragma: no cover
    main()
