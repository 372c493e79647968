"""Run folders and checkpoints shared by the deep trainer and the evaluator.

A run folder holds::

    config.json      the TrainConfig, the conventions (units, distortion, binarisation), the data
                     protocol and the code version
    metrics.jsonl    one JSON line per finished epoch (loss, rate, distortion, lr, time, examples/s)
    checkpoint.pt    the last good state (model, optimiser, scheduler, RNG states, epoch, step), written
                     atomically (temporary file + ``os.replace``) after every epoch, with a digest of its
                     contents (a file changed afterwards is refused, not loaded)
    checkpoint-eNNNN.pt  the checkpoints of the latest ``keep_checkpoints`` epochs (``--keep``, default 2; the
                     newest is a hard link to checkpoint.pt): when checkpoint.pt is unreadable, resume and
                     evaluation fall back to the newest readable one with a warning
    summary.json     written when training finishes (time, throughput, peak memory)
    failure.json     written when training stops on a non-finite loss (the reason; checkpoint kept)
    results/         evaluation outputs (``rd.json``, image grids)

Checkpoints hold only tensors and plain Python values, so they load with ``weights_only=True``.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import random
import re
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "RunError", "CheckpointError", "CheckpointMismatchError", "NonFiniteLossError",
    "RunExistsError", "CHECKPOINT_FORMAT", "RunPaths", "write_json", "read_json", "append_jsonl",
    "read_jsonl", "save_checkpoint", "load_checkpoint", "load_latest_checkpoint", "rng_state", "set_rng_state",
    "code_version", "peak_memory_mb", "jsonable",
]

CHECKPOINT_FORMAT = "mrvae-deep-checkpoint"
CHECKPOINT_VERSION = 1


class RunError(RuntimeError):
    """Base class of the run-folder errors (user-facing: the message says what to do)."""


class CheckpointError(RunError):
    """A checkpoint is missing, unreadable or not a mrvae checkpoint (``reason``: the short cause)."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


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

    def kept_checkpoint(self, epoch: int) -> Path:
        """The kept checkpoint of ``epoch`` (``checkpoint-eNNNN.pt``)."""
        return self.root / f"checkpoint-e{int(epoch):04d}.pt"

    def kept_checkpoints(self) -> list[Path]:
        """The kept checkpoints, newest epoch first."""
        found = [(int(m.group(1)), p) for p in self.root.glob("checkpoint-e*.pt")
                 if (m := re.fullmatch(r"checkpoint-e(\d+)\.pt", p.name))]
        return [p for _, p in sorted(found, reverse=True)]

    def checkpoint_files(self) -> list[Path]:
        """Every checkpoint file of the run, in the order resume tries them (checkpoint.pt first)."""
        return [p for p in (self.checkpoint, *self.kept_checkpoints()) if p.exists()]

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


def _atomic_write_bytes(path: Path, write, also: Path | None = None) -> None:
    """Write through a temporary file, fsync, then ``os.replace`` onto ``path`` (and, first, onto ``also``
    as a hard link to the same file, or a copy where links are not supported)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    extra = None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if also is not None:
            extra = tmp + ".link"
            try:
                os.link(tmp, extra)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise
                shutil.copyfile(tmp, extra)
            os.replace(extra, also)
            extra = None
        os.replace(tmp, path)
    except BaseException:
        for leftover in (tmp, extra):
            if leftover is not None:
                try:
                    os.unlink(leftover)
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
    """The records of a JSON-lines file; a torn last line (a process killed while appending) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    out = []
    for i, line in enumerate(lines):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise
    return out


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
def state_digest(state: dict) -> str:
    """sha256 of a checkpoint's contents: every tensor's dtype, shape and bytes and every plain value, in a
    fixed order (dict keys sorted), so the same state gives the same digest after a save / load round trip."""
    h = hashlib.sha256()

    def walk(obj: Any) -> None:
        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            if t.numel():
                h.update(t.reshape(-1).view(torch.uint8).numpy())
        elif isinstance(obj, dict):
            h.update(b"{")
            for key in sorted(obj, key=str):
                h.update(repr(key).encode())
                walk(obj[key])
            h.update(b"}")
        elif isinstance(obj, (list, tuple)):
            h.update(b"[")
            for v in obj:
                walk(v)
            h.update(b"]")
        else:
            h.update(repr(obj).encode())

    walk(state)
    return h.hexdigest()


def _epoch_in(path: Path) -> int | None:
    try:
        return int(load_checkpoint(path)["epoch"])
    except Exception:
        return None


def save_checkpoint(path: str | os.PathLike, state: dict, keep: int = 1) -> Path:
    """Write ``state`` (plus a format tag and a digest of its contents) atomically: a crash never leaves a
    half-written file. ``keep`` > 1 also keeps it as ``checkpoint-eNNNN.pt`` (``state["epoch"]``; a hard link)
    and removes kept checkpoints older than the newest ``keep``.

    Raises :class:`CheckpointError` when the file cannot be written (disk full, ...); the previous
    checkpoint is left as it was."""
    path = Path(path)
    payload = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, **state}
    payload["digest"] = state_digest(payload)
    paths = RunPaths(path.parent)
    also = paths.kept_checkpoint(state["epoch"]) if keep > 1 and "epoch" in state else None
    try:
        buf = io.BytesIO()
        torch.save(payload, buf)
        _atomic_write_bytes(path, lambda f: f.write(buf.getbuffer()), also=also)
    except OSError as exc:
        previous = _epoch_in(path)
        kept = (f"the checkpoint of epoch {previous} is intact" if previous is not None
                else "no earlier checkpoint was lost")
        raise CheckpointError(
            f"could not write the checkpoint of epoch {state.get('epoch', '?')} to {path.parent} "
            f"({exc.strerror or exc}); {kept}. Free some space (or fix the folder), then continue with "
            f"`mrvae-cli deep resume {path.parent}`", reason=str(exc.strerror or exc)) from None
    if path.name == "checkpoint.pt":   # the newest `keep` epochs stay (none but checkpoint.pt for keep=1) ...
        kept = paths.kept_checkpoints()
        stale = kept[keep:] if keep > 1 else kept
        if "epoch" in state:             # ... and none of an abandoned later epoch (after a fall-back)
            stale += [p for p in kept if int(p.stem.rsplit("-e", 1)[1]) > int(state["epoch"])]
        for old in stale:
            try:
                old.unlink()
            except FileNotFoundError:
                pass
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises :class:`CheckpointError` with a clear message when the file is missing, corrupt
    (truncated, not a torch file, contents changed since it was written) or not a mrvae deep checkpoint.
    :func:`load_latest_checkpoint` falls back to the kept checkpoints of a run folder.
    """
    path = Path(path)
    if path.is_dir():
        path = RunPaths(path).checkpoint
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: train the run first "
                              "(`mrvae-cli deep train ...`) or check the run folder path", reason="missing")
    fallback = ("`mrvae-cli deep resume` and `deep evaluate` fall back to an earlier kept checkpoint "
                "(checkpoint-eNNNN.pt) when the run has one")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for bad files
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}"
        raise CheckpointError(f"checkpoint {path} is corrupt or not a mrvae checkpoint ({why}); {fallback}",
                              reason=f"corrupt: {why[:160]}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        tag = state.get("format") if isinstance(state, dict) else None
        raise CheckpointError(f"{path} is a torch file but not a mrvae deep checkpoint (format tag {tag!r})",
                              reason=f"not a mrvae checkpoint (format tag {tag!r})")
    missing = [k for k in ("config", "model_config", "model", "epoch", "step") if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}; it is incomplete or from another tool",
                              reason=f"incomplete (lacks {missing})")
    if "digest" in state:
        expected = state.pop("digest")
        if state_digest(state) != expected:
            raise CheckpointError(f"checkpoint {path} fails its integrity check: its contents changed after it "
                                  f"was written (bit rot, a bad copy); {fallback}",
                                  reason="fails its integrity check (contents changed after writing)")
    return state


def load_latest_checkpoint(run_dir: str | os.PathLike, map_location: str | torch.device = "cpu", *,
                           warn: bool = True) -> tuple[dict, Path]:
    """The newest readable checkpoint of a run folder and its path: ``checkpoint.pt``, else the kept
    ``checkpoint-eNNNN.pt`` files, newest first (a ``UserWarning`` says which file was unreadable and which
    epoch the run continues from). Raises :class:`CheckpointError` when there is none, saying what works."""
    paths = RunPaths(run_dir)
    files = paths.checkpoint_files()
    if not files:
        return load_checkpoint(paths.checkpoint, map_location), paths.checkpoint   # the "no checkpoint" error
    problems: list[str] = []
    for path in files:
        try:
            state = load_checkpoint(path, map_location)
        except CheckpointError as exc:
            problems.append(f"{path.name}: {exc.reason}")
            continue
        if problems and warn:
            warnings.warn(f"{'; '.join(problems)} -- unreadable; continuing from {path.name} "
                          f"(epoch {state['epoch']}) in {paths.root}", stacklevel=2)
        return state, path
    raise CheckpointError(
        f"no readable checkpoint in {paths.root} ({'; '.join(problems)}): this run cannot be resumed or "
        f"evaluated. Train it again under another --run-name / --out (or delete {paths.root} first); "
        "`--keep N` keeps the checkpoints of the last N epochs", reason="no readable checkpoint")


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
