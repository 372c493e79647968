"""``mrvae-cli experiment ...`` and ``mrvae-cli figures``: run the paper's experiments, regenerate figures.

Thin wrappers over :mod:`deep.experiments.paper` (registry and runner) and
:mod:`paper_figures.regenerate` (figures and tables from result files only).
"""
from __future__ import annotations

from pathlib import Path

import click

from .common import data_dir_option, user_errors

_PRESETS = ("smoke", "cpu", "paper")


@click.group()
def experiment() -> None:
    """The paper's experiments (one per figure or table) at the smoke, cpu or paper budget."""


@experiment.command("list")
@click.option("--preset", type=click.Choice(_PRESETS), default="cpu", show_default=True,
              help="Preset whose budget and run count are shown.")
def list_experiments(preset: str) -> None:
    """List the experiments, their figures, run counts and budgets."""
    from deep.experiments.paper import EXPERIMENTS, RUN_ALL_ORDER, missing_requirements

    with user_errors():
        for name in RUN_ALL_ORDER:
            exp = EXPERIMENTS[name]
            spec = exp.preset(preset)
            missing = missing_requirements(exp)
            state = f"unavailable: requires {', '.join(missing)}" if missing else "available"
            unavailable = [g.key for g in spec.groups if g.unavailable]
            click.echo(f"{name:<17} {exp.title}")
            click.echo(f"{'':<17} figures: {', '.join(exp.figures)}; {len(spec.runs())} runs at --preset {preset}; "
                       f"{state}" + (f"; not buildable here: {', '.join(unavailable)}" if unavailable else ""))
            if spec.estimate:
                click.echo(f"{'':<17} budget: {spec.estimate}")
        click.echo("")
        click.echo(f"run one:  mrvae-cli experiment run NAME --preset {preset}")
        click.echo(f"run all:  mrvae-cli experiment run all --preset {preset}   (shared runs are trained once)")


@experiment.command("run")
@click.argument("name")
@click.option("--preset", type=click.Choice(_PRESETS), default="cpu", show_default=True,
              help="smoke: seconds (pipeline check); cpu: reduced budget for a 2-core machine; paper: App. C.")
@click.option("--results", "results", type=click.Path(file_okay=False), default=None,
              help="Results root (default: results/<preset>).")
@data_dir_option
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--threads", type=int, default=None, help="torch CPU threads.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def run(name: str, preset: str, results: str | None, data_dir: str | None, device: str, threads: int | None,
        quiet: bool) -> None:
    """Train and evaluate experiment NAME (or 'all'); finished runs are skipped, interrupted ones resumed.

    Example: mrvae-cli experiment run fig8_sensitivity --preset cpu
    """
    from deep.experiments.paper import RUN_ALL_ORDER, get_experiment, run_experiment

    with user_errors():
        if threads is not None and threads < 1:
            raise click.BadParameter("must be >= 1", param_hint="'--threads'")
        names = list(RUN_ALL_ORDER) if name == "all" else [get_experiment(name).name]
        failed = []
        for n in names:
            manifest = run_experiment(n, preset, results, data_dir=data_dir, device=device, threads=threads,
                                      progress=not quiet, log=click.echo)
            for g in manifest["groups"]:
                if g["status"] in ("failed", "partial"):
                    failed.append(f"{n}/{g['key']}: {g.get('reason')}")
        root = Path(results) if results else Path("results") / preset
        click.echo(f"figures: mrvae-cli figures --results {root}")
        if failed:
            raise click.ClickException("some runs failed (details in the manifests):\n  " + "\n  ".join(failed))


@click.command("figures")
@click.option("--results", "results", type=click.Path(file_okay=False), default="results/cpu", show_default=True,
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
