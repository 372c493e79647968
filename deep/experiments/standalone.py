"""The experiments that do not go through the deep trainer: Fig. 4 (the linear VAE, through
``mrvae-cli linear compare``) and Table 1 (parameter counts of the models, built but never trained).

Each is a *standalone runner* ``runner(preset, root, runtime, *, say, progress) -> (status, reason,
outputs)``: it writes its result files under the results root ``root`` and returns ``outputs``, a mapping
{name: path relative to ``root``} that :func:`deep.experiments.runner.run_experiment` records in the
manifest. ``runtime`` holds ``data_dir``, ``device`` and ``threads``. Heavy modules (torch, the models, the
linear VAE) are imported inside the runners, so the registry that lists them stays light.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib
from pathlib import Path
from typing import Any, Callable

from .manifest import PARAMETER_COUNTS_KIND, PARAMETER_ROW_KEYS, TABLE1_RESULTS, write_json_atomic

__all__ = ["LINEAR_PRESETS", "run_linear", "TABLE1_PROVIDERS", "PROVIDER_OPTIONS", "normalize_row",
           "parameter_rows", "run_table1"]

RunnerResult = tuple[str, "str | None", dict]

# ------------------------------------------------------------------------------------------
# Fig. 4: the linear VAE
# ------------------------------------------------------------------------------------------
#: Fig. 4's presets map onto ``mrvae-cli linear compare --preset``.
LINEAR_PRESETS = {"smoke": "smoke", "cpu": "default", "paper": "paper"}


def run_linear(preset: str, root: Path, runtime: dict, *, say: Callable[[str], None],
               progress: bool = False) -> RunnerResult:
    """Fig. 4: ``mrvae-cli linear compare --preset {smoke|default|paper} --out <root>/linear``."""
    from linvae.experiment import PRESETS as LINEAR_CONFIGS, run_linear_compare

    cfg = LINEAR_CONFIGS[LINEAR_PRESETS[preset]]
    updates: dict[str, Any] = {}
    if runtime.get("threads"):
        updates["threads"] = int(runtime["threads"])
    if runtime.get("device") and runtime["device"] != "auto":
        updates["device"] = runtime["device"]
    cfg = dataclasses.replace(cfg, **updates)
    out = Path(root) / "linear"
    say(f" linear VAE, preset {cfg.preset}: {cfg.protocol_label()} -> {out / 'results.json'}")
    run_linear_compare(cfg, out, data_dir=runtime.get("data_dir"), progress=progress)
    return "complete", None, {"results": "linear/results.json"}


# ------------------------------------------------------------------------------------------
# Table 1: parameter counts
# ------------------------------------------------------------------------------------------
#: Where Table 1's rows come from: (module, function returning a list of row dicts). The first is required;
#: the others are optional (a family module without the function is noted, not an error).
TABLE1_PROVIDERS = (("deep.models.convnets", "parameter_table"),
                    ("deep.models.nvae.model", "nvae_parameter_table"),
                    ("deep.models.text", "text_parameter_table"))
#: Keyword arguments of a provider per preset: the NVAE rows are counted for the model presets trained at
#: that budget (smoke: only the small NVAE, which builds in a fraction of a second).
PROVIDER_OPTIONS: dict[tuple[str, str], dict[str, dict]] = {
    ("deep.models.nvae.model", "nvae_parameter_table"): {"smoke": {"presets": ("small",)},
                                                         "cpu": {"presets": ("paper", "small")},
                                                         "paper": {"presets": ("paper", "small")}},
}
_ARCH_OF_MODULE = {"deep.models.nvae.model": "nvae", "deep.models.text": "lstm", "deep.models.tcvae": "mlp"}


def normalize_row(row: dict, module: str) -> dict:
    """One row in Table 1's schema: family-specific key names (``beta_nvae_params`` -> ``beta_vae_params``),
    the architecture defaulted from the providing module, and ``increase_pct`` filled in. A row of a reduced
    model preset (e.g. the 'small' NVAE) loses the paper's numbers, which describe the paper-size model."""
    r = dict(row)
    if r.get("preset") not in (None, "paper") and r.get("paper_beta_vae_params") is not None:
        r.update(paper_beta_vae_params=None, paper_mr_vae_params=None, paper_increase_pct=None,
                 note=f"reduced model (preset {r['preset']!r}); the paper's numbers are on the 'paper' preset row")
    for kind in ("beta", "mr"):
        want = f"{kind}_vae_params"
        if want not in r:
            alt = [k for k in r if k.startswith(f"{kind}_") and k.endswith("_params") and not k.startswith("paper")]
            if len(alt) == 1:
                r[want] = r[alt[0]]
    r.setdefault("arch", _ARCH_OF_MODULE.get(module, module))
    if r.get("increase_pct") is None and r.get("beta_vae_params") and r.get("mr_vae_params"):
        r["increase_pct"] = 100.0 * (r["mr_vae_params"] - r["beta_vae_params"]) / r["beta_vae_params"]
    return r


def parameter_rows(preset: str) -> tuple[list[dict], list[str]]:
    """Table 1's rows from :data:`TABLE1_PROVIDERS` (models built, never trained) and one note per provider.

    A row without the keys :data:`PARAMETER_ROW_KEYS` raises ``ValueError`` naming the provider."""
    rows: list[dict] = []
    notes: list[str] = []
    for i, (module, func) in enumerate(TABLE1_PROVIDERS):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            if i == 0:
                raise
            notes.append(f"{module} not available: no rows from {func}()")
            continue
        fn = getattr(mod, func, None)
        if fn is None:
            if i == 0:
                raise AttributeError(f"{module} has no {func}()")
            notes.append(f"{module} has no {func}(): no rows")
            continue
        kwargs = PROVIDER_OPTIONS.get((module, func), {}).get(preset, {})
        extra = [normalize_row(r, module) for r in fn(**kwargs)]
        for r in extra:
            missing = [k for k in PARAMETER_ROW_KEYS if k not in r]
            if missing:
                raise ValueError(f"{module}.{func}() returned a row without {missing}: {r}")
        rows += [dict(r, source=f"{module}.{func}") for r in extra]
        notes.append(f"{len(extra)} row(s) from {module}.{func}()")
    return rows, notes


def run_table1(preset: str, root: Path, runtime: dict, *, say: Callable[[str], None],
               progress: bool = False) -> RunnerResult:
    """Table 1: count the parameters of every beta-VAE / MR-VAE pair into ``<root>/table1/parameters.json``."""
    import torch

    if runtime.get("threads"):
        torch.set_num_threads(int(runtime["threads"]))
    rows, notes = parameter_rows(preset)
    out = Path(root) / TABLE1_RESULTS
    write_json_atomic(out, {
        "kind": PARAMETER_COUNTS_KIND, "version": 1, "preset": preset,
        "protocol": "parameters counted on the built models (affine gates: 2 parameters per gated channel); "
                    "nothing trained, no data read",
        "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "notes": notes, "rows": rows})
    say(f" {len(rows)} rows ({'; '.join(notes)}) -> {out}")
    return "complete", None, {"parameters": TABLE1_RESULTS}
