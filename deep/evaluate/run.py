"""Evaluate a run folder: load its model, run the one evaluation loop (:func:`deep.evaluate.loop.rd_sweep`)
and write ``results/rd.json`` (JSON arrays indexed by beta, CompressAI style) plus image grids.

The estimators are described in :mod:`deep.evaluate.loop` and written into every result file under
``estimators``; ``conventions`` repeats the run's units and definitions.

Results are never replaced silently. Each result ``results/<name>.json`` has its own image folder
(``images`` for ``rd.json``, ``images_<x>`` for ``rd_<x>.json``) and AIS file. When the result exists,
``on_existing`` decides: ``"keep"`` (the library default, and what training and resuming do) moves the
earlier result, its images and its AIS file to ``results/previous/<time it was written>/``; ``"refuse"``
(``mrvae-cli deep evaluate`` without ``--overwrite``) stops before evaluating; ``"replace"``
(``--overwrite``) replaces them.
"""
from __future__ import annotations

import datetime
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from linvae.conditioning import BetaRange

from deep.models import registry as families
from deep.models.base import EvaluationOptionError
from deep.train.config import RUNTIME_FIELDS, TrainConfig, resolve_device
from deep.train.lifecycle import load_run_data
from deep.train.loop import load_model_state
from deep.train.runs import (CheckpointMismatchError, RunError, RunPaths, load_latest_checkpoint, read_json,
                             write_json)
from deep.train.runtime import tune_cpu_allocator

from . import metrics as M
from .beta_metrics import MIG_OPTIONS, AISMetric, FIDMetric, MIGMetric
from .images import clear_image_folder, save_image_grids
from .loop import LOOP_OPTIONS, model_device, rd_sweep

__all__ = ["evaluate_run", "load_run_model", "load_eval_data", "apply_evaluation_options", "ResultExistsError",
           "ON_EXISTING"]

#: What :func:`evaluate_run` does when its result file exists (see the module docstring).
ON_EXISTING = ("keep", "refuse", "replace")


class ResultExistsError(RunError, FileExistsError):
    """The result an evaluation would write exists and ``on_existing="refuse"``."""


# ------------------------------------------------------------------------------------------
# run folders
# ------------------------------------------------------------------------------------------
def load_run_model(run_dir: str | os.PathLike, device: str | torch.device = "cpu",
                   model: nn.Module | None = None) -> tuple[TrainConfig, nn.Module, dict]:
    """Config, model (weights loaded, eval mode) and checkpoint of a run folder.

    The newest readable checkpoint is used (``checkpoint.pt``, else a kept ``checkpoint-eNNNN.pt`` with a
    warning). ``model`` overrides rebuilding through the architecture's ``rebuild``
    (:mod:`deep.models.registry`).
    """
    paths = RunPaths(run_dir)
    if not paths.root.is_dir():
        raise RunError(f"run folder {paths.root} does not exist; pass the folder that "
                       "`mrvae-cli deep train` printed")
    ckpt, used = load_latest_checkpoint(paths.root)
    try:
        config = TrainConfig.from_dict(ckpt["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointMismatchError(f"checkpoint {paths.checkpoint} has a config this code cannot read "
                                      f"({exc})") from None
    if model is None:
        try:
            model = families.rebuild_model(config.arch, ckpt["model_config"])
        except (TypeError, ValueError) as exc:
            raise CheckpointMismatchError(
                f"checkpoint {paths.checkpoint} describes a model this code cannot build "
                f"({ckpt['model_config']}): {exc}") from None
    load_model_state(model, ckpt["model"], str(used))
    model = model.to(device).eval()
    return config, model, ckpt


def apply_evaluation_options(model: nn.Module, options: dict) -> tuple[dict, dict, dict]:
    """Split evaluation options into the loop's (:data:`deep.evaluate.loop.LOOP_OPTIONS`), MIG's and the
    family's, and hand the family's to ``model.set_evaluation_options``; returns the three dicts."""
    options = dict(options)
    loop_opts = {k: options.pop(k) for k in LOOP_OPTIONS if k in options}
    mig_opts = {k: options.pop(k) for k in MIG_OPTIONS if k in options}
    try:
        model.set_evaluation_options(**options)
    except EvaluationOptionError as exc:
        raise EvaluationOptionError(f"{exc}; the evaluator itself takes {list(LOOP_OPTIONS) + list(MIG_OPTIONS)}"
                                    ) from None
    return loop_opts, mig_opts, options


def load_eval_data(config: TrainConfig, split: str = "test", data_dir: str | None = None):
    """The evaluation split of the run's dataset (its loader in :mod:`deep.models.registry`), from the
    run's data root (or ``data_dir``; :func:`deep.train.lifecycle.load_run_data`)."""
    return load_run_data(config, split, data_dir)


def _recalibrator(model: nn.Module, config: TrainConfig, n_examples: int, batch_size: int,
                  data_dir: str | None):
    try:
        from deep.models.convnets import recalibrate_batchnorm
    except ImportError:  # pragma: no cover - nets without it
        return None
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return None
    train_data = load_run_data(config, "train", data_dir)
    idx = torch.arange(min(n_examples, len(train_data)))
    device = model_device(model)

    def recal(beta: float) -> None:
        batches = (train_data.get_batch(idx[s:s + batch_size], train=False).to(device)
                   for s in range(0, idx.numel(), batch_size))
        recalibrate_batchnorm(model, batches, beta)

    return recal


def _monotonicity(betas: Sequence[float], rate: Sequence[float], distortion: Sequence[float]) -> dict:
    """Whether, ordered by beta, the rate never increases and the distortion never decreases (the shape of
    an optimal RD curve), with the largest violations (nats)."""
    order = sorted(range(len(betas)), key=lambda j: betas[j])
    r = [rate[j] for j in order]
    d = [distortion[j] for j in order]
    rate_up = max([b - a for a, b in zip(r, r[1:])] + [0.0])
    dist_down = max([a - b for a, b in zip(d, d[1:])] + [0.0])
    return {"rate_nonincreasing": rate_up <= 0.0, "distortion_nondecreasing": dist_down <= 0.0,
            "max_rate_increase": rate_up, "max_distortion_decrease": dist_down}


def _ais_metric(model: nn.Module, data: Any, ais: Any, n_examples: int, bdmc: bool, seed: int,
                betas: Sequence[float]) -> AISMetric:
    """The AIS metric for ``model``, or a clear error when its family has no decoder AIS can score."""
    from .ais import AISSettings

    settings = ais if isinstance(ais, AISSettings) else AISSettings(**({} if ais is True else dict(ais)))
    x = data.get_batch(torch.arange(1), train=False).to(model_device(model))
    try:
        with torch.no_grad():
            model.decoder_distortion(x, torch.zeros(1, int(model.latent_dim), device=x.device),
                                     torch.tensor([float(betas[0])], device=x.device))
    except NotImplementedError as exc:
        raise EvaluationOptionError(f"--ais: {exc}") from None
    return AISMetric(data, settings, n_examples=n_examples, bdmc=bdmc, seed=seed)


def evaluate_run(run_dir: str | os.PathLike, n_betas: int | None = None, iw_k: int | None = None,
                 split: str = "test", batch_size: int | None = None, *,
                 betas: Sequence[float] | None = None, batched: bool = True, beta_chunk: int | None = None,
                 max_rows: int | None = None, device: str | None = None, num_threads: int | None = None,
                 seed: int = 0, max_examples: int | None = None, mi_examples: int | None = None,
                 images: bool = True, n_images: int = 8, recalibrate_bn: bool = False,
                 recalibrate_examples: int = 2000, data_dir: str | None = None,
                 model: nn.Module | None = None, data: Any = None, progress: bool = False,
                 out_name: str | None = None, fid_samples: int = 0, fid_weights: str | None = None,
                 fid_extractor: Any = None, download: bool = False, sweep_options: dict | None = None,
                 ais: Any = None, ais_examples: int = 16, ais_bdmc: bool = False,
                 on_existing: str = "keep") -> dict:
    """Evaluate a run folder; write and return ``results/rd.json`` (``rd_<split>.json`` for other splits,
    ``out_name`` to choose).

    ``on_existing`` says what happens to an earlier result of that name (module docstring): ``"keep"`` moves
    it to ``results/previous/<time>/``, ``"refuse"`` raises :class:`ResultExistsError` before evaluating,
    ``"replace"`` replaces it (its images and AIS file too). ``max_examples``: the first N test examples
    (default: the run's ``eval_examples``, all when it is unset; 0: all). ``data_dir``: the data root (default:
    the run's, else ``$MRVAE_DATA``, see :func:`deep.train.lifecycle.run_data_root`). ``device`` and
    ``num_threads`` (torch CPU threads): default the run's own settings.

    MR-VAE: ``n_betas`` (default: the run's ``n_betas``, 20) log-spaced betas over its trained range, or
    the given ``betas`` (a warning for any outside the trained range). beta-VAE: one point at its beta.
    ``iw_k`` (default: the run's ``iw_k``; 0 disables) importance samples for the IW-NLL. Other arguments
    as in :func:`deep.evaluate.loop.rd_sweep` (``beta_chunk`` bounds the betas per batched pass, for memory);
    ``recalibrate_bn`` recomputes BatchNorm statistics at each beta from ``recalibrate_examples``
    training images (MR CNNs). ``sweep_options`` (merged over the run's ``eval_options``) are evaluation
    options: the loop's (:data:`deep.evaluate.loop.LOOP_OPTIONS`), MIG's (``mig``, ``mig_grid``,
    ``mig_samples``, ``mig_bins``; computed when the data has a factor grid) and the family's
    (``model.set_evaluation_options``, e.g. ``tc_batch_size`` for beta-TCVAE). ``fid_samples`` > 0 adds the
    FID of that many prior samples per beta against as many test images
    (:class:`deep.evaluate.beta_metrics.FIDMetric`; the standard Inception features via pytorch-fid, or
    ``fid_extractor``); when the FID network is unavailable the results say why instead of failing.
    ``ais`` (an :class:`deep.evaluate.ais.AISSettings`, a dict of its fields, or ``True`` for the defaults) adds
    the AIS rate-distortion curve of each beta's decoder on the first ``ais_examples`` test examples
    (:class:`deep.evaluate.beta_metrics.AISMetric`; ``ais_bdmc`` adds bidirectional Monte Carlo): per-beta
    arrays in the result and every curve in ``ais.json`` (``ais_<name>.json`` for other result names) next to
    it, the file ``paper_figures/fig_ais.py`` draws.
    """
    paths = RunPaths(run_dir)
    if on_existing not in ON_EXISTING:
        raise ValueError(f"on_existing must be one of {ON_EXISTING}, got {on_existing!r}")
    name = out_name or ("rd.json" if split == "test" else f"rd_{split}.json")
    if Path(name).name != name or not name.endswith(".json"):
        raise ValueError(f"the result name {name!r} must be a file name ending in .json (it goes to "
                         f"{paths.results})")
    if on_existing == "refuse" and (paths.results / name).exists():
        raise ResultExistsError(_exists_message(paths.results / name))
    run_config = None
    if paths.config.exists():
        try:
            run_config = read_json(paths.config)
        except (OSError, ValueError):
            run_config = None
    try:
        cfg0 = TrainConfig.from_dict(run_config["config"]) if run_config else None
    except (KeyError, TypeError, ValueError):
        cfg0 = None
    dev = resolve_device(device or (cfg0.device if cfg0 else "auto"))
    if dev.type == "cpu":
        tune_cpu_allocator()
    config, model, ckpt = load_run_model(run_dir, dev, model=model)
    if cfg0 is not None:   # the run's current runtime settings (a resume may have changed them) over the checkpoint's
        config = config.replace(**{k: getattr(cfg0, k) for k in RUNTIME_FIELDS})
    threads = num_threads or config.num_threads
    if threads:
        torch.set_num_threads(int(threads))
    if data is None:
        data = load_eval_data(config, split, data_dir)
    n_betas = int(n_betas or config.n_betas)
    max_examples = config.eval_examples if max_examples is None else (int(max_examples) or None)
    iw_k = config.iw_k if iw_k is None else int(iw_k)
    batch_size = int(batch_size or config.eval_batch_size)
    is_mr = bool(getattr(model, "is_mr", config.mr))
    notes = []
    if is_mr:
        rng = getattr(model, "beta_range", None) or config.beta_range
        grid = rng.grid(n_betas).tolist() if betas is None else [float(b) for b in betas]
        outside = [b for b in grid if not rng.contains(b)] if betas is not None else []
        if outside:
            rng.check(torch.tensor(outside, dtype=torch.float64), what=f"MR-VAE (betas {outside})")
            notes.append(f"betas {outside} lie outside the trained range [{rng.a:g}, {rng.b:g}]: extrapolated")
    else:
        grid = [float(config.beta)]
        if betas is not None and any(abs(float(b) - config.beta) > 1e-12 * config.beta for b in betas):
            notes.append(f"beta-VAE evaluated at its own beta {config.beta:g}; the requested betas were ignored")
    recal = None
    if recalibrate_bn and is_mr:
        recal = _recalibrator(model, config, recalibrate_examples, batch_size, data_dir)
        if recal is None:
            notes.append("recalibrate_bn requested but the model has no BatchNorm layers: nothing to do")
        else:
            notes.append(f"BatchNorm statistics recomputed at each beta from {recalibrate_examples} training "
                         "images (one pass per beta)")
    loop_opts, mig_opts, options = apply_evaluation_options(model, {**config.eval_options, **(sweep_options or {})})
    if loop_opts or mig_opts or options:
        notes.append(f"evaluation options: {dict(**loop_opts, **mig_opts, **options)}")
    if mi_examples is not None:
        loop_opts["mi_examples"] = mi_examples
    for key, val in (("beta_chunk", beta_chunk), ("max_rows", max_rows)):
        if val is not None:
            loop_opts[key] = val
    metrics: list = []
    mig, mig_note = MIGMetric.for_data(data, seed=seed, batch_size=model.evaluation_batch_size(batch_size),
                                       **mig_opts)
    if mig is not None:
        metrics.append(mig)
    elif mig_note:
        notes.append(mig_note)
    fid_error = None
    if fid_samples:
        try:
            extractor = fid_extractor or M.inception_feature_extractor(dev, download=download, weights=fid_weights)
            metrics.append(FIDMetric(data, extractor, n_samples=fid_samples, batch_size=batch_size, seed=seed,
                                     standard=fid_extractor is None))
        except (M.FIDUnavailableError, OSError) as exc:
            notes.append(f"FID not computed: {exc}")
            fid_error = f"unavailable: {exc}"
    ais_metric = None
    if ais is not None and ais is not False:
        ais_metric = _ais_metric(model, data, ais, ais_examples, ais_bdmc, seed, grid)
        metrics.append(ais_metric)
    sweep_out = rd_sweep(model, data, grid, batch_size=batch_size, iw_k=iw_k, batched=batched, seed=seed,
                         max_examples=max_examples, n_images=n_images if images else 0, recalibrate=recal,
                         metrics=metrics, progress=progress, **loop_opts)
    estimators = dict(sweep_out.pop("estimators", {}) or {})
    if fid_error:
        estimators["fid"] = fid_error
    imgs = sweep_out.pop("images", None)
    results_dir = paths.results
    folder, ais_name = _companions(name)
    previous = None
    if (results_dir / name).exists():
        if on_existing == "keep":
            previous = _archive(results_dir, name)
            notes.append(f"the earlier {name} was kept in {previous}")
        else:
            _remove_result(results_dir, name)
    written = {}
    if images and imgs:
        written = save_image_grids(imgs, grid, results_dir / folder)
    beta_range = getattr(model, "beta_range", None)
    first = ("beta", "log_beta", "rate", "distortion", "neg_elbo", "loss", "iw_nll", "active_units",
             "mutual_information")
    arrays = {k: sweep_out[k] for k in first if k in sweep_out}
    arrays.update({k: v for k, v in sweep_out.items()
                   if k not in arrays and isinstance(v, list) and len(v) == len(grid)})
    results = {
        "kind": "rate-distortion curve",
        "run": str(paths.root),
        "split": split,
        "model": {"kind": "MR-VAE" if is_mr else "beta-VAE", "dataset": config.dataset, "arch": config.arch,
                  "objective": config.objective,
                  "latent_dim": sweep_out.get("latent_dim", getattr(model, "latent_dim", None)),
                  "n_params": sum(p.numel() for p in model.parameters()),
                  "beta_range": beta_range.to_dict() if (is_mr and isinstance(beta_range, BetaRange)) else None,
                  "epochs_trained": int(ckpt["epoch"]), "epochs_planned": config.epochs,
                  "complete": int(ckpt["epoch"]) >= config.epochs},
        **arrays,
        "in_trained_range": ([bool(beta_range.contains(b)) for b in grid] if is_mr and beta_range else
                             [True] * len(grid)),
        "iw_k": sweep_out.get("iw_k", iw_k),
        "checks": _monotonicity(grid, sweep_out["rate"], sweep_out["distortion"]),
        "estimators": estimators,
        "evaluation": {"n_examples": sweep_out.get("n_examples"), "batch_size": batch_size,
                       "batched": sweep_out.get("batched"), "rows_per_pass": sweep_out.get("rows_per_pass"),
                       "betas_per_pass": sweep_out.get("betas_per_pass"),
                       "seed": seed, "time_s": sweep_out.get("time_s"),
                       "au_mi_time_s": sweep_out.get("metrics_time_s"), "device": str(dev),
                       "recalibrate_bn": recal is not None, "notes": notes},
        "extras": {k: v for k, v in sweep_out.items()
                   if k not in arrays and not isinstance(v, (list, dict)) or k in ("data_protocol",)},
        "protocol": data.meta() if hasattr(data, "meta") else None,
        "config": config.to_dict(),
        "conventions": (run_config or {}).get("conventions"),
        "images": written,
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    path = write_json(results_dir / name, results)
    results["path"] = str(path)
    if previous is not None:
        results["previous"] = str(previous)
    if ais_metric is not None:
        reduced = ((run_config or {}).get("conventions") or {}).get("reduced_protocol")
        st = ais_metric.settings
        label = (f"{results['model']['kind']} {config.dataset}/{config.arch}, trained {ckpt['epoch']} epoch(s)"
                 + (f"; REDUCED: {reduced}" if reduced else "")
                 + f"; AIS on the first {int(ais_metric.x.shape[0])} test examples, {st.n_steps} steps, "
                 f"{st.n_chains} chains")
        ais_out = ais_metric.results(protocol=label)
        ais_out.update({"run": str(paths.root), "rd_results": name, "config": config.to_dict()})
        results["ais_path"] = str(write_json(results_dir / ais_name, ais_out))
    _log_curve(config, paths.root, results, Path(name).stem)
    return results


# ------------------------------------------------------------------------------------------
# results never lost
# ------------------------------------------------------------------------------------------
def _companions(name: str) -> tuple[str, str]:
    """The image folder and the AIS file that belong to result ``name``."""
    if name == "rd.json":
        return "images", "ais.json"
    tag = Path(name).stem.removeprefix("rd_")
    return f"images_{tag}", f"ais_{tag}.json"


def _exists_message(target: Path) -> str:
    try:
        old = read_json(target)
        what = (f"{len(old.get('beta') or [])} beta(s) on {(old.get('evaluation') or {}).get('n_examples')} "
                f"{old.get('split', '')} examples, after {(old.get('model') or {}).get('epochs_trained')} epoch(s)")
    except (OSError, ValueError, AttributeError):
        what = "unreadable"
    when = datetime.datetime.fromtimestamp(target.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    return (f"{target} already exists ({what}; written {when}); pass --output NAME to write a new result next to "
            "it, or --overwrite to replace it and its images (Python: out_name=..., on_existing='replace' or "
            "'keep')")


def _archive(results_dir: Path, name: str) -> Path:
    """Move result ``name``, its image folder and its AIS file to ``results/previous/<time written>/``."""
    target = results_dir / name
    stamp = datetime.datetime.fromtimestamp(target.stat().st_mtime, tz=datetime.timezone.utc).strftime(
        "%Y%m%d-%H%M%S")
    dest, i = results_dir / "previous" / stamp, 1
    while (dest / name).exists():
        dest, i = results_dir / "previous" / f"{stamp}-{i}", i + 1
    dest.mkdir(parents=True, exist_ok=True)
    for part in (name, *_companions(name)):
        if (results_dir / part).exists():
            shutil.move(str(results_dir / part), str(dest / part))
    return dest


def _remove_result(results_dir: Path, name: str) -> None:
    """Delete result ``name``, the grids in its image folder and its AIS file (``on_existing="replace"``)."""
    folder, ais_name = _companions(name)
    for part in (name, ais_name):
        (results_dir / part).unlink(missing_ok=True)
    clear_image_folder(results_dir / folder)


def _log_curve(config: TrainConfig, run_dir: Path, results: dict, name: str) -> None:
    """Send the curve to the run's experiment tracker (``config.log``); a missing package only warns here
    (the result file is written)."""
    if not config.log or config.log == "none":
        return
    from deep.train.trackers import TrackerUnavailableError, open_tracker

    try:
        tracker = open_tracker(config.log, run_dir)
    except TrackerUnavailableError as exc:
        warnings.warn(f"the RD curve was not logged: {exc}", stacklevel=3)
        return
    try:
        tracker.log_curve(results, name=name)
    finally:
        tracker.close()
