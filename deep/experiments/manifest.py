"""The one schema shared by the experiment runner (which writes) and the figure scripts (which read):
results-root layout, manifest files, the command that produces each, and the paper's constants.

Torch-free and model-free by design: :mod:`paper_figures` imports this module and nothing else from
``deep`` (a test checks that importing every figure script leaves ``torch`` out of ``sys.modules``).

Layout of a results root (default ``results/<preset>/``)::

    runs/<dataset>_<arch>/<tag>_lr<lr>_s<seed>_<hash>/   one run folder per distinct training config
        config.json, metrics.jsonl, checkpoint.pt, summary.json, results/rd.json (+ images/)
    manifests/<experiment>.json                          which runs and result files make the figure
    linear/results.json                                  Fig. 4 (the linear VAE)
    table1/parameters.json                               Table 1 (parameter counts)

A manifest (``kind`` = :data:`MANIFEST_KIND`) is one JSON object; paths in it are relative to the results
root. Top-level fields (:func:`new_manifest`): ``experiment``, ``title``, ``figures``, ``preset``,
``paper_protocol``, ``budget`` (the protocol label, ``REDUCED ...`` unless the paper's), ``estimate``,
``status`` (``running``, ``complete``, ``partial``, ``failed`` or ``unavailable``), ``reason``, ``command``,
``groups`` (one per curve: ``key``, ``kind``, ``status``, ``runs``; each run: ``status``, ``results`` =
{result file name: path}), ``outputs`` (result files of experiments outside the deep trainer).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from deep.protocol import BASELINE_BETAS, PAPER_LRS, PAPER_SEEDS

__all__ = [
    "PRESETS", "DEFAULT_PRESET", "BASELINE_BETAS", "PAPER_LRS", "PAPER_SEEDS", "FIG7_BETAS", "RD_RESULTS",
    "FIG7_RESULTS", "TABLE1_RESULTS", "PARAMETER_COUNTS_KIND", "PARAMETER_ROW_KEYS", "MANIFEST_KIND",
    "MANIFEST_VERSION", "MANIFEST_DIR", "MissingResultsError", "MalformedResultsError", "default_results_root",
    "manifest_path", "preset_for_root", "run_command", "read_json_object", "write_json_atomic", "new_manifest",
    "write_manifest", "validate_manifest", "load_manifest",
]

#: The budgets every experiment has: seconds (pipeline check), a 2-core CPU machine, the paper's App. C.
PRESETS = ("smoke", "cpu", "paper")
DEFAULT_PRESET = "cpu"
#: Rows of Fig. 7 (prior samples across beta), top to bottom.
FIG7_BETAS = (10.0, 1.0, 0.1, 0.01)
#: Result file names inside ``<run>/results/``: the RD curve, and Fig. 7's extra evaluation at FIG7_BETAS.
RD_RESULTS = "rd.json"
FIG7_RESULTS = "rd_fig7.json"
#: Table 1's result file (relative to the results root), its ``kind`` and the keys every row has.
TABLE1_RESULTS = "table1/parameters.json"
PARAMETER_COUNTS_KIND = "mrvae parameter counts"
PARAMETER_ROW_KEYS = ("data", "arch", "beta_vae_params", "mr_vae_params")

MANIFEST_KIND = "mrvae experiment manifest"
MANIFEST_VERSION = 1
MANIFEST_DIR = "manifests"
_REQUIRED_FIELDS = ("experiment", "preset", "budget", "status", "groups")


class MalformedResultsError(ValueError):
    """A result file is missing fields a figure needs, or is not valid JSON (the message names the file)."""


class MissingResultsError(FileNotFoundError):
    """An input does not exist yet; ``missing`` names the experiments to run."""

    def __init__(self, message: str, missing: list[str]) -> None:
        super().__init__(message)
        self.missing = list(missing)


# ------------------------------------------------------------------------------------------
# paths and commands
# ------------------------------------------------------------------------------------------
def default_results_root(preset: str) -> Path:
    """``results/<preset>`` (relative to the working directory)."""
    return Path("results") / preset


def manifest_path(results_root: str | os.PathLike, experiment: str) -> Path:
    """``<results_root>/manifests/<experiment>.json``."""
    return Path(results_root) / MANIFEST_DIR / f"{experiment}.json"


def preset_for_root(results_root: str | os.PathLike | None) -> str:
    """The preset a results root was written for, read from its folder name (``results/smoke`` -> smoke);
    :data:`DEFAULT_PRESET` when the name is not a preset."""
    if results_root is None:
        return DEFAULT_PRESET
    name = Path(results_root).name
    return name if name in PRESETS else DEFAULT_PRESET


def run_command(experiment: str, *, preset: str | None = None,
                results_root: str | os.PathLike | None = None) -> str:
    """The exact command line that writes ``experiment``'s manifest (and result files) under ``results_root``.

    ``preset``: default read from the results root's name (:func:`preset_for_root`). ``--results`` is added
    only when ``results_root`` is not the preset's default root.
    """
    if preset is None:
        preset = preset_for_root(results_root)
    cmd = f"mrvae-cli experiment run {experiment} --preset {preset}"
    if results_root is not None and Path(results_root) != default_results_root(preset):
        cmd += f" --results {results_root}"
    return cmd


# ------------------------------------------------------------------------------------------
# JSON files
# ------------------------------------------------------------------------------------------
def read_json_object(path: str | os.PathLike) -> dict:
    """A JSON object from ``path``; :class:`MalformedResultsError` if it is not valid JSON or not an object."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise MalformedResultsError(f"{path} is not valid JSON: {err}") from err
    except UnicodeDecodeError as err:
        raise MalformedResultsError(f"{path} is not a UTF-8 JSON text file: {err}") from err
    if not isinstance(data, dict):
        raise MalformedResultsError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    return data


def write_json_atomic(path: str | os.PathLike, obj: dict) -> Path:
    """Write ``obj`` as indented JSON through a temporary file and a rename (readers never see half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------------------
# manifests
# ------------------------------------------------------------------------------------------
def new_manifest(*, experiment: str, title: str, figures: Iterable[str], preset: str, paper_protocol: bool,
                 budget: str, estimate: str, requires: Iterable[str] = (), notes: str = "",
                 lrs: Iterable[float] | None = None, seeds: Iterable[int] = (0,), selection_split: str | None = None,
                 results_root: str | os.PathLike, runtime: dict | None = None, started: str) -> dict[str, Any]:
    """A manifest with every top-level field, ``status="running"`` and no groups yet (the runner fills
    ``groups``, ``status``, ``reason``, ``outputs``, ``updated`` and ``wall_time_s``)."""
    return {
        "kind": MANIFEST_KIND, "version": MANIFEST_VERSION, "experiment": experiment, "title": title,
        "figures": list(figures), "preset": preset, "paper_protocol": bool(paper_protocol),
        "budget": budget, "estimate": estimate, "status": "running", "reason": None,
        "requires": list(requires), "notes": notes, "lrs": list(lrs) if lrs else None, "seeds": list(seeds),
        "selection_split": selection_split,
        "command": run_command(experiment, preset=preset, results_root=results_root),
        "runtime": dict(runtime or {}), "started": started, "updated": started, "wall_time_s": 0.0,
        "groups": [], "outputs": {},
    }


def write_manifest(results_root: str | os.PathLike, manifest: dict) -> Path:
    """Write ``manifest`` to :func:`manifest_path` (atomically); keys starting with ``_`` are not written."""
    clean = {k: v for k, v in manifest.items() if not k.startswith("_")}
    return write_json_atomic(manifest_path(results_root, manifest["experiment"]), clean)


def validate_manifest(m: dict, path: str | os.PathLike) -> dict:
    """Check the fields figures rely on; :class:`MalformedResultsError` naming ``path`` and the problem."""
    if m.get("kind") != MANIFEST_KIND:
        raise MalformedResultsError(f"{path}: not an experiment manifest (kind={m.get('kind')!r}, "
                                    f"expected {MANIFEST_KIND!r})")
    for key in _REQUIRED_FIELDS:
        if key not in m:
            raise MalformedResultsError(f"{path}: manifest lacks the field {key!r}")
    if not isinstance(m["groups"], list):
        raise MalformedResultsError(f"{path}: 'groups' must be a list")
    if not isinstance(m.get("outputs", {}), dict):
        raise MalformedResultsError(f"{path}: 'outputs' must be an object")
    for i, g in enumerate(m["groups"]):
        if not isinstance(g, dict):
            raise MalformedResultsError(f"{path}: groups[{i}] is not an object")
        for key in ("key", "kind", "status", "runs"):
            if key not in g:
                raise MalformedResultsError(f"{path}: groups[{i}] lacks the field {key!r}")
        if not isinstance(g["runs"], list):
            raise MalformedResultsError(f"{path}: groups[{i}]['runs'] must be a list")
        for j, r in enumerate(g["runs"]):
            if not isinstance(r, dict) or "status" not in r:
                raise MalformedResultsError(f"{path}: groups[{i}]['runs'][{j}] lacks 'status'")
            if r["status"] == "complete" and not isinstance(r.get("results"), dict):
                raise MalformedResultsError(f"{path}: groups[{i}]['runs'][{j}] is complete but has no "
                                            "'results' mapping")
    return m


def load_manifest(results_root: str | os.PathLike, experiment: str, *, required: bool = True) -> dict | None:
    """The validated manifest of ``experiment`` under ``results_root``, with ``_path`` and ``_root`` added.

    Missing: :class:`MissingResultsError` naming the command that writes it (or ``None`` with
    ``required=False``). Malformed: :class:`MalformedResultsError` naming the file and the problem.
    """
    path = manifest_path(results_root, experiment)
    if not path.exists():
        if not required:
            return None
        raise MissingResultsError(f"{path} does not exist (run: {run_command(experiment, results_root=results_root)})",
                                  [experiment])
    m = validate_manifest(read_json_object(path), path)
    m["_path"] = str(path)
    m["_root"] = str(Path(results_root))
    return m
