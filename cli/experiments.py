"""``mrvae-cli experiment ...`` and ``mrvae-cli figures``: run the paper's experiments, regenerate figures.

Thin wrappers over :mod:`deep.experiments.registry` (the experiments as data), :mod:`deep.experiments.runner`
(trains and evaluates them) and :mod:`paper_figures.regenerate` (figures and tables from result files only).
"""
from __future__ import annotations

from pathlib import Path

import click

from .common import data_dir_option, parse_ints, user_errors

from deep.experiments.manifest import DEFAULT_PRESET, PRESETS as _PRESETS, default_results_root


def format_duration(seconds: float | None) -> str:
    """``5 s``, ``34 min``, ``1 h 08 min`` (``?`` when unknown)."""
    if seconds is None:
        return "?"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = int(round(seconds / 60))
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


@click.group()
def experiment() -> None:
    """The paper's experiments (one per figure or table) at the smoke, cpu or paper budget."""


@experiment.command("list")
@click.option("--preset", type=click.Choice(_PRESETS), default=DEFAULT_PRESET, show_default=True,
              help="Preset whose budget and run count are shown.")
def list_experiments(preset: str) -> None:
    """List the experiments, their figures, run counts, budgets and planned wall time (cpu preset, 2 cores)."""
    from deep.experiments.registry import EXPERIMENTS, RUN_ALL_ORDER, missing_requirements

    with user_errors():
        total = 0.0
        for name in RUN_ALL_ORDER:
            exp = EXPERIMENTS[name]
            spec, cpu = exp.preset(preset), exp.preset("cpu")
            total += cpu.estimate_s or 0.0
            missing = missing_requirements(exp)
            state = f"unavailable: requires {', '.join(missing)}" if missing else "available"
            unavailable = [g.key for g in spec.groups if g.unavailable]
            runs = (f"{len(spec.runs())} runs" if exp.runner is None
                    else "outside the deep trainer (no runs)")
            click.echo(f"{name:<17} {exp.title}")
            click.echo(f"{'':<17} figures: {', '.join(exp.figures)}; {runs} at --preset {preset}; "
                       f"{state}" + (f"; not buildable here: {', '.join(unavailable)}" if unavailable else ""))
            click.echo(f"{'':<17} planned wall time at --preset cpu on 2 CPU cores: {format_duration(cpu.estimate_s)}"
                       + (f" ({cpu.estimate})" if cpu.estimate else ""))
            if preset != "cpu" and spec.estimate:
                click.echo(f"{'':<17} budget at --preset {preset}: {spec.estimate}")
        click.echo("")
        click.echo(f"planned wall time of every experiment at --preset cpu, summed: {format_duration(total)} on 2 CPU "
                   "cores (an upper bound for `run all`, which trains shared runs once)")
        click.echo(f"run one:  mrvae-cli experiment run NAME --preset {preset}")
        click.echo(f"run all:  mrvae-cli experiment run all --preset {preset}   (shared runs are trained once)")


@experiment.command("run")
@click.argument("name")
@click.option("--preset", type=click.Choice(_PRESETS), default=DEFAULT_PRESET, show_default=True,
              help="smoke: seconds (pipeline check); cpu: reduced budget for a 2-core machine; paper: App. C.")
@click.option("--results", "results", type=click.Path(file_okay=False), default=None,
              help="Results root (default: results/<preset>).")
@data_dir_option
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--threads", type=int, default=None, help="torch CPU threads.")
@click.option("--seeds", default=None, metavar="S[,S...]",
              help="Run only these of the preset's seeds (a reduced protocol, recorded in the manifest's budget; "
                   "e.g. --seeds 0 for a first look at a multi-seed preset). Default: all.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def run(name: str, preset: str, results: str | None, data_dir: str | None, device: str, threads: int | None,
        seeds: str | None, quiet: bool) -> None:
    """Train and evaluate experiment NAME (or 'all'); finished runs are skipped, interrupted ones resumed.

    Example: mrvae-cli experiment run fig8_sensitivity --preset cpu
    """
    from deep.experiments.registry import RUN_ALL_ORDER, get_experiment
    from deep.experiments.runner import run_experiment

    with user_errors():
        if threads is not None and threads < 1:
            raise click.BadParameter("must be >= 1", param_hint="'--threads'")
        seed_list = None if seeds is None else list(parse_ints(seeds, "--seeds"))
        names = list(RUN_ALL_ORDER) if name == "all" else [get_experiment(name).name]
        failed = []
        for n in names:
            manifest = run_experiment(n, preset, results, data_dir=data_dir, device=device, threads=threads,
                                      progress=not quiet, log=click.echo, seeds=seed_list)
            for g in manifest["groups"]:
                if g["status"] in ("failed", "partial"):
                    failed.append(f"{n}/{g['key']}: {g.get('reason')}")
        root = Path(results) if results else default_results_root(preset)
        click.echo(f"figures: mrvae-cli figures --results {root}")
        if failed:
            raise click.ClickException("some runs failed (details in the manifests):\n  " + "\n  ".join(failed))


@experiment.command("adopt")
@click.argument("name")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--preset", type=click.Choice(_PRESETS), default=DEFAULT_PRESET, show_default=True)
@click.option("--results", "results", type=click.Path(file_okay=False), default=None,
              help="Results root (default: results/<preset>).")
def adopt(name: str, sources: tuple[str, ...], preset: str, results: str | None) -> None:
    """Copy finished runs under SOURCES whose training config is one of experiment NAME's runs into its
    results root, so `experiment run` evaluates them instead of training them again. Use it to train an
    experiment's runs as parallel jobs (`mrvae-cli deep sweep` / `deep train` with the preset's training
    settings) and then collect them.

    Example: mrvae-cli experiment adopt fig5_omniglot sweeps/ --preset cpu --results results/cpu
    """
    from deep.experiments.runner import adopt_runs

    with user_errors():
        copied = adopt_runs(name, preset, results, sources, log=click.echo)
    root = Path(results) if results else default_results_root(preset)
    click.echo(f"adopted {len(copied)} run(s) into {root}; next: mrvae-cli experiment run {name} --preset {preset}"
               f" --results {root}")


@click.command("figures")
@click.option("--results", "results", type=click.Path(file_okay=False),
              default=str(default_results_root(DEFAULT_PRESET)), show_default=True,
              help="Results root written by `mrvae-cli experiment run`.")
@click.option("--out", "out", type=click.Path(file_okay=False), default="figures", show_default=True,
              help="Output folder for PNG/PDF figures and Markdown/CSV tables.")
def figures(results: str, out: str) -> None:
    """Regenerate every figure and table from result files (never trains); missing inputs are listed with
    the command that produces each."""
    from paper_figures.regenerate import regenerate

    with user_errors():
        outcome = regenerate(results, out, log=click.echo)
    bad = [r for r in outcome if r.status == "malformed"]
    if bad:
        raise click.ClickException("malformed result files:\n  " + "\n  ".join(r.message for r in bad))


def register(cli: click.Group) -> None:
    """Add ``experiment`` and ``figures`` to the top-level ``mrvae-cli`` group."""
    cli.add_command(experiment)
    cli.add_command(figures)
