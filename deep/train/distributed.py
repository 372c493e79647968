"""Multi-process training (torchrun + PyTorch DDP) and mixed precision for the one deep trainer.

:func:`deep.train.train` calls these helpers; nothing here starts or manages processes. Launch the usual
command under PyTorch's own launcher and every process runs the same trainer::

    torchrun --standalone --nproc_per_node 2 --no-python mrvae-cli deep train --dataset mnist ...

Conventions (also written into every run's ``config.json``):

* **Process group.** ``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (plus
  ``MASTER_ADDR``/``MASTER_PORT``); :func:`setup` then calls ``init_process_group`` with ``gloo`` on CPU
  or ``nccl`` on CUDA (device ``cuda:LOCAL_RANK``). A group the caller initialised is used as is.
* **Global batch.** ``batch_size`` is the global batch: each optimisation step splits the global batch
  into ``world_size`` contiguous shards (sizes differ by at most one, :func:`shard_bounds`), so the
  per-process batch is ``batch_size / world_size``, the number of steps per epoch and the learning-rate
  and KL schedules do not depend on the number of processes, and each process's loss is scaled so that
  DDP's gradient average equals the gradient of the mean loss over the global batch even for unequal shards.
* **Data.** Every process draws the same global permutation from the shared data generator (seeded by
  ``seed``) and materialises the whole global batch (in-memory indexing, dynamic binarisation and flips
  drawn from that shared generator), then keeps its shard: the union of the shards is exactly the
  batch one process would see, and the shared generator stays in step on every process.
* **Per-process randomness.** Process 0 keeps the single-process streams (the beta generator seeded
  ``seed + 7919`` and torch's global generator, which draws the reparameterisation noise), saved in the
  checkpoint. Process ``r > 0`` reseeds its own streams at the start of every epoch from
  ``(seed, r, epoch)`` (:func:`rank_seed`), so a resumed run is deterministic whatever the number of
  processes before and after. With ``beta_sampling="batch"`` all processes share one beta per global
  batch (the paper's Algorithm 1); with ``"example"`` each process draws its shard's betas from its own stream.
* **Reductions.** Loss, rate, distortion, extra-metric sums, example counts and the validation loss
  are summed over processes (``all_reduce``), so logged numbers are global means; a non-finite loss on any
  process stops every process at the same step.
* **I/O.** Only process 0 writes the run folder (config, metrics, checkpoints, summary, failure
  report) and shows progress bars; the others wait at a barrier. Checkpoints hold the unwrapped model.

Mixed precision (``precision``): ``fp32`` (default), ``bf16`` (``torch.autocast`` with bfloat16, CPU or
GPU) or ``fp16`` (CUDA only, with ``torch.amp.GradScaler``). Only the model's forward runs under
autocast; the rate and distortion are summed in float32 (:mod:`deep.models.objectives` upcasts half-precision
inputs) and the loss, its reductions, validation and evaluation run in float32.
"""
from __future__ import annotations

import atexit
import contextlib
import datetime
import hashlib
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from .config import PRECISIONS, precision_problem  # torch-free: the config checks them too

__all__ = [
    "DistributedSetupError", "DistContext", "PRECISIONS", "PRECISION_TEXT", "torchrun_env", "env_rank",
    "is_main_process", "setup", "wrap", "shard_bounds", "local_batch", "all_reduce_sum", "ranks_where",
    "barrier", "same_on_all", "rank_seed", "autocast", "precision_problem", "make_grad_scaler", "usable_cores",
]

PRECISION_TEXT = {
    "fp32": "float32 throughout",
    "bf16": "torch.autocast(bfloat16) around the model forward; rate, distortion (sums over latents / pixels), "
            "loss, metric reductions, validation and evaluation in float32",
    "fp16": "torch.autocast(float16) around the model forward with dynamic loss scaling (torch.amp.GradScaler); "
            "rate, distortion, loss, metric reductions, validation and evaluation in float32",
}
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class DistributedSetupError(ValueError):
    """The torchrun environment or the device settings of a multi-process run are inconsistent."""


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size`` processes, its ``device`` and the backend
    (``None`` when training runs in one process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self, batch_size: int) -> dict:
        """JSON-able summary for ``config.json``."""
        return {"world_size": self.world_size, "backend": self.backend, "global_batch": batch_size,
                "per_process_batch": batch_size / self.world_size,
                "launcher": "torchrun" if torchrun_env() else ("external process group" if self.distributed
                                                               else "single process")}


# ------------------------------------------------------------------------------------------
# environment
# ------------------------------------------------------------------------------------------
def torchrun_env() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from the variables torchrun sets, or ``None`` outside torchrun."""
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    present = [n for n in names if n in os.environ]
    if not present:
        return None
    if len(present) != len(names):
        missing = [n for n in names if n not in os.environ]
        raise DistributedSetupError(
            f"environment sets {present} but not {missing}: launch multi-process training with "
            "`torchrun --nproc_per_node N ...` (it sets all three), or unset them for one process")
    try:
        rank, world, local = (int(os.environ[n]) for n in names)
    except ValueError:
        raise DistributedSetupError(
            f"RANK/WORLD_SIZE/LOCAL_RANK must be integers, got {[os.environ[n] for n in names]}") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise DistributedSetupError(f"inconsistent torchrun variables RANK={rank}, WORLD_SIZE={world}, "
                                    f"LOCAL_RANK={local}")
    return rank, world, local


def env_rank() -> int:
    """This process's rank: from the initialised process group, else from ``RANK`` (0 without torchrun)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def is_main_process() -> bool:
    """Whether this process prints, writes and evaluates (rank 0, or the only process)."""
    return env_rank() == 0


def usable_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _destroy() -> None:
    """At exit: wait (at most 30 s) for the other processes, then tear the group down. Without the barrier a
    process that finishes first could tear down its gloo connections while a peer still used them, and the
    peer then aborted ("terminate called without an active exception"); seen about once in 4 test runs."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        try:
            if dist.get_backend() == "gloo":  # NCCL: no bounded barrier; its own timeout applies
                dist.monitored_barrier(timeout=datetime.timedelta(seconds=30))
        except Exception:  # pragma: no cover - a peer already gone: tear down anyway
            pass
        try:
            dist.destroy_process_group()
        except Exception:  # pragma: no cover - best effort at exit
            pass


def setup(device: str, resolve_device: Callable[[str], torch.device]) -> DistContext:
    """The process group of this run: initialised from the torchrun environment on first use (kept for
    the life of the process so a sweep can train several runs), reused when already initialised, or a
    single-process context. ``device`` is the config's device (``auto``, ``cpu``, ``cuda``, ``cuda:N``);
    under several processes on CUDA each uses ``cuda:LOCAL_RANK``."""
    dist = torch.distributed
    env = torchrun_env()
    already = dist.is_available() and dist.is_initialized()
    if not already and (env is None or env[1] == 1):
        return DistContext(device=resolve_device(device))
    if not dist.is_available():
        raise DistributedSetupError("this PyTorch build has no torch.distributed; run in one process")
    base = resolve_device(device)
    if already:
        rank, world = dist.get_rank(), dist.get_world_size()
        local = env[2] if env is not None else int(os.environ.get("LOCAL_RANK", "0"))
    else:
        rank, world, local = env
    if base.type == "cuda":
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        if base.index is not None and local_world > 1 and base.index != local:
            raise DistributedSetupError(
                f"--device {device} under {local_world} processes per node: each process uses "
                "cuda:LOCAL_RANK; pass --device cuda (or auto)")
        if local >= torch.cuda.device_count():
            raise DistributedSetupError(
                f"LOCAL_RANK={local} but only {torch.cuda.device_count()} CUDA device(s) are visible: use "
                "--nproc_per_node <= the number of GPUs per node")
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        dev, backend = torch.device("cpu"), "gloo"
    if already:
        backend = dist.get_backend()
    else:
        kwargs: dict[str, Any] = {"backend": backend, "init_method": "env://"}
        if backend == "nccl":
            kwargs["device_id"] = dev
        dist.init_process_group(**kwargs)
        atexit.register(_destroy)
    return DistContext(rank=rank, world_size=world, local_rank=local, device=dev, backend=backend)


def wrap(model: nn.Module, ctx: DistContext) -> nn.Module:
    """``DistributedDataParallel(model)`` under several processes, else ``model``. A family whose forward
    leaves some parameters unused may set ``model.ddp_find_unused_parameters = True``."""
    if not ctx.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
               find_unused_parameters=bool(getattr(model, "ddp_find_unused_parameters", False)))


# ------------------------------------------------------------------------------------------
# sharding and reductions
# ------------------------------------------------------------------------------------------
def shard_bounds(n: int, ctx: DistContext) -> tuple[int, int]:
    """``[start, stop)`` of this process's contiguous shard of ``n`` examples; the first ``n % world``
    processes get one extra example (``torch.tensor_split`` convention)."""
    q, r = divmod(int(n), ctx.world_size)
    start = ctx.rank * q + min(ctx.rank, r)
    return start, start + q + (1 if ctx.rank < r else 0)


def local_batch(batch: Any, start: int, stop: int) -> Any:
    """Rows ``[start, stop)`` of a batch: a tensor slice, or ``batch.select(index)`` for batch objects
    (e.g. :class:`deep.data.text.TextBatch`)."""
    if isinstance(batch, torch.Tensor):
        return batch[start:stop]
    select = getattr(batch, "select", None)
    if callable(select):
        return select(torch.arange(start, stop))
    raise DistributedSetupError(
        f"cannot split a {type(batch).__name__} batch across processes: get_batch must return a tensor "
        "or an object with select(index) -> batch")


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``tensor`` over processes in place (a no-op in one process); returns it."""
    if ctx.distributed:
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return tensor


def ranks_where(flag: bool, ctx: DistContext) -> list[int]:
    """The ranks of the processes where ``flag`` is true (every process gets the same list)."""
    if not ctx.distributed:
        return [0] if flag else []
    t = torch.zeros(ctx.world_size, device=ctx.device)
    t[ctx.rank] = 1.0 if flag else 0.0
    return [r for r, v in enumerate(all_reduce_sum(t, ctx).tolist()) if v > 0]


def same_on_all(value: int, ctx: DistContext) -> bool:
    """Whether every process passes the same integer ``value`` (e.g. the epoch it resumes from)."""
    if not ctx.distributed:
        return True
    t = torch.tensor([float(value), -float(value)], dtype=torch.float64, device=ctx.device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return float(t[0]) == -float(t[1])


def barrier(ctx: DistContext) -> None:
    """Wait until every process gets here (a no-op in one process)."""
    if ctx.distributed:
        if ctx.backend == "nccl":
            torch.distributed.barrier(device_ids=[ctx.device.index])
        else:
            torch.distributed.barrier()


def rank_seed(seed: int, rank: int, epoch: int, stream: str) -> int:
    """A 63-bit seed for process ``rank``'s ``stream`` (``"beta"``, ``"torch"``) in ``epoch``: a SHA-256
    of the four values, the same on every machine and Python version, distinct for distinct inputs."""
    digest = hashlib.sha256(f"mrvae:{int(seed)}:{int(rank)}:{int(epoch)}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2 ** 63 - 1)




def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of the model forward (``nullcontext`` for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=_DTYPES[precision])


def make_grad_scaler(precision: str, device: torch.device) -> "torch.amp.GradScaler | None":
    """A ``torch.amp.GradScaler`` for fp16 (dynamic loss scaling), else ``None``."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(torch.device(device).type)
