"""Regenerate every paper figure and table from the result files under a results root.

``python -m paper_figures [--results results/cpu] [--out figures/]`` (or ``mrvae-cli figures``) draws what
its inputs allow, and for each missing input prints the exact command that produces it. Missing inputs never
make it fail (exit status 0); a malformed result file is reported with its path and gives exit status 1.
Nothing here trains a model.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .style import MalformedResultsError, MissingResultsError, manifest_path, preset_for_root, run_command

__all__ = ["JOBS", "JobResult", "regenerate", "missing_for", "LINEAR_HINT"]

#: Every figure/table script (module under paper_figures) in the order they are drawn.
JOBS = ("fig1", "fig4", "fig5", "fig6", "fig7", "fig8", "fig9", "table1", "table2")
LINEAR_HINT = "mrvae-cli linear compare --out {out}"


@dataclass
class JobResult:
    name: str
    status: str                      # "written", "partial", "missing", "malformed", "error"
    paths: list[Path] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)   # (input, command)
    unavailable: list[tuple[str, str]] = field(default_factory=list)  # (experiment, why it is incomplete)
    message: str = ""


def _linear_results(results_root: Path) -> Path | None:
    for cand in (results_root / "linear" / "results.json", Path("results") / "linear" / "results.json"):
        if cand.exists():
            return cand
    return None


def missing_for(name: str, results_root: str | Path) -> list[str]:
    """Experiments whose manifests ``name`` could use but which do not exist under ``results_root``."""
    mod = importlib.import_module(f"paper_figures.{name}")
    custom = getattr(mod, "missing_inputs", None)
    if callable(custom):
        return list(custom(results_root))
    wanted = tuple(getattr(mod, "REQUIRED", ())) + tuple(getattr(mod, "OPTIONAL", ()))
    return [n for n in wanted if not manifest_path(results_root, n).exists()]


def _unavailable(name: str, results_root: Path) -> list[tuple[str, str]]:
    import json

    mod = importlib.import_module(f"paper_figures.{name}")
    out = []
    for n in tuple(getattr(mod, "REQUIRED", ())) + tuple(getattr(mod, "OPTIONAL", ())):
        p = manifest_path(results_root, n)
        if p.exists():
            try:
                m = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(m, dict):
                continue
            if m.get("status") == "unavailable":
                out.append((n, str(m.get("reason") or "unavailable")))
            elif m.get("status") in ("failed", "partial", "running"):
                groups = [g for g in m.get("groups", []) if isinstance(g, dict)]
                why = [f"{g.get('key')}: {g.get('reason')}" for g in groups
                       if g.get("status") in ("failed", "partial", "unavailable")]
                text = f"{m['status']} ({'; '.join(why)[:300] or 'not finished'})"
                if any(g.get("status") not in ("complete", "unavailable") for g in groups):
                    text += f"; re-run `{run_command(n, preset=m.get('preset'), results_root=results_root)}` to resume"
                out.append((n, text))
    return out


def _run_job(name: str, results_root: Path, out_dir: Path) -> JobResult:
    preset = preset_for_root(results_root)
    if name == "fig4":
        from . import fig4

        src = _linear_results(results_root)
        if src is None:
            out = results_root / "linear"
            return JobResult(name, "missing", missing=[(str(out / "results.json"), LINEAR_HINT.format(out=out))])
        return JobResult(name, "written", paths=fig4.plot(src, out_dir / "fig4"))
    mod = importlib.import_module(f"paper_figures.{name}")
    missing = missing_for(name, results_root)
    res = JobResult(name, "written",
                    missing=[(n, run_command(n, preset=preset, results_root=results_root)) for n in missing],
                    unavailable=_unavailable(name, results_root))
    required_missing = [n for n in getattr(mod, "REQUIRED", ()) if n in missing]
    if required_missing:
        res.status = "missing"
        return res
    try:
        res.paths = mod.plot(results_root, out_dir / name)
    except MissingResultsError as err:
        res.status = "missing"
        res.message = str(err)
        known = {n for n, _ in res.missing}
        res.missing += [(n, run_command(n, preset=preset, results_root=results_root)) for n in err.missing
                        if n not in known]
        return res
    if res.missing or res.unavailable:
        res.status = "partial"
    return res


def regenerate(results_root: str | Path = "results/cpu", out_dir: str | Path = "figures", *,
               only: tuple[str, ...] | None = None, log: Callable[[str], None] | None = print) -> list[JobResult]:
    """Draw every figure and table (or ``only`` these) from ``results_root`` into ``out_dir``.

    Returns one :class:`JobResult` per script; prints what was written and, for each missing input, the
    command that produces it. Never raises for missing inputs; malformed files are reported, not raised.
    """
    results_root, out_dir = Path(results_root), Path(out_dir)
    say = log or (lambda msg: None)
    results = []
    for name in only or JOBS:
        try:
            res = _run_job(name, results_root, out_dir)
        except MalformedResultsError as err:
            res = JobResult(name, "malformed", message=str(err))
        results.append(res)
        if res.status in ("written", "partial"):
            say(f"{name}: wrote " + ", ".join(str(p) for p in res.paths))
        elif res.status == "missing":
            say(f"{name}: not drawn, inputs missing" + (f" ({res.message})" if res.message else ""))
        else:
            say(f"{name}: ERROR malformed results: {res.message}")
        for inp, cmd in res.missing:
            say(f"    missing input {inp}: run `{cmd}`")
        for exp, reason in res.unavailable:
            say(f"    {exp}: {reason}")
    written = sum(r.status in ("written", "partial") for r in results)
    say(f"{written} of {len(results)} figures/tables written to {out_dir}; results read from {results_root}")
    return results
