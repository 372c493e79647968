"""``mrvae-cli deep ...``: deep MR-VAEs and beta-VAE baselines.

Thin wrappers: parse options, build a :class:`deep.train.TrainConfig`, call :func:`deep.train.train`,
:func:`deep.train.resume_run`, :func:`deep.train.sweep`, :func:`deep.evaluate.evaluate_run` or
:func:`deep.evaluate.load_run`, and print where the outputs went. User mistakes become short messages
(``click.ClickException``), never tracebacks.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Callable, Sequence

import click

from .common import parse_floats, user_errors


# ------------------------------------------------------------------------------------------
# error handling
# ------------------------------------------------------------------------------------------
class _NameChoice(click.Choice):
    """A ``click.Choice`` whose names are read from their source (a TrainConfig field's list, e.g. the
    dataset registry) each time they are needed, so a family registered after the CLI was built (tests,
    plug-ins) is accepted and listed. An unknown name says ``unknown <what> '<name>'; choose one of: ...``."""

    def __init__(self, names: Callable[[], Sequence[str]], what: str) -> None:
        self._names = names
        self.what = what
        super().__init__((), case_sensitive=True)

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(self._names())

    @choices.setter
    def choices(self, value: Any) -> None:  # click.Choice.__init__ assigns it; the source stays the truth
        pass

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        names = self.choices
        if value in names:
            return value
        self.fail(f"unknown {self.what} {value!r}; choose one of: {', '.join(names)}", param, ctx)


def _check_arch(name: str, dataset: str) -> str:
    from deep.models.registry import family_names, family_spec

    if dataset not in family_spec(name).datasets:
        fits = [a for a in family_names() if dataset in family_spec(a).datasets]
        raise click.BadParameter(f"architecture {name!r} does not train on {dataset!r}; for {dataset} choose "
                                 f"one of: {', '.join(fits)}", param_hint="'--arch'")
    return name


def _parse_options(items: tuple[str, ...], option: str) -> dict:
    """``KEY=VALUE`` pairs; values parse as JSON (numbers, true/false, lists) or stay strings."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=f"'{option}'")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _family_defaults(fields: dict) -> dict:
    """Fill the fields the user left at their CLI defaults with the family's recommended values
    (:func:`deep.models.registry.recommended_settings`, e.g. batch 2048 and beta range [0.1, 10] for
    dSprites). A field is the user's when its option came from the command line or the environment."""
    from click.core import ParameterSource

    from deep.models.registry import recommended_settings

    ctx = click.get_current_context()
    rec = recommended_settings(fields["dataset"], fields["arch"], fields.get("model_options"))
    for key, value in rec.items():
        name = _PARAM_OF.get(key, key)
        source = ctx.get_parameter_source(name) if name in ctx.params else ParameterSource.DEFAULT
        if source in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None):
            if isinstance(value, dict):
                fields[key] = {**value, **(fields.get(key) or {})}
            else:
                fields[key] = value
    return fields


def _float_list(text: str | None, what: str) -> list[float] | None:
    return list(parse_floats(text, what)) if text is not None else None


# ------------------------------------------------------------------------------------------
# the training options, generated from TrainConfig's fields (defaults, help, choices)
# ------------------------------------------------------------------------------------------
#: Fields spelled otherwise than ``--<field-name>`` (the first spelling is the documented one).
_OPTION_NAMES: dict[str, tuple[str, ...]] = {
    "num_threads": ("--threads", "--num-threads"),
    "out_dir": ("--out", "--out-dir"),
    "val_max_examples": ("--val-examples", "--val-max-examples"),
    "model_options": ("--model-option",),
    "data_options": ("--data-option",),
    "eval_options": ("--eval-option",),
    "keep_checkpoints": ("--keep", "--keep-checkpoints"),
}

#: Smallest values of integer fields, checked by click before anything runs.
_MINIMUM = {"eval_examples": 2, "keep_checkpoints": 1}

#: What an unknown value of an enumerated field is called in the error message.
_WHAT = {"arch": "architecture", "enc_gate": "gate kind", "dec_gate": "gate kind", "log": "tracker"}

#: The click parameter that sets a field, when it is not the field's own option.
_PARAM_OF = {"beta_a": "beta_range", "beta_b": "beta_range"}

#: Fields that ``deep sweep`` sets itself (mr, beta, kl_schedule) or that only an MR-VAE uses.
_SWEEP_EXCLUDED = frozenset({"mr", "beta", "kl_schedule", "beta_a", "beta_b", "beta_sampling", "enc_gate",
                             "dec_gate", "hyper_hidden"})


class _IntTuple(click.ParamType):
    """``"64,64"`` -> ``(64, 64)``; ``""`` -> ``()``."""

    name = "INTS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, ...]:
        if isinstance(value, (tuple, list)):
            return tuple(int(v) for v in value)
        try:
            return tuple(int(v) for v in str(value).replace(" ", "").split(",") if v)
        except ValueError:
            self.fail(f"expected comma-separated integers, got {value!r}", param, ctx)


def _field_option(f: Any, hints: dict) -> Callable:
    """The click option of TrainConfig field ``f`` (type, default and help from the field)."""
    from deep.train.config import field_choices, field_help

    name, help_text = f.name, field_help(f.name)
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default
    hint = hints[name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):   # X | None: an option whose default is None
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    base = typing.get_origin(hint) or hint
    if name == "mr":
        return click.option("--mr/--beta-vae", "mr", default=default, show_default=True, help=help_text)
    if name == "arch":
        return click.option("--arch", "arch", type=_NameChoice(lambda: field_choices("arch"), "architecture"),
                            default=None, help=help_text + " Default: resnet for images, the dataset's only "
                            "family otherwise.")
    if name == "hyper_hidden":
        return click.option("--hyper-hidden", "hyper_hidden", type=_IntTuple(), default="", metavar="W,W,...",
                            help=help_text + " E.g. 16,16.")
    names = _OPTION_NAMES.get(name, ("--" + name.replace("_", "-"),))
    if base is dict:
        return click.option(*names, name, multiple=True, metavar="KEY=VALUE", help=help_text + " Repeatable.")
    if base is bool:
        return click.option(*names, name, is_flag=True, default=default, help=help_text)
    if f.metadata.get("choices") is not None:     # the names are read when needed, not now
        kind = _NameChoice(lambda name=name: field_choices(name), _WHAT.get(name, name))
    elif base in (int, float, str):
        kind = click.IntRange(min=_MINIMUM[name]) if name in _MINIMUM else base
        if name in ("data_dir", "out_dir"):
            kind = click.Path(file_okay=False)
    else:
        raise TypeError(f"TrainConfig.{name}: no CLI option for type {hint!r}; add one in cli/deep.py")
    return click.option(*names, name, type=kind, default=default, show_default=default is not None,
                        help=help_text)


def _config_options(exclude: frozenset = frozenset()) -> Callable:
    """Decorator adding one option per TrainConfig field (minus ``exclude``): ``--beta-range A B`` sets
    beta_a and beta_b; every other field has its own option (:data:`_OPTION_NAMES`)."""
    from deep.train.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    defaults = TrainConfig.__dataclass_fields__
    opts = []
    for f in dataclasses.fields(TrainConfig):
        if f.name in exclude:
            continue
        if f.name == "beta_a":
            opts.append(click.option(
                "--beta-range", "beta_range", nargs=2, type=float, metavar="A B", show_default=True,
                default=(defaults["beta_a"].default, defaults["beta_b"].default),
                help="MR-VAE training range of beta, log-uniform (sets beta_a and beta_b)."))
        elif f.name != "beta_b":
            opts.append(_field_option(f, hints))

    def decorate(func: Callable) -> Callable:
        for opt in reversed(opts):
            func = opt(func)
        return func

    return decorate


#: Runtime fields ``deep resume`` may change (every other field would train another model).
_RESUME_FIELDS = ("data_dir", "device", "num_threads", "n_betas", "eval_examples", "eval_batch_size", "iw_k",
                  "eval_options", "keep_checkpoints", "log", "precision", "val_max_examples", "download")


def _override_options(fields: Sequence[str]) -> Callable:
    """Options for TrainConfig ``fields`` whose default is "the run's own value" (``None``): ``deep resume``
    changes only what it is told to."""
    from deep.train.config import TrainConfig, field_choices, field_help

    hints = typing.get_type_hints(TrainConfig)
    opts = []
    for name in fields:
        hint = hints[name]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
        base = typing.get_origin(hint) or hint
        names = _OPTION_NAMES.get(name, ("--" + name.replace("_", "-"),))
        text = field_help(name) + " Default: the run's own setting."
        if name == "data_dir":
            text = ("Data root (default: the one the run recorded; when that is gone, $MRVAE_DATA, else "
                    "~/.cache/mrvae/data).")
        if base is dict:
            opts.append(click.option(*names, name, multiple=True, metavar="KEY=VALUE",
                                     help=field_help(name) + " Repeatable; replaces the run's."))
        elif base is bool:
            flag = names[0].removeprefix("--")
            opts.append(click.option(f"--{flag}/--no-{flag}", name, default=None, help=text))
        elif field_choices(name) is not None:
            opts.append(click.option(*names, name, default=None, help=text,
                                     type=_NameChoice(lambda name=name: field_choices(name), _WHAT.get(name, name))))
        else:
            kind = (click.Path(file_okay=False) if name == "data_dir" else
                    click.IntRange(min=_MINIMUM[name]) if name in _MINIMUM else base)
            opts.append(click.option(*names, name, type=kind, default=None, help=text))

    def decorate(func: Callable) -> Callable:
        for opt in reversed(opts):
            func = opt(func)
        return func

    return decorate


def _overrides_from(opts: dict) -> dict:
    """The runtime fields a ``deep resume`` was told to change (unset options dropped)."""
    out = {k: v for k, v in opts.items() if k in _RESUME_FIELDS and v is not None}
    if "eval_options" in out:
        out["eval_options"] = _parse_options(out["eval_options"], "--eval-option")
        if not out["eval_options"]:
            del out["eval_options"]
    return out


def _cli_options(f: Callable) -> Callable:
    """The options ``deep train`` and ``deep sweep`` share that are not TrainConfig fields."""
    opts = [
        click.option("--preset", default=None,
                     help="Architecture preset (nvae: small | paper; same as --model-option preset=...)."),
        click.option("--no-eval", is_flag=True, help="Skip the RD evaluation after training."),
        click.option("--quiet", is_flag=True, help="No progress bars."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _recommended_note() -> str:
    """One sentence on the recommended settings of the registered datasets."""
    from deep.data.registry import dataset_names, dataset_spec

    listed = "; ".join(f"{name}: " + ", ".join(f"{k}={v}" for k, v in dataset_spec(name).recommended.items())
                       for name in dataset_names() if dataset_spec(name).recommended)
    return ("Options left at their defaults take the dataset's or family's recommended values"
            + (f" ({listed})" if listed else "")
            + "; an option you give always wins.")


def _config_from(opts: dict, **extra: Any):
    from deep.models.registry import default_family
    from deep.train.config import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    fields = {k: v for k, v in opts.items() if k in names}
    arch = opts["arch"] or default_family(opts["dataset"])
    fields["arch"] = _check_arch(arch, opts["dataset"])
    if "beta_range" in opts:
        fields["beta_a"], fields["beta_b"] = opts["beta_range"]
    fields["model_options"] = {**({"preset": opts["preset"]} if opts["preset"] else {}),
                               **_parse_options(opts["model_options"], "--model-option")}
    fields["data_options"] = _parse_options(opts["data_options"], "--data-option")
    fields["eval_options"] = _parse_options(opts["eval_options"], "--eval-option")
    fields.update(extra)
    return TrainConfig(**_family_defaults(fields))


_CURVE_COLUMNS = (("rate", "rate", 9), ("distortion", "distortion", 11), ("neg_elbo", "R+D", 9),
                  ("active_units", "AU", 4), ("mutual_information", "MI", 7), ("iw_nll", "IW-NLL", 9),
                  ("perplexity", "PPL", 9), ("bits_per_dim", "bits/dim", 9), ("tc", "TC", 8),
                  ("mig", "MIG", 6), ("mig_all_factors", "MIG-all", 7),
                  ("mig_discrete", "MIG-d", 6), ("fid", "FID", 8))


def _print_curve(results: dict) -> None:
    cols = [(k, label, w) for k, label, w in _CURVE_COLUMNS
            if isinstance(results.get(k), list) and all(v is not None for v in results[k])]
    click.echo(f"{'beta':>9}" + "".join(f" {label:>{w}}" for _, label, w in cols))
    for j, beta in enumerate(results["beta"]):
        cells = []
        for k, _, w in cols:
            v = results[k][j]
            cells.append(f" {v:{w}d}" if isinstance(v, int) and not isinstance(v, bool) else f" {v:{w}.3f}")
        click.echo(f"{beta:9.4g}" + "".join(cells))


def _evaluate_and_report(run_dir: Path, *, n_betas: int, iw_k: int, batch_size: int,
                         max_examples: int | None, progress: bool, **kwargs: Any) -> dict:
    from deep.evaluate import evaluate_run

    results = evaluate_run(run_dir, n_betas=n_betas, iw_k=iw_k, batch_size=batch_size,
                           max_examples=max_examples, progress=progress, **kwargs)
    _print_curve(results)
    checks = results.get("checks") or {}
    if len(results["beta"]) > 1 and checks:
        click.echo(f"rate non-increasing in beta: {checks['rate_nonincreasing']}; "
                   f"distortion non-decreasing in beta: {checks['distortion_nondecreasing']}")
    for note in (results.get("evaluation") or {}).get("notes") or ():
        click.echo(f"note: {note}")
    click.echo(f"results: {results['path']}")
    if results.get("previous"):
        click.echo(f"earlier results kept in {results['previous']}")
    if results.get("ais_path"):
        click.echo(f"{'beta':>9} {'AIS R':>9} {'AIS D':>10} {'enc R':>9} {'enc D':>10} {'gap':>8} {'BDMC':>7}"
                   "   (AIS point of the decoder at lam = 1/beta vs the encoder, same examples; nats)")
        bdmc = results.get("bdmc_gap") or [None] * len(results["beta"])   # absent when BDMC was not run
        for j, b in enumerate(results["beta"]):
            bd = bdmc[j]
            click.echo(f"{b:9.4g} {results['ais_rate_at_beta'][j]:9.2f} {results['ais_distortion_at_beta'][j]:10.2f} "
                       f"{results['ais_encoder_rate'][j]:9.2f} {results['ais_encoder_distortion'][j]:10.2f} "
                       f"{results['inference_gap'][j]:8.2f} {'-' if bd is None else f'{bd:.2f}':>7}")
        click.echo(f"AIS curves: {results['ais_path']} (draw: python -m paper_figures.fig_ais {results['ais_path']} "
                   "OUT_PREFIX)")
    if results.get("images"):
        click.echo(f"images:  {Path(results['path']).parent / results['images']['folder']}")
    return results


# ------------------------------------------------------------------------------------------
# commands
# ------------------------------------------------------------------------------------------
@click.group()
def deep() -> None:
    """Deep MR-VAEs (Conv, ResNet, ...): train, sweep baselines, evaluate."""


@deep.command(epilog=_recommended_note())
@_config_options()
@_cli_options
@click.option("--resume", is_flag=True, help="Continue the run folder's checkpoint; the options must describe "
              "the same run (`deep resume RUN` reads them from the folder instead).")
def train(**opts: Any) -> None:
    """Train an MR-VAE (default) or a beta-VAE, then evaluate its RD curve.

    Every TrainConfig field is an option (defaults and help from deep/train/config.py). The run folder
    records them all (the data root as an absolute path); `mrvae-cli deep resume RUN` continues it from
    anywhere with those settings.

    Example: mrvae-cli deep train --dataset omniglot --epochs 1
    """
    from deep.train.distributed import is_main_process
    from deep.train import train as train_run

    main = is_main_process()          # under torchrun only process 0 prints and evaluates
    echo = click.echo if main else (lambda *a, **k: None)
    with user_errors():
        config = _config_from(opts)
        kind = "MR-VAE" if config.mr else f"beta-VAE (beta={config.beta:g}, {config.kl_schedule} KL)"
        echo(f"training {kind}: {config.dataset}/{config.arch}, {config.epochs} epoch(s)")
        run_dir = train_run(config, resume=opts["resume"], progress=not opts["quiet"], log=echo)
        echo(f"run folder: {run_dir}")
        echo(f"checkpoint: {run_dir / 'checkpoint.pt'}")
        echo(f"metrics:    {run_dir / 'metrics.jsonl'}")
        if not opts["no_eval"] and main:
            _evaluate_after_training(run_dir, progress=not opts["quiet"])


def _evaluate_after_training(run_dir: Path, *, progress: bool) -> dict:
    """The RD evaluation with the run's own settings (config.json); an earlier rd.json is kept in
    results/previous/."""
    from deep.train import load_config

    config = load_config(run_dir)
    return _evaluate_and_report(run_dir, n_betas=config.n_betas, iw_k=config.iw_k,
                                batch_size=config.eval_batch_size, max_examples=config.eval_examples or 0,
                                progress=progress, data_dir=config.data_dir, on_existing="keep")


@deep.command()
@click.argument("run", type=click.Path())
@_override_options(_RESUME_FIELDS)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--no-eval", is_flag=True, help="Skip the RD evaluation after training.")
def resume(run: str, quiet: bool, no_eval: bool, **opts: Any) -> None:
    """Continue the run in folder RUN with the settings stored there, then evaluate it.

    The run's configuration comes from RUN/config.json (or, when that is missing, from its checkpoint),
    training continues from its newest readable checkpoint, and the evaluation uses the run's own
    settings. The options below change runtime settings only (the run records them); anything else would
    train another model: start a new run for that.
    """
    from deep.train.distributed import is_main_process
    from deep.train import resume_run

    main = is_main_process()          # under torchrun only process 0 prints and evaluates
    with user_errors():
        run_dir = resume_run(run, overrides=_overrides_from(opts), progress=not quiet,
                             log=click.echo if main else None)
        if main:
            click.echo(f"run folder: {run_dir}")
        if not no_eval and main:
            _evaluate_after_training(run_dir, progress=not quiet)


@deep.command(epilog=_recommended_note())
@_config_options(exclude=_SWEEP_EXCLUDED)
@_cli_options
@click.option("--schedules", default="constant,linear", show_default=True,
              help="Comma-separated KL schedules: constant, linear, cyclical.")
@click.option("--betas", default=None,
              help="Comma-separated betas (default: 10 log-spaced over the family's range, [0.01, 10] for images).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Train N runs at once in separate processes (each with cores // N threads unless --threads).")
def sweep(**opts: Any) -> None:
    """Train the 10 baseline beta-VAEs (per schedule) with one shared config.

    The options are the TrainConfig fields a beta-VAE uses (beta and the KL schedule come from --betas and
    --schedules).
    """
    import numpy as np

    from deep.train.distributed import is_main_process
    from deep.experiments.sweep import sweep as sweep_runs

    main = is_main_process()          # under torchrun only process 0 prints
    echo = click.echo if main else (lambda *a, **k: None)
    with user_errors():
        schedules = [s for s in opts["schedules"].replace(" ", "").split(",") if s]
        config = _config_from(opts, mr=False)
        # default: 10 betas log-spaced over the family's range ([0.01, 10]: exactly the paper's image
        # baselines, deep.train.BASELINE_BETAS; [0.1, 10] for dSprites)
        betas = _float_list(opts["betas"], "'--betas'") or [
            float(b) for b in np.logspace(np.log10(config.beta_a), np.log10(config.beta_b), 10)]
        echo(f"sweep: {len(betas)} betas x {len(schedules)} schedule(s) on {config.dataset}/{config.arch}, "
             f"{config.epochs} epoch(s) each" + (f", {opts['jobs']} at a time" if opts["jobs"] > 1 else ""))
        sweep_dir = sweep_runs(config, betas=betas, schedules=schedules, evaluate=not opts["no_eval"],
                               eval_examples=config.eval_examples, progress=not opts["quiet"], log=echo,
                               jobs=opts["jobs"])
        if not main:
            return
        index = json.loads((sweep_dir / "index.json").read_text())
        if not opts["no_eval"]:
            echo(f"{'schedule':>9} {'beta':>9} {'rate':>9} {'distortion':>11} {'R+D':>9}")
            for entry in index["runs"]:
                rd = json.loads((sweep_dir / entry["results"]).read_text())
                echo(f"{entry['schedule']:>9} {entry['beta']:9.4g} {rd['rate'][0]:9.3f} "
                     f"{rd['distortion'][0]:11.3f} {rd['neg_elbo'][0]:9.3f}")
        echo(f"sweep folder: {sweep_dir}")
        echo(f"index:        {sweep_dir / 'index.json'}")


@deep.command()
@click.argument("run", type=click.Path())
@click.option("--n-betas", type=click.IntRange(min=1), default=None, help="Betas on the curve (default: the run's, 20).")
@click.option("--betas", default=None, help="Comma-separated betas instead of the log-spaced grid.")
@click.option("--iw-k", type=click.IntRange(min=0), default=None, help="Importance samples for the IW-NLL (0: off).")
@click.option("--split", default="test", show_default=True, help="train, valid or test.")
@click.option("--batch-size", "--eval-batch-size", "batch_size", type=click.IntRange(min=1), default=None,
              help="Test images per pass (default: the run's eval_batch_size).")
@click.option("--max-examples", "--eval-examples", "max_examples", type=click.IntRange(min=2), default=None,
              help="Evaluate the first N examples only (default: the run's eval_examples, else all).")
@click.option("--all-examples", is_flag=True, help="Evaluate every example of the split, whatever the run's "
              "eval_examples.")
@click.option("--eval-option", "eval_options", multiple=True, metavar="KEY=VALUE",
              help="Evaluation options (the loop's, MIG's, the family's), merged over the run's. Repeatable.")
@click.option("--mi-examples", type=click.IntRange(min=2), default=None,
              help="Examples in the aggregate posterior of the MI estimate (default: all evaluated).")
@click.option("--per-beta", is_flag=True, help="One pass over the data per beta instead of one batched pass.")
@click.option("--beta-chunk", type=click.IntRange(min=1), default=None,
              help="At most this many betas per batched pass (bounds memory; default: all).")
@click.option("--max-rows", type=click.IntRange(min=0), default=None,
              help="Cap on rows (images x betas) per batched pass (default: 256 on CPU, 8192 on CUDA; 0: none).")
@click.option("--recalibrate-bn", is_flag=True, help="Recompute BatchNorm statistics at each beta (MR CNNs).")
@click.option("--no-images", is_flag=True, help="Skip the image grids.")
@click.option("--fid-samples", type=click.IntRange(min=0), default=0, show_default=True,
              help="FID of N prior samples per beta against N test images (needs pytorch-fid; 0: off).")
@click.option("--fid-weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The FID Inception-v3 weights file (pytorch-fid's TF-FID weights; default: looked up in "
                   "torch hub's checkpoint folder).")
@click.option("--download", is_flag=True, help="Let pytorch-fid download the FID Inception weights if missing.")
@click.option("--ais", is_flag=True, help="AIS rate-distortion curve of each beta's decoder (Huang et al. 2020), "
              "written to results/ais.json; see docs/ais.md.")
@click.option("--ais-steps", type=click.IntRange(min=1), default=500, show_default=True,
              help="AIS schedule length (intermediate distributions).")
@click.option("--ais-examples", type=click.IntRange(min=1), default=16, show_default=True,
              help="Test examples AIS runs on.")
@click.option("--ais-chains", type=click.IntRange(min=1), default=16, show_default=True, help="AIS chains per example.")
@click.option("--ais-bdmc", is_flag=True, help="Add bidirectional Monte Carlo (the AIS error bound) on simulated data.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the evaluation noise.")
@click.option("--device", default=None, help="Default: the run's device setting.")
@click.option("--threads", "--num-threads", "threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads (default: the run's num_threads, else torch's default). Two jobs on a "
                   "2-core machine: give each --threads 1.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Data root (default: the run's, else $MRVAE_DATA, else ~/.cache/mrvae/data).")
@click.option("--output", default=None,
              help="Results file name under RUN/results (default: rd.json, or rd_<split>.json); its images go to "
                   "results/images_<name>.")
@click.option("--overwrite", is_flag=True, help="Replace an existing result of that name (and its images); "
              "without it an existing result is never replaced.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def evaluate(run: str, n_betas: int | None, betas: str | None, iw_k: int | None, split: str,
             batch_size: int | None, max_examples: int | None, all_examples: bool, eval_options: tuple,
             mi_examples: int | None, per_beta: bool,
             beta_chunk: int | None, max_rows: int | None, recalibrate_bn: bool, no_images: bool,
             fid_samples: int, fid_weights: str | None, download: bool, ais: bool, ais_steps: int,
             ais_examples: int, ais_chains: int, ais_bdmc: bool, seed: int, device: str | None,
             threads: int | None, data_dir: str | None, output: str | None, overwrite: bool, quiet: bool) -> None:
    """Evaluate the run in folder RUN: RD curve, IW-NLL, active units, MI, image grids (and FID with
    --fid-samples).

    Settings not given are the run's own (n_betas, iw_k, eval_batch_size, eval_examples, eval_options,
    data root). An existing result is never replaced silently: choose another --output, or --overwrite.
    """
    if all_examples and max_examples:
        raise click.UsageError("--all-examples and --max-examples N contradict each other: give one")
    if (fid_weights or download) and not fid_samples:
        raise click.UsageError("--fid-weights and --download only apply to the FID: add --fid-samples N")
    if ais_bdmc and not ais:
        raise click.UsageError("--ais-bdmc only applies to AIS: add --ais")
    with user_errors():
        _evaluate_and_report(Path(run), n_betas=n_betas, iw_k=iw_k, batch_size=batch_size,
                             max_examples=0 if all_examples else max_examples, progress=not quiet, split=split,
                             sweep_options=_parse_options(eval_options, "--eval-option") or None,
                             on_existing="replace" if overwrite else "refuse",
                             betas=_float_list(betas, "'--betas'"), batched=not per_beta,
                             beta_chunk=beta_chunk, max_rows=max_rows, mi_examples=mi_examples,
                             recalibrate_bn=recalibrate_bn, images=not no_images, seed=seed, device=device,
                             num_threads=threads,
                             data_dir=data_dir, out_name=output, fid_samples=fid_samples,
                             fid_weights=fid_weights, download=download,
                             ais={"n_steps": ais_steps, "n_chains": ais_chains, "progress": not quiet} if ais else None,
                             ais_examples=ais_examples, ais_bdmc=ais_bdmc)


@deep.command()
@click.argument("run", type=click.Path())
@click.option("--beta", "betas", default=None, help="Comma-separated betas: one row of samples per beta.")
@click.option("--target-rate", type=float, default=None,
              help="Sample at the beta whose rate is R nats per example (bisection on log beta).")
@click.option("--target-distortion", type=float, default=None,
              help="Sample at the beta whose distortion is D nats per example.")
@click.option("--n", "n", type=click.IntRange(min=1, max=1024), default=16, show_default=True,
              help="Samples (or reconstructed test examples) per beta.")
@click.option("--out", type=click.Path(dir_okay=False), default="samples.png", show_default=True,
              help="The PNG to write (a grid labelled with beta).")
@click.option("--reconstructions", is_flag=True, help="Reconstruct the first N test examples instead of sampling.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the prior draws (the same at every beta).")
@click.option("--tol", type=click.FloatRange(min=0, min_open=True), default=0.01, show_default=True,
              help="Tolerance of --target-rate / --target-distortion (nats).")
@click.option("--strict", is_flag=True, help="Refuse betas outside the trained range instead of warning.")
@click.option("--eval-examples", "eval_examples", type=click.IntRange(min=2), default=None,
              help="Test examples the target search measures on (default: the run's eval_examples, else all).")
@click.option("--eval-batch-size", "eval_batch_size", type=click.IntRange(min=1), default=None,
              help="Test examples per pass of the target search (default: the run's).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Data root (default: the run's, else $MRVAE_DATA).")
def sample(run: str, betas: str | None, target_rate: float | None, target_distortion: float | None, n: int,
           out: str, reconstructions: bool, seed: int, tol: float, strict: bool, eval_examples: int | None,
           eval_batch_size: int | None, device: str, data_dir: str | None) -> None:
    """Draw prior samples (or reconstructions) of the trained model in RUN at given betas, or at the beta
    that gives a target rate or distortion, into a grid labelled with beta.

    Example: mrvae-cli deep sample runs/<run> --beta 0.1 --n 64 --out grid.png
    """
    given = [o for o, v in (("--beta", betas), ("--target-rate", target_rate),
                            ("--target-distortion", target_distortion)) if v is not None]
    if len(given) != 1:
        raise click.UsageError(f"give exactly one of --beta, --target-rate, --target-distortion (got "
                               f"{', '.join(given) or 'none'})")
    with user_errors():
        import torch

        from deep.evaluate import load_run
        from deep.evaluate.images import beta_label, grid_figure

        model = load_run(run, device=device, data_dir=data_dir, strict=strict)
        if betas is not None:
            grid = list(_float_list(betas, "'--beta'"))
        else:
            quantity, target = ("rate", target_rate) if target_rate is not None else ("distortion", target_distortion)
            search = model.beta_for_rate if quantity == "rate" else model.beta_for_distortion
            found = search(target, tol=tol, max_examples=eval_examples, batch_size=eval_batch_size)
            click.echo(f"target {quantity} {target:g} nats -> beta {found.beta:.6g} (rate {found.rate:.4f}, "
                       f"distortion {found.distortion:.4f} nats per example; {found.evaluations} evaluations)")
            grid = [found.beta]
        try:
            if reconstructions:
                x = model.data("test").get_batch(torch.arange(min(n, len(model.data("test")))))
                rows = [x.float().cpu()] + [model.reconstruct(x, b).float().cpu() for b in grid]
                labels = ["input"] + [beta_label(b) for b in grid]
                title = "reconstructions"
            else:
                rows = [model.sample(n, b, seed=seed).float().cpu() for b in grid]
                labels = [beta_label(b) for b in grid]
                title = f"prior samples (seed {seed}; the same z at every beta)"
        except NotImplementedError as exc:
            raise click.ClickException(str(exc)) from None
        if len(grid) == 1 and not reconstructions and n > 8:      # one beta: a square-ish grid
            width = math.ceil(math.sqrt(n))
            rows = [rows[0][i:i + width] for i in range(0, n, width)]
            if rows[-1].shape[0] < width:
                pad = torch.ones(width - rows[-1].shape[0], *rows[-1].shape[1:])
                rows[-1] = torch.cat([rows[-1], pad])
            labels = [labels[0]] + [""] * (len(rows) - 1)
        fig = grid_figure(rows, labels, title=title)
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=fig.dpi, facecolor="white")
        for b in grid:
            click.echo(f"beta {b:.6g}: {n} {'reconstructions' if reconstructions else 'prior samples'}")
        click.echo(f"samples: {out}")


def _sci(n: float) -> str:
    exp = len(str(int(round(n)))) - 2
    return f"{n / 10 ** exp:.2f}e{exp}"


@deep.command()
@click.option("--no-nvae", is_flag=True, help="Skip the NVAE rows (building the paper-size NVAE takes seconds).")
def params(no_nvae: bool) -> None:
    """Print Table 1: parameter counts of beta-VAEs and MR-VAEs (corrected exponents)."""
    from deep.models.convnets import parameter_table

    rows = parameter_table()
    click.echo("Table 1: parameters, beta-VAE -> MR-VAE (this implementation; paper values with corrected "
               "exponents)")
    head = (f"{'Data':<18} {'Arch':<7} {'beta-VAE':>12} {'MR-VAE':>12} {'Increase':>9}   "
            f"{'paper beta-VAE':>14} {'paper MR-VAE':>13} {'paper incr.':>11}")
    click.echo(head)
    click.echo("-" * len(head))
    for r in rows:
        arch = {"conv": "CNN", "resnet": "ResNet"}.get(r["arch"], r["arch"])
        click.echo(f"{r['data']:<18} {arch:<7} {r['beta_vae_params']:>12,} {r['mr_vae_params']:>12,} "
                   f"{r['increase_pct']:>8.2f}%   {_sci(r['paper_beta_vae_params']):>14} "
                   f"{_sci(r['paper_mr_vae_params']):>13} {r['paper_increase_pct']:>10.2f}%")
    click.echo("")
    click.echo("The paper prints x10^5 (CNN) and x10^4 (ResNet); counting the reference architectures shows "
               "every exponent is 10x too small (e.g. MNIST ResNet = 1,881,217 = 18.81 x 10^5).")
    click.echo("The paper's CNN increases (0.9-2%) match beta-conditioned BatchNorm on top of the gates; this "
               "implementation gates channels only (2 parameters per gated channel).")
    if not no_nvae:
        from deep.models.nvae.model import nvae_parameter_table

        click.echo("")
        click.echo("NVAE (preset 'paper'; every conv and SE linear gated):")
        for r in nvae_parameter_table():
            paper = (f"   paper {int(r['paper_beta_vae_params']):,} -> {int(r['paper_mr_vae_params']):,} "
                     f"(+{r['paper_increase_pct']:.2f}%)" if r["paper_beta_vae_params"] else "   paper: not given")
            click.echo(f"{r['data']:<18} {'NVAE':<7} {r['beta_nvae_params']:>12,} {r['mr_nvae_params']:>12,} "
                       f"{r['increase_pct']:>8.2f}%{paper}")
