"""Speed of the AIS rate-distortion kernel (deep.evaluate.ais), measured in one run; and the AIS-vs-exact
table of docs/ais.md.

Speed mode (default) prints, side by side:
* decoder evaluations per second of the AIS kernel (HMC transitions: one evaluation = one row of z through
  the distortion AND its gradient) for a linear decoder (784 x 32, float32) and for the Conv/ResNet MNIST
  decoder of ``deep.models.convnets.build_model("mnist", "resnet")`` (MR-VAE, untrained weights: speed does
  not depend on them), and their ratio;
* the wall time of one full AIS RD curve (step-size run + frozen run) of the ResNet decoder at one beta
  with the example settings, the measured evaluations per second of that run, and the projected wall time
  of the same settings at ``--betas`` betas;
* the largest schedule length that keeps ``--betas`` curves under ``--budget-min`` minutes.

Oracle mode (``--oracle``) prints the Markdown table of docs/ais.md: AIS vs the exact curve
(:mod:`linvae.decoder_rd`) of the linear VAE's decoder at its joint optimum on MNIST (k = 32), and BDMC.

Usage::

    python bench/bench_ais.py [--threads 1] [--rows 256] [--examples 8 --chains 8 --adapt-chains 4
                               --steps 100 --leapfrog 5] [--betas 5] [--json out.json]
    python bench/bench_ais.py --oracle [--data-dir DIR]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from deep.evaluate.ais import AISSettings, DistortionTarget, ais_rd_curve, bdmc, gaussian_data_sampler, hmc_step


def kernel_rate(distortion, x: torch.Tensor, latent_dim: int, chains: int, leapfrog: int = 5,
                seconds: float = 4.0) -> float:
    """Decoder evaluations (value + gradient, one row each) per second inside HMC transitions."""
    target = DistortionTarget(distortion, x, chains)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn((chains, x.shape[0], latent_dim), generator=gen, dtype=x.dtype)
    d, g = target(z)
    eps = torch.full((x.shape[0],), 0.1, dtype=torch.float64)
    z, d, g, *_ = hmc_step(z, d, g, 1.0, eps, leapfrog, target, gen)  # warm-up
    n0, t0 = target.evals, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        z, d, g, *_ = hmc_step(z, d, g, 1.0, eps, leapfrog, target, gen)
    return (target.evals - n0) / (time.perf_counter() - t0)


def resnet_distortion(beta: float = 0.5):
    from deep.models.convnets import build_model

    model = build_model("mnist", "resnet").eval().requires_grad_(False)
    return (lambda x, z: model.distortion(model.decode(z, beta).logits, x)), model.latent_dim


def linear_distortion(n: int = 784, k: int = 32):
    gen = torch.Generator().manual_seed(1)
    dec = torch.randn(n, k, generator=gen) / 10
    return (lambda x, z: 0.5 * ((x - z @ dec.T) ** 2).sum(-1)), k


def speed(args) -> dict:
    torch.set_num_threads(args.threads)
    chains = 16
    b = max(1, args.rows // chains)
    x_bin = (torch.rand(b, 1, 28, 28, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    lin, k_lin = linear_distortion()
    res, k_res = resnet_distortion()
    rate_lin = kernel_rate(lin, x_bin.reshape(b, -1), k_lin, chains)
    rate_res = kernel_rate(res, x_bin, k_res, chains)
    print(f"AIS kernel, {args.threads} thread(s), {b * chains} rows per decoder call (HMC, 5 leapfrog steps):")
    print(f"  linear decoder 784x32      : {rate_lin:>12,.0f} decoder evaluations/s")
    print(f"  ResNet MNIST decoder (MR)  : {rate_res:>12,.0f} decoder evaluations/s")
    print(f"  ratio linear / ResNet      : {rate_lin / rate_res:>12.1f}x")

    s = AISSettings(n_steps=args.steps, lam_max=args.lam_max, n_chains=args.chains,
                    n_chains_adapt=args.adapt_chains, n_leapfrog=args.leapfrog, batch_size=args.examples,
                    include=(2.0,))
    x = (torch.rand(args.examples, 1, 28, 28, generator=torch.Generator().manual_seed(3)) < 0.3).float()
    t0 = time.perf_counter()
    result = ais_rd_curve(res, k_res, x, s)
    wall = time.perf_counter() - t0
    per_beta = wall
    evals = result.decoder_evals
    print(f"example: ResNet decoder at one beta, {args.examples} examples x {args.chains} chains "
          f"({args.adapt_chains} in the step-size run), {args.steps} steps to lam={args.lam_max}, "
          f"{args.leapfrog} leapfrog: {wall:.1f} s wall, {evals:,} evaluations = {evals / wall:,.0f}/s "
          f"(frozen-run acceptance {np.mean(result.accept_rate):.2f})")
    projected = args.betas * per_beta
    print(f"  projected for {args.betas} betas: {projected / 60:.1f} min")
    per_step = per_beta / args.steps
    max_steps = int(args.budget_min * 60 / (args.betas * per_step))
    print(f"  largest schedule under {args.budget_min:.0f} min for {args.betas} betas with these settings "
          f"and {args.threads} thread(s): {max_steps} steps")
    return {"threads": args.threads, "rows": b * chains, "linear_evals_per_s": rate_lin,
            "resnet_evals_per_s": rate_res, "ratio": rate_lin / rate_res,
            "example": {"examples": args.examples, "chains": args.chains, "adapt_chains": args.adapt_chains,
                        "steps": args.steps, "leapfrog": args.leapfrog, "lam_max": args.lam_max,
                        "wall_s": wall, "decoder_evals": evals, "projected_s_for_betas": projected,
                        "betas": args.betas, "max_steps_in_budget": max_steps}}


def oracle(args) -> dict:
    """AIS vs exact on the linear VAE's decoder (joint optimum on MNIST, k = 32) at beta = 1/lam_point."""
    from linvae.closed_form import Spectrum, joint_optimum
    from linvae.decoder_rd import decoder_rd
    from linvae.mnist import load_mnist

    torch.set_num_threads(args.threads)
    k, beta = 32, 0.1
    train = load_mnist("train", args.data_dir)
    test = load_mnist("test", args.data_dir)[: args.oracle_examples]
    spectrum = Spectrum.from_data(train)
    dec = joint_optimum(spectrum, beta, k).decoder
    d_t, mu_t = torch.tensor(dec), torch.tensor(spectrum.mean)

    def dist(x, z):
        return 0.5 * ((x - mu_t - z @ d_t.T) ** 2).sum(-1)

    lam_points = (0.01, 0.1, 1.0, 1 / beta, 100.0)
    s = AISSettings(n_steps=args.oracle_steps, lam_max=100.0, lam_min=1e-3, n_chains=16, n_leapfrog=10,
                    batch_size=args.oracle_examples, include=lam_points, seed=0)
    t0 = time.perf_counter()
    res = ais_rd_curve(dist, k, torch.tensor(test), s)
    wall = time.perf_counter() - t0
    sims = {}
    for lam_b in (1 / beta, 100.0):
        sims[lam_b] = bdmc(dist, k, gaussian_data_sampler(lambda z: mu_t + z @ d_t.T, 1.0), args.oracle_examples,
                           s, lam=lam_b, dtype=torch.float64)
    exact = decoder_rd(dec, test, spectrum.mean, res.lam)
    m = res.mean()
    rows = []
    print(f"Linear VAE decoder D*(beta={beta}) on MNIST (k={k}, sigma2=1, distortion without the 2pi constant), "
          f"{args.oracle_examples} test images, AIS: {s.n_steps} geometric steps to lam=100, "
          f"{s.n_chains} chains, {s.n_leapfrog} leapfrog steps; wall {wall:.0f} s ({args.threads} thread)\n")
    print("| λ | exact R | AIS R ± se | exact D | AIS D ± se | exact log Z | AIS log Z ± se | ESS |")
    print("|---|---|---|---|---|---|---|---|")
    for lam in lam_points:
        i = res.index_of(lam)
        row = {"lam": lam, **{f"exact_{key}": float(exact[key][:, i].mean()) for key in
                              ("rate", "distortion", "log_partition")},
               **{key: float(m[key][i]) for key in m if key != "lam"}}
        rows.append(row)
        print(f"| {lam:g} | {row['exact_rate']:.2f} | {row['rate']:.2f} ± {row['rate_se']:.2f} | "
              f"{row['exact_distortion']:.2f} | {row['distortion']:.2f} ± {row['distortion_se']:.2f} | "
              f"{row['exact_log_partition']:.2f} | {row['log_partition']:.2f} ± {row['log_partition_se']:.2f} | "
              f"{row['ess']:.1f} |")
    print()
    for lam_b, sim in sims.items():
        ex_b = decoder_rd(dec, sim.data, spectrum.mean, [lam_b])["log_partition"][:, 0]
        print(f"BDMC at λ={lam_b:g} on {len(sim.gap)} simulated examples: gap {sim.mean_gap:.2f} ± "
              f"{sim.to_dict()['gap_se']:.2f} nats (lower − exact {np.mean(sim.log_partition_lower - ex_b):+.2f}, "
              f"upper − exact {np.mean(sim.log_partition_upper - ex_b):+.2f}); {sim.seconds:.0f} s")
    return {"rows": rows, "wall_s": wall, "bdmc": {str(k_): v.to_dict() for k_, v in sims.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=256, help="rows per decoder call in the kernel measurement")
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--chains", type=int, default=8)
    parser.add_argument("--adapt-chains", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--leapfrog", type=int, default=5)
    parser.add_argument("--lam-max", type=float, default=10.0)
    parser.add_argument("--betas", type=int, default=5)
    parser.add_argument("--budget-min", type=float, default=10.0)
    parser.add_argument("--oracle", action="store_true", help="print the AIS-vs-exact table instead")
    parser.add_argument("--oracle-examples", type=int, default=16)
    parser.add_argument("--oracle-steps", type=int, default=1000)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    out = oracle(args) if args.oracle else speed(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
