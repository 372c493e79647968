"""Candidate settings for the default linear MR-VAE (README, "How the default was chosen").

Trains the MR-VAE of ``mrvae-cli linear compare`` alone (no beta-VAEs) on MNIST with one setting and
prints its relative excess test loss L/L* - 1 over the closed-form optimum on the 20-point beta grid,
the maximum, the number of grid points under 1%, and the process CPU / wall seconds (one thread).

    python bench/linear_candidates.py                                   # the default preset's gates
    python bench/linear_candidates.py --covariance-gate sigmoid         # the paper's gates
    python bench/linear_candidates.py --encoder-gate sqrt --beta-sampling stratified --epochs 60

REDUCED protocol (like the default preset): one learning rate, one seed, no learning-rate grid.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from linvae.closed_form import Spectrum, rd_curve, second_moment
from linvae.conditioning import BetaRange
from linvae.experiment import PRESETS
from linvae.mnist import load_mnist
from linvae.training import LinearRunSpec, exact_rate_distortion, train_linear_stacks


def main() -> None:
    d = PRESETS["default"]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder-gate", default=d.encoder_gate, choices=["sigmoid", "sqrt"])
    p.add_argument("--covariance-gate", default=d.covariance_gate, choices=["sigmoid", "exp_min"])
    p.add_argument("--beta-sampling", default=d.beta_sampling, choices=["example", "batch", "stratified"])
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--lr", type=float, default=d.learning_rates[0])
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--seed", type=int, default=d.seeds[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", help="append the result as one JSON line to this file")
    a = p.parse_args()

    torch.set_num_threads(1)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    x_train, x_test = load_mnist("train", a.data_dir), load_mnist("test", a.data_dir)
    spectrum = Spectrum.from_data(x_train)
    moment_test = second_moment(x_test, spectrum.mean)
    beta_range = BetaRange(d.beta_a, d.beta_b)
    spec = LinearRunSpec(baseline_betas=(), learning_rates=(a.lr,), seeds=(a.seed,), mr=True,
                         latent_dim=d.latent_dim, epochs=a.epochs, batch_size=a.batch_size,
                         warmup_fraction=d.warmup_fraction, beta_range=beta_range, beta_sampling=a.beta_sampling,
                         encoder_gate=a.encoder_gate, covariance_gate=a.covariance_gate,
                         init_log_variance=d.init_log_variance)
    trained = train_linear_stacks(torch.tensor(x_train - spectrum.mean, dtype=torch.float32), spec,
                                  progress=False, threads=1)
    grid = beta_range.grid(d.n_eval).numpy()
    optimum = rd_curve(spectrum, grid, d.latent_dim, moment=moment_test)["loss"]
    loss = []
    for beta in grid:
        rate, distortion = exact_rate_distortion(trained.mr, float(beta), moment_test, spectrum.mean)
        loss.append(float(distortion[0, 0] + beta * rate[0, 0]))
    excess = np.array(loss) / optimum - 1.0
    result = {"setting": {k: v for k, v in vars(a).items() if k not in ("data_dir", "json")},
              "protocol": "REDUCED: MR-VAE alone, one learning rate, one seed",
              "beta": grid.tolist(), "excess": excess.tolist(), "max_excess": float(excess.max()),
              "beta_of_max": float(grid[excess.argmax()]), "points_under_1pct": int((excess < 0.01).sum()),
              "cpu_seconds": time.process_time() - cpu0, "wall_seconds": time.perf_counter() - wall0}
    for beta, e in zip(grid, excess):
        print(f"{beta:9.4f} {100 * e:7.2f}%")
    print(f"max {100 * result['max_excess']:.2f}% at beta {result['beta_of_max']:.4g}; "
          f"{result['points_under_1pct']}/{len(grid)} points under 1%; "
          f"{result['cpu_seconds']:.0f} CPU s, {result['wall_seconds']:.0f} s wall")
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
