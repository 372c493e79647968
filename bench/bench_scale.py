"""Training throughput at scale: 1 vs 2 processes (torchrun + DDP) and float32 vs bfloat16 (one run, ratios).

Every variant is the real trainer (:func:`deep.train.train`) launched by PyTorch's own launcher
(``python -m torch.distributed.run --standalone --nproc_per_node N``), training an MNIST-size ResNet
MR-VAE (28x28 binary images, batch 64 global) on synthetic data for a few dozen steps. Throughput is the
trainer's own ``examples_per_s`` (global examples per second, all processes together) of the epochs after
the first (warm-up) epoch. Variants alternate round by round (A B C, then C B A, ...) so they see the same
load on a shared machine; the median over rounds is reported.

CPU variants (cores = the CPU cores this process may use):

* ``1p fp32``: one process with ``cores`` threads;
* ``1p half fp32``: one process with ``cores // 2`` threads (what each of the two processes gets);
* ``2p fp32``: two gloo processes with ``cores // 2`` threads each (the same cores, split);
* ``1p half bf16``: one process with ``cores // 2`` threads under ``torch.autocast(bfloat16)``.

Printed ratios: 2 processes vs 1 process on the same cores, 2 processes vs one of them alone (scaling
efficiency = ratio / 2), and bf16 vs fp32 at the same thread count. On a machine shared with other jobs,
multi-threaded variants suffer most (OpenMP threads wait for descheduled siblings): compare ratios from one
run only, and read them with the load printed at the start.

With a CUDA GPU (``--device cuda``, or auto when one is present): 1 GPU fp32 / bf16 / fp16, and 2 processes
on 2 GPUs when there are at least two.

Usage::

    python bench/bench_scale.py [--rounds 2] [--steps 12] [--device cpu|cuda] [--json out.json]
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

_HERE = Path(__file__).resolve()


class SyntheticMNIST:
    """ImageSplit stand-in: fixed random binary 28x28 images (about 13% ones, like MNIST)."""

    name, split, shape, protocol, binarization = "synthetic", "train", (1, 28, 28), "synthetic binary 28x28", "static"

    def __init__(self, n: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = (torch.rand((n, 1, 28, 28), generator=g) < 0.13).float()

    def __len__(self) -> int:
        return self.x.shape[0]

    def get_batch(self, index, *, train=False, generator=None):
        return self.x[torch.as_tensor(index, dtype=torch.long)]

    def meta(self) -> dict:
        return {"name": self.name, "split": self.split, "n": len(self), "protocol": self.protocol}


def worker(spec: dict) -> None:
    """One variant, in every process torchrun started: train, and (process 0) write the throughput."""
    from deep.train.distributed import is_main_process
    from deep.train.runs import read_jsonl
    from deep.train import TrainConfig, train

    cfg = TrainConfig(**spec["config"])
    run_dir = train(cfg, data=SyntheticMNIST(spec["n"]), progress=False)
    if is_main_process():
        hist = read_jsonl(Path(run_dir) / "metrics.jsonl")
        warm = hist[1:] or hist
        Path(spec["result"]).write_text(json.dumps({
            "examples_per_s": sum(r["examples_per_s"] * r["time_s"] for r in warm) / sum(r["time_s"] for r in warm),
            "world_size": hist[-1]["world_size"], "final_loss": hist[-1]["loss"],
            "threads": torch.get_num_threads()}))


def run_variant(name: str, nproc: int, threads: int | None, precision: str, device: str, args, tmp: Path,
                round_no: int) -> dict:
    n = args.steps * args.batch_size
    result = tmp / f"{name.replace(' ', '_')}_{round_no}.json"
    config = dict(dataset="mnist", arch="resnet", mr=True, epochs=args.epochs, batch_size=args.batch_size,
                  lr=1e-3, device=device, out_dir=str(tmp), run_name=f"{name.replace(' ', '_')}_{round_no}",
                  num_threads=threads, precision=precision, seed=round_no)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           str(_HERE), "--worker", json.dumps({"config": config, "n": n, "result": str(result)})]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"variant {name!r} failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}")
    out = json.loads(result.read_text())
    out["wall_s"] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--rounds", type=int, default=2, help="Alternating rounds per variant (median reported).")
    p.add_argument("--steps", type=int, default=12, help="Optimisation steps per epoch.")
    p.add_argument("--epochs", type=int, default=2, help="Epochs per run (the first is warm-up).")
    p.add_argument("--batch-size", type=int, default=64, help="Global batch.")
    p.add_argument("--json", default=None, help="Also write the results here.")
    args = p.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return {}
    from deep.train.distributed import usable_cores

    cuda = torch.cuda.is_available() and args.device in ("auto", "cuda")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available")
    cores = usable_cores()
    half = max(1, cores // 2)
    if cuda:
        variants = [("1gpu fp32", 1, None, "fp32"), ("1gpu bf16", 1, None, "bf16"), ("1gpu fp16", 1, None, "fp16")]
        if torch.cuda.device_count() >= 2:
            variants.append(("2gpu fp32", 2, None, "fp32"))
        device = "cuda"
        named = {"bf16 / fp32 (1 GPU)": ("1gpu bf16", "1gpu fp32"), "fp16 / fp32 (1 GPU)": ("1gpu fp16", "1gpu fp32"),
                 "2 GPUs / 1 GPU": ("2gpu fp32", "1gpu fp32")}
    else:
        variants = [("1p fp32", 1, cores, "fp32"), ("1p half fp32", 1, half, "fp32"),
                    ("2p fp32", 2, half, "fp32"), ("1p half bf16", 1, half, "bf16")]
        device = "cpu"
        named = {f"2 processes x {half} thread(s) / 1 process x {cores} threads": ("2p fp32", "1p fp32"),
                 f"2 processes / 1 process x {half} thread(s) (scaling; 2.0 is linear)": ("2p fp32", "1p half fp32"),
                 f"bf16 / fp32 (1 process x {half} thread(s))": ("1p half bf16", "1p half fp32")}
    rates: dict[str, list[float]] = {v[0]: [] for v in variants}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"[bench_scale] {device}, {cores} cores (1-min load {load:.1f}), ResNet MR-VAE 28x28, global batch "
          f"{args.batch_size}, {args.steps} steps/epoch x {args.epochs} epochs, {args.rounds} round(s)")
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, nproc, threads, precision in (variants if r % 2 == 0 else variants[::-1]):
                out = run_variant(name, nproc, threads, precision, device, args, Path(tmp), r)
                rates[name].append(out["examples_per_s"])
                print(f"  round {r + 1} {name:<12} {out['examples_per_s']:8.1f} examples/s "
                      f"(world {out['world_size']}, {out['threads']} thread(s)/process, final loss "
                      f"{out['final_loss']:.1f}, wall {out['wall_s']:.1f} s)")
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratios = {label: med[a] / med[b] for label, (a, b) in named.items() if a in med and b in med}
    print("\nmedian examples/s: " + ", ".join(f"{k}: {v:.1f}" for k, v in med.items()))
    for k, v in ratios.items():
        print(f"throughput ratio {k}: {v:.2f}")
    out = {"device": device, "cores": cores, "load_at_start": load, "batch_size": args.batch_size,
           "steps_per_epoch": args.steps, "epochs": args.epochs, "rounds": args.rounds, "examples_per_s": med, "all": rates, "ratios": ratios,
           "torch": torch.__version__}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
