"""Table 1: parameter counts of beta-VAEs and MR-VAEs, this implementation next to the paper's numbers
(with the paper's exponents corrected: every printed exponent is 10x too small, paper-notes §4.2).

Reads only the ``table1`` manifest and the file it lists, ``<results root>/table1/parameters.json``, written
by ``mrvae-cli experiment run table1`` (:func:`deep.experiments.standalone.run_table1` builds the models and
counts; nothing here builds a model). Writes ``<out>.md`` and ``<out>.csv``.
Usage: ``python -m paper_figures.table1 [RESULTS_ROOT] [OUT_PREFIX]``.
"""
from __future__ import annotations

import math
from pathlib import Path

from deep.experiments.manifest import PARAMETER_COUNTS_KIND, PARAMETER_ROW_KEYS

from .style import (MalformedResultsError, figure_main, load_manifest, manifest_caption, no_complete_runs,
                    read_json_object, write_table)

REQUIRED = ("table1",)
OPTIONAL: tuple[str, ...] = ()
#: Table 1's Yahoo LSTM row as printed (x10^4): beta-VAE, MR-VAE, increase %.
PAPER_LSTM = (88.21e4, 93.51e4, 6.01)
ARCH_NAMES = {"conv": "CNN", "resnet": "ResNet", "nvae": "NVAE", "lstm": "LSTM", "mlp": "MLP"}
_COUNT_KEYS = ("beta_vae_params", "mr_vae_params", "paper_beta_vae_params", "paper_mr_vae_params")

COLUMNS = [("data", "Data"), ("arch_name", "Architecture"), ("beta_vae_params", "β-VAE (ours)"),
           ("mr_vae_params", "MR-VAE (ours)"), ("increase_pct", "Increase % (ours)"),
           ("paper_beta_vae_params", "β-VAE (paper)"), ("paper_mr_vae_params", "MR-VAE (paper)"),
           ("paper_increase_pct", "Increase % (paper)"), ("note", "Note")]


def _count(value, path: Path, i: int, key: str, required: bool) -> None:
    if value is None and not required:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise MalformedResultsError(f"{path}: rows[{i}]['{key}'] must be a positive parameter count, got {value!r}")


def load_parameter_counts(results_root: str | Path) -> tuple[dict, dict]:
    """The ``table1`` manifest and its validated ``parameters.json`` (``rows``: one dict per model pair).

    Missing or unfinished: :class:`MissingResultsError` naming the command to run; malformed:
    :class:`MalformedResultsError` naming the file."""
    m = load_manifest(results_root, "table1")
    if m["status"] != "complete":
        raise no_complete_runs(m)
    rel = (m.get("outputs") or {}).get("parameters")
    if not isinstance(rel, str):
        raise MalformedResultsError(f"{m['_path']}: complete but lists no 'parameters' file in 'outputs'")
    path = Path(m["_root"]) / rel
    if not path.exists():
        raise MalformedResultsError(f"{path}: result file listed in the manifest does not exist")
    data = read_json_object(path)
    if data.get("kind") != PARAMETER_COUNTS_KIND:
        raise MalformedResultsError(f"{path}: not a parameter-count file (kind={data.get('kind')!r}, expected "
                                    f"{PARAMETER_COUNTS_KIND!r})")
    rows = data.get("rows")
    if not isinstance(rows, list) or not rows:
        raise MalformedResultsError(f"{path}: 'rows' must be a non-empty list")
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise MalformedResultsError(f"{path}: rows[{i}] is not an object")
        missing = [k for k in PARAMETER_ROW_KEYS if k not in r]
        if missing:
            raise MalformedResultsError(f"{path}: rows[{i}] lacks {missing} (from {r.get('source', '?')})")
        for key in _COUNT_KEYS:
            _count(r.get(key), path, i, key, required=not key.startswith("paper"))
    return m, data


def collect_rows(results_root: str | Path) -> tuple[list[dict], list[str], dict]:
    """Table rows (with a paper-only LSTM row when no LSTM counts exist), the notes, and the manifest."""
    m, data = load_parameter_counts(results_root)
    rows = [dict(r) for r in data["rows"]]
    notes = [str(n) for n in data.get("notes") or []]
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
        for k in _COUNT_KEYS:
            if r.get(k) is not None:
                r[k] = int(round(r[k]))
    return rows, notes, m


def plot(results_root: str | Path, out_prefix: str | Path) -> list[Path]:
    """Write ``<out_prefix>.md`` and ``.csv`` from ``<results_root>/table1/parameters.json``."""
    rows, notes, m = collect_rows(results_root)
    caption = ("Parameter counts of this implementation (affine gates: 2 parameters per gated channel) and the "
               "paper's Table 1. CNN/ResNet paper values have their exponents corrected (the paper prints x10^5 "
               "for CNN and x10^4 for ResNet; counting the reference architectures gives 10x more); NVAE and LSTM "
               "paper values are as printed (no reference count, see the notes). The paper's CNN increases "
               "match beta-conditioned BatchNorm, which this implementation does not add. " + "; ".join(notes)
               + " | " + manifest_caption([m]))
    return write_table(rows, COLUMNS, out_prefix, title="Table 1: parameters, β-VAE vs MR-VAE", caption=caption)


def main(argv: list[str] | None = None) -> None:
    figure_main(plot, "table1", "table1", argv)


if __name__ == "__main__":
    main()
