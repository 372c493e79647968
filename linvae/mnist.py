"""Real-valued MNIST for the linear VAE: 60,000 train / 10,000 test, pixels in [0, 1].

Reads torchvision's layout ``<root>/MNIST/raw/*-ubyte`` (uncompressed IDX files) with numpy;
``download=True`` fetches them with torchvision's own downloader (which checks the archives' md5s).
Every read checks the file's published md5 (:data:`MNIST_MD5`; hashed on first use only, see
:func:`linvae.dataroot.verify_file`).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .dataroot import DataIntegrityError, require_file, resolve_data_root, verify_file

__all__ = ["load_mnist", "MNIST_FILES", "MNIST_MD5"]

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", 60000),
    "test": ("t10k-images-idx3-ubyte", 10000),
}
#: md5 of the uncompressed IDX files (the published values, also in the data README).
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
_SOURCE = "the MNIST database (torchvision.datasets.MNIST(root, download=True) or `--download`)"


def _read_idx_images(path: Path, expected: int) -> np.ndarray:
    raw = path.read_bytes()
    if len(raw) < 16 or int.from_bytes(raw[0:4], "big") != 2051:
        raise DataIntegrityError(f"{path} is not an IDX image file (bad magic number); re-download it")
    n, rows, cols = (int.from_bytes(raw[i:i + 4], "big") for i in (4, 8, 12))
    if n != expected or rows != 28 or cols != 28 or len(raw) != 16 + n * rows * cols:
        raise DataIntegrityError(f"{path}: expected {expected} images of 28x28, header says "
                                 f"{n}x{rows}x{cols} with {len(raw) - 16} bytes of pixels")
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows * cols)


def load_mnist(split: str = "train", data_dir: str | os.PathLike | None = None,
               download: bool = False, verify: bool = True) -> np.ndarray:
    """MNIST images as float64 ``(N, 784)`` in [0, 1] (``split`` is ``"train"`` or ``"test"``).

    ``verify``: check the file's published md5 (:class:`DataIntegrityError` naming the file and the
    expected value on a mismatch)."""
    if split not in MNIST_FILES:
        raise ValueError(f"unknown MNIST split {split!r}; choose 'train' or 'test'")
    root = resolve_data_root(data_dir)
    name, n = MNIST_FILES[split]
    path = root / "MNIST" / "raw" / name
    if not path.exists() and download:
        import torchvision  # the canonical downloader, with md5 checks

        torchvision.datasets.MNIST(str(root), train=(split == "train"), download=True)
    require_file(path, "MNIST", _SOURCE)
    if verify:
        verify_file(path, dataset="MNIST", algorithm="md5", expected=MNIST_MD5.get(name), root=root)
    return _read_idx_images(path, n).astype(np.float64) / 255.0
