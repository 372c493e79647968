"""dSprites beta-TCVAE vs MR-beta-TCVAE: generation cache and one training epoch, side by side.

1. Generation: loads the full 737,280-image grid rendered by :func:`deep.data.dsprites.render`
   twice through :func:`deep.data.dsprites.load_split` (``source="generated"``): the first load renders
   and caches it (``~/.cache/mrvae/processed``; unless it was cached already, which is reported),
   the second reads the cache.  ``--fresh-cache`` renders into a temporary cache folder so that the
   first load always renders.
2. Training: one epoch over all 737,280 images (batch 2048, Adam 1e-3, the paper's set-up) of the
   MLP beta-TCVAE (beta = 1) and of the MR-beta-TCVAE (one beta per example, log-uniform on
   [0.1, 10]), both on the SAME batches, alternating the two models step by step so that both see
   the same machine load.  ``--steps N`` times only the first N steps of the epoch and extrapolates.
   Reports examples/s of each model and the MR / base time ratio.

Usage::

    python bench/bench_dsprites.py [--steps N] [--batch-size 2048] [--estimator mws|mss]
                                   [--threads T] [--fresh-cache] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deep.data import dsprites as ds  # noqa: E402
from deep.models.tcvae import build_model  # noqa: E402
from linvae.conditioning import BetaRange  # noqa: E402


def _load_twice(fresh: bool) -> tuple[ds.DSpritesData, dict]:
    tmp = tempfile.mkdtemp(prefix="mrvae-cache-") if fresh else None
    old = os.environ.get("XDG_CACHE_HOME")
    if tmp:
        os.environ["XDG_CACHE_HOME"] = tmp
    try:
        t0 = time.perf_counter()
        first = ds.load_split("dsprites", "train", source="generated", score=False)
        t1 = time.perf_counter()
        second = ds.load_split("dsprites", "train", source="generated", score=False)
        t2 = time.perf_counter()
        same = bool(torch.equal(first.get_batch(torch.arange(0, len(first), 9973)),
                                second.get_batch(torch.arange(0, len(second), 9973))))
        first_hit = bool(first.meta()["cache"]["cache_hit"])
        second_hit = bool(second.meta()["cache"]["cache_hit"])
        del first
    finally:
        if tmp:
            if old is None:
                os.environ.pop("XDG_CACHE_HOME", None)
            else:
                os.environ["XDG_CACHE_HOME"] = old
            shutil.rmtree(tmp, ignore_errors=True)
    info = {
        "n_images": len(second),
        "first_load_s": t1 - t0, "first_load_cache_hit": first_hit,
        "cached_load_s": t2 - t1, "second_load_cache_hit": second_hit,
        "cache_file": second.meta()["cache"]["cache_file"] if not fresh else "(temporary, removed)",
        "identical_after_reload": same,
    }
    info["speedup"] = info["first_load_s"] / max(1e-9, info["cached_load_s"])
    return second, info


def _epoch(data: ds.DSpritesData, *, batch_size: int, steps: int | None, estimator: str, lr: float,
           seed: int) -> dict:
    n = len(data)
    steps_per_epoch = math.ceil(n / batch_size)
    steps = steps_per_epoch if not steps else min(int(steps), steps_per_epoch)
    torch.manual_seed(seed)
    models = {"beta-TCVAE": build_model(mr=False, estimator=estimator, dataset_size=n),
              "MR-beta-TCVAE": build_model(mr=True, estimator=estimator, dataset_size=n)}
    opts = {k: torch.optim.Adam(m.parameters(), lr=lr) for k, m in models.items()}
    times = {k: 0.0 for k in models}
    losses: dict[str, list[float]] = {k: [] for k in models}
    beta_range = BetaRange(0.1, 10.0)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    load_s = 0.0
    for step in range(steps):
        t0 = time.perf_counter()
        x = data.get_batch(perm[step * batch_size:(step + 1) * batch_size], train=True)
        load_s += time.perf_counter() - t0
        b = x.shape[0]
        for name, model in models.items():
            beta = beta_range.sample(b, generator=g) if model.is_mr else torch.ones(b)
            t0 = time.perf_counter()
            out = model(x, beta)
            loss = model.objective(out, beta).mean()
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            opts[name].step()
            times[name] += time.perf_counter() - t0
            losses[name].append(float(loss.detach()))
    examples = min(n, steps * batch_size)
    res = {"steps_timed": steps, "steps_per_epoch": steps_per_epoch, "examples_timed": examples,
           "batch_size": batch_size, "estimator": estimator, "threads": torch.get_num_threads(),
           "batch_load_s": load_s, "models": {}}
    for name, model in models.items():
        rate = examples / times[name]
        res["models"][name] = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "train_s": times[name], "examples_per_s": rate,
            "epoch_s" + ("" if steps == steps_per_epoch else "_extrapolated"): n / rate,
            "loss_first": losses[name][0], "loss_last": losses[name][-1]}
    base, mr = res["models"]["beta-TCVAE"], res["models"]["MR-beta-TCVAE"]
    res["mr_over_base_time_ratio"] = mr["train_s"] / base["train_s"]
    res["mr_param_increase_pct"] = 100.0 * (mr["parameters"] - base["parameters"]) / base["parameters"]
    return res


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=None, help="time only the first N steps of the epoch")
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--estimator", choices=("mws", "mss"), default="mws")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh-cache", action="store_true", help="render into a temporary cache folder")
    p.add_argument("--json", default=None, help="write the results to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data, gen = _load_twice(args.fresh_cache)
    print(f"generation: first load {gen['first_load_s']:.1f} s "
          f"({'read an existing cache' if gen['first_load_cache_hit'] else 'rendered and cached'}), "
          f"cached load {gen['cached_load_s']:.2f} s ({gen['speedup']:.0f}x); identical: "
          f"{gen['identical_after_reload']}; cache: {gen['cache_file']}")
    ep = _epoch(data, batch_size=args.batch_size, steps=args.steps, estimator=args.estimator, lr=args.lr,
                seed=args.seed)
    for name, m in ep["models"].items():
        key = "epoch_s" if "epoch_s" in m else "epoch_s_extrapolated"
        print(f"{name:14s} {m['parameters']:>11,d} params  {m['examples_per_s']:8.0f} examples/s  "
              f"epoch {m[key] / 60:.1f} min{'' if key == 'epoch_s' else ' (extrapolated)'}  "
              f"loss {m['loss_first']:.1f} -> {m['loss_last']:.1f}")
    print(f"MR / base time: {ep['mr_over_base_time_ratio']:.3f}  (+{ep['mr_param_increase_pct']:.3f}% parameters); "
          f"{ep['steps_timed']} of {ep['steps_per_epoch']} steps timed, batch {ep['batch_size']}, "
          f"{ep['threads']} threads, estimator {ep['estimator']}")
    result = {"device": "cpu", "generation": gen, "epoch": ep}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
