"""Real-valued MNIST for the linear VAE: 60,000 train / 10,000 test, pixels in [0, 1].

Reads torchvision's layout ``<root>/MNIST/raw/*-ubyte`` (uncompressed IDX files) with numpy;
``download=True`` fetches them with torchvision's own downloader (which checks the md5s).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .dataroot import DataIntegrityError, require_file, resolve_data_root

__all__ = ["load_mnist", "MNIST_FILES"]

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", 60000),
    "test": ("t10k-images-idx3-ubyte", 10000),
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
               download: bool = False) -> np.ndarray:
    """MNIST images as float64 ``(N, 784)`` in [0, 1] (``split`` is ``"train"`` or ``"test"``)."""
    if split not in MNIST_FILES:
        raise ValueError(f"unknown MNIST split {split!r}; choose 'train' or 'test'")
    root = resolve_data_root(data_dir)
    name, n = MNIST_FILES[split]
    path = root / "MNIST" / "raw" / name
    if not path.exists() and download:
        import torchvision  # the canonical downloader, with md5 checks

        torchvision.datasets.MNIST(str(root), train=(split == "train"), download=True)
    require_file(path, "MNIST", _SOURCE)
    return _read_idx_images(path, n).astype(np.float64) / 255.0
