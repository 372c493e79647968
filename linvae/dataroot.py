"""Where datasets live, and the clear errors raised when a file is missing.

The data root is, in order: an explicit ``data_dir`` (``--data-dir``), the ``MRVAE_DATA``
environment variable, or the user cache directory ``~/.cache/mrvae/data`` (``$XDG_CACHE_HOME``
is honoured).  Files already under the root are used as they are; the network is touched
only when a loader is called with ``download=True``.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["resolve_data_root", "DatasetMissingError", "DataIntegrityError", "file_digest",
           "require_file"]

ENV_VAR = "MRVAE_DATA"


class DatasetMissingError(FileNotFoundError):
    """A dataset file is not under the data root (and was not downloaded)."""


class DataIntegrityError(ValueError):
    """A dataset file exists but is corrupt (checksum, size or format mismatch)."""


def resolve_data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: ``data_dir``, else ``$MRVAE_DATA``, else the user cache directory."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "mrvae" / "data"


def file_digest(path: str | os.PathLike, algorithm: str = "md5", chunk: int = 1 << 20) -> str:
    """Hex digest of a file, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def require_file(path: Path, dataset: str, source: str, hint: str = "") -> Path:
    """Return ``path`` if it exists, else raise :class:`DatasetMissingError` saying what,
    where, and where to get it."""
    if path.exists():
        return path
    msg = (f"{dataset}: missing file '{path.name}'; expected at {path}. "
           f"Get it from {source}{' (' + hint + ')' if hint else ''}, or point --data-dir / "
           f"${ENV_VAR} at a folder that has it.")
    raise DatasetMissingError(msg)
