"""Behaviour fixture of the deep trainer and evaluator: one short run of every model family on tiny data.

Each case trains 20 optimisation steps (160 examples, batch 8, fixed seed, one thread) and evaluates the
run at 3 betas log-spaced over its range through the public entry points (``deep.train.train``, ``deep.evaluate.evaluate_run``).
:func:`numbers` keeps every deterministic number of ``metrics.jsonl`` and ``results/rd.json`` (timings,
memory, paths and code versions dropped). ``tests/data/behaviour.json`` holds the numbers recorded
before the ``deep/`` restructure (commit efde188); ``tests/test_behaviour.py`` checks that the code
still produces them, so a move that changes behaviour fails.

Record again (only when a change is meant to alter these numbers; say which in the commit)::

    python tests/behaviour.py tests/data/behaviour.json
"""
from __future__ import annotations

import contextlib
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

STEPS, BATCH = 20, 8
N_TRAIN = STEPS * BATCH
#: keys whose values depend on the machine or the clock, not on the maths
VOLATILE = ("time", "per_s", "memory", "_mb", "elapsed", "path", "run", "code_version", "device",
            "files", "source", "cache")


def _discs(n: int, seed: int):
    """An ImageSplit of 28x28 binary discs at random places."""
    from deep.data.images import ImageSplit

    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    centre = torch.rand((n, 2, 1, 1), generator=g) * 20 + 4
    radius = torch.rand((n, 1, 1, 1), generator=g) * 4 + 3
    images = (((yy - centre[:, :1]) ** 2 + (xx - centre[:, 1:]) ** 2) < radius ** 2).to(torch.uint8)
    return ImageSplit("discs", "train" if seed == 0 else "test", images.numpy(), protocol="synthetic discs",
                      binarization="static", likelihood="bernoulli")


def _dsprites_grid(split: str):
    """A complete small dSprites factor grid (3x2x2x4x4 = 192 images, real rendering)."""
    from deep.data import dsprites as ds

    sizes = (3, 2, 2, 4, 4)
    own = ds.grid_classes(sizes)
    full = own * np.array([1, 5, 20, 10, 10])
    return ds.DSpritesData(ds.render(full, packed=True), own, ds.values_of(full), ds.grid_index(full), sizes,
                           split=split, source="test", protocol="test grid", grid="test grid 3x2x2x4x4")


def _corpus(root: Path) -> Path:
    """A Yahoo-layout corpus of random word documents (vocabulary of 30 words)."""
    g = torch.Generator().manual_seed(0)
    words = [f"w{i}" for i in range(30)]
    folder = root / "yahoo"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", N_TRAIN), ("valid", 40), ("test", 24)):
        lines = []
        for _ in range(n):
            k = int(torch.randint(2, 9, (1,), generator=g))
            lines.append(" ".join(words[int(i)] for i in torch.randint(0, 30, (k,), generator=g)))
        (folder / f"yahoo.{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def cases(root: Path) -> dict[str, dict[str, Any]]:
    """name -> TrainConfig fields, training data (or None: the dataset's loader), test data."""
    # beta_sampling and hyper_lr_mult pinned to the values the numbers were recorded with (the mrvae recipe's
    # default sampling is now stratified, its ResNet gate rate 100x): the fixture checks that the code computes
    # the same, not which default it picks
    common = dict(epochs=1, batch_size=BATCH, device="cpu", seed=0, n_betas=3, out_dir=str(root / "runs"),
                  beta_sampling="example", hyper_lr_mult=30.0)
    train_img, test_img = _discs(N_TRAIN, 0), _discs(24, 1)
    grid = _dsprites_grid("train")
    corpus = _corpus(root / "data")
    return {
        "resnet_mr": dict(config=dict(dataset="mnist", arch="resnet", lr=1e-3, **common),
                          train=train_img, test=test_img),
        "resnet_mr_monotone_batch": dict(
            config=dict(common, dataset="mnist", arch="resnet", lr=1e-3, beta_sampling="batch",
                        model_options={"monotone_decoder": True}), train=train_img, test=test_img),
        "resnet_beta": dict(config=dict(dataset="mnist", arch="resnet", mr=False, beta=0.5, kl_schedule="linear",
                                        lr=1e-3, **common), train=train_img, test=test_img),
        "conv_mr": dict(config=dict(dataset="mnist", arch="conv", lr=1e-3, latent_dim=8, **common),
                        train=train_img, test=test_img),
        "nvae_mr": dict(config=dict(dataset="mnist", arch="nvae", model_options={"preset": "small"},
                                    optimizer="adamax", lr=1e-2, iw_k=2, **common), train=train_img, test=test_img),
        "lstm_mr": dict(config=dict(dataset="yahoo", arch="lstm", lr=3e-3, latent_dim=2, iw_k=2,
                                    data_dir=str(corpus), max_train_examples=N_TRAIN,
                                    data_options={"verify": False},   # synthetic files, published names
                                    model_options={"embed_dim": 6, "hidden_dim": 6}, **common),
                        train=None, test=None),
        "mlp_tcvae_mr": dict(config=dict(dataset="dsprites", arch="mlp", objective="tcvae", beta_a=0.1, beta_b=10.0,
                                         lr=1e-3, max_train_examples=N_TRAIN,
                                         model_options={"hidden": 16},
                                         eval_options={"mig_samples": 50, "tc_batch_size": 64},
                                         **common),
                             train=grid, test=grid),
    }


def _keep(key: str) -> bool:
    return not any(v in key.lower() for v in VOLATILE)


def _flatten(obj: Any, prefix: str, out: dict[str, float]) -> None:
    if isinstance(obj, bool):
        out[prefix] = float(obj)
    elif isinstance(obj, (int, float)):
        out[prefix] = float(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if _keep(str(k)):
                _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _flatten(v, f"{prefix}[{i}]", out)


def numbers(run_dir: Path) -> dict[str, float]:
    """Every deterministic number of a run's metrics.jsonl and its evaluation's rate-distortion arrays."""
    out: dict[str, float] = {}
    for i, line in enumerate((run_dir / "metrics.jsonl").read_text().splitlines()):
        _flatten(json.loads(line), f"metrics[{i}]", out)
    rd = json.loads((run_dir / "results" / "rd.json").read_text())
    arrays = {k: v for k, v in rd.items() if isinstance(v, list) and len(v) == len(rd["beta"])}
    _flatten(arrays, "rd", out)
    return {k: v for k, v in out.items() if math.isfinite(v)}


def run_case(name: str, case: dict[str, Any]) -> dict[str, float]:
    from deep.evaluate import evaluate_run
    from deep.train import TrainConfig, train

    torch.manual_seed(0)
    config = TrainConfig(run_name=name, **case["config"])
    run_dir = train(config, data=case["train"], progress=False)
    evaluate_run(run_dir, data=case["test"], images=False, progress=False)  # 3 betas log-spaced over [a, b]
    return numbers(Path(run_dir))


@contextlib.contextmanager
def _one_thread():
    """torch on one thread inside the block (the fixture's numbers are recorded that way)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_all(root: Path) -> dict[str, dict[str, float]]:
    with _one_thread():
        return {name: run_case(name, case) for name, case in cases(root).items()}


def kernel_fingerprint() -> str:
    """A hash of the float32 bits of a few convolutions (one thread, fixed inputs): equal on CPUs whose
    convolution kernels round alike, so a recording made on one CPU kind can be told from another's."""
    import hashlib

    with _one_thread():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(8, 16, 14, 14, generator=g)
        h = hashlib.sha256()
        for c_in, c_out, k in ((16, 32, 3), (16, 16, 1), (16, 8, 4)):
            w = torch.randn(c_out, c_in, k, k, generator=g)
            w_t = torch.randn(c_in, c_out, k, k, generator=g)
            with torch.no_grad():
                h.update(torch.nn.functional.conv2d(x, w, padding=k // 2).numpy().tobytes())
                h.update(torch.nn.functional.conv_transpose2d(x, w_t, stride=2).numpy().tobytes())
        return h.hexdigest()[:16]


if __name__ == "__main__":  # pragma: no cover - recording
    with tempfile.TemporaryDirectory() as tmp:
        result = run_all(Path(tmp))
    result["_cpu"] = {"kernel_fingerprint": kernel_fingerprint()}
    target = Path(sys.argv[1])
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    runs = {k: v for k, v in result.items() if not k.startswith("_")}
    print(f"wrote {sum(len(v) for v in runs.values())} numbers of {len(runs)} runs to {target}")
