"""Train the baseline beta-VAE sweeps (the paper's 10 betas per KL schedule) and evaluate each run.

Orchestration on top of the trainer (:mod:`deep.train`) and the evaluator (:mod:`deep.evaluate`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable, Sequence

import torch

from deep.evaluate.run import evaluate_run
from deep.data.registry import dataset_spec, register_dataset
from deep.models import registry as families
from deep.models.registry import register_family
from deep.train import distributed as D
from deep.train.config import BASELINE_BETAS, KL_SCHEDULES, ConfigError, TrainConfig, run_dir_for
from deep.train.loop import train
from deep.train.runs import RunPaths, write_json

__all__ = ["sweep"]

# ------------------------------------------------------------------------------------------
# baseline sweep
# ------------------------------------------------------------------------------------------
def sweep(config: TrainConfig, betas: Iterable[float] = BASELINE_BETAS,
          schedules: Sequence[str] = ("constant", "linear"), *, resume: bool = True,
          evaluate: bool = True, eval_examples: int | None = None, progress: bool = True,
          log=None, jobs: int = 1) -> Path:
    """Train the baseline beta-VAEs (default: the paper's 10 betas) with one shared config.

    One run folder per (schedule, beta) under ``out_dir / (run_name or <dataset>_<arch>_sweep_seed<s>)``
    and an ``index.json`` listing them (updated after every run). Finished runs are skipped, so an
    interrupted sweep continues where it stopped. With ``evaluate`` each run gets its
    ``results/rd.json`` (one RD point at its beta, on the first ``eval_examples`` test images or all).

    ``jobs > 1`` trains (and evaluates) up to ``jobs`` runs at once, each in its own process (a
    ``ProcessPoolExecutor`` with the ``spawn`` start method) with ``num_threads = config.num_threads or
    max(1, cores // jobs)``. Every run is the same computation as in a sequential sweep; its numbers are
    bit-identical to a sequential run with the same thread count (CPU kernels may sum in another order
    with another thread count). Under ``torchrun`` use ``jobs=1``: the processes then train each run
    together and process 0 evaluates it.
    """
    betas = [float(b) for b in betas]
    for s in schedules:
        if s not in KL_SCHEDULES:
            raise ConfigError(f"unknown schedule {s!r} in the sweep; choose from {list(KL_SCHEDULES)}")
    if not betas or any(not b > 0 for b in betas):
        raise ConfigError(f"sweep betas must be > 0, got {betas}")
    if int(jobs) < 1:
        raise ConfigError(f"invalid jobs={jobs}: must be >= 1")
    env = D.torchrun_env()
    if jobs > 1 and env is not None and env[1] > 1:
        raise ConfigError("sweep --jobs > 1 cannot run under torchrun (each run already uses every process); "
                          "use --jobs 1 with torchrun, or --jobs N without it")
    main = D.is_main_process()
    say = (log or (lambda msg: None)) if main else (lambda msg: None)
    reduced = f"_n{config.max_train_examples}" if config.max_train_examples else ""
    name = config.run_name or (f"{config.dataset}_{config.arch}_sweep{reduced}_e{config.epochs}_lr{config.lr:g}"
                               f"_seed{config.seed}")
    sweep_dir = Path(config.out_dir) / name
    if main:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    index_path = sweep_dir / "index.json"
    shared = config.replace(mr=False, run_name=None, out_dir=str(sweep_dir))
    plan = [shared.replace(beta=beta, kl_schedule=schedule, run_name=f"beta{beta:.4g}_{schedule}")
            for schedule in schedules for beta in betas]
    entries: dict[int, dict] = {}

    def entry_for(cfg: TrainConfig) -> dict:
        rdir = run_dir_for(cfg)
        entry = {"beta": cfg.beta, "schedule": cfg.kl_schedule, "run_dir": rdir.name, "status": "complete"}
        if evaluate:
            entry["results"] = str((RunPaths(rdir).results / "rd.json").relative_to(sweep_dir))
        return entry

    def write_index() -> None:
        if main:
            write_json(index_path, {"kind": "beta-VAE baseline sweep", "betas": betas,
                                    "schedules": list(schedules),
                                    "shared_config": shared.replace(out_dir=config.out_dir).to_dict(),
                                    "jobs": int(jobs),
                                    "runs": [entries[i] for i in sorted(entries)]})

    if jobs > 1:
        _parallel_sweep(plan, jobs, resume=resume, evaluate=evaluate, eval_examples=eval_examples,
                        say=say, done=lambda i: (entries.__setitem__(i, entry_for(plan[i])), write_index()))
        return sweep_dir
    for i, cfg in enumerate(plan):
        say(f"[sweep] beta={cfg.beta:.4g} schedule={cfg.kl_schedule} -> {run_dir_for(cfg)}")
        _sweep_one(cfg, resume=resume, evaluate=evaluate, eval_examples=eval_examples, progress=progress,
                   log=log)
        entries[i] = entry_for(cfg)
        write_index()
    return sweep_dir


def _sweep_one(cfg: TrainConfig, *, resume: bool, evaluate: bool, eval_examples: int | None,
               progress: bool = False, log=None) -> str:
    """Train one sweep run unless finished, then evaluate it (process 0) unless ``rd.json`` exists."""
    rdir = run_dir_for(cfg)
    paths = RunPaths(rdir)
    if not paths.summary.exists():
        train(cfg, resume=resume and paths.checkpoint.exists(), progress=progress, log=log)
    if evaluate and D.is_main_process() and not (paths.results / "rd.json").exists():
        evaluate_run(rdir, max_examples=eval_examples, progress=False)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # the other processes wait for process 0's evaluation
    return str(rdir)


def _sweep_job(cfg_dict: dict, registry: dict, kwargs: dict) -> str:
    """One sweep run in a worker process: restore the parent's registry entries for this run's dataset
    and architecture (families registered at run time, e.g. by tests), then train and evaluate."""
    cfg = TrainConfig.from_dict(cfg_dict)
    # each spec's fields are its register call's keywords, so a field added to a spec is restored too
    for register, spec in ((register_dataset, registry["dataset"]), (register_family, registry["family"])):
        register(**{f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}, replace=True)
    torch.set_num_threads(cfg.num_threads or 1)
    return _sweep_one(cfg, **kwargs)


def _parallel_sweep(plan: list[TrainConfig], jobs: int, *, resume: bool, evaluate: bool,
                    eval_examples: int | None, say, done) -> None:
    """Run the unfinished runs of ``plan`` in up to ``jobs`` spawned worker processes; ``done(i)`` is
    called in the parent for every finished run, in plan order of completion."""
    import concurrent.futures as cf
    import multiprocessing
    import pickle

    threads = max(1, D.usable_cores() // jobs)
    first = plan[0]
    families.check_dataset_arch(first.dataset, first.arch)   # clear errors for unknown names
    registry = {"dataset": dataset_spec(first.dataset), "family": families.family_spec(first.arch)}
    try:
        pickle.dumps(registry)
    except Exception as exc:
        raise ConfigError(
            f"sweep --jobs needs the dataset loader and architecture of {first.dataset}/{first.arch} "
            f"registered as importable functions ('module:function' or module-level functions), not "
            f"lambdas or closures ({type(exc).__name__}: {exc}); use jobs=1 otherwise") from None
    kwargs = dict(resume=resume, evaluate=evaluate, eval_examples=eval_examples)
    pending = []
    for i, cfg in enumerate(plan):
        paths = RunPaths(run_dir_for(cfg))
        if paths.summary.exists() and (not evaluate or (paths.results / "rd.json").exists()):
            done(i)
        else:
            pending.append(i)
    if not pending:
        return
    ctx = multiprocessing.get_context("spawn")
    errors: list[Exception] = []
    with cf.ProcessPoolExecutor(max_workers=min(jobs, len(pending)), mp_context=ctx) as pool:
        futures = {}
        for i in pending:
            cfg = plan[i].replace(num_threads=plan[i].num_threads or threads)
            say(f"[sweep] queued beta={cfg.beta:.4g} schedule={cfg.kl_schedule} ({cfg.num_threads} thread(s)) "
                f"-> {run_dir_for(cfg)}")
            futures[pool.submit(_sweep_job, cfg.to_dict(), registry, kwargs)] = i
        for fut in cf.as_completed(futures):
            i = futures[fut]
            try:
                fut.result()
            except Exception as exc:  # keep the finished runs, report the first failure
                if not isinstance(exc, cf.CancelledError):   # say it now: runs already started go on for hours
                    say(f"[sweep] FAILED beta={plan[i].beta:.4g} schedule={plan[i].kl_schedule}: "
                        f"{type(exc).__name__}: {exc}; queued runs not yet started are cancelled")
                errors.append(exc)
                for other in futures:
                    other.cancel()
                continue
            say(f"[sweep] done  beta={plan[i].beta:.4g} schedule={plan[i].kl_schedule}")
            done(i)
    if errors:
        raise errors[0]


