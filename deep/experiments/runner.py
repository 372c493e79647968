"""The runner: trains (:func:`deep.train.train`) and evaluates (:func:`deep.evaluate.evaluate_run`) every run
of a registered experiment (:mod:`deep.experiments.registry`) into a results root, and writes its manifest
(:mod:`deep.experiments.manifest`).

Run folders are named by a hash of the non-default training fields (:func:`run_folder_name`), so
experiments that need the same model (Fig. 1, Fig. 5 Omniglot, Table 2, Fig. 8's default range, Fig. 9's
default gates) share one run. Running an experiment again skips finished runs and evaluations, resumes
interrupted ones, and rewrites the manifest. Torch is imported only when an experiment runs.

Typical use::

    from deep.experiments.runner import run_experiment
    manifest = run_experiment("fig8_sensitivity", preset="cpu")     # results/cpu/manifests/fig8_sensitivity.json
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .manifest import PRESETS, default_results_root, manifest_path, new_manifest, write_manifest
from .registry import (RUN_ALL_ORDER, Evaluation, ExperimentError, Group, Preset, get_experiment,
                       missing_requirements, run_fields)

__all__ = ["run_experiment", "run_all", "adopt_runs", "config_hash", "run_folder_name", "CachedLoader"]


def _train_module():
    from deep import train as T  # lazy: torch is imported only when running experiments
    return T


def _defaults() -> dict:
    T = _train_module()
    out = {}
    for f in dataclasses.fields(T.TrainConfig):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out


def _canon(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_canon(v) for v in value]
    if isinstance(value, list):
        return [_canon(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _canon(v) for k, v in sorted(value.items())}
    return value


def _recipe_set(config_dict: dict, defaults: dict) -> dict:
    """The values the config's recipe gives its family for the fields left unset (``None`` by default), so a
    saved ``config.json`` (recipe values filled in) hashes like the fields that produced it."""
    from deep.train.config import RECIPE_FIELDS, RECIPES, recipe_values

    recipe = config_dict.get("recipe", defaults.get("recipe"))
    if recipe not in RECIPES:
        return {}
    try:
        values = recipe_values(recipe, config_dict.get("arch", defaults.get("arch")))
    except ValueError:  # a family's bad override (ConfigError): TrainConfig reports it; hash what is given
        return {}
    return {k: values[k] for k in RECIPE_FIELDS if k in values}


def config_hash(config_dict: dict) -> str:
    """10 hex digits identifying a training configuration: a hash of the fields that differ from the
    TrainConfig defaults and from the values the recipe gives the family (so the fields of a preset and the
    ``config.json`` of the run they trained hash alike), runtime fields (device, threads, paths, evaluation
    sizes) excluded, so the hash stays the same when new fields with defaults are added to TrainConfig. An
    MR-VAE's hash always holds its ``recipe`` (default included): what a recipe sets is part of the training,
    and runs from before recipes existed (free gates by default) must not be taken for runs of the current
    default."""
    T = _train_module()
    defaults = _defaults()
    runtime = set(getattr(T, "RUNTIME_FIELDS", ())) | {"device", "num_threads", "out_dir", "data_dir", "run_name",
                                                        "download", "n_betas", "iw_k", "eval_batch_size"}
    recipe_set = _recipe_set(config_dict, defaults)
    relevant = {}
    for k, v in config_dict.items():
        if k in runtime:
            continue
        if k in defaults and _canon(defaults[k]) == _canon(v):
            continue
        if k in recipe_set and _canon(recipe_set[k]) == _canon(v):   # what the recipe sets when left unset
            continue
        relevant[k] = _canon(v)
    if config_dict.get("mr", True):
        relevant["recipe"] = _canon(config_dict.get("recipe", defaults.get("recipe", "mrvae")))
    text = json.dumps(relevant, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def run_folder_name(config_dict: dict) -> str:
    """``<mr|beta<b>_<schedule>>_lr<lr>_s<seed>_<hash>`` (readable, and unique per training config)."""
    if config_dict.get("mr", True):
        tag = "mr"
    else:
        tag = f"beta{float(config_dict['beta']):.4g}_{config_dict.get('kl_schedule', 'constant')}"
    return f"{tag}_lr{float(config_dict['lr']):g}_s{int(config_dict.get('seed', 0))}_{config_hash(config_dict)}"


def _run_dir(root: Path, config_dict: dict) -> Path:
    """``<root>/runs/<dataset>_<arch>/<run folder>``: where a run lives in a results root (manifest layout)."""
    return root / "runs" / f"{config_dict['dataset']}_{config_dict['arch']}" / run_folder_name(config_dict)


# ------------------------------------------------------------------------------------------
# the runner
# ------------------------------------------------------------------------------------------
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _rd_matches(path: Path, ev: Evaluation, kind: str) -> bool:
    """Whether an existing result file was written with ``ev``'s beta grid and example count."""
    try:
        rd = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    betas = rd.get("beta")
    if not isinstance(betas, list) or not betas:
        return False
    if kind == "mr":
        if ev.betas is not None:
            if len(betas) != len(ev.betas) or not np.allclose(sorted(betas), sorted(ev.betas), rtol=1e-9):
                return False
        elif len(betas) != ev.n_betas:
            return False
    n = (rd.get("evaluation") or {}).get("n_examples")
    if ev.max_examples is not None and n is not None and n > ev.max_examples:
        return False
    if ev.max_examples is None and n is not None:
        total = (rd.get("protocol") or {}).get("n") if isinstance(rd.get("protocol"), dict) else None
        if total is not None and n < total:
            return False
    if ev.fid_samples and "fid" not in rd and "fid" not in (rd.get("estimators") or {}):
        return False
    return True


def _selection_evaluation(preset: Preset) -> Evaluation:
    return Evaluation(name=f"rd_select_{preset.selection_split}.json", betas=(1.0,), n_betas=1,
                      max_examples=None, batch_size=100, images=False, split=preset.selection_split)


def _needs_selection(preset: Preset) -> bool:
    return preset.lrs is not None and len(preset.lrs) > 1


def _selection_member(group: Group) -> float | None:
    """The sweep member used for LR selection: the beta closest to 1 (log scale)."""
    if group.kind != "sweep":
        return None
    return min(group.betas, key=lambda b: abs(math.log(b)))


def _train_and_evaluate(fields: dict, group: Group, evaluations: list[Evaluation], *, root: Path,
                        data_factory: Callable | None, progress: bool, say: Callable[[str], None],
                        device: str) -> dict:
    T = _train_module()
    from deep.evaluate import evaluate_run
    from deep.train.config import recipe_change
    from deep.train.runs import RunPaths, read_json

    config = T.TrainConfig(**fields)
    run_dir = T.run_dir_for(config)
    paths = RunPaths(run_dir)
    record: dict[str, Any] = {"lr": config.lr, "seed": config.seed,
                              "beta": None if config.mr else config.beta,
                              "run_dir": _rel(run_dir, root), "results": {}}
    finished = paths.summary.exists()
    if finished:
        record["trained"] = "skipped (already complete)"
    else:
        resume = paths.checkpoint.exists()
        say(f"  {'resuming' if resume else 'training'} {run_dir.name} ({config.epochs} epoch(s))")
        data = data_factory(config, "train") if data_factory else None
        t0 = time.perf_counter()
        T.train(config, resume=resume, data=data, progress=progress, log=None)
        record["trained"] = f"trained in {time.perf_counter() - t0:.1f} s" + (" (resumed)" if resume else "")
    summary = read_json(paths.summary) if paths.summary.exists() else {}
    cfg_json = read_json(paths.config) if paths.config.exists() else {}
    why = recipe_change(cfg_json, config) if finished else None
    if why:
        raise T.ConfigError(f"run folder {run_dir} is complete but {why}; it is not the run this preset asks "
                            "for. Move it aside (or delete it) and run again to train it with the current recipe")
    record["train_time_s"] = summary.get("time_s")
    record["examples_per_s"] = summary.get("examples_per_s")
    record["n_params"] = summary.get("n_params", cfg_json.get("n_params"))
    record["epochs"] = summary.get("epochs")
    record["n_train"] = cfg_json.get("n_train")
    for ev in evaluations:
        if group.kind not in ev.applies_to:
            continue
        out = paths.results / ev.name
        if out.exists() and _rd_matches(out, ev, group.kind):
            record["results"][ev.name] = _rel(out, root)
            continue
        say(f"  evaluating {run_dir.name} -> results/{ev.name}")
        data = data_factory(config, ev.split) if data_factory else None
        kw = ev.kwargs()
        if group.kind != "mr":
            kw.pop("betas")
        evaluate_run(run_dir, **kw, device=device, num_threads=config.num_threads, data=data,
                     data_dir=config.data_dir, progress=progress)
        record["results"][ev.name] = _rel(out, root)
    record["status"] = "complete"
    return record


class CachedLoader:
    """``callable(config, split) -> data``: the real splits (via the dataset's loader in
    :mod:`deep.models.registry`), each loaded once per (dataset, split, data options, data root) and reused by
    every run of an experiment (loading Yahoo or the Omniglot PNGs takes seconds each time)."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def __call__(self, config: Any, split: str) -> Any:
        key = json.dumps([config.dataset, split, _canon(dict(config.data_options or {})), config.data_dir,
                          bool(config.download)], sort_keys=True, default=str)
        if key not in self._cache:
            T = _train_module()
            load = getattr(T, "load_data", None)
            if load is not None:
                self._cache[key] = load(config, split)
            elif split == "train":
                from deep.train.loop import load_train_data
                self._cache[key] = load_train_data(config)
            else:
                from deep.evaluate import load_eval_data
                self._cache[key] = load_eval_data(config, split)
        return self._cache[key]


def _select_lr(group_rec: dict, group: Group, preset: Preset, root: Path) -> None:
    """Fill ``selected_lr`` and ``selection`` of a group record (App. C: lowest loss at beta = 1)."""
    runs = [r for r in group_rec["runs"] if r.get("status") == "complete"]
    if not runs:
        group_rec["selected_lr"] = None
        return
    if not _needs_selection(preset):
        group_rec["selected_lr"] = runs[0]["lr"]
        group_rec["selection"] = {"criterion": "single learning rate (no grid)"}
        return
    ev = _selection_evaluation(preset)
    member = _selection_member(group)
    per_lr: dict[str, list[float]] = {}
    for r in runs:
        if member is not None and not math.isclose(r["beta"], member, rel_tol=1e-9):
            continue
        path = r["results"].get(ev.name)
        if not path:
            continue
        rd = json.loads((root / path).read_text())
        j = int(np.argmin([abs(math.log(b)) for b in rd["beta"]]))
        per_lr.setdefault(f"{r['lr']:g}", []).append(float(rd["loss"][j]))
    if not per_lr:
        group_rec["selected_lr"] = None
        group_rec["selection"] = {"criterion": "no complete selection run"}
        return
    means = {lr: float(np.mean(v)) for lr, v in per_lr.items()}
    best = min(means, key=means.get)
    group_rec["selected_lr"] = float(best)
    group_rec["selection"] = {
        "criterion": (f"lowest mean-over-seeds loss D + beta R at beta = {member if member else 1:g} on the "
                      f"{preset.selection_split} split"
                      + (" (the sweep's beta = 1 run)" if member is not None else " (MR-VAE queried at beta = 1)")),
        "mean_loss_per_lr": means, "seeds_per_lr": {lr: len(v) for lr, v in per_lr.items()}}


def _unavailable_config(fields: dict) -> str | None:
    """Why ``fields`` cannot become a TrainConfig in this checkout (unknown fields), else None."""
    T = _train_module()
    known = {f.name for f in dataclasses.fields(T.TrainConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        return (f"TrainConfig has no field(s) {unknown} yet (deep/train.py must add them; see "
                "notes/families.md)")
    return None


def _only_seeds(spec: Preset, seeds: Sequence[int] | None) -> Preset:
    """``spec`` restricted to ``seeds`` (each one of its own), with the budget text saying so."""
    if seeds is None:
        return spec
    asked = [int(s) for s in seeds]
    extra = [s for s in asked if s not in spec.seeds]
    if not asked or extra:
        raise ExperimentError(f"seeds {extra or asked} are not among this preset's seeds "
                              f"{list(spec.seeds)}; give a non-empty subset of them")
    chosen = tuple(s for s in spec.seeds if s in asked)   # the preset's order
    if chosen == tuple(spec.seeds):
        return spec
    budget = (f"{spec.budget}; REDUCED: seed(s) {', '.join(map(str, chosen))} only, of the preset's "
              f"{', '.join(map(str, spec.seeds))}")
    return dataclasses.replace(spec, seeds=chosen, budget=budget)


def run_experiment(name: str, preset: str = "cpu", results_root: str | os.PathLike | None = None, *,
                   data_dir: str | None = None, device: str = "auto", threads: int | None = None,
                   progress: bool = False, log: Callable[[str], None] | None = None,
                   data_factory: Callable[[Any, str], Any] | None = None, strict: bool = False,
                   seeds: Sequence[int] | None = None) -> dict:
    """Train and evaluate every run of experiment ``name`` at ``preset``; write and return its manifest.

    Parameters
    ----------
    results_root: default ``results/<preset>``. data_dir, device, threads: passed to every run (runtime
        settings; they do not change run folder names). progress: tqdm bars. log: callable(str).
    data_factory: ``callable(config, split) -> data object`` (tests: synthetic data); ``None``: the real
        splits through :class:`CachedLoader` (each split loaded once per call).
    strict: re-raise the first training/evaluation error instead of recording it as a failed run.
    seeds: run only these of the preset's seeds (a reduced protocol: the manifest's ``seeds`` and ``budget``
        say which were run out of which); ``None``: all of them.

    Missing modules (``requires``) or TrainConfig fields make the experiment ``unavailable``; missing data
    makes a group ``unavailable``; a failing run is recorded as ``failed`` (with the error) and the others
    continue. Returns the manifest dict (``manifest["path"]`` is where it was written).
    """
    if preset not in PRESETS:
        raise ExperimentError(f"unknown preset {preset!r}; choose one of {list(PRESETS)}")
    exp = get_experiment(name)
    spec = _only_seeds(exp.preset(preset), seeds)
    root = Path(results_root) if results_root is not None else default_results_root(preset)
    root.mkdir(parents=True, exist_ok=True)
    say = log or (lambda msg: None)
    mpath = manifest_path(root, name)
    t_start = time.perf_counter()
    manifest = new_manifest(
        experiment=name, title=exp.title, figures=exp.figures, preset=preset, paper_protocol=spec.paper_protocol,
        budget=spec.budget, estimate=spec.estimate, requires=exp.requires, notes=exp.notes, lrs=spec.lrs,
        seeds=spec.seeds, selection_split=spec.selection_split if _needs_selection(spec) else None,
        results_root=root, runtime={"device": device, "threads": threads, "data_dir": data_dir}, started=_now())
    group_recs = []
    for g in spec.groups:
        rec = g.to_dict()
        rec.update({"status": "pending", "reason": None, "runs": [], "selected_lr": None})
        if g.unavailable:
            rec.update(status="unavailable", reason=g.unavailable)
        group_recs.append(rec)
    manifest["groups"] = group_recs

    def flush() -> None:
        manifest["updated"] = _now()
        manifest["wall_time_s"] = round(time.perf_counter() - t_start, 3)
        write_manifest(root, manifest)

    missing = missing_requirements(exp)
    if not missing:
        all_fields: dict = {}
        for _, fields in spec.runs():
            all_fields.update(fields)
        why = _unavailable_config(all_fields)
        if why:
            missing = [why]
    if missing:
        reason = ("requires " + ", ".join(missing)) if all(m.startswith("deep.") for m in missing) else missing[0]
        manifest.update(status="unavailable", reason=f"unavailable: {reason}")
        for rec in group_recs:
            if rec["status"] != "unavailable":
                rec.update(status="unavailable", reason=manifest["reason"])
        flush()
        say(f"{name}: {manifest['reason']} (manifest written: {mpath})")
        manifest["path"] = str(mpath)
        return manifest

    from linvae.dataroot import DatasetMissingError

    if exp.runner is not None:
        say(f"{name} [{preset}]: {exp.title}")
        outputs: dict = {}
        try:
            status, reason, outputs = exp.runner(preset, root, {"data_dir": data_dir, "device": device,
                                                                "threads": threads}, say=say, progress=progress)
        except DatasetMissingError as exc:
            status, reason = "unavailable", f"data missing: {exc}"
        except Exception as exc:  # recorded like a failed run (strict: re-raise)
            if strict:
                raise
            status, reason = "failed", f"{type(exc).__name__}: {exc}"
        manifest.update(status=status, reason=reason, outputs=dict(outputs))
        flush()
        say(f"{name}: {status}{' (' + reason + ')' if reason else ''} (manifest: {mpath})")
        manifest["path"] = str(mpath)
        return manifest

    if data_factory is None:
        data_factory = CachedLoader()
    if threads:
        import torch
        torch.set_num_threads(int(threads))
    say(f"{name} [{preset}]: {exp.title}")
    selection = _needs_selection(spec)
    for g, rec in zip(spec.groups, group_recs):
        if g.unavailable:
            say(f" {g.key}: unavailable ({g.unavailable})")
            continue
        say(f" {g.key}: {g.label} ({g.kind}{', ' + str(len(g.betas)) + ' betas' if g.kind == 'sweep' else ''})")
        rec["status"] = "running"
        flush()
        for lr in (spec.lrs or (g.config.get("lr", 1e-3),)):
            for seed in spec.seeds:
                for beta in (g.betas if g.kind == "sweep" else (None,)):
                    fields = run_fields(g, lr, seed, beta)
                    run_dir = _run_dir(root, fields)
                    fields.update(out_dir=str(run_dir.parent), run_name=run_dir.name,
                                  device=device, num_threads=threads, data_dir=data_dir)
                    evals = list(g.evaluations)
                    if selection and (g.kind == "mr" or math.isclose(beta, _selection_member(g), rel_tol=1e-12)):
                        evals.append(_selection_evaluation(spec))
                    try:
                        run_rec = _train_and_evaluate(fields, g, evals, root=root, data_factory=data_factory,
                                                      progress=progress, say=say, device=device)
                    except DatasetMissingError as exc:
                        rec.update(status="unavailable", reason=f"data missing: {exc}")
                        say(f"  {g.key}: data missing, group skipped: {exc}")
                        break
                    except Exception as exc:  # recorded, the experiment goes on (strict: re-raise)
                        if strict:
                            raise
                        run_rec = {"lr": fields["lr"], "seed": fields["seed"], "beta": beta,
                                   "run_dir": _rel(Path(fields["out_dir"]) / fields["run_name"], root),
                                   "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                                   "traceback": traceback.format_exc(limit=8), "results": {}}
                        say(f"  FAILED {fields['run_name']}: {type(exc).__name__}: {exc}")
                    rec["runs"].append(run_rec)
                    flush()
                if rec["status"] == "unavailable":
                    break
            if rec["status"] == "unavailable":
                break
        if rec["status"] == "unavailable":
            continue
        failed = [r for r in rec["runs"] if r["status"] != "complete"]
        rec["status"] = "complete" if not failed else ("failed" if len(failed) == len(rec["runs"]) else "partial")
        if failed:
            rec["reason"] = f"{len(failed)} of {len(rec['runs'])} runs failed; first: {failed[0].get('error')}"
        _select_lr(rec, g, spec, root)
        flush()
    states = {r["status"] for r in group_recs}
    if states <= {"complete"}:
        manifest["status"] = "complete"
    elif "complete" in states or "partial" in states:
        manifest["status"] = "partial"
    elif states <= {"unavailable"}:
        manifest["status"] = "unavailable"
        manifest["reason"] = "unavailable: " + "; ".join(sorted({r["reason"] for r in group_recs if r["reason"]}))
    else:
        manifest["status"] = "failed"
    flush()
    say(f"{name}: {manifest['status']} (manifest: {mpath})")
    manifest["path"] = str(mpath)
    return manifest


def adopt_runs(name: str, preset: str = "cpu", results_root: str | os.PathLike | None = None,
               sources: Sequence[str | os.PathLike] = (), *,
               log: Callable[[str], None] | None = None) -> list[tuple[Path, Path]]:
    """Copy finished runs trained outside the runner (e.g. by ``mrvae-cli deep sweep`` / ``deep train`` jobs
    side by side) to where experiment ``name`` at ``preset`` looks for them, so ``run_experiment`` finds
    them complete instead of training them again.

    Every folder under ``sources`` (searched recursively) with a ``summary.json`` (a finished run) and a
    ``config.json`` whose training config names one of the experiment's run folders (:func:`run_folder_name`;
    runtime fields such as threads, paths and device do not count) is copied to
    ``<results_root>/runs/<dataset>_<arch>/<folder>``, older checkpoints left out. Run folders already in
    place are kept. Returns the ``(source, destination)`` pairs copied; ``log`` gets one line per copy and
    one per run still missing.
    """
    import shutil

    spec = get_experiment(name).preset(preset)   # an unknown preset: ExperimentError
    root = Path(results_root) if results_root is not None else default_results_root(preset)
    say = log or (lambda msg: None)
    found: dict[Path, Path] = {}   # where the runner looks -> where the run is
    for source in sources:
        for cfg in sorted(Path(source).rglob("config.json")):
            if not (cfg.parent / "summary.json").exists():
                continue
            try:
                config = json.loads(cfg.read_text()).get("config")
            except (OSError, json.JSONDecodeError, AttributeError):
                continue
            if isinstance(config, dict) and {"dataset", "arch", "lr"} <= set(config):
                found.setdefault(_run_dir(root, config), cfg.parent)
    copied = []
    for _, fields in spec.runs():
        dest = _run_dir(root, fields)
        if dest.exists():
            continue
        if dest not in found:
            say(f"  not found: {_rel(dest, root)}")
            continue
        shutil.copytree(found[dest], dest, ignore=shutil.ignore_patterns("checkpoint-e*.pt"))
        say(f"  {found[dest]} -> {dest}")
        copied.append((found[dest], dest))
    return copied


def run_all(preset: str = "smoke", results_root: str | os.PathLike | None = None, **kwargs: Any) -> list[dict]:
    """Run every experiment in :data:`RUN_ALL_ORDER` (shared runs are trained once); returns the manifests."""
    return [run_experiment(name, preset, results_root, **kwargs) for name in RUN_ALL_ORDER]
