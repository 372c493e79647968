"""Training throughput of the MR-NVAE vs the beta-NVAE (same hierarchy), side by side in one run.

Each timed step is a full optimisation step: forward through the hierarchy, ``model.objective`` (distortion +
weight * rate + the spectral regulariser), backward and an Adamax step.  Two MR-NVAEs draw from log-U[0.01, 10]:
one beta per example (the reference code's sampling; each gate multiplies its layer's output) and one beta per
batch (the paper's Algorithm 1; each gate is folded into its layer's weights); the beta-NVAE uses beta = 1.

The three kinds are interleaved STEP BY STEP (the order rotates every step) so that both see the same load on a
shared machine.  Per round of ``--steps`` steps each kind gets examples/s from wall-clock time and from process
CPU time (with one thread, CPU time does not count the time this process waits for other processes).
Reported: median examples/s, the median over rounds of the per-round ratio beta/MR (wall and CPU), and the MR
time overhead in % (paper section 3.4: at most 5%).

Synthetic images of the dataset's shape are used (throughput does not depend on pixel values).

Usage::

    python bench/bench_nvae.py [--preset small|paper] [--dataset mnist|celeba64] [--batch-size 32]
                               [--steps 10] [--rounds 10] [--threads 1] [--device cpu|cuda] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from deep.models.nvae.model import NVAE_DATASETS, build_nvae, count_parameters
from deep.train.runtime import ALLOCATOR_ENV, tune_cpu_allocator
from linvae.conditioning import BetaRange


def _images(dataset: str, n: int, seed: int = 0) -> torch.Tensor:
    shape, likelihood = NVAE_DATASETS[dataset]
    g = torch.Generator().manual_seed(seed)
    if likelihood == "bernoulli":
        return (torch.rand((n, *shape), generator=g) < 0.13).float()
    return torch.randint(0, 256, (n, *shape), generator=g).float() / 255.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: timed kinds: the beta-NVAE, the MR-NVAE with one beta per example (each gate multiplies its layer's
#: output) and with one beta per batch (the paper's Algorithm 1: every gate folded into its layer's weights)
KINDS = ("beta", "mr", "mr_batch")


class Stepper:
    """One model, its Adamax optimiser and its beta stream; :meth:`step` runs one timed optimisation step."""

    def __init__(self, model, x: torch.Tensor, kind: str, device: torch.device, seed: int = 0) -> None:
        self.model, self.x, self.kind, self.device = model, x, kind, device
        self.opt = torch.optim.Adamax(model.parameters(), lr=1e-3)
        self.gen = torch.Generator().manual_seed(seed)
        self.range = BetaRange()

    def step(self) -> tuple[float, float]:
        """Wall-clock and process-CPU seconds of one optimisation step."""
        b = self.x.shape[0]
        _sync(self.device)
        w0, c0 = time.perf_counter(), time.process_time()
        if self.kind == "mr":
            beta = self.range.sample(b, generator=self.gen).to(self.device)
        elif self.kind == "mr_batch":
            beta = self.range.sample(b, per="batch", generator=self.gen).to(self.device)
        else:
            beta = torch.ones(b, device=self.device)
        out = self.model(self.x, beta[:1] if self.kind == "mr_batch" else beta)
        loss = self.model.objective(out, beta).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        _sync(self.device)
        return time.perf_counter() - w0, time.process_time() - c0


def run(preset: str = "small", dataset: str = "mnist", batch_size: int = 32, steps: int = 10, rounds: int = 10,
        device: str = "cpu") -> dict:
    """Interleaved timing of the three kinds; returns the numbers (see the module docstring)."""
    dev = torch.device(device)
    x = _images(dataset, batch_size).to(dev)
    steppers = {}
    for kind in KINDS:
        torch.manual_seed(0)
        model = build_nvae(dataset, preset=preset, mr=(kind != "beta")).to(dev).train()
        steppers[kind] = Stepper(model, x, kind, dev)
    for st in steppers.values():  # warm-up (allocator, kernels)
        st.step()
    wall: dict[str, list[float]] = {k: [] for k in KINDS}
    cpu: dict[str, list[float]] = {k: [] for k in KINDS}
    for r in range(rounds):
        acc = {k: [0.0, 0.0] for k in steppers}
        for i in range(steps):
            j = (r + i) % len(KINDS)
            for kind in KINDS[j:] + KINDS[:j]:  # rotate the order every step
                dw, dc = steppers[kind].step()
                acc[kind][0] += dw
                acc[kind][1] += dc
        for kind in steppers:
            wall[kind].append(steps * batch_size / acc[kind][0])
            cpu[kind].append(steps * batch_size / max(acc[kind][1], 1e-9))
    out = {
        "preset": preset, "dataset": dataset, "device": str(dev), "threads": torch.get_num_threads(),
        "batch_size": batch_size, "steps_per_round": steps, "rounds": rounds,
        "beta_params": count_parameters(steppers["beta"].model), "mr_params": count_parameters(steppers["mr"].model),
        "beta_examples_per_s": statistics.median(wall["beta"]),
        "beta_cpu_examples_per_s": statistics.median(cpu["beta"]),
        "beta_all": wall["beta"], "beta_cpu_all": cpu["beta"],
    }
    for kind in ("mr", "mr_batch"):
        wall_ratio = statistics.median(b / m for b, m in zip(wall["beta"], wall[kind]))
        cpu_ratio = statistics.median(b / m for b, m in zip(cpu["beta"], cpu[kind]))
        out.update({
            f"{kind}_examples_per_s": statistics.median(wall[kind]),
            f"{kind}_cpu_examples_per_s": statistics.median(cpu[kind]),
            f"ratio_beta_over_{kind}_wall": wall_ratio, f"ratio_beta_over_{kind}_cpu": cpu_ratio,
            f"{kind}_time_overhead_pct_wall": 100.0 * (wall_ratio - 1.0),
            f"{kind}_time_overhead_pct_cpu": 100.0 * (cpu_ratio - 1.0),
            f"{kind}_all": wall[kind], f"{kind}_cpu_all": cpu[kind],
        })
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", choices=["small", "paper"])
    p.add_argument("--dataset", default="mnist", choices=sorted(NVAE_DATASETS))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=10, help="Timed optimisation steps per round and kind.")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, help="Also write the numbers to this file.")
    p.add_argument("--no-malloc-tuning", action="store_true",
                   help="Leave glibc's allocator at its defaults (deep/runtime.py; compare both).")
    args = p.parse_args(argv)
    if args.no_malloc_tuning:  # subprocesses and the trainer inherit the switch
        os.environ[ALLOCATOR_ENV] = "0"
    allocator = (tune_cpu_allocator() if torch.device(args.device).type == "cpu"
                 else {"applied": False, "reason": "not CPU"})
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"[bench] NVAE preset={args.preset} dataset={args.dataset} device={args.device} "
          f"threads={torch.get_num_threads()} batch={args.batch_size} steps/round={args.steps} rounds={args.rounds} "
          f"malloc tuning={'on' if allocator['applied'] else 'off'}")
    res = run(args.preset, args.dataset, args.batch_size, args.steps, args.rounds, args.device)
    print(f"  parameters: beta-NVAE {res['beta_params']:,}  MR-NVAE {res['mr_params']:,} "
          f"(+{100.0 * (res['mr_params'] / res['beta_params'] - 1):.2f}%)")
    for kind, label in (("mr", "one beta per example"), ("mr_batch", "one beta per batch (gates folded)")):
        print(f"  MR-NVAE, {label}:")
        print(f"    wall: beta-NVAE {res['beta_examples_per_s']:8.1f} examples/s  MR-NVAE "
              f"{res[kind + '_examples_per_s']:8.1f} examples/s  ratio beta/MR {res['ratio_beta_over_' + kind + '_wall']:.3f}"
              f"  MR overhead {res[kind + '_time_overhead_pct_wall']:+.1f}%")
        print(f"    CPU : beta-NVAE {res['beta_cpu_examples_per_s']:8.1f} examples/s  MR-NVAE "
              f"{res[kind + '_cpu_examples_per_s']:8.1f} examples/s  ratio beta/MR {res['ratio_beta_over_' + kind + '_cpu']:.3f}"
              f"  MR overhead {res[kind + '_time_overhead_pct_cpu']:+.1f}%   (paper: <= 5%)")
    res["cpu_allocator"] = allocator
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    return res


if __name__ == "__main__":
    main()
