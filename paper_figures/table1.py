"""Table 1: parameter counts of beta-VAEs and MR-VAEs, this implementation next to the paper's numbers
(with the paper's exponents corrected: every printed exponent is 10x too small, paper-notes §4.2).

Counts come from :func:`deep.models.convnets.parameter_table` (models built on the ``meta`` device: no weights, no
training), plus NVAE rows when ``deep.models.nvae.model`` provides ``nvae_parameter_table()`` and LSTM rows when
``deep.models.text`` provides ``text_parameter_table()`` (same row format). Writes ``<out>.md`` and ``<out>.csv``.
Usage: ``python -m paper_figures.table1 [RESULTS_ROOT (unused)] [OUT_PREFIX]``.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from .style import MalformedResultsError, figure_main, write_table

REQUIRED: tuple[str, ...] = ()
OPTIONAL: tuple[str, ...] = ()
#: Optional providers of more rows: (module, function); skipped when absent.
EXTRA_PROVIDERS = (("deep.models.nvae.model", "nvae_parameter_table"), ("deep.models.text", "text_parameter_table"))
ROW_KEYS = ("data", "arch", "beta_vae_params", "mr_vae_params")
#: Table 1's Yahoo LSTM row as printed (x10^4): beta-VAE, MR-VAE, increase %.
PAPER_LSTM = (88.21e4, 93.51e4, 6.01)
ARCH_NAMES = {"conv": "CNN", "resnet": "ResNet", "nvae": "NVAE", "lstm": "LSTM", "mlp": "MLP"}

COLUMNS = [("data", "Data"), ("arch_name", "Architecture"), ("beta_vae_params", "β-VAE (ours)"),
           ("mr_vae_params", "MR-VAE (ours)"), ("increase_pct", "Increase % (ours)"),
           ("paper_beta_vae_params", "β-VAE (paper)"), ("paper_mr_vae_params", "MR-VAE (paper)"),
           ("paper_increase_pct", "Increase % (paper)"), ("note", "Note")]


def normalize_row(row: dict, module: str) -> dict:
    """Accept family-specific key names (``beta_nvae_params`` -> ``beta_vae_params``, ...) and default the
    architecture from the providing module; adds the family preset to the architecture name."""
    r = dict(row)
    for kind in ("beta", "mr"):
        want = f"{kind}_vae_params"
        if want not in r:
            alt = [k for k in r if k.startswith(f"{kind}_") and k.endswith("_params") and not k.startswith("paper")]
            if len(alt) == 1:
                r[want] = r[alt[0]]
    r.setdefault("arch", {"deep.models.nvae.model": "nvae", "deep.models.text": "lstm", "deep.models.tcvae": "mlp"}.get(module, module))
    return r


def collect_rows() -> tuple[list[dict], list[str]]:
    """Rows for the table and notes on the optional providers (present or not)."""
    from deep.models.convnets import parameter_table

    rows = [dict(r, source="deep.models.convnets.parameter_table") for r in parameter_table()]
    notes = []
    for module, func in EXTRA_PROVIDERS:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            notes.append(f"{module} not available: no rows from {func}()")
            continue
        fn = getattr(mod, func, None)
        if fn is None:
            notes.append(f"{module} has no {func}(): no rows")
            continue
        extra = [normalize_row(r, module) for r in fn()]
        for r in extra:
            missing = [k for k in ROW_KEYS if k not in r]
            if missing:
                raise MalformedResultsError(f"{module}.{func}() returned a row without {missing}: {r}")
        rows += [dict(r, source=f"{module}.{func}") for r in extra]
        notes.append(f"{len(extra)} row(s) from {module}.{func}()")
    if not any(r["arch"] == "lstm" for r in rows):
        rows.append({"data": "Yahoo", "arch": "lstm", "beta_vae_params": None, "mr_vae_params": None,
                     "increase_pct": None, "paper_beta_vae_params": PAPER_LSTM[0], "paper_mr_vae_params": PAPER_LSTM[1],
                     "paper_increase_pct": PAPER_LSTM[2], "source": "paper only",
                     "note": "paper values as printed (x10^4; the exponent is not verified for this row); no LSTM "
                             "count here (deep.models.text exposes no text_parameter_table())"})
    for r in rows:
        r["arch_name"] = ARCH_NAMES.get(r["arch"], r["arch"]) + (f" ({r['preset']} preset)" if r.get("preset") else "")
        if r.get("increase_pct") is None and r.get("beta_vae_params") and r.get("mr_vae_params"):
            r["increase_pct"] = 100.0 * (r["mr_vae_params"] - r["beta_vae_params"]) / r["beta_vae_params"]
        for k in ("beta_vae_params", "mr_vae_params", "paper_beta_vae_params", "paper_mr_vae_params"):
            if r.get(k) is not None:
                r[k] = int(round(r[k]))
    return rows, notes


def plot(results_root: str | Path | None, out_prefix: str | Path) -> list[Path]:
    """Write ``<out_prefix>.md`` and ``.csv``; ``results_root`` is unused (counts come from the code)."""
    rows, notes = collect_rows()
    caption = ("Parameter counts of this implementation (affine gates: 2 parameters per gated channel) and the "
               "paper's Table 1. CNN/ResNet paper values have their exponents corrected (the paper prints x10^5 "
               "for CNN and x10^4 for ResNet; counting the reference architectures gives 10x more); NVAE and LSTM "
               "paper values are as printed (no reference count, see the notes). The paper's CNN increases "
               "match beta-conditioned BatchNorm, which this implementation does not add. " + "; ".join(notes))
    return write_table(rows, COLUMNS, out_prefix, title="Table 1: parameters, β-VAE vs MR-VAE", caption=caption)


def main(argv: list[str] | None = None) -> None:
    figure_main(plot, "table1", "table1", argv)


if __name__ == "__main__":
    main()
