"""File-format readers, the processed-array cache and the download helper behind deep/data.py.

Every reader returns numpy arrays in the layout ``(N, C, H, W)`` (or ``(N, H, W)`` for grey
images) and raises :class:`~linvae.dataroot.DataIntegrityError` when a file exists but does not
have the expected format; it never touches the network.  Nothing here is dataset policy
(splits, binarisation, protocol labels): that lives in ``deep/data.py``.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import tempfile
import urllib.request
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from linvae.dataroot import DataIntegrityError, DatasetMissingError

CACHE_VERSION = 1
_MMAP_BYTES = 1 << 29          # cached arrays larger than 512 MiB are memory-mapped read-only


# --------------------------------------------------------------------------- amat (binarised MNIST)

def read_maybe_gzip(path: Path) -> bytes:
    """The bytes of ``path``, decompressed when its name ends in ``.gz``."""
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise DataIntegrityError(f"{path}: not a valid gzip file ({err}); the file is corrupt or "
                                 f"truncated: delete it and download it again") from err


def parse_amat(raw: bytes, path: Path, n_pixels: int = 784,
               n_expected: int | None = None) -> np.ndarray:
    """Parse a Larochelle ``.amat`` text file (one image a line, ``0``/``1`` separated by spaces).

    Returns uint8 ``(N, n_pixels)`` with values 0/1.  The canonical layout (every line exactly
    ``"v v ... v\\n"``) is parsed with a strided view of the bytes; anything else goes through a
    slower token-by-token check that says which line is wrong.
    """
    width = 2 * n_pixels
    arr = np.frombuffer(raw, dtype=np.uint8)
    if arr.size and arr.size % width == 0:
        rows = arr.reshape(-1, width)
        values = rows[:, 0::2] - np.uint8(ord("0"))     # wraps to > 1 for anything but '0'/'1'
        if (np.all(rows[:, 1:-1:2] == ord(" ")) and np.all(rows[:, -1] == ord("\n"))
                and np.all(values <= 1)):
            out = values.copy()
            _check_count(out.shape[0], n_expected, path)
            return out
    return _parse_amat_slow(raw, path, n_pixels, n_expected)


def _parse_amat_slow(raw: bytes, path: Path, n_pixels: int, n_expected: int | None) -> np.ndarray:
    lines = [line for line in raw.split(b"\n") if line.strip()]
    out = np.empty((len(lines), n_pixels), dtype=np.uint8)
    for i, line in enumerate(lines):
        tokens = line.split()
        if len(tokens) != n_pixels:
            raise DataIntegrityError(
                f"{path}: line {i + 1} has {len(tokens)} values, expected {n_pixels}; the file is "
                f"corrupt or truncated: delete it and download it again")
        row = np.array(tokens)
        bad = (row != b"0") & (row != b"1")
        if bad.any():
            j = int(np.argmax(bad))
            raise DataIntegrityError(
                f"{path}: line {i + 1}, value {j + 1} is {tokens[j]!r}; a binarised .amat file "
                f"holds only 0 and 1")
        out[i] = row == b"1"
    _check_count(out.shape[0], n_expected, path)
    return out


def _check_count(n: int, n_expected: int | None, path: Path) -> None:
    if n_expected is not None and n != n_expected:
        raise DataIntegrityError(f"{path}: {n} images (lines), expected {n_expected}; the file is "
                                 f"corrupt or truncated: delete it and download it again")


# --------------------------------------------------------------------------- Omniglot

def read_chardata(path: Path) -> dict[str, np.ndarray]:
    """IWAE ``chardata.mat``: ``{"train": (N,28,28), "test": (M,28,28)}`` float32 in [0, 1].

    The file stores each image as one column of 784 values in column-major (Fortran) order, so
    pixel ``(row, col)`` of image ``i`` is ``data[row + 28 * col, i]``.
    """
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path), variable_names=("data", "testdata"))
    except Exception as err:  # scipy raises several types for a broken .mat
        raise DataIntegrityError(f"{path}: not a readable MATLAB file ({err}); delete it and "
                                 f"download it again") from err
    out = {}
    for key, split in (("data", "train"), ("testdata", "test")):
        if key not in mat:
            raise DataIntegrityError(f"{path}: no variable '{key}' (expected 'data' and "
                                     f"'testdata', 784 x N each)")
        a = np.asarray(mat[key])
        if a.ndim != 2 or a.shape[0] != 784:
            raise DataIntegrityError(f"{path}: '{key}' has shape {a.shape}, expected (784, N)")
        a = a.astype(np.float32)
        if a.size and (a.min() < 0 or a.max() > 1):
            raise DataIntegrityError(f"{path}: '{key}' has values outside [0, 1]")
        # column k = row + 28 * col  ->  (N, col, row)  ->  (N, row, col)
        out[split] = np.ascontiguousarray(a.T.reshape(-1, 28, 28).transpose(0, 2, 1))
    return out


def list_png_tree(folder: Path) -> list[Path]:
    """PNG files under ``folder/<alphabet>/<character>/``, in sorted order."""
    paths = []
    for alphabet in sorted(p for p in folder.iterdir() if p.is_dir()):
        for character in sorted(p for p in alphabet.iterdir() if p.is_dir()):
            paths.extend(sorted(p for p in character.iterdir() if p.suffix.lower() == ".png"))
    return paths


def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` weights of exact area averaging: row ``i`` holds the overlap of output
    pixel ``[i s, (i + 1) s)`` with each input pixel ``[j, j + 1)``, divided by ``s = n_in / n_out``
    (rows sum to 1)."""
    s = n_in / n_out
    lo = np.arange(n_out)[:, None] * s
    j = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(lo + s, j + 1) - np.maximum(lo, j), 0.0, None)
    return overlap / s


def _omniglot_png(path: Path, weights: np.ndarray) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            grey = np.asarray(im.convert("L"), dtype=np.float64)
    except Exception as err:  # PIL raises several types for a broken image
        raise DataIntegrityError(f"{path}: not a readable PNG image ({err})") from err
    if grey.shape != (weights.shape[1], weights.shape[1]):
        raise DataIntegrityError(f"{path}: image is {grey.shape[1]}x{grey.shape[0]}, expected "
                                 f"{weights.shape[1]}x{weights.shape[1]}")
    ink = 1.0 - grey / 255.0                            # white background 1 -> 0, ink -> 1
    return np.rint(255.0 * (weights @ ink @ weights.T)).astype(np.uint8)


def read_omniglot_pngs(paths: Sequence[Path], size: int = 28, workers: int = 4,
                       source_size: int = 105) -> np.ndarray:
    """Omniglot PNGs (``source_size`` square) -> uint8 ``(N, size, size)`` with ink = 255,
    resized by exact area averaging (:func:`area_matrix`), so ``value / 255`` is the fraction of
    each output pixel covered by ink (to 1/510)."""
    weights = area_matrix(source_size, size)
    return _map_images(lambda p: _omniglot_png(p, weights), paths, (size, size), workers)


# --------------------------------------------------------------------------- CelebA

CELEBA_CROP = (15, 40, 163, 188)   # (left, top, right, bottom), the paper code's crop box


def read_celeba_partition(path: Path) -> dict[int, list[str]]:
    """``list_eval_partition.txt`` -> ``{0: train names, 1: valid names, 2: test names}``."""
    parts: dict[int, list[str]] = {0: [], 1: [], 2: []}
    for i, line in enumerate(path.read_text().splitlines()):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 2 or tokens[1] not in ("0", "1", "2"):
            raise DataIntegrityError(f"{path}: line {i + 1} is {line!r}, expected "
                                     f"'<image>.jpg <0|1|2>'")
        parts[int(tokens[1])].append(tokens[0])
    return parts


def _celeba_jpg(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB").crop(CELEBA_CROP).resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    except Exception as err:
        raise DataIntegrityError(f"{path}: not a readable JPEG image ({err})") from err


def read_celeba_images(paths: Sequence[Path], size: int = 64, workers: int = 4) -> np.ndarray:
    """CelebA aligned JPEGs -> uint8 ``(N, 3, size, size)``: crop :data:`CELEBA_CROP`, then resize
    (bilinear, antialiased by PIL when shrinking)."""
    return _map_images(lambda p: _celeba_jpg(p, size), paths, (3, size, size), workers)


def _map_images(fn: Callable[[Path], np.ndarray], paths: Sequence[Path],
                shape: tuple[int, ...], workers: int) -> np.ndarray:
    out = np.empty((len(paths), *shape), dtype=np.uint8)
    if not paths:
        return out
    workers = max(1, min(workers, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:     # PIL releases the GIL while decoding
        for i, img in enumerate(pool.map(fn, paths, chunksize=64)):
            out[i] = img
    return out


# --------------------------------------------------------------------------- CIFAR-10 / SVHN / npz

def read_cifar_batches(folder: Path, files: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's ``cifar-10-batches-py`` pickles -> uint8 ``(N, 3, 32, 32)`` and int64 labels."""
    xs, ys = [], []
    for name in files:
        path = folder / name
        try:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            labels = np.asarray(batch.get(b"labels", batch.get(b"fine_labels")), dtype=np.int64)
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as err:
            raise DataIntegrityError(f"{path}: not a CIFAR python batch ({err}); delete the folder "
                                     f"and download it again") from err
        if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
            raise DataIntegrityError(f"{path}: data has shape {data.shape} and labels "
                                     f"{labels.shape}, expected (N, 3072) and (N,)")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels)
    return np.concatenate(xs), np.concatenate(ys)


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's SVHN ``*_32x32.mat`` -> uint8 ``(N, 3, 32, 32)`` and labels 0..9 (the file
    stores digit 0 as label 10)."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path), variable_names=("X", "y"))
    except Exception as err:
        raise DataIntegrityError(f"{path}: not a readable MATLAB file ({err}); delete it and "
                                 f"download it again") from err
    if "X" not in mat or "y" not in mat:
        raise DataIntegrityError(f"{path}: expected variables 'X' (32x32x3xN) and 'y' (Nx1)")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8 or y.shape != (x.shape[3],):
        raise DataIntegrityError(f"{path}: X has shape {x.shape} ({x.dtype}) and y {y.shape}, "
                                 f"expected X 32x32x3xN uint8 and y Nx1")
    y = y.astype(np.int64)
    y[y == 10] = 0
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y


NPZ_IMAGE_KEYS = ("x", "data", "images", "imgs")


def read_image_npz(path: Path, key: str | None = None,
                   layout: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """An array file of images -> ``(N, C, H, W)`` (dtype kept) and the labels ``y`` if present.

    The images are under ``key`` (default: the first of :data:`NPZ_IMAGE_KEYS` present; a ``.npy``
    file is the array itself).  ``layout`` is ``"NHW"``, ``"NHWC"`` or ``"NCHW"``; by default a 4-d
    array is channels-last when its last axis has 1, 3 or 4 entries, else channels-first.
    """
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as err:
        raise DataIntegrityError(f"{path}: not a readable .npz/.npy file ({err})") from err
    labels = None
    if isinstance(loaded, np.ndarray):
        x = loaded
    else:
        with loaded:
            keys = [key] if key else [k for k in NPZ_IMAGE_KEYS if k in loaded.files]
            if not keys or keys[0] not in loaded.files:
                raise DataIntegrityError(
                    f"{path}: no image array {'under ' + repr(key) if key else ''} (keys: "
                    f"{loaded.files}); name it one of {NPZ_IMAGE_KEYS} or pass key=...")
            x = loaded[keys[0]]
            if "y" in loaded.files:
                labels = np.asarray(loaded["y"]).reshape(-1)
    x = to_nchw(np.asarray(x), layout, path)
    if labels is not None and labels.shape[0] != x.shape[0]:
        raise DataIntegrityError(f"{path}: {x.shape[0]} images but {labels.shape[0]} labels")
    return x, labels


def to_nchw(x: np.ndarray, layout: str | None, path: Path | str = "array") -> np.ndarray:
    """Put an image array in ``(N, C, H, W)`` order (see :func:`read_image_npz`)."""
    if layout is None:
        if x.ndim == 3:
            layout = "NHW"
        elif x.ndim == 4:
            layout = "NHWC" if x.shape[3] in (1, 3, 4) else "NCHW"
        else:
            raise DataIntegrityError(f"{path}: images have shape {x.shape}; expected (N,H,W), "
                                     f"(N,H,W,C) or (N,C,H,W)")
    layout = layout.upper()
    wanted = {"NHW": 3, "NHWC": 4, "NCHW": 4}
    if layout not in wanted:
        raise ValueError(f"unknown layout {layout!r}; choose one of {sorted(wanted)}")
    if x.ndim != wanted[layout]:
        raise DataIntegrityError(f"{path}: images have shape {x.shape}, which is not {layout}")
    if layout == "NHW":
        return x[:, None]
    if layout == "NHWC":
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


# --------------------------------------------------------------------------- processed-array cache

def processed_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mrvae/processed``, else ``~/.cache/mrvae/processed``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mrvae" / "processed"


def file_signature(paths: Sequence[Path]) -> list[tuple[str, int, int]]:
    """``(absolute path, size, mtime_ns)`` of each file: the cache key of what was read."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((os.path.abspath(p), st.st_size, st.st_mtime_ns))
    return out


def cached_array(tag: str, key: dict, build: Callable[[], np.ndarray], *, enabled: bool = True,
                 pack_bits: int | None = None) -> tuple[np.ndarray, dict]:
    """Load the array for ``key`` from the processed cache, else ``build()`` it and store it.

    ``pack_bits=n`` stores a 0/1 array ``(N, n)`` bit-packed (8x smaller).  Returns the array
    and ``{"cache_file": path or None, "cache_hit": bool}``.  An unwritable cache directory only
    costs speed (a warning), never correctness.
    """
    if not enabled:
        return build(), {"cache_file": None, "cache_hit": False}
    digest = hashlib.sha256(json.dumps({"v": CACHE_VERSION, "tag": tag, **key}, sort_keys=True,
                                       default=str).encode()).hexdigest()[:20]
    path = processed_cache_dir() / f"{tag}-{digest}.npy"
    if path.exists():
        try:
            arr = np.load(path, mmap_mode="r" if path.stat().st_size > _MMAP_BYTES else None,
                          allow_pickle=False)
            if pack_bits is not None:
                arr = np.unpackbits(arr, axis=1, count=pack_bits)
            return arr, {"cache_file": str(path), "cache_hit": True}
        except (OSError, ValueError, EOFError):
            pass                                          # corrupt cache entry: rebuild it
    arr = build()
    stored = np.packbits(arr, axis=1) if pack_bits is not None else arr
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.save(f, stored, allow_pickle=False)
        os.chmod(tmp, 0o644)                              # mkstemp creates 0600
        os.replace(tmp, path)
    except OSError as err:
        warnings.warn(f"could not write the processed-data cache {path} ({err}); the next load "
                      f"will process the raw files again", stacklevel=3)
        return arr, {"cache_file": None, "cache_hit": False}
    return arr, {"cache_file": str(path), "cache_hit": False}


# --------------------------------------------------------------------------- download

def download_url(url: str, dest: Path, *, sha256: str | None = None, md5: str | None = None,
                 dataset: str = "") -> Path:
    """Fetch ``url`` to ``dest`` (through a temporary file) and check its digest.

    Raises :class:`DataIntegrityError` (and leaves nothing at ``dest``) on a digest mismatch and
    :class:`DatasetMissingError` when the download itself fails.
    """
    algo, expected = ("sha256", sha256) if sha256 else ("md5", md5)
    h = hashlib.new(algo)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
    except OSError as err:
        raise DatasetMissingError(f"{dataset}: cannot write {dest} ({err}); point --data-dir / "
                                  f"$MRVAE_DATA at a writable folder to download") from err
    try:
        with os.fdopen(fd, "wb") as out:
            with urllib.request.urlopen(url, timeout=60) as response:
                for block in iter(lambda: response.read(1 << 20), b""):
                    h.update(block)
                    out.write(block)
        if expected and h.hexdigest() != expected:
            raise DataIntegrityError(f"{dataset}: {url} downloaded with {algo} {h.hexdigest()}, "
                                     f"expected {expected}; not saved to {dest}")
        os.replace(tmp, dest)
    except OSError as err:
        raise DatasetMissingError(f"{dataset}: download of {url} failed ({err}); fetch it by hand "
                                  f"and put it at {dest}") from err
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest
