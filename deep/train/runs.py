"""Run folders and checkpoints shared by the deep trainer and the evaluator.

A run folder holds::

    config.json      the TrainConfig, the conventions (units, distortion, binarisation), the data
                     protocol and the code version
    metrics.jsonl    one JSON line per finished epoch (loss, rate, distortion, lr, time, examples/s)
    checkpoint.pt    the last good state (model, optimiser, scheduler, RNG states, epoch, step), written
                     atomically (temporary file + ``os.replace``) after every epoch
    summary.json     written when training finishes (time, throughput, peak memory)
    failure.json     written when training stops on a non-finite loss (the reason; checkpoint kept)
    results/         evaluation outputs (``rd.json``, image grids)

Checkpoints hold only tensors and plain Python values, so they load with ``weights_only=True``.
"""
from __future__ import annotations

import json
import math
import os
import random
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "RunError", "CheckpointError", "CheckpointMismatchError", "NonFiniteLossError",
    "RunExistsError", "CHECKPOINT_FORMAT", "RunPaths", "write_json", "read_json", "append_jsonl",
    "read_jsonl", "save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state",
    "code_version", "peak_memory_mb", "jsonable",
]

CHECKPOINT_FORMAT = "mrvae-deep-checkpoint"
CHECKPOINT_VERSION = 1


class RunError(RuntimeError):
    """Base class of the run-folder errors (user-facing: the message says what to do)."""


class CheckpointError(RunError):
    """A checkpoint is missing, unreadable or not a mrvae checkpoint."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint does not belong to the requested configuration or architecture."""


class NonFiniteLossError(RunError):
    """Training met a NaN/inf loss or parameter; the last good checkpoint was kept."""


class RunExistsError(RunError, FileExistsError):
    """A run folder with a checkpoint exists and ``resume`` was not requested."""


class RunPaths:
    """The files of one run folder."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.root = Path(run_dir)

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def failure(self) -> Path:
        return self.root / "failure.json"

    @property
    def results(self) -> Path:
        return self.root / "results"

    def __repr__(self) -> str:
        return f"RunPaths({str(self.root)!r})"


# ------------------------------------------------------------------------------------------
# JSON helpers
# ------------------------------------------------------------------------------------------
def jsonable(obj: Any) -> Any:
    """Convert tuples, numpy/torch scalars and arrays, paths and non-finite floats to JSON values.

    Non-finite floats become ``None`` (strict JSON has no NaN).
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _atomic_write_bytes(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented strict JSON, atomically."""
    path = Path(path)
    text = json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n"
    _atomic_write_bytes(path, lambda f: f.write(text.encode()))
    return path


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(jsonable(record), allow_nan=False) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------
# RNG states
# ------------------------------------------------------------------------------------------
def rng_state(generators: dict[str, torch.Generator] | None = None) -> dict:
    """Every RNG state needed to continue a run bit-for-bit (tensors and plain values only)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": list(random.getstate()[1]) + [random.getstate()[0]],
        "python_gauss_next": random.getstate()[2],
        "generators": {k: g.get_state() for k, g in (generators or {}).items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generators: dict[str, torch.Generator] | None = None) -> None:
    """Restore what :func:`rng_state` saved (the named generators in place)."""
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached_gaussian"]))
    py = state["python"]
    random.setstate((py[-1], tuple(py[:-1]), state["python_gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for k, g in (generators or {}).items():
        if k not in state["generators"]:
            raise CheckpointError(f"checkpoint has no state for the '{k}' random generator")
        g.set_state(state["generators"][k])


# ------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------
def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` (plus a format tag) atomically: a crash never leaves a half-written file."""
    path = Path(path)
    payload = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, **state}
    _atomic_write_bytes(path, lambda f: torch.save(payload, f))
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises :class:`CheckpointError` with a clear message when the file is missing, corrupt
    (truncated, not a torch file) or not a mrvae deep checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        path = RunPaths(path).checkpoint
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: train the run first "
                              "(`mrvae-cli deep train ...`) or check the run folder path")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for bad files
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a mrvae checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'}); restore a good copy or "
            "delete the run folder and train again") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is a torch file but not a mrvae deep checkpoint "
                              f"(format tag {state.get('format') if isinstance(state, dict) else None!r})")
    missing = [k for k in ("config", "model_config", "model", "epoch", "step") if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}; it is incomplete or from another tool")
    return state


# ------------------------------------------------------------------------------------------
# provenance and resources
# ------------------------------------------------------------------------------------------
def code_version() -> dict:
    """Package version, torch version and (when available) the git commit of the source tree."""
    out: dict[str, Any] = {"torch": torch.__version__}
    try:
        from importlib.metadata import version
        out["mrvae"] = version("mrvae")
    except Exception:  # pragma: no cover - not installed
        out["mrvae"] = None
    try:
        here = Path(__file__).resolve().parent
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                                text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        if commit.returncode == 0:
            out["git_commit"] = commit.stdout.strip()
            out["git_dirty"] = bool(dirty.stdout.strip()) if dirty.returncode == 0 else None
    except Exception:  # pragma: no cover - git absent
        pass
    return out


def peak_memory_mb(device: torch.device | str = "cpu") -> dict:
    """Peak memory so far: process max RSS (CPU, MiB) and, on CUDA, max allocated GPU memory."""
    out: dict[str, float | None] = {}
    try:
        import resource
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        import sys
        out["max_rss_mb"] = rss / (1024 ** 2) if sys.platform == "darwin" else rss / 1024
    except Exception:  # pragma: no cover - non-POSIX
        out["max_rss_mb"] = None
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return out
