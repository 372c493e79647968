"""Training throughput (tokens/second) of the MR LSTM text VAE vs the beta-VAE with the same network.

Both models are the He et al. (2019) LSTM VAE of :mod:`deep.models.text` (embedding 256, LSTM 256, latent 32,
decoder dropout 0.5) with the same initial weights; the MR-VAE adds the beta gates.  One training step is
what the trainer does: sample beta (MR: log-uniform on [0.01, 10], one per document; beta-VAE: 1), forward,
``mean(distortion + beta * rate)``, backward, gradient-norm clipping at 5, Adam.  Both kinds train on the
SAME length-bucketed batches, alternating step by step (beta, MR, MR, beta, ...) so that both see the same
machine load; the ratio of their tokens/second (tokens = words + ``</s>``) is measured in this one run,
together with the median of the per-step time ratios and the ratio per CPU second of this process (both
less sensitive to load from other processes on a shared machine).

Usage::

    python bench/bench_text.py [--quick] [--device cpu|cuda] [--threads N] [--data-dir DIR] [--json out.json]

Real Yahoo (reduced protocol: ``yahoo.valid.txt``) is used when the data root has it; otherwise synthetic
documents with Yahoo's length range (20-200 words) over a 20,000-id vocabulary.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from deep.models.text import TextSplit, Vocabulary, build_text_vae, load_split
from linvae.conditioning import BetaRange


def _synthetic(n: int, vocab_size: int = 20_000, seed: int = 0) -> TextSplit:
    g = torch.Generator().manual_seed(seed)
    words = torch.randint(20, 201, (n,), generator=g)
    width = int(words.max()) + 2
    tokens = torch.randint(4, vocab_size, (n, width), generator=g, dtype=torch.int64).to(torch.int32)
    cols = torch.arange(width).unsqueeze(0)
    tokens[cols > words.unsqueeze(1) + 1] = 0
    tokens[:, 0] = 1
    tokens[torch.arange(n), words + 1] = 2
    vocab = Vocabulary([f"w{i}" for i in range(vocab_size - 4)], source="synthetic")
    return TextSplit("synthetic", "train", tokens, words + 2, vocab, protocol="synthetic Yahoo-like documents")


def _data(data_dir: str | None, n: int) -> tuple[TextSplit, str]:
    try:
        return load_split("yahoo", "train", data_dir=data_dir, train_split="valid"), "Yahoo yahoo.valid.txt (real)"
    except Exception as exc:  # missing data: fall back, and say so
        return _synthetic(n), f"synthetic ({type(exc).__name__}: real Yahoo not found)"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=4, help="steps per kind per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per kind first")
    p.add_argument("--quick", action="store_true", help="2 rounds of 2 steps")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.steps = 2, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data, source = _data(args.data_dir, 2000)
    n_batches = args.steps + args.warmup
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    batches = [data.get_batch(b).to(device) for b in data.batches(perm, args.batch_size)[:n_batches]]

    torch.manual_seed(0)
    models = {kind: build_text_vae(len(data.vocab), mr=kind == "mr") for kind in ("beta", "mr")}
    missing, unexpected = models["mr"].load_state_dict(models["beta"].state_dict(), strict=False)
    assert not unexpected and all(".hyper." in k for k in missing)  # same base weights; only gates differ
    opts = {}
    for kind, model in models.items():
        model.to(device).train()
        opts[kind] = torch.optim.Adam(model.parameters(), lr=1e-3)
    beta_range = BetaRange()
    gen = torch.Generator().manual_seed(1)

    def step(kind: str, batch) -> None:
        model = models[kind]
        bsz = len(batch)
        beta = (beta_range.sample(bsz, generator=gen) if kind == "mr" else torch.ones(bsz)).to(device)
        out = model(batch, beta)
        loss = (out.distortion + beta * out.rate).mean()
        opts[kind].zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opts[kind].step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for kind in ("beta", "mr"):
        for batch in batches[:args.warmup]:
            step(kind, batch)
    timed = batches[args.warmup:]
    tokens_per_round = sum(int(b.target_counts.sum()) for b in timed)
    seconds: dict[str, list[float]] = {"beta": [], "mr": []}  # wall clock per step, same batch for both kinds
    cpu_seconds: dict[str, list[float]] = {"beta": [], "mr": []}  # this process's CPU time per step
    for r in range(args.rounds):
        for i, batch in enumerate(timed):
            for kind in (("beta", "mr") if (r + i) % 2 == 0 else ("mr", "beta")):
                sync()
                t0, c0 = time.perf_counter(), time.process_time()
                step(kind, batch)
                sync()
                seconds[kind].append(time.perf_counter() - t0)
                cpu_seconds[kind].append(time.process_time() - c0)
    total = {k: args.rounds * tokens_per_round / sum(v) for k, v in seconds.items()}
    cpu_total = {k: args.rounds * tokens_per_round / sum(v) for k, v in cpu_seconds.items()}
    pair_ratios = [b / m for b, m in zip(seconds["beta"], seconds["mr"])]
    n_params = {k: sum(q.numel() for q in m.parameters()) for k, m in models.items()}
    result = {
        "data": source, "device": str(device), "threads": torch.get_num_threads(), "batch_size": args.batch_size,
        "rounds": args.rounds, "steps_per_round": len(timed), "tokens_per_round": tokens_per_round,
        "tokens_per_s": total, "step_seconds": seconds,
        "ratio_mr_over_beta": total["mr"] / total["beta"],
        "tokens_per_cpu_s": cpu_total, "step_cpu_seconds": cpu_seconds,
        "cpu_ratio_mr_over_beta": cpu_total["mr"] / cpu_total["beta"],
        "median_step_ratio": statistics.median(pair_ratios),
        "mr_time_overhead_pct": 100.0 * (total["beta"] / total["mr"] - 1.0),
        "params": n_params, "param_increase_pct": 100.0 * (n_params["mr"] / n_params["beta"] - 1.0),
    }
    print(f"data: {source}; device {device}, {result['threads']} thread(s); batch {args.batch_size}; "
          f"{args.rounds} rounds x {len(timed)} steps ({tokens_per_round} tokens per round)")
    for kind, label in (("beta", "beta-VAE"), ("mr", "MR-VAE")):
        spread = f"{min(seconds[kind]):.3f}-{max(seconds[kind]):.3f} s/step"
        print(f"  {label:9s} {total[kind]:9.1f} tokens/s   ({spread}); {cpu_total[kind]:9.1f} tokens per CPU-s; "
              f"{n_params[kind]:,} parameters")
    print(f"  ratio MR/beta tokens/s = {result['ratio_mr_over_beta']:.3f} (median over paired steps "
          f"{result['median_step_ratio']:.3f}; per CPU second {result['cpu_ratio_mr_over_beta']:.3f}); "
          f"MR time overhead {result['mr_time_overhead_pct']:+.1f}%; "
          f"parameters +{result['param_increase_pct']:.3f}%")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
