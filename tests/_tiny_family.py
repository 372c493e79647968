"""A tiny importable model family for tests that cross process boundaries (torchrun workers, sweep jobs).

A monkeypatched registry does not reach other processes, so the stand-ins live in this module: spawned
sweep workers unpickle ``load_split`` / ``build`` / ``rebuild`` by reference, and torchrun runs this file
as a script that registers the family before calling the trainer or the CLI.

* dataset ``tiny``: noisy binary copies of 4 prototype 1x6x6 patterns (dynamic binarisation in training);
* dataset ``tinyroot``: the same data, read only when the data root holds ``tiny/READY`` (so a test sees which
  data root a command used); option ``sleep`` (seconds per training batch) slows training down (kill tests);
* architecture ``tinymlp``: an MLP (MR-)VAE with a sigmoid encoder gate and a sqrt decoder gate.
  ``model_options={"sample": False}`` makes the encoder deterministic (``z = mu``): training then has
  no per-process randomness, which lets a multi-process run be compared with a one-process run up to
  floating-point rounding. ``{"nan_after": k, "nan_rank": r}`` makes the rate NaN after ``k`` training
  forwards in process ``r`` only (the NaN guard must stop every process).

Script use (under ``torchrun``; ``OUT`` receives ``rank<r>.json`` with what each process saw)::

    torchrun --nproc_per_node 2 tests/_tiny_family.py OUT lib '{"config": {...}, "stop_after_epochs": 2}'
    torchrun --nproc_per_node 2 tests/_tiny_family.py OUT cli deep train --dataset tiny --arch tinymlp ...
"""
from __future__ import annotations

import contextlib
import json
import math
import sys
from pathlib import Path

import torch
from torch import nn

from deep.models import DecoderOutput as DecOut, EncoderOutput as EncOut, GaussianLatentVAE, VAEOutput
from deep.models.objectives import gaussian_kl, get_distortion
from linvae.conditioning import BetaRange, Gate

SHAPE = (1, 6, 6)
DATASET, ARCH = "tiny", "tinymlp"
ROOTED = "tinyroot"
#: every model built in this process (the script reports what they saw)
BUILT: list["TinyVAE"] = []


class TinyVAE(GaussianLatentVAE):
    """MLP VAE on 1x6x6 images (hidden 16, 3 latents); the MR version has a sigmoid encoder gate and a sqrt
    decoder gate.

    It records what it trains on: ``seen_betas`` (one tensor per training forward) and ``calls`` (training
    forwards). Fault injection for the trainer's guards: ``nan_after`` (the rate is NaN after that many
    training forwards, in process ``nan_rank`` only) and ``poison_at`` (at that training forward a weight
    becomes NaN while the step's loss stays finite). ``batch_norm`` adds a BatchNorm after the first encoder
    layer; ``sample=False`` makes the encoder deterministic (``z = mu``).
    """

    def __init__(self, mr: bool = True, latent_dim: int = 3, hidden: int = 16,
                 beta_range: BetaRange = BetaRange(), *, sample: bool = True, batch_norm: bool = False,
                 nan_after: int | None = None, nan_rank: int = 0, arch: str = ARCH) -> None:
        super().__init__()
        self.is_mr, self.latent_dim, self.beta_range, self.sample_z = mr, latent_dim, beta_range, sample
        self.distortion = get_distortion("bernoulli")
        self._config = {"dataset": DATASET, "arch": arch, "mr": mr, "latent_dim": latent_dim, "hidden": hidden,
                       "distortion": "bernoulli", "beta_range": {"a": beta_range.a, "b": beta_range.b},
                       "sample": sample, "batch_norm": batch_norm}
        d = math.prod(SHAPE)
        self.enc1 = nn.Linear(d, hidden)
        self.enc_mu, self.enc_lv = nn.Linear(hidden, latent_dim), nn.Linear(hidden, latent_dim)
        self.dec1, self.dec2 = nn.Linear(latent_dim, hidden), nn.Linear(hidden, d)
        self.bn = nn.BatchNorm1d(hidden) if batch_norm else None
        self.g_enc = Gate(hidden, "sigmoid") if mr else None
        self.g_dec = Gate(hidden, "sqrt") if mr else None
        self.seen_betas: list[torch.Tensor] = []
        self.nan_after, self.nan_rank = nan_after, nan_rank
        self.poison_at: int | None = None

    @property
    def calls(self) -> int:
        return len(self.seen_betas)

    def _u(self, beta, n, like):
        beta = torch.as_tensor(beta, dtype=like.dtype, device=like.device).reshape(-1).expand(n)
        return self.beta_range.standardize(beta) if self.is_mr else None

    def encode(self, x, beta):
        h = self.enc1(x.flatten(1))
        if self.bn is not None:
            h = self.bn(h)
        if self.is_mr:
            h = self.g_enc(h, self._u(beta, x.shape[0], h))
        h = torch.relu(h)
        return EncOut(self.enc_mu(h), self.enc_lv(h).clamp(-8, 8))

    def decode(self, z, beta):
        h = self.dec1(z)
        if self.is_mr:
            h = self.g_dec(h, self._u(beta, z.shape[0], h))
        return DecOut(self.dec2(torch.relu(h)).reshape(z.shape[0], *SHAPE))

    def forward(self, x, beta, *, noise=None, generator=None):
        if self.training:
            self.seen_betas.append(torch.as_tensor(beta).detach().float().clone().reshape(-1).cpu())
        mu, lv = self.encode(x, beta)
        if noise is None:
            noise = (torch.randn(mu.shape, generator=generator).to(mu) if generator is not None
                     else torch.randn(mu.shape, device=mu.device, dtype=mu.dtype))
        z = mu + torch.exp(0.5 * lv) * noise if self.sample_z else mu
        logits = self.decode(z, beta).logits
        rate = gaussian_kl(mu, lv)
        if self.training and self.nan_after is not None and self.calls > self.nan_after:
            import torch.distributed as dist

            if (dist.get_rank() if dist.is_initialized() else 0) == self.nan_rank:
                rate = rate * float("nan")
        if self.training and self.poison_at is not None and self.calls == self.poison_at:
            with torch.no_grad():
                self.dec2.bias[0] = float("nan")
            logits = logits.detach() + 0.0 * logits  # keep this step's loss finite
        return VAEOutput(mu, lv, z, logits, rate, self.distortion(logits, x))



class TinySplit:
    """ImageSplit-like binary data: noisy copies of 4 prototype patterns."""

    def __init__(self, n: int = 160, split: str = "train", seed: int = 0, sleep: float = 0.0) -> None:
        g = torch.Generator().manual_seed(123)
        protos = (torch.rand((4, *SHAPE), generator=g) > 0.5).float()
        labels = torch.randint(0, 4, (n,), generator=torch.Generator().manual_seed(seed))
        self.probs = 0.05 + 0.9 * protos[labels]
        self.fixed = torch.bernoulli(self.probs, generator=torch.Generator().manual_seed(777))
        self.name, self.split, self.shape = DATASET, split, SHAPE
        self.protocol = "synthetic stand-in"
        self.binarization = "dynamic" if split == "train" else "fixed-seed"
        self.sleep = float(sleep)

    def __len__(self) -> int:
        return self.probs.shape[0]

    def get_batch(self, index, *, train=False, generator=None):
        idx = torch.as_tensor(index, dtype=torch.long)
        if train and self.sleep:
            import time

            time.sleep(self.sleep)
        return torch.bernoulli(self.probs[idx], generator=generator) if train else self.fixed[idx].clone()

    def meta(self) -> dict:
        return {"name": self.name, "split": self.split, "n": len(self), "shape": list(self.shape),
                "protocol": self.protocol, "binarization": self.binarization}


def load_split(name: str, split: str, data_dir=None, download: bool = False, **options) -> TinySplit:
    """``n`` training examples (option ``n``, default 160); 40 in every other split; option ``sleep``: seconds
    per training batch."""
    return TinySplit(int(options.get("n", 160)) if split == "train" else 40, split, seed=0 if split == "train" else 1,
                     sleep=float(options.get("sleep", 0.0)))


def load_rooted(name: str, split: str, data_dir=None, download: bool = False, **options) -> TinySplit:
    """:func:`load_split`, but only when the data root (``data_dir``, else ``$MRVAE_DATA``, ...) holds
    ``tiny/READY``; otherwise the usual missing-file error naming where it looked."""
    from linvae.dataroot import require_file, resolve_data_root

    require_file(resolve_data_root(data_dir) / "tiny" / "READY", name, "the test that made it")
    return load_split(name, split, data_dir, download, **options)


def build(config, data) -> TinyVAE:
    opts = config.model_options
    model = TinyVAE(mr=config.mr, beta_range=config.beta_range, sample=bool(opts.get("sample", True)),
                    nan_after=opts.get("nan_after"), nan_rank=int(opts.get("nan_rank", 0)))
    BUILT.append(model)
    return model


def rebuild(model_config: dict) -> TinyVAE:
    br = model_config["beta_range"]
    return TinyVAE(mr=model_config["mr"], latent_dim=model_config["latent_dim"], hidden=model_config["hidden"],
                   beta_range=BetaRange(br["a"], br["b"]), sample=model_config.get("sample", True),
                   batch_norm=model_config.get("batch_norm", False), arch=model_config.get("arch", ARCH))


def register() -> None:
    """Register the dataset and the family through the public calls (in this process)."""
    from deep.data import register_dataset
    from deep.models import register_family

    register_dataset(DATASET, load_split, replace=True)
    register_dataset(ROOTED, load_rooted, replace=True)
    register_family(ARCH, build=build, rebuild=rebuild, datasets=(DATASET, ROOTED), description="test MLP",
                    replace=True)


@contextlib.contextmanager
def _swapped(table: dict, name: str, register):
    """``register()`` (a public registration call) for the duration of a block; the entry it replaced comes back."""
    old = table.get(name)
    try:
        yield register()
    finally:
        if old is None:
            table.pop(name, None)
        else:
            table[name] = old


def temporary_dataset(name: str, loader, **kw):
    """Register dataset ``name`` for the duration of a block (its old recommendations are kept unless given)."""
    from deep.data import register_dataset
    from deep.data.registry import _DATASETS

    old = _DATASETS.get(name)
    keep = {"default_family": old.default_family, "recommended": old.recommended} if old and not kw else kw
    return _swapped(_DATASETS, name, lambda: register_dataset(name, loader, replace=True, **keep))


def temporary_family(arch: str, build, rebuild, datasets, **kw):
    """Register family ``arch`` for the duration of a block."""
    from deep.models import register_family
    from deep.models.registry import _FAMILIES

    kw.setdefault("description", "test family")
    return _swapped(_FAMILIES, arch, lambda: register_family(arch, build=build, rebuild=rebuild,
                                                             datasets=tuple(datasets), replace=True, **kw))


@contextlib.contextmanager
def registered(dataset: str = DATASET, loader=load_split, arch: str = ARCH, build=build, rebuild=rebuild):
    """This module's dataset and family registered for the duration of a block."""
    with temporary_dataset(dataset, loader), temporary_family(arch, build, rebuild, (dataset,)):
        yield


@contextlib.contextmanager
def registered_all():
    """Both datasets (``tiny``, ``tinyroot``) and the ``tinymlp`` family, as :func:`register` sets them up."""
    with temporary_dataset(DATASET, load_split), temporary_dataset(ROOTED, load_rooted), \
            temporary_family(ARCH, build, rebuild, (DATASET, ROOTED)):
        yield


def _main(argv: list[str]) -> int:
    out, mode, rest = Path(argv[0]), argv[1], argv[2:]
    register()
    code = 0
    error = None
    if mode == "lib":
        from deep.train.runs import RunError
        from deep.experiments.sweep import sweep
        from deep.train import TrainConfig, train

        spec = json.loads(rest[0])
        try:
            if spec.get("sweep"):
                sweep(TrainConfig(**spec["config"]), progress=False, **spec["sweep"])
            else:
                train(TrainConfig(**spec["config"]), resume=spec.get("resume", False),
                      stop_after_epochs=spec.get("stop_after_epochs"), progress=False)
        except RunError as exc:       # reported, so a test can check every process stopped cleanly
            error = f"{type(exc).__name__}: {exc}"
    else:
        from cli.main import cli

        try:
            cli.main(rest, prog_name="mrvae-cli", standalone_mode=False)
        except SystemExit as exc:  # pragma: no cover - click exits on errors
            code = int(exc.code or 0)
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_initialized() else 0
    out.mkdir(parents=True, exist_ok=True)
    seen = [b.tolist() for b in BUILT[-1].seen_betas] if BUILT else []
    (out / f"rank{rank}.json").write_text(json.dumps({
        "rank": rank, "world_size": dist.get_world_size() if dist.is_initialized() else 1,
        "batch_sizes": [len(b) for b in seen], "betas": seen, "error": error}))
    return code


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
