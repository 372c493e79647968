"""Side-by-side speed and memory of deep MR-VAEs vs beta-VAEs (one run, ratios printed).

1. Training throughput (examples/second) of an MR-VAE and a beta-VAE with the same network (ResNet,
   28x28 binary MNIST), through the real trainer (:func:`deep.train.train`), alternating the two kinds
   round by round so that both see the same machine load. Reports the MR overhead in %.
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
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from deep.evaluate import rd_sweep
from deep.nets import build_model
from deep.runs import read_jsonl
from deep.train import TrainConfig, resolve_device, train
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
        from deep.data import load_split
        return load_split("mnist", split, data_dir=data_dir), "binarised MNIST (real)"
    except Exception as exc:  # missing data: fall back, and say so
        print(f"[bench] real MNIST unavailable ({type(exc).__name__}); using synthetic images")
        return _Synthetic(n), "synthetic"


def bench_training(args, device) -> dict:
    data, source = _data("train", args.train_examples, args.data_dir)
    rates = {"mr": [], "beta": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = ("mr", "beta") if r % 2 == 0 else ("beta", "mr")
            for kind in order:
                cfg = TrainConfig(dataset="mnist", arch=args.arch, mr=(kind == "mr"), epochs=1,
                                  batch_size=128, device=str(device), out_dir=tmp, run_name=f"{kind}{r}",
                                  max_train_examples=args.train_examples, seed=r)
                run_dir = train(cfg, data=data, progress=False)
                rates[kind].append(read_jsonl(Path(run_dir) / "metrics.jsonl")[-1]["examples_per_s"])
    mr, beta = statistics.median(rates["mr"]), statistics.median(rates["beta"])
    return {"data": source, "examples_per_round": args.train_examples, "rounds": args.rounds,
            "mr_examples_per_s": mr, "beta_examples_per_s": beta,
            "mr_all": rates["mr"], "beta_all": rates["beta"],
            "mr_time_overhead_pct": 100.0 * (beta / mr - 1.0)}


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
        t0 = time.perf_counter()
        out = rd_sweep(model, data, betas, **extra, **kw)
        if device.type == "cuda":
            torch.cuda.synchronize()
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
from deep.nets import build_model

def status(key):  # kB fields of /proc/self/status (Linux); VmHWM is the peak RSS of this process image
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
mr, arch, device, steps = sys.argv[1] == "1", sys.argv[2], sys.argv[3], int(sys.argv[4])
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
    p.add_argument("--rounds", type=int, default=None, help="Alternating MR / beta rounds.")
    p.add_argument("--eval-examples", type=int, default=None, help="Test images on the RD curve.")
    p.add_argument("--eval-batch-size", type=int, default=100)
    p.add_argument("--n-betas", type=int, default=20)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="Also write the numbers to this file.")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    big = device.type == "cuda"
    args.train_examples = args.train_examples or (512 if args.quick else (20000 if big else 2048))
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.eval_examples = args.eval_examples or (200 if args.quick else (10000 if big else 1000))
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"[bench] device={device} threads={torch.get_num_threads()} arch={args.arch}")
    tr = bench_training(args, device)
    print(f"training  ({tr['data']}, {tr['examples_per_round']} examples x {tr['rounds']} rounds, median):")
    print(f"  beta-VAE {tr['beta_examples_per_s']:8.1f} examples/s   MR-VAE {tr['mr_examples_per_s']:8.1f} examples/s"
          f"   MR time overhead {tr['mr_time_overhead_pct']:+.1f}%  (paper: <= 5%)")
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
    result = {"device": str(device), "threads": torch.get_num_threads(), "arch": args.arch,
              "training": tr, "evaluation": ev, "memory": mem}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"[bench] wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
