"""One trainer for deep beta-VAEs and MR-VAEs (paper section 5.2, App. C.2).

Both model kinds run through the same loop; the only difference is where beta comes from:

* MR-VAE: ``beta ~ log-U[a, b]``, one per example (the reference code) or one per minibatch (the
  paper's Algorithm 1), drawn with :meth:`linvae.conditioning.BetaRange.sample`; the network gets
  that beta, and the loss is ``mean_i(D_i + beta_i * R_i)``.
* beta-VAE: a fixed beta, optionally scaled by a KL schedule (constant, linear warm-up over the first
  30% of training, or cyclical with 4 cycles and ratio 0.5); the loss is ``mean_i(D_i + w * R_i)``.

Rate and distortion are in nats per example (sum over latents / pixels, mean over examples).
Optimisation: Adam (or Adamax), batch 128, optional linear learning-rate warm-up, then cosine decay
to ``min_lr``; the schedule is applied per optimisation step.

Data never goes through a DataLoader: the split lives in memory and every minibatch is
``split.get_batch(index, train=True, generator=g)`` on a shuffled index tensor.

Scale: the same function runs in every process under ``torchrun`` (DDP; ``batch_size`` is the global
batch, split across processes; process 0 alone writes the run folder) and runs the model forward under
``torch.autocast`` with ``precision="bf16"`` / ``"fp16"``; :mod:`deep.train.distributed` states the conventions.
:func:`sweep` can train its independent runs in parallel processes (``jobs``).

Typical use::

    from deep.train import TrainConfig, train
    run_dir = train(TrainConfig(dataset="mnist", arch="resnet", epochs=5))
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn


from deep.data.registry import load_dataset
from deep.models import registry as families
from deep.models.base import RATE_DEFINITION, MultiRateVAE, batch_size_of

from . import distributed as D
from .config import (VAL_BETAS, ConfigError, TrainConfig, config_diff, recipe_settings,
                     resolve_device, run_dir_for)
from .runtime import tune_cpu_allocator
from .schedules import kl_factor, lr_factor
from .lifecycle import absolute_data_root
from .runs import (
    CheckpointError, CheckpointMismatchError, NonFiniteLossError, RunExistsError, RunPaths, append_jsonl,
    code_version, jsonable, load_latest_checkpoint, peak_memory_mb, read_jsonl, rng_state,
    save_checkpoint, set_rng_state, write_json,
)
from .trackers import open_tracker


def load_data(config: TrainConfig, split: str = "train", data_dir: str | None = None) -> Any:
    """Split ``split`` of the run's dataset through its registered loader (:mod:`deep.data.registry`)."""
    return load_dataset(config.dataset, split, data_dir=data_dir or config.data_dir, download=config.download,
                        **config.data_options)


def load_train_data(config: TrainConfig) -> Any:
    """The training split of the run's dataset."""
    return load_data(config, "train")


def epoch_batches(data: Any, perm: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """The index tensors of one epoch: ``data.batches(perm, batch_size)`` (length bucketing) when the
    data object has it, else consecutive chunks of ``perm``."""
    if hasattr(data, "batches"):
        out = list(data.batches(perm, batch_size))
        expected = math.ceil(perm.numel() / batch_size)
        if len(out) != expected:
            raise ConfigError(f"{type(data).__name__}.batches returned {len(out)} batches, expected {expected}")
        return out
    return [perm[s:s + batch_size] for s in range(0, perm.numel(), batch_size)]


@torch.no_grad()
def validation_loss(model: nn.Module, data: Any, config: TrainConfig, device: torch.device,
                    ctx: D.DistContext | None = None) -> float:
    """Mean validation loss: at the run's beta (beta-VAE), or the mean over :data:`VAL_BETAS` betas
    log-spaced over the trained range (MR-VAE). Eval mode, float32, fixed noise: torch's generator is
    seeded with the batch number before each validation batch (and restored afterwards), so the value
    does not depend on how batches are shared out. Under several processes (``ctx``) process ``r`` scores
    batches ``r, r + N, ...`` and the sums are all-reduced. ``model`` is the unwrapped module."""
    ctx = ctx or D.DistContext(device=torch.device(device))
    was = model.training
    model.eval()
    n = len(data) if config.val_max_examples is None else min(len(data), config.val_max_examples)
    betas = (config.beta_range.grid(VAL_BETAS).tolist() if config.mr else [float(config.beta)])
    cuda = torch.device(device).type == "cuda"
    gen_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state(device) if cuda else None
    total, count = 0.0, 0
    try:
        for bno, idx in enumerate(epoch_batches(data, torch.arange(n), config.eval_batch_size)):
            if bno % ctx.world_size != ctx.rank:
                continue
            torch.manual_seed(bno)
            x = data.get_batch(idx, train=False).to(device)
            bsz = batch_size_of(x)
            for beta in betas:
                b = torch.full((bsz,), beta, device=device)
                total += float(model.objective(model(x, b), b).double().sum())
            count += bsz
    finally:
        torch.set_rng_state(gen_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state(cuda_state, device)
        model.train(was)
    sums = D.all_reduce_sum(torch.tensor([total, float(count)], dtype=torch.float64, device=ctx.device), ctx)
    total, count = float(sums[0]), int(sums[1])
    return total / max(1, count * len(betas))


class PerBetaLossScale:
    """Per-example loss weights that make every part of an MR-VAE's beta range weigh alike in the gradient
    (``TrainConfig.loss_normalization="per_beta"``).

    The log range ``[log a, log b]`` is cut into ``n_bins`` equal bins; a running mean (exponential, ``momentum``)
    of the per-example loss is kept for each bin from the batches seen. An example whose beta falls in bin k gets
    the weight ``mean over bins of the running means / running mean of bin k`` (no gradient through it), so
    the loss of every bin has about the same size and the average weight is about 1. Each beta's optimum is
    unchanged (a positive factor per beta); what changes is how the shared weights trade betas off.
    """

    def __init__(self, beta_range: Any, n_bins: int = 8, momentum: float = 0.99) -> None:
        self.log_a, self.log_b = float(beta_range.log_a), float(beta_range.log_b)
        self.n_bins, self.momentum = int(n_bins), float(momentum)
        self.mean = torch.full((self.n_bins,), float("nan"), dtype=torch.float64)

    def bins(self, beta: torch.Tensor) -> torch.Tensor:
        """The bin of each beta ``(B,)`` (long)."""
        pos = (torch.log(beta.detach().double().cpu()) - self.log_a) / (self.log_b - self.log_a)
        return (pos * self.n_bins).floor().clamp(0, self.n_bins - 1).long()

    def weights(self, beta: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """Update the running means with this batch's losses ``(B,)`` at ``beta`` ``(B,)``; the weights ``(B,)``."""
        k = self.bins(beta)
        ones = torch.ones_like(k, dtype=torch.float64)
        sums = torch.zeros(self.n_bins, dtype=torch.float64).index_add_(0, k, losses.detach().double().cpu())
        counts = torch.zeros(self.n_bins, dtype=torch.float64).index_add_(0, k, ones)
        seen = counts > 0
        batch_mean = sums[seen] / counts[seen]
        old = self.mean[seen]
        self.mean[seen] = torch.where(torch.isnan(old), batch_mean,
                                      self.momentum * old + (1 - self.momentum) * batch_mean)
        return (torch.nanmean(self.mean) / self.mean[k]).to(losses.device, losses.dtype)

    def state_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "n_bins": self.n_bins, "momentum": self.momentum}

    def load_state_dict(self, state: dict) -> None:
        self.mean = torch.tensor(state["mean"], dtype=torch.float64)


def train_index(n: int, max_examples: int | None) -> torch.Tensor:
    """Indices used for training: all ``n``, or a fixed subset of ``max_examples`` (seed 0, sorted),
    identical for every run of a comparison whatever its training seed."""
    if not max_examples or max_examples >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(0)
    return torch.randperm(n, generator=g)[:max_examples].sort().values


def _model_config(model: MultiRateVAE) -> dict:
    return jsonable(dict(model.config))


def conventions(config: TrainConfig, model: MultiRateVAE | None = None, data: Any = None,
                world_size: int = 1) -> dict:
    """Units, objective, beta sampling, schedules, precision, batch split and data protocol, written into
    every run (``world_size``: training processes); the family's ``conventions()`` give its rate,
    distortion and objective."""
    family = model.conventions() if model is not None else {}
    out: dict[str, Any] = {
        "rate": family.get("rate", RATE_DEFINITION),
        "distortion": family.get("distortion") or config.distortion,
        "distortion_definition": family.get("distortion_definition", "see deep.models.objectives"),
        "objective": family.get("objective", "mean over examples of distortion + beta * rate"),
        "objective_name": config.objective,
        "model": "MR-VAE" if config.mr else "beta-VAE",
        "lr_schedule": {
            "cosine": "linear warm-up over lr_warmup_epochs, then cosine decay to min_lr; per step",
            "constant": "linear warm-up over lr_warmup_epochs, then constant",
            "plateau": (f"linear warm-up, then constant; x{config.plateau_factor} when the "
                        f"{'validation (' + config.val_split + ')' if config.val_split else 'training'} loss "
                        f"has not improved for more than {config.plateau_patience} epochs"),
        }[config.lr_schedule],
        "precision": {"name": config.precision, "description": D.PRECISION_TEXT[config.precision]},
        "batch": (f"global batch of {config.batch_size} examples per optimisation step"
                  + (f", split into {world_size} contiguous per-process shards (about "
                     f"{config.batch_size / world_size:g} each; gradients averaged by DDP, weighted so the step "
                     "equals one on the whole global batch)" if world_size > 1 else "")),
    }
    if world_size > 1 and config.mr:
        out["beta_sampling_processes"] = (
            "one beta per global batch shared by every process" if config.beta_sampling == "batch" else
            "each process draws its shard's betas from its own stream (process 0: seed + 7919; process r > 0: "
            "reseeded every epoch from (seed, r, epoch))")
    if config.val_split:
        out["validation"] = (f"loss on split {config.val_split!r} after every epoch; "
                             + (f"mean over {VAL_BETAS} betas log-spaced in the trained range" if config.mr
                                else "at the run's beta"))
    if config.mr:
        out["beta_range"] = config.beta_range.to_dict()
        out["beta_sampling"] = ("log-uniform, one beta per example, stratified: one from each of B equal slices "
                                "of [log a, log b] per batch of B" if config.beta_sampling == "stratified"
                                else f"log-uniform, one beta per {config.beta_sampling}")
        arcsine, power = config.beta_density_shape == "arcsine", config.beta_density_power
        if arcsine or power != 1.0:
            v = "sin(pi U / 2)^2" if arcsine else "U"
            out["beta_sampling"] += ("; density reshaped (not log-uniform): log beta = log a + (log b - log a) * "
                                     + (f"({v})^{power:g}" if power != 1.0 else v)
                                     + (" (U uniform: sin(pi U / 2)^2 is arcsine, Beta(1/2, 1/2))" if arcsine else ""))
        out["loss_normalization"] = ("none: mean over examples of the loss" if config.loss_normalization == "none" else
                                     "per_beta: each example's loss divided by the running mean loss of its beta bin "
                                     "(8 bins in log beta), times the mean over bins (deep.train.loop.PerBetaLossScale)")
    else:
        out["beta"] = config.beta
    out["kl_schedule"] = {
        "name": config.kl_schedule, "unit": config.kl_schedule_unit,
        "warmup_fraction": config.kl_warmup_fraction if config.kl_schedule == "linear" else None,
        "cycles": config.kl_cycles if config.kl_schedule == "cyclical" else None,
        "ratio": config.kl_cycle_ratio if config.kl_schedule == "cyclical" else None,
        "applies_to": "the KL weight (beta for a beta-VAE; a multiplier of the sampled beta for an MR-VAE)",
    }
    if data is not None:
        meta = data.meta() if hasattr(data, "meta") else {}
        out["binarization"] = getattr(data, "binarization", meta.get("binarization"))
        out["data_protocol"] = getattr(data, "protocol", meta.get("protocol"))
        out["train_data"] = meta
    if config.max_train_examples:
        out["reduced_protocol"] = (f"trained on a fixed subset of {config.max_train_examples} "
                                   "training examples (seed 0), not the full split")
    return out


def _sources(data: Any) -> list[str]:
    meta = data.meta() if hasattr(data, "meta") else {}
    files = meta.get("source_files") or meta.get("files") or meta.get("sources") or []
    return sorted(str(f) for f in files) if isinstance(files, (list, tuple)) else [str(files)]


def _same_source(a: Any, b: Any) -> bool:
    """Whether two data objects were read from exactly the same files (e.g. Yahoo's 'valid' split when the
    reduced protocol trains on yahoo.valid.txt)."""
    sa, sb = _sources(a), _sources(b)
    return bool(sa) and sa == sb and len(a) == len(b)


def _count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _make_optimizer(config: TrainConfig, model: MultiRateVAE) -> torch.optim.Optimizer:
    """The optimiser over ``model.parameter_groups(lr, hyper_lr_mult)``: base weights at ``lr`` and the gates'
    hyper-networks at ``lr * hyper_lr_mult``.  With one shared rate the gates of an MR-VAE (one scalar pair
    per channel, starting beta-independent) learn far slower than the weights they scale, and one epoch ends
    with a nearly beta-independent model (measured on Omniglot, 150 steps: rate 6.2 / 5.3 / 4.8 nats at
    beta = 0.01 / 1 / 10 with x1 against 39.9 / 6.7 / 1.0 with x30).  The schedule scales both groups."""
    cls = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax}[config.optimizer]
    return cls(model.parameter_groups(config.lr, config.hyper_lr_mult), lr=config.lr,
               weight_decay=config.weight_decay)


def load_model_state(model: nn.Module, state: dict, source: str) -> None:
    """``model.load_state_dict(state)`` with a clear mismatch error."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise CheckpointMismatchError(
            f"checkpoint {source} does not fit this architecture ({first} ...); it was trained with "
            "another --arch/--dataset/--latent-dim or another code version") from None


def _params_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


# ------------------------------------------------------------------------------------------
# the trainer
# ------------------------------------------------------------------------------------------
def _rank_batch(data: Any, idx: torch.Tensor, generator: torch.Generator,
                ctx: D.DistContext) -> tuple[Any, int, float]:
    """This process's share of the global batch ``idx``: ``(batch, global size, live)``.

    One process: the whole batch. Several: every process materialises the global batch (so the shared
    generator advances identically everywhere and the shards together are exactly the one-process batch)
    and keeps its contiguous shard. A process whose shard is empty (a last batch smaller than the number
    of processes) gets the batch's first example with ``live = 0``: it takes part in DDP's gradient
    all-reduce with zero weight."""
    batch = data.get_batch(idx, train=True, generator=generator)
    if not ctx.distributed:
        return batch, batch_size_of(batch), 1.0
    bsz = batch_size_of(batch)
    start, stop = D.shard_bounds(bsz, ctx)
    if stop > start:
        return D.local_batch(batch, start, stop), bsz, 1.0
    return D.local_batch(batch, 0, 1), bsz, 0.0


def train(config: TrainConfig, *, resume: bool = False, model: nn.Module | None = None,
          data: Any = None, stop_after_epochs: int | None = None, progress: bool = True,
          log=None) -> Path:
    """Train the beta-VAE or MR-VAE that ``config`` describes; return its run folder.

    Parameters
    ----------
    config: the shared :class:`TrainConfig`.
    resume: continue from ``checkpoint.pt`` in the run folder (bit-for-bit the same result as an
        uninterrupted run on the same machine with the same number of processes); without it an existing
        checkpoint is an error. The checkpoint may come from a run with another number of processes.
    model, data: optional objects overriding :func:`deep.models.convnets.build_model` and
        :func:`deep.data.images.load_split` (any VAE / ImageSplit following the contract).
    stop_after_epochs: stop once this many epochs are done in total (time-boxed jobs, tests);
        the run stays resumable.
    progress: show tqdm progress bars.
    log: callable taking one string (default: silent).

    Under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set) every process calls this function;
    they train one DDP model on shards of each global batch and only process 0 writes, logs and shows
    progress (:mod:`deep.train.distributed` states the conventions).

    Raises :class:`NonFiniteLossError` on a NaN/inf loss (``failure.json`` says why; the last
    good checkpoint is kept), :class:`CheckpointMismatchError` when resuming another config.
    """
    config.validate()
    config = config.replace(data_dir=absolute_data_root(config.data_dir))   # the run works from any directory
    say = log or (lambda msg: None)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    ctx = D.setup(config.device, resolve_device)
    device = ctx.device
    if device.type == "cpu":
        tune_cpu_allocator()
    problem = D.precision_problem(config.precision, device)
    if problem:
        raise ConfigError(problem)
    if ctx.world_size > config.batch_size:
        raise ConfigError(f"batch_size={config.batch_size} is smaller than the {ctx.world_size} processes: "
                          "batch_size is the global batch, split across processes; use --batch-size >= "
                          f"{ctx.world_size}")
    main = ctx.is_main
    if not main:
        say, progress = (lambda msg: None), False
    run_dir = run_dir_for(config)
    paths = RunPaths(run_dir)

    ckpt = None
    if paths.checkpoint_files():
        if not resume:
            try:
                state, used = load_latest_checkpoint(run_dir, warn=False)
            except CheckpointError as exc:
                raise RunExistsError(
                    f"run folder {run_dir} has no readable checkpoint ({exc.reason}): it cannot be resumed. "
                    f"Choose another --run-name / --out for a new run, or delete {run_dir} to train it again "
                    "from scratch") from None
            what = f"epoch {state['epoch']} of {config.epochs}" + (
                f", in {used.name}: {paths.checkpoint.name} is unreadable" if used != paths.checkpoint else "")
            raise RunExistsError(
                f"run folder {run_dir} already has a checkpoint ({what}); pass --resume to continue "
                "it, or choose another --run-name / --out for a new run")
        ckpt, used = load_latest_checkpoint(run_dir)
        if used != paths.checkpoint:
            say(f"{paths.checkpoint.name} is unreadable; continuing from {used.name} (epoch {ckpt['epoch']})")
        diff = config_diff(ckpt["config"], config.to_dict())
        if diff:
            raise CheckpointMismatchError(
                f"checkpoint {paths.checkpoint} was trained with another configuration; differing "
                f"fields: {'; '.join(diff)}. Resume with the original settings or start a new run "
                "(--run-name / --out)")
    elif resume:
        say(f"no checkpoint in {run_dir}; starting a new run")
    tracker = open_tracker(config.log, run_dir) if main else None   # a missing package fails before training

    # data and model ------------------------------------------------------------------------
    if model is None:
        families.check_dataset_arch(config.dataset, config.arch)
    data = data if data is not None else load_train_data(config)
    index = train_index(len(data), config.max_train_examples)
    n_train = int(index.numel())
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    val_data = load_data(config, config.val_split) if config.val_split else None
    if val_data is not None and _same_source(val_data, data):
        raise ConfigError(
            f"val_split={config.val_split!r} reads the same examples as the training split "
            f"({_sources(data)}); validating on training data would tune the schedule on it. Choose another "
            "--val-split or none")

    torch.manual_seed(config.seed)
    if model is None:
        model = families.build_model_from_config(config, data)
    if not isinstance(model, MultiRateVAE):
        raise ConfigError(f"{type(model).__name__} is not a deep.models.MultiRateVAE: the trainer runs models that "
                          "follow that contract (see its docstring for how to write one)")
    if config.objective not in type(model).objectives:
        raise ConfigError(f"objective {config.objective!r} cannot be trained by the {config.arch} family "
                          f"({type(model).__name__} trains: {', '.join(type(model).objectives)}); choose "
                          f"--objective {' or '.join(type(model).objectives)} or another --arch")
    model = model.to(device)
    if model.is_mr != config.mr:
        raise CheckpointMismatchError(f"model is_mr={model.is_mr} but config.mr={config.mr}")
    optimizer = _make_optimizer(config, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(config, s, steps_per_epoch))
    scaler = D.make_grad_scaler(config.precision, device)
    # plateau: a multiplier on both groups' rates, halved when the monitored loss stalls (per epoch)
    plateau = {"scale": 1.0, "best": math.inf, "bad_epochs": 0}
    data_gen = torch.Generator().manual_seed(config.seed)
    beta_gen = torch.Generator().manual_seed(config.seed + 7919)
    gens = {"data": data_gen, "beta": beta_gen}
    # processes r > 0 draw per-example betas from their own stream (reseeded every epoch)
    own_betas = ctx.rank > 0 and config.beta_sampling != "batch"
    rank_beta_gen = torch.Generator() if own_betas else beta_gen
    beta_range = config.beta_range
    loss_scale = PerBetaLossScale(beta_range) if (config.mr and config.loss_normalization == "per_beta") else None

    start_epoch, step, elapsed = 0, 0, 0.0
    if ckpt is not None:
        saved_mc = ckpt["model_config"]
        now_mc = _model_config(model)
        if jsonable(saved_mc) != jsonable(now_mc):
            raise CheckpointMismatchError(
                f"checkpoint {paths.checkpoint} holds model {saved_mc} but this config builds "
                f"{now_mc}; resume with the original --arch/--dataset settings")
        load_model_state(model, ckpt["model"], str(paths.checkpoint))
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("grad_scaler"):
            scaler.load_state_dict(ckpt["grad_scaler"])
        plateau.update(ckpt.get("plateau", {}))
        if loss_scale is not None:
            loss_scale.load_state_dict(ckpt["loss_scale"])
        set_rng_state(ckpt["rng"], gens)
        start_epoch, step, elapsed = int(ckpt["epoch"]), int(ckpt["step"]), float(ckpt.get("elapsed_s", 0.0))
        if main:
            kept = [r for r in read_jsonl(paths.metrics) if r.get("epoch", 0) <= start_epoch]
            paths.metrics.write_text("".join(json.dumps(r) + "\n" for r in kept))
        was = ckpt.get("world_size", 1)
        say(f"resuming {run_dir} at epoch {start_epoch}/{config.epochs}"
            + (f" ({was} -> {ctx.world_size} processes)" if was != ctx.world_size else ""))
    elif main:
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in (paths.metrics, paths.failure, paths.summary):
            if stale.exists():
                stale.unlink()

    if main:
        if paths.failure.exists():
            paths.failure.unlink()
        write_json(paths.config, {
            "config": config.to_dict(),
            "recipe_settings": recipe_settings(config),
            "model_config": _model_config(model),
            "n_params": _count_params(model),
            "conventions": conventions(config, model, data, world_size=ctx.world_size),
            "n_train": n_train,
            "steps_per_epoch": steps_per_epoch,
            "device": str(device),
            "distributed": ctx.describe(config.batch_size),
            "code_version": code_version(),
        })
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if not D.same_on_all(start_epoch, ctx):
        raise D.DistributedSetupError(
            f"the processes found different checkpoints in {run_dir}: with several nodes, --out must be "
            "on a filesystem that every node sees")
    net = model                          # the unwrapped module: state dicts, hooks, validation
    project_gates = any(g.direction for g in net.gates())
    model = D.wrap(net, ctx)             # DDP under several processes (broadcasts process 0's weights)
    D.barrier(ctx)

    def checkpoint_state(epoch: int, metrics: dict) -> dict:
        return {"config": config.to_dict(), "model_config": _model_config(net),
                "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "plateau": dict(plateau),
                "loss_scale": loss_scale.state_dict() if loss_scale is not None else None,
                "grad_scaler": scaler.state_dict() if scaler is not None else None,
                "rng": rng_state(gens), "world_size": ctx.world_size, "epoch": epoch,
                "step": step, "elapsed_s": elapsed, "metrics": jsonable(metrics)}

    def fail(reason: str, epoch: int, extra: dict) -> NonFiniteLossError:
        last = done_epoch if done_epoch > 0 else None
        kept = (f"the last good checkpoint (epoch {last}) was kept" if last is not None
                else "no checkpoint was written (it failed in the first epoch)")
        if main:
            write_json(paths.failure, {"reason": reason, "epoch": epoch + 1, "step": step,
                                       "last_good_checkpoint_epoch": last, **extra,
                                       "hint": "lower --lr, set --grad-clip, or check the data"})
        D.barrier(ctx)
        return NonFiniteLossError(f"{reason} at epoch {epoch + 1}, step {step}: training stopped; "
                                  f"{kept}; details in {paths.failure}. Try a lower --lr or --grad-clip.")

    last_epoch = config.epochs if stop_after_epochs is None else min(config.epochs, stop_after_epochs)
    done_epoch = start_epoch
    for epoch in range(start_epoch, last_epoch):
        model.train()
        if ctx.rank > 0:  # per-process streams: deterministic in (seed, rank, epoch), whatever came before
            torch.manual_seed(D.rank_seed(config.seed, ctx.rank, epoch, "torch"))
            if own_betas:
                rank_beta_gen.manual_seed(D.rank_seed(config.seed, ctx.rank, epoch, "beta"))
        t0 = time.perf_counter()
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, rate, distortion sums
        extra_sums: dict[str, torch.Tensor] = {}
        n_seen = 0
        perm = index[torch.randperm(n_train, generator=data_gen)]
        batches = epoch_batches(data, perm, config.batch_size)
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{config.epochs}",
                       leave=False, dynamic_ncols=True)
        for b, idx in enumerate(batches):
            x, global_bsz, live = _rank_batch(data, idx, data_gen, ctx)
            x = x.to(device, non_blocking=True)
            bsz = batch_size_of(x)
            factor = kl_factor(config, step, steps_per_epoch)
            if config.mr:
                beta = beta_range.sample(bsz, per=config.beta_sampling, generator=rank_beta_gen,
                                         power=config.beta_density_power,
                                         shape=config.beta_density_shape).to(device)
            else:
                beta = torch.full((bsz,), float(config.beta), device=device)
            with D.autocast(config.precision, device):
                # one beta per batch goes in as one number, so the nets can fold their gates into the weights
                out = model(x, beta[:1] if config.mr and config.beta_sampling == "batch" else beta)
            rate, distortion = out.rate.float(), out.distortion.float()
            losses = net.objective(out, factor * beta).float()
            if loss_scale is not None:  # every part of the beta range weighs alike (TrainConfig.loss_normalization)
                losses = losses * loss_scale.weights(beta, losses.detach())
            if ctx.distributed:  # DDP averages over processes: weight so the step is the global-batch mean
                loss = losses.sum() * (live * ctx.world_size / global_bsz)
            else:
                loss = losses.mean()
            bad = D.ranks_where(not bool(torch.isfinite(loss)), ctx)
            if bad:
                if bar is not None:
                    bar.close()
                raise fail("non-finite loss", epoch, {
                    "loss": float(loss.detach()), "rate_mean": float(rate.detach().mean()),
                    "distortion_mean": float(distortion.detach().mean()),
                    "beta_min": float(beta.min()), "beta_max": float(beta.max()),
                    **({"processes_with_non_finite_loss": bad,
                        "values_from_process": 0} if ctx.distributed else {})})
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                if config.grad_clip:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                if config.grad_clip:
                    nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
                optimizer.step()
            if project_gates:  # monotone gates stay monotone (projected gradient step)
                net.project_gates_()
            scheduler.step()
            if plateau["scale"] != 1.0:
                for group in optimizer.param_groups:
                    group["lr"] *= plateau["scale"]
            step += 1
            with torch.no_grad():
                sums += live * torch.stack([losses.detach().sum(), rate.detach().sum(),
                                            distortion.detach().sum()]).double()
                for key, val in net.train_metrics(out).items():
                    val = torch.as_tensor(val, dtype=torch.float64).detach()
                    tot = val.sum() if val.ndim else val * bsz
                    extra_sums[key] = extra_sums.get(key, 0.0) + live * tot.to(device)
            n_seen += int(live * bsz)
            if bar is not None:
                bar.update(1)
                if b % 10 == 0 or b == steps_per_epoch - 1:
                    m = (sums / max(1, n_seen)).tolist()
                    bar.set_postfix(loss=f"{m[0]:.2f}", rate=f"{m[1]:.2f}", dist=f"{m[2]:.2f}")
        if bar is not None:
            bar.close()
        if not _params_finite(net):
            raise fail("non-finite parameters after the optimiser step", epoch, {})
        dt = time.perf_counter() - t0
        elapsed += dt
        # global sums over processes: loss, rate, distortion, examples, extra metrics (sorted keys)
        keys = sorted(extra_sums)
        totals = torch.cat([sums, torch.tensor([float(n_seen)], dtype=torch.float64, device=device),
                            torch.stack([torch.as_tensor(extra_sums[k], dtype=torch.float64, device=device)
                                         for k in keys]) if keys else sums.new_zeros(0)])
        totals = D.all_reduce_sum(totals, ctx).cpu().tolist()
        n_seen = int(round(totals[3]))
        means = [v / max(1, n_seen) for v in totals[:3]]
        record = {"epoch": epoch + 1, "step": step, "loss": means[0], "rate": means[1],
                  "distortion": means[2],
                  **{k: v / max(1, n_seen) for k, v in zip(keys, totals[4:])},
                  "lr": optimizer.param_groups[0]["lr"],
                  "kl_factor": kl_factor(config, max(0, step - 1), steps_per_epoch),
                  "time_s": dt, "examples_per_s": n_seen / dt, "elapsed_s": elapsed,
                  "precision": config.precision, "world_size": ctx.world_size,
                  **peak_memory_mb(device)}
        if val_data is not None:
            record["val_loss"] = validation_loss(net, val_data, config, device, ctx)
            record["val_split"] = config.val_split
        if config.lr_schedule == "plateau":
            monitored = record.get("val_loss", record["loss"])
            if monitored < plateau["best"]:
                plateau["best"], plateau["bad_epochs"] = monitored, 0
            else:
                plateau["bad_epochs"] += 1
                if plateau["bad_epochs"] > config.plateau_patience:
                    plateau["scale"] *= config.plateau_factor
                    plateau["bad_epochs"] = 0
                    say(f"epoch {epoch + 1}: {'validation' if val_data is not None else 'training'} loss "
                        f"stalled; learning rate x{config.plateau_factor} (now x{plateau['scale']:g})")
            record["lr_plateau_scale"] = plateau["scale"]
        if main:
            append_jsonl(paths.metrics, record)
            save_checkpoint(paths.checkpoint, checkpoint_state(epoch + 1, record), keep=config.keep_checkpoints)
            if tracker is not None:
                tracker.log_epoch(record)
        done_epoch = epoch + 1
        D.barrier(ctx)
        say(f"epoch {epoch + 1}/{config.epochs}: loss {means[0]:.3f} rate {means[1]:.3f} "
            f"distortion {means[2]:.3f} ({n_seen / dt:.0f} examples/s)")

    if tracker is not None:
        tracker.close()
    if main:
        if done_epoch >= config.epochs:
            history = read_jsonl(paths.metrics)
            write_json(paths.summary, {
                "status": "complete", "epochs": config.epochs, "steps": step, "time_s": elapsed,
                "examples_per_s": (sum(r["examples_per_s"] * r["time_s"] for r in history)
                                   / max(1e-12, sum(r["time_s"] for r in history))) if history else None,
                "n_params": _count_params(net), "peak_memory": peak_memory_mb(device),
                "final": history[-1] if history else None, "device": str(device),
                "world_size": ctx.world_size, "precision": config.precision,
            })
    D.barrier(ctx)
    return run_dir


def resume_run(run_dir: str | os.PathLike, *, overrides: dict | None = None, **kwargs: Any) -> Path:
    """Continue the run in ``run_dir`` with the configuration stored there (``config.json``, else its newest
    readable checkpoint's), from its newest readable checkpoint.

    ``overrides``: runtime fields to change (:data:`deep.train.config.RUNTIME_FIELDS`: device, threads,
    ``data_dir``, the evaluation settings, ``keep_checkpoints``, ``log``; ``None`` values are ignored); the run
    records them. The run's data root is used when it still exists, else ``data_dir`` / ``$MRVAE_DATA`` (with
    a warning). Other keyword arguments go to :func:`train`."""
    from .lifecycle import load_run_config, resume_settings

    config = resume_settings(load_run_config(run_dir), overrides, resolve_data=kwargs.get("data") is None)
    return train(config, resume=True, **kwargs)


