"""Side-by-side speed and memory of deep MR-VAEs vs beta-VAEs (one run, ratios printed).

1. Training throughput (examples/second) of a beta-VAE and two MR-VAEs with the same network (ResNet,
   28x28 binary MNIST) through the real trainer (:func:`deep.train.train`): one beta per example (each
   gate multiplies its layer's output) and one beta per batch (the paper's Algorithm 1; each gate is
   folded into its layer's weights). The kinds rotate round by round so that all see the same machine
   load. Reports the MR overhead in %. Also the same three kinds step by step on one batch,
   interleaved, in wall and process-CPU time (robust to other load on the machine).
2. Evaluation of a 20-point RD curve on N test images: all betas in one batched pass per test batch vs
   one pass over the data per beta (same test batch size; and per beta with as many rows per forward
   as the batched pass). Reports the speed-ups.
3. Peak memory of training: each kind in a fresh subprocess (max RSS on CPU; max allocated on CUDA).

Usage::

    python bench/bench_deep.py [--quick] [--device cpu|cuda] [--data-dir DIR] [--json out.json]

Real MNIST is used when the data root has it; otherwise synthetic binary images of the same shape.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from deep.evaluate import rd_sweep
from deep.models.convnets import build_model
from deep.train.runs import read_jsonl
from deep.train.runtime import ALLOCATOR_ENV, tune_cpu_allocator
from deep.train import TrainConfig, train
from deep.train.config import resolve_device
from linvae.conditioning import BetaRange


class _Synthetic:
    """ImageSplit stand-in: random binary 28x28 images (used only when real MNIST is absent)."""

    protocol, binarization, name, shape = "synthetic binary 28x28", "static", "synthetic", (1, 28, 28)

    def __init__(self, n: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = (torch.rand((n, 1, 28, 28), generator=g) < 0.13).float()

    def __len__(self) -> int:
        return self.x.shape[0]

    def get_batch(self, index, *, train=False, generator=None):
        return self.x[torch.as_tensor(index)]

    def meta(self) -> dict:
        return {"name": self.name, "n": len(self), "protocol": self.protocol}


def _data(split: str, n: int, data_dir: str | None):
    try:
        from deep.data.images import load_split
        return load_split("mnist", split, data_dir=data_dir), "binarised MNIST (real)"
    except Exception as exc:  # missing data: fall back, and say so
        print(f"[bench] real MNIST unavailable ({type(exc).__name__}); using synthetic images")
        return _Synthetic(n), "synthetic"


#: the timed kinds: a beta-VAE, an MR-VAE with one beta per example (per-example gate multiplies) and an
#: MR-VAE with one beta per batch (the paper's Algorithm 1: gates folded into the weights)
TRAIN_KINDS = {"beta": dict(mr=False), "mr": dict(mr=True, beta_sampling="example"),
               "mr_batch": dict(mr=True, beta_sampling="batch")}


def bench_training(args, device) -> dict:
    data, source = _data("train", args.train_examples, args.data_dir)
    kinds = list(TRAIN_KINDS)
    rates = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = kinds[r % len(kinds):] + kinds[:r % len(kinds)]  # rotate: each kind sees the same load
            for kind in order:
                cfg = TrainConfig(dataset="mnist", arch=args.arch, epochs=1, **TRAIN_KINDS[kind],
                                  batch_size=128, device=str(device), out_dir=tmp, run_name=f"{kind}{r}",
                                  max_train_examples=args.train_examples, seed=r)
                run_dir = train(cfg, data=data, progress=False)
                rates[kind].append(read_jsonl(Path(run_dir) / "metrics.jsonl")[-1]["examples_per_s"])
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {"data": source, "examples_per_round": args.train_examples, "rounds": args.rounds,
            "mr_examples_per_s": med["mr"], "beta_examples_per_s": med["beta"],
            "mr_batch_examples_per_s": med["mr_batch"],
            "mr_all": rates["mr"], "beta_all": rates["beta"], "mr_batch_all": rates["mr_batch"],
            "mr_time_overhead_pct": 100.0 * (med["beta"] / med["mr"] - 1.0),
            "mr_batch_time_overhead_pct": 100.0 * (med["beta"] / med["mr_batch"] - 1.0)}


def bench_steps(args, device) -> dict:
    """Optimisation steps of the three kinds interleaved step by step (the order rotates every step) on one
    fixed batch: median wall and process-CPU seconds per step. With one thread, CPU time does not count the
    time this process waits for others, so the ratio holds on a shared machine where wall-clock rates of
    whole epochs (:func:`bench_training`) do not."""
    x = (torch.rand((128, 1, 28, 28), generator=torch.Generator().manual_seed(0)) < 0.13).float().to(device)
    rng, gen = BetaRange(), torch.Generator().manual_seed(0)
    kinds = list(TRAIN_KINDS)
    models = {}
    for kind in kinds:
        torch.manual_seed(0)
        m = build_model("mnist", args.arch, mr=TRAIN_KINDS[kind]["mr"]).to(device).train()
        models[kind] = (m, torch.optim.Adam(m.parameters(), 1e-3))

    def step(kind: str) -> tuple[float, float]:
        m, opt = models[kind]
        n = x.shape[0]
        if kind == "beta":
            beta = torch.ones(n)
        else:
            beta = rng.sample(n, per=TRAIN_KINDS[kind]["beta_sampling"], generator=gen)
        beta = beta.to(device)
        arg = beta[:1] if kind == "mr_batch" else beta  # one beta per batch goes in as one number (folded)
        if device.type == "cuda":
            torch.cuda.synchronize()
        w0, c0 = time.perf_counter(), time.process_time()
        out = m(x, arg)
        loss = (out.distortion + beta * out.rate).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - w0, time.process_time() - c0

    for kind in kinds:  # warm-up
        step(kind)
    wall = {k: [] for k in kinds}
    cpu = {k: [] for k in kinds}
    for i in range(args.steps):
        j = i % len(kinds)
        for kind in kinds[j:] + kinds[:j]:
            dw, dc = step(kind)
            wall[kind].append(dw)
            cpu[kind].append(dc)
    med_w = {k: statistics.median(v) for k, v in wall.items()}
    med_c = {k: statistics.median(v) for k, v in cpu.items()}
    return {"batch_size": x.shape[0], "steps": args.steps, "wall_s_per_step": med_w, "cpu_s_per_step": med_c,
            **{f"{k}_overhead_pct_{t}": 100.0 * (med[k] / med["beta"] - 1.0)
               for k in ("mr", "mr_batch") for t, med in (("wall", med_w), ("cpu", med_c))}}


def bench_eval(args, device) -> dict:
    data, source = _data("test", args.eval_examples, args.data_dir)
    torch.manual_seed(0)
    model = build_model("mnist", args.arch, mr=True).to(device).eval()
    betas = BetaRange().grid(args.n_betas).tolist()
    kw = dict(max_examples=args.eval_examples, n_images=0, iw_k=0)
    # warm-up (allocator, kernels)
    rd_sweep(model, data, betas[:2], batch_size=args.eval_batch_size, max_examples=2 * args.eval_batch_size,
             n_images=0)
    b = args.eval_batch_size
    variants = (
        ("batched_all", dict(batched=True, batch_size=b, max_rows=0)),        # all betas in one pass
        ("batched_default", dict(batched=True, batch_size=b, max_rows=None)),  # device row cap
        ("per_beta", dict(batched=False, batch_size=b)),                       # one pass per beta
    )
    t, rows, first = {}, {}, {}
    for name, extra in variants:
        if device.type == "cuda":
            torch.cuda.synchronize()
        out = rd_sweep(model, data, betas, **extra, **kw)  # its time_s covers the passes only
        t[name] = out["time_s"]
        rows[name] = out["rows_per_pass"]
        first[name] = (out["rate"], out["distortion"])
    ref = first["per_beta"]
    same = all(max(abs(x - y) for x, y in zip(first[k][i], ref[i])) <= 1e-3
               for k in first for i in (0, 1))
    return {"data": source, "n_examples": args.eval_examples, "n_betas": args.n_betas, "eval_batch_size": b,
            "time_s": t, "rows_per_pass": rows,
            "speedup_batched_all": t["per_beta"] / t["batched_all"],
            "speedup_batched_default": t["per_beta"] / t["batched_default"],
            "same_numbers": same}


_MEM_SCRIPT = r"""
import json, sys, torch
from deep.models.convnets import build_model

def status(key):  # kB fields of /proc/self/status (Linux); VmHWM is the peak RSS of this process image
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
mr, arch, device, steps = sys.argv[1] == "1", sys.argv[2], sys.argv[3], int(sys.argv[4])
if device == "cpu":  # the same allocator setting as the trainer (MRVAE_CPU_MALLOC is inherited)
    from deep.train.runtime import tune_cpu_allocator
    tune_cpu_allocator()
torch.manual_seed(0)
m = build_model("mnist", arch, mr=mr).to(device)
opt = torch.optim.Adam(m.parameters(), 1e-3)
x = (torch.rand(128, 1, 28, 28) < 0.13).float().to(device)
base = status("VmRSS")
try:
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak-RSS mark to the current RSS
except OSError:
    pass
if device.startswith("cuda"):
    torch.cuda.reset_peak_memory_stats()
for _ in range(steps):
    beta = torch.exp(torch.empty(128, device=device).uniform_(-4.6, 2.3))
    out = m(x, beta)
    loss = (out.distortion + beta * out.rate).mean()
    opt.zero_grad(); loss.backward(); opt.step()
peak = status("VmHWM")
res = {"peak_rss_mb": peak, "rss_before_training_mb": base, "training_increase_mb": peak - base}
if device.startswith("cuda"):
    res["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
print(json.dumps(res))
"""


def bench_memory(args, device) -> dict:
    out = {}
    for kind in ("beta", "mr"):
        proc = subprocess.run([sys.executable, "-c", _MEM_SCRIPT, "1" if kind == "mr" else "0", args.arch,
                               str(device), "3"], capture_output=True, text=True, check=True)
        out[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
    key = "cuda_max_allocated_mb" if device.type == "cuda" else "training_increase_mb"
    out["metric"] = key
    out["mr_over_beta"] = out["mr"][key] / out["beta"][key]
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="Small sizes (about a minute on 2 CPU cores).")
    p.add_argument("--device", default="auto")
    p.add_argument("--arch", default="resnet", choices=["resnet", "conv"])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--train-examples", type=int, default=None, help="Examples per timed epoch.")
    p.add_argument("--rounds", type=int, default=None, help="Rotating beta / MR / MR-per-batch rounds.")
    p.add_argument("--steps", type=int, default=None, help="Interleaved optimisation steps per kind.")
    p.add_argument("--eval-examples", type=int, default=None, help="Test images on the RD curve.")
    p.add_argument("--eval-batch-size", type=int, default=100)
    p.add_argument("--n-betas", type=int, default=20)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="Also write the numbers to this file.")
    p.add_argument("--no-malloc-tuning", action="store_true",
                   help="Leave glibc's allocator at its defaults (deep/runtime.py; compare both).")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    if args.no_malloc_tuning:  # subprocesses and the trainer inherit the switch
        os.environ[ALLOCATOR_ENV] = "0"
    allocator = tune_cpu_allocator() if device.type == "cpu" else {"applied": False, "reason": "not CPU"}
    big = device.type == "cuda"
    args.train_examples = args.train_examples or (512 if args.quick else (20000 if big else 2048))
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.steps = args.steps or (10 if args.quick else 30)
    args.eval_examples = args.eval_examples or (200 if args.quick else (10000 if big else 1000))
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"[bench] device={device} threads={torch.get_num_threads()} arch={args.arch} "
          f"malloc tuning={'on' if allocator['applied'] else 'off'}")
    tr = bench_training(args, device)
    print(f"training  ({tr['data']}, {tr['examples_per_round']} examples x {tr['rounds']} rounds, median):")
    print(f"  beta-VAE {tr['beta_examples_per_s']:8.1f} examples/s")
    print(f"  MR-VAE, one beta per example {tr['mr_examples_per_s']:8.1f} examples/s   MR time overhead "
          f"{tr['mr_time_overhead_pct']:+.1f}%  (paper: <= 5%)")
    print(f"  MR-VAE, one beta per batch   {tr['mr_batch_examples_per_s']:8.1f} examples/s   MR time overhead "
          f"{tr['mr_batch_time_overhead_pct']:+.1f}%  (gates folded into the weights)")
    st = bench_steps(args, device)
    print(f"training steps (batch {st['batch_size']}, {st['steps']} interleaved steps per kind, median per step):")
    for kind, label in (("beta", "beta-VAE"), ("mr", "MR-VAE, one beta per example"),
                        ("mr_batch", "MR-VAE, one beta per batch")):
        over = "" if kind == "beta" else (f"   overhead wall {st[kind + '_overhead_pct_wall']:+.1f}%  "
                                          f"CPU {st[kind + '_overhead_pct_cpu']:+.1f}%")
        print(f"  {label:<30} wall {1e3 * st['wall_s_per_step'][kind]:7.1f} ms  CPU "
              f"{1e3 * st['cpu_s_per_step'][kind]:7.1f} ms{over}")
    ev = bench_eval(args, device)
    print(f"evaluation ({ev['n_betas']}-point RD curve on {ev['n_examples']} images, "
          f"{ev['eval_batch_size']} test images per batch; rate/distortion identical: {ev['same_numbers']}):")
    for name, label in (("per_beta", "one pass per beta"), ("batched_all", "all betas in one pass"),
                        ("batched_default", "batched, default row cap")):
        ratio = ev["time_s"]["per_beta"] / ev["time_s"][name]
        speed = "" if name == "per_beta" else f"   speed-up vs one pass per beta {ratio:.2f}x"
        print(f"  {label:<26} {ev['rows_per_pass'][name]:5d} rows/pass {ev['time_s'][name]:8.2f} s{speed}")
    mem = bench_memory(args, device)
    extra = "" if device.type == "cuda" else (f" (peak RSS {mem['beta']['peak_rss_mb']:.0f} vs "
                                               f"{mem['mr']['peak_rss_mb']:.0f} MiB)")
    print(f"peak training memory ({mem['metric']}, batch 128, 3 steps): beta-VAE {mem['beta'][mem['metric']]:.0f} MiB"
          f"   MR-VAE {mem['mr'][mem['metric']]:.0f} MiB   ratio {mem['mr_over_beta']:.3f}{extra}")
    result = {"device": str(device), "threads": torch.get_num_threads(), "arch": args.arch, "cpu_allocator": allocator,
              "training": tr, "steps": st, "evaluation": ev, "memory": mem}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"[bench] wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
