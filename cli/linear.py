"""``mrvae-cli linear ...``: the closed-form linear VAE, its symbolic checks and Fig. 4."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click

from .common import data_dir_option, friendly_errors, parse_floats, parse_ints


@click.group()
def linear() -> None:
    """Linear VAE: exact theory (closed form, sympy) and the linear MR-VAE of Fig. 4."""


@linear.command()
@click.option("--preset", type=click.Choice(["default", "smoke", "paper"]), default="default", show_default=True,
              help="default: reduced CPU protocol (minutes, exp_min covariance gates); smoke: seconds; "
                   "paper: full App. C.1 (231 trainings, the paper's sigmoid gates).")
@click.option("--epochs", type=click.IntRange(min=1), help="Training epochs (paper: 200).")
@click.option("--lrs", "lrs", help="Comma-separated learning-rate grid (paper: 1e-2,3e-3,1e-3,3e-4,1e-4,3e-5,1e-5).")
@click.option("--seeds", help="Comma-separated seeds (paper: 0,1,2).")
@click.option("--seed", type=int, help="Shortcut for a single seed.")
@click.option("--batch-size", type=click.IntRange(min=1))
@click.option("--beta-range", nargs=2, type=float, metavar="A B", help="Log-uniform training range of beta.")
@click.option("--beta-sampling", type=click.Choice(["example", "batch", "stratified"]),
              help="One beta per example, one per batch, or one per example from each of B equal slices "
                   "of the log-beta range (stratified).")
@click.option("--encoder-gate", type=click.Choice(["sigmoid", "sqrt"]),
              help="MR encoder gate (paper and default: sigmoid; sqrt represents the joint optimum exactly).")
@click.option("--covariance-gate", type=click.Choice(["sigmoid", "exp_min"]),
              help="MR posterior-variance gate (paper: sigmoid; default preset: exp_min = exp(min(x, 0)), "
                   "which represents the joint optimum's variances min(1, beta/lambda) exactly).")
@click.option("--init-log-variance", type=float, help="Initial log posterior variance (default -4.6).")
@click.option("--max-train-examples", type=click.IntRange(min=100), help="Train on a subset (labelled reduced).")
@click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads.")
@click.option("--device", default=None, help="cpu or cuda (default: cpu).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="results/linear", show_default=True)
@data_dir_option
@click.option("--download", is_flag=True, help="Download MNIST if it is missing (needs internet).")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@friendly_errors
def compare(preset, epochs, lrs, seeds, seed, batch_size, beta_range, beta_sampling, encoder_gate,
            covariance_gate, init_log_variance, max_train_examples, threads, device, out_dir, data_dir, download,
            no_progress):
    """Fig. 4: linear MR-VAE vs 10 beta-VAEs vs the exact closed-form RD curve on MNIST."""
    from linvae.experiment import PRESETS, run_linear_compare
    from paper_figures import fig4

    cfg = PRESETS[preset]
    updates = {}
    if epochs is not None:
        updates["epochs"] = epochs
    if lrs:
        updates["learning_rates"] = parse_floats(lrs, "--lrs")
    if seeds:
        updates["seeds"] = parse_ints(seeds, "--seeds")
    if seed is not None:
        updates["seeds"] = (seed,)
    if batch_size:
        updates["batch_size"] = batch_size
    if beta_range:
        updates["beta_a"], updates["beta_b"] = beta_range
    if beta_sampling:
        updates["beta_sampling"] = beta_sampling
    if encoder_gate:
        updates["encoder_gate"] = encoder_gate
    if covariance_gate:
        updates["covariance_gate"] = covariance_gate
    if init_log_variance is not None:
        updates["init_log_variance"] = init_log_variance
    if max_train_examples:
        updates["max_train_examples"] = max_train_examples
    if threads:
        updates["threads"] = threads
    if device:
        updates["device"] = device
    cfg = replace(cfg, **updates)
    cfg.validate()
    click.echo(f"Protocol: {cfg.protocol_label()}")
    models = len(cfg.seeds) * len(cfg.learning_rates) * (cfg.n_baselines + 1)
    click.echo(f"Training {models} linear VAEs as one vectorised computation "
               f"({cfg.n_baselines} beta-VAEs + 1 MR-VAE per learning rate and seed).")
    results = run_linear_compare(cfg, out_dir, data_dir=data_dir, download=download, progress=not no_progress)
    figures = fig4.plot(Path(out_dir) / "results.json", Path(out_dir) / "fig4")
    ex = results["excess"]
    click.echo(f"\nRelative excess test loss over the closed-form optimum, L/L* - 1 (target for the MR-VAE: < 1%):")
    click.echo(f"{'beta':>9} {'MR-VAE':>9} {'best beta-VAE':>14}")
    for b, m, e in zip(ex["beta"], ex["mr_vae"], ex["beta_vae_envelope"]):
        click.echo(f"{b:9.4f} {100 * m:8.2f}% {100 * e:13.2f}%")
    click.echo(f"max MR-VAE excess {100 * ex['mr_vae_max']:.2f}% "
               f"({'target met' if ex['mr_vae_target_met'] else 'target NOT met'})")
    t = results["timing"]
    click.echo(f"time {t['total_seconds']:.0f} s (training {t['train_seconds']:.0f} s, "
               f"{t['achieved_gflops']:.1f} GFLOP/s); selected LR: MR-VAE {results['lr_selection']['mr_vae']}")
    click.echo(f"results: {Path(out_dir) / 'results.json'}")
    for f in figures:
        click.echo(f"figure:  {f}")


@linear.command()
@click.option("--details", is_flag=True, help="Show every proof step.")
@friendly_errors
def verify(details):
    """Prove the gate identities of the linear beta-VAE with sympy."""
    from linvae.symbolic import format_report, verify_all

    identities = verify_all()
    click.echo(format_report(identities, details=details))
    if not all(i.proved for i in identities):
        raise SystemExit(1)


@linear.command()
@click.option("--latent-dim", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--n-betas", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--beta-range", nargs=2, type=float, default=(0.01, 10.0), show_default=True, metavar="A B")
@click.option("--split", type=click.Choice(["train", "test"]), default="test", show_default=True,
              help="Data the optimum (fit on train) is evaluated on.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), default="results/linear/exact_curve.json",
              show_default=True)
@data_dir_option
@click.option("--download", is_flag=True, help="Download MNIST if it is missing (needs internet).")
@friendly_errors
def curve(latent_dim, n_betas, beta_range, split, out_file, data_dir, download):
    """Exact rate-distortion curve of the linear beta-VAE on MNIST (closed form)."""
    from linvae.closed_form import Spectrum, rd_curve, second_moment
    from linvae.conditioning import BetaRange
    from linvae.mnist import load_mnist

    grid = BetaRange(*beta_range).grid(n_betas).numpy()
    train = load_mnist("train", data_dir, download)
    spectrum = Spectrum.from_data(train)
    moment = None if split == "train" else second_moment(load_mnist("test", data_dir, download), spectrum.mean)
    result = rd_curve(spectrum, grid, latent_dim, moment=moment)
    payload = {"experiment": "linear_exact_curve", "latent_dim": latent_dim, "split": split,
               "conventions": {"units": "nats per example",
                               "distortion": "sigma^2 = 1 Gaussian NLL without (n/2) log(2 pi)",
                               "optimum": "joint optimum fit to the 60,000 training images"},
               "covariance_rank": spectrum.rank, **{k: v.tolist() for k, v in result.items()}}
    Path(out_file).parent.mkdir(parents=True, exist_ok=True)
    Path(out_file).write_text(json.dumps(payload, indent=1))
    click.echo(f"{'beta':>9} {'rate':>9} {'distortion':>11}")
    for b, r, d in zip(result["beta"], result["rate"], result["distortion"]):
        click.echo(f"{b:9.4f} {r:9.3f} {d:11.3f}")
    click.echo(f"written: {out_file}")
