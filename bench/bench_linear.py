"""Throughput of the vectorised linear-VAE trainer (App. C.1 protocol), measured in one run.

Prints, side by side:
* this machine's float32 matmul peak (best of square GEMMs),
* a slice of the full protocol (3 seeds x 7 learning rates x (10 beta-VAEs + 1 MR-VAE) = 231
  models, batch 128): wall time per step, model-examples/second, achieved GFLOP/s and the
  fraction of the matmul peak, and the projected wall time of the full 200-epoch protocol,
* the same models trained one at a time, and the speed-up of the vectorised loop.

Usage: ``python bench/bench_linear.py [--steps 40] [--threads 2] [--json out.json]``.
Synthetic data of MNIST's shape is used (throughput does not depend on the pixel values).
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from linvae.experiment import PAPER_LEARNING_RATES
from linvae.training import LinearRunSpec, train_linear_stacks


def matmul_peak(threads: int, sizes=(1024, 2048), repeats: int = 8) -> float:
    """Best float32 GEMM rate in GFLOP/s."""
    torch.set_num_threads(threads)
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(repeats):
                a @ b
            best = max(best, 2 * n ** 3 * repeats / (time.perf_counter() - t) / 1e9)
    return best


def protocol_slice(steps: int, seeds, lrs, baselines: int, batch: int = 128, mr: bool = True):
    x = torch.rand(steps * batch, 784) - 0.13
    spec = LinearRunSpec(baseline_betas=tuple(float(b) for b in torch.logspace(-2, 1, baselines)) if baselines else (),
                         learning_rates=tuple(lrs), seeds=tuple(seeds), mr=mr, epochs=1, batch_size=batch)
    return train_linear_stacks(x, spec, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peak = matmul_peak(args.threads)
    print(f"float32 matmul peak: {peak:.1f} GFLOP/s ({args.threads} threads)")

    protocol_slice(3, (0, 1, 2), PAPER_LEARNING_RATES, 10)  # warm-up
    full = protocol_slice(args.steps, (0, 1, 2), PAPER_LEARNING_RATES, 10)
    n_models = 3 * 7 * 11
    full_protocol_examples = n_models * 200 * 60_000
    projected = full_protocol_examples / full.model_examples_per_second
    frac = full.flops_per_second / 1e9 / peak
    print(f"vectorised, {n_models} models, batch 128: {1e3 * full.seconds / full.steps:.0f} ms/step, "
          f"{full.model_examples_per_second:,.0f} model-examples/s, {full.flops_per_second / 1e9:.1f} GFLOP/s "
          f"= {100 * frac:.0f}% of the matmul peak")
    print(f"projected full App. C.1 protocol (231 trainings x 200 epochs x 60,000): {projected / 3600:.1f} h")

    beta_only = protocol_slice(args.steps, (0, 1, 2), PAPER_LEARNING_RATES, 10, mr=False)
    mr_only = protocol_slice(args.steps, (0, 1, 2), PAPER_LEARNING_RATES, 0, mr=True)
    print(f"  beta-VAE stack alone (210 models): {beta_only.flops_per_second / 1e9:.1f} GFLOP/s; "
          f"MR stack alone (21 models): {mr_only.flops_per_second / 1e9:.1f} GFLOP/s")

    one = protocol_slice(args.steps, (0,), (1e-3,), 1, mr=False)
    one_mr = protocol_slice(args.steps, (0,), (1e-3,), 0, mr=True)
    sequential_seconds_per_step = (210 * one.seconds + 21 * one_mr.seconds) / args.steps
    speedup = sequential_seconds_per_step / (full.seconds / full.steps)
    print(f"one model at a time: {1e3 * sequential_seconds_per_step:.0f} ms per step of all 231 models "
          f"-> vectorised speed-up {speedup:.1f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"matmul_peak_gflops": peak, "threads": args.threads, "steps": args.steps,
                       "models": n_models, "model_examples_per_second": full.model_examples_per_second,
                       "achieved_gflops": full.flops_per_second / 1e9, "fraction_of_peak": frac,
                       "projected_full_protocol_hours": projected / 3600,
                       "sequential_speedup": speedup}, f, indent=1)


if __name__ == "__main__":
    main()
