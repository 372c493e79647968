"""Where datasets live, the clear errors raised when a file is missing, and checksum verification.

The data root is, in order: an explicit ``data_dir`` (``--data-dir``), the ``MRVAE_DATA``
environment variable, or the user cache directory ``~/.cache/mrvae/data`` (``$XDG_CACHE_HOME``
is honoured).  Files already under the root are used as they are; the network is touched
only when a loader is called with ``download=True``.

Integrity: every loader checks the files it reads against their published digests (MNIST IDX md5s,
binarised MNIST sha256s, the IWAE Omniglot file, CIFAR-10 / SVHN / CelebA / Yahoo md5s) or, for files
without one, against a ``SHA256SUMS`` manifest at the data root when there is one (:func:`verify_file`).
A file is hashed on first use only: the verdict is cached in ``~/.cache/mrvae/verified.json`` under the
file's absolute path, size, mtime, ctime and inode, so any change to the file means hashing it again.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["resolve_data_root", "DatasetMissingError", "DataIntegrityError", "file_digest",
           "require_file", "verify_file", "verdict_cache_path", "forget_verdicts", "MANIFEST_NAME"]

#: A checksum manifest at the data root (``sha256sum`` format) covers files without a published digest.
MANIFEST_NAME = "SHA256SUMS"

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


# ------------------------------------------------------------------------------------------------
# checksum verification with a cached verdict
# ------------------------------------------------------------------------------------------------
_VERDICTS: dict[str, dict] | None = None          # absolute path -> {"stat", "algorithm", "digest"}
_MANIFESTS: dict[str, tuple[list, dict[str, str]]] = {}


def verdict_cache_path() -> Path:
    """``$XDG_CACHE_HOME/mrvae/verified.json`` (default ``~/.cache/mrvae/verified.json``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "mrvae" / "verified.json"


def forget_verdicts(memory_only: bool = False) -> None:
    """Drop the cached verdicts of this process (and, unless ``memory_only``, the verdict file)."""
    global _VERDICTS
    _VERDICTS = None
    _MANIFESTS.clear()
    if not memory_only:
        try:
            verdict_cache_path().unlink()
        except OSError:
            pass


def _verdicts() -> dict[str, dict]:
    global _VERDICTS
    if _VERDICTS is None:
        try:
            loaded = json.loads(verdict_cache_path().read_text())
            _VERDICTS = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            _VERDICTS = {}
    return _VERDICTS


def _save_verdict(key: str, entry: dict) -> None:
    """Record a verdict in memory and in the verdict file (merged with what other processes wrote; an
    unwritable cache only means hashing again next time)."""
    _verdicts()[key] = entry
    path = verdict_cache_path()
    try:
        try:
            on_disk = json.loads(path.read_text())
            on_disk = on_disk if isinstance(on_disk, dict) else {}
        except (OSError, ValueError):
            on_disk = {}
        on_disk[key] = entry
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".verified.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(on_disk, f, indent=0, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass


def _signature(path: Path) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _manifest_digest(root: Path, path: Path) -> str | None:
    """The sha256 a ``SHA256SUMS`` manifest at ``root`` lists for ``path`` (``None``: no manifest, or the
    file is not listed or not under ``root``)."""
    manifest = Path(root) / MANIFEST_NAME
    try:
        sig = _signature(manifest)
    except OSError:
        return None
    key = str(manifest.resolve())
    if key not in _MANIFESTS or _MANIFESTS[key][0] != sig:
        table: dict[str, str] = {}
        for line in manifest.read_text(errors="replace").splitlines():
            digest, _, name = line.strip().partition(" ")
            name = name.strip().lstrip("*")
            if len(digest) == 64 and name:
                table[os.path.normpath(name)] = digest.lower()
        _MANIFESTS[key] = (sig, table)
    try:
        rel = Path(path).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return None
    return _MANIFESTS[key][1].get(os.path.normpath(str(rel)))


def verify_file(path: str | os.PathLike, *, dataset: str, algorithm: str | None = None,
                expected: str | None = None, root: str | os.PathLike | None = None,
                content: Callable[[], bytes] | None = None, source: str = "the published value") -> str | None:
    """Check ``path`` against ``expected`` (its published ``algorithm`` digest) or, when none is given,
    against the ``SHA256SUMS`` manifest at ``root``; return the algorithm checked, or ``None`` when no digest
    is known for the file (nothing is checked then).

    ``content``: a function giving the bytes whose digest is published (e.g. the uncompressed contents of
    a ``.gz`` file); by default the file's own bytes. The file is hashed only when no verdict is cached for
    its current absolute path, size, mtime, ctime and inode. Raises :class:`DataIntegrityError` naming the
    file, the digest found and the one expected.
    """
    path = Path(path)
    if expected is None and root is not None:
        expected = _manifest_digest(Path(root), path)
        algorithm, source = "sha256", f"listed in {Path(root) / MANIFEST_NAME}"
    if expected is None:
        return None
    algorithm = algorithm or "sha256"
    key = str(path.resolve())
    sig = _signature(path)
    entry = _verdicts().get(key)
    if entry and entry.get("stat") == sig and entry.get("algorithm") == algorithm and entry.get("digest") == expected:
        return algorithm
    got = hashlib.new(algorithm, content()).hexdigest() if content is not None else file_digest(path, algorithm)
    if got != expected:
        raise DataIntegrityError(
            f"{dataset}: {path} has {algorithm} {got}, expected {expected} ({source}); the file is corrupt or "
            "not the published one: delete it and download it again (to use a deliberate variant of the file, "
            "turn the check off: verify=False, --data-option verify=false)")
    _save_verdict(key, {"stat": sig, "algorithm": algorithm, "digest": expected})
    return algorithm
