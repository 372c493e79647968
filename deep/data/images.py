"""Dataset registry for the deep MR-VAEs (paper section 5.2; reference pipelines, notes section 7.6).

``load_split(name, split)`` returns an :class:`ImageSplit`: the images of one split kept compactly
in memory (uint8 where the source is 8-bit), served as float32 ``(B, C, H, W)`` batches in [0, 1]
by :meth:`ImageSplit.get_batch`.  Training-time randomness (dynamic binarisation, horizontal
flips) happens only with ``train=True`` and draws from the caller's ``torch.Generator``.

==========  ==========  ====================================================================
name        shape       source (under the data root, see :func:`linvae.dataroot.resolve_data_root`)
==========  ==========  ====================================================================
mnist       1x28x28     ``binarized_mnist/binarized_mnist_{train,valid,test}.amat[.gz]``
omniglot    1x28x28     ``omniglot/chardata.mat`` (IWAE), else the torchvision PNG folders
cifar10     3x32x32     ``cifar10/cifar10_{split}.npz`` or ``cifar-10-batches-py/``
svhn        3x32x32     ``svhn/{train,test}_32x32.mat`` or ``svhn/svhn_{split}.npz``
celeba64    3x64x64     ``celeba/img_align_celeba/*.jpg`` + ``celeba/list_eval_partition.txt``
npz         from file   any array file given by ``path=...``
==========  ==========  ====================================================================

Splits without an official validation set get ``"valid"`` carved from train: the last 5% of a
fixed-seed permutation.  Like the paper's code, ``"train"`` still holds all training images
unless ``hold_out_valid=True``.  Processed arrays (parsed ``.amat``, resized PNGs and JPEGs)
are cached under ``$XDG_CACHE_HOME/mrvae/processed`` (default ``~/.cache/mrvae/processed``).
The cache key is the size and mtime of every source file.  The network is used only with
``download=True``.  Source files are checked against their published digests (or a ``SHA256SUMS``
manifest at the data root) on first use (``verify=True``, the default; see
:func:`linvae.dataroot.verify_file`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from linvae.dataroot import (DataIntegrityError, DatasetMissingError, require_file,
                             resolve_data_root, verify_file)

from . import _readers as rd
from .registry import UnknownDatasetError

__all__ = ["DATASETS", "DatasetInfo", "UnknownDatasetError", "ImageSplit", "load_split",
           "DatasetMissingError", "DataIntegrityError", "MNIST_URL", "MNIST_SHA256",
           "MNIST_SPLIT_SIZES", "OMNIGLOT_CHARDATA_URL", "OMNIGLOT_CHARDATA_MD5",
           "FIXED_BINARIZATION_SEED", "VALID_FRACTION", "VALID_SEED", "fixed_binarize",
           "valid_indices"]

MNIST_URL = ("http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
             "binarized_mnist_{split}.amat")
MNIST_SHA256 = {   # of the uncompressed .amat files
    "train": "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
    "valid": "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
    "test": "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
}
MNIST_SPLIT_SIZES = {"train": 50000, "valid": 10000, "test": 10000}
OMNIGLOT_CHARDATA_URL = "https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/chardata.mat"
OMNIGLOT_CHARDATA_MD5 = "21ecaf34373511aa7691cf2e0802aa3d"
OMNIGLOT_SUBSTITUTE_SIZES = {"train": 19280, "test": 13180}
FIXED_BINARIZATION_SEED = 777      # evaluation binarisation of Omniglot (reference code)
VALID_FRACTION = 0.05
VALID_SEED = 1234
CIFAR_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
#: Published md5 of the files torchvision downloads (the values its CIFAR10 / SVHN classes check), and of
#: CelebA's official split file.
PUBLISHED_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e",
    "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373", "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
    "list_eval_partition.txt": "d32c9cbf5e040fd4025c592c306e6668",
}

_SUBSTITUTE_OMNIGLOT = ("substitute: torchvision Omniglot (background=train, evaluation=test) "
                        "resized to 28x28")


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is.  ``shape`` is ``(C, H, W)``; ``likelihood`` is ``"bernoulli"`` (binary
    pixels) or ``"continuous"`` (8-bit colour).  Both are ``None`` for ``"npz"``, where they come
    from the file (see :attr:`ImageSplit.shape` and :attr:`ImageSplit.likelihood`)."""

    name: str
    shape: tuple[int, int, int] | None
    likelihood: str | None
    splits: tuple[str, ...]
    description: str
    source: str = ""


_SPLITS = ("train", "valid", "test")
DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        "mnist", (1, 28, 28), "bernoulli", _SPLITS,
        "static binarised MNIST (Larochelle & Murray 2011), 50,000 / 10,000 / 10,000",
        MNIST_URL.format(split="{train,valid,test}")),
    "omniglot": DatasetInfo(
        "omniglot", (1, 28, 28), "bernoulli", _SPLITS,
        "Omniglot 28x28, IWAE chardata.mat (24,345 / 8,070), else torchvision's PNGs resized; "
        "dynamically binarised for training, seed-777 binarisation for evaluation",
        f"{OMNIGLOT_CHARDATA_URL} or torchvision.datasets.Omniglot"),
    "cifar10": DatasetInfo(
        "cifar10", (3, 32, 32), "continuous", _SPLITS,
        "CIFAR-10, 50,000 / 10,000, random horizontal flips for training",
        "torchvision.datasets.CIFAR10"),
    "svhn": DatasetInfo(
        "svhn", (3, 32, 32), "continuous", _SPLITS,
        "SVHN train (73,257, no 'extra') / test (26,032)", "torchvision.datasets.SVHN"),
    "celeba64": DatasetInfo(
        "celeba64", (3, 64, 64), "continuous", _SPLITS,
        "CelebA aligned, cropped to (15, 40, 163, 188) and resized to 64x64; official split; "
        "random horizontal flips for training", "torchvision.datasets.CelebA"),
    "npz": DatasetInfo(
        "npz", None, None, _SPLITS,
        "any pre-extracted image array (.npz key x/data/images/imgs, or .npy): (N,H,W), "
        "(N,H,W,C) or (N,C,H,W), uint8 or float in [0, 1]; option path=... ('{split}' is "
        "replaced by the split name)", "your own file"),
}


# =========================================================================== ImageSplit

class ImageSplit:
    """One split of an image dataset, served as float32 batches ``(B, C, H, W)`` in [0, 1].

    ``images`` is ``(N, C, H, W)``: uint8 (divided by ``divisor``, 255 for 8-bit pixels, 1 for
    0/1 pixels) or float in [0, 1].  With ``dynamic=True`` the images are Bernoulli means and
    ``get_batch(train=True)`` draws fresh binary pixels; ``eval_images`` (0/1) are served
    otherwise.  ``flip=True`` flips each example horizontally with probability 1/2, again only
    with ``train=True``.
    """

    def __init__(self, name: str, split: str, images: np.ndarray, *, protocol: str,
                 binarization: str, likelihood: str, divisor: float = 1.0,
                 dynamic: bool = False, eval_images: np.ndarray | None = None,
                 flip: bool = False, labels: np.ndarray | None = None,
                 source_files: Sequence[str | os.PathLike] = (), notes: Sequence[str] = (),
                 extra: dict[str, Any] | None = None) -> None:
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {images.shape}")
        if dynamic and eval_images is None:
            raise ValueError("a dynamically binarised split needs eval_images (its fixed "
                             "binarisation for train=False)")
        if eval_images is not None and eval_images.shape != images.shape:
            raise ValueError(f"eval_images {eval_images.shape} != images {images.shape}")
        self.name = name
        self.split = split
        self.shape: tuple[int, int, int] = tuple(int(s) for s in images.shape[1:])
        self.protocol = protocol
        self.binarization = binarization
        self.likelihood = likelihood
        self.labels = labels
        self.source_files = [str(p) for p in source_files]
        self.notes = list(notes)
        self.extra = dict(extra or {})
        self._images = images
        self._divisor = float(divisor)
        self._dynamic = dynamic
        self._eval_images = eval_images
        self._flip = flip

    def __len__(self) -> int:
        return int(self._images.shape[0])

    def __repr__(self) -> str:
        return (f"ImageSplit({self.name!r}, {self.split!r}, n={len(self)}, shape={self.shape}, "
                f"binarization={self.binarization!r}, protocol={self.protocol!r})")

    def get_batch(self, index: torch.Tensor | Sequence[int] | np.ndarray, *, train: bool = False,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        """Images at ``index`` (shape ``(B,)``) as float32 ``(B, C, H, W)`` in [0, 1].

        ``train=True`` draws a fresh binarisation (dynamic splits) and random horizontal flips
        (splits with flips) from ``generator`` (CPU; ``None`` uses torch's global generator).
        ``train=False`` is deterministic.
        """
        idx = torch.as_tensor(index, dtype=torch.long).reshape(-1).cpu()
        n = len(self)
        if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
            raise IndexError(f"{self.name}/{self.split}: index out of range for {n} images "
                             f"(got {int(idx.min())}..{int(idx.max())})")
        rows = idx.numpy()
        if train and self._dynamic:
            probs = torch.from_numpy(np.asarray(self._images[rows], dtype=np.float32))
            if self._divisor != 1.0:
                probs = probs / self._divisor
            x = torch.bernoulli(probs.clamp_(0.0, 1.0), generator=generator)
        elif self._eval_images is not None:
            x = torch.from_numpy(np.asarray(self._eval_images[rows], dtype=np.float32))
        else:
            x = torch.from_numpy(np.asarray(self._images[rows], dtype=np.float32))
            if self._divisor != 1.0:
                x = x / self._divisor
        if train and self._flip and x.shape[0]:
            flip = torch.rand(x.shape[0], generator=generator) < 0.5
            x[flip] = x[flip].flip(-1)
        return x.contiguous()

    def get_means(self, index: torch.Tensor | Sequence[int] | np.ndarray) -> torch.Tensor:
        """The stored pixel values at ``index`` as float32 ``(B, C, H, W)`` in [0, 1], before any
        binarisation or flip: the Bernoulli means of a dynamically binarised split."""
        rows = torch.as_tensor(index, dtype=torch.long).reshape(-1).cpu().numpy()
        x = torch.from_numpy(np.asarray(self._images[rows], dtype=np.float32))
        return x / self._divisor if self._divisor != 1.0 else x

    def meta(self) -> dict[str, Any]:
        """JSON-able description (name, split, n, shape, protocol, binarization, source files)."""
        return {"name": self.name, "split": self.split, "n": len(self), "shape": list(self.shape),
                "protocol": self.protocol, "binarization": self.binarization,
                "likelihood": self.likelihood, "source_files": list(self.source_files),
                "notes": list(self.notes), **self.extra}


# =========================================================================== public entry point

_COMMON_OPTIONS = {"hold_out_valid", "cache", "verify"}
_OPTIONS = {
    "mnist": _COMMON_OPTIONS,
    "omniglot": _COMMON_OPTIONS | {"source"},
    "cifar10": _COMMON_OPTIONS,
    "svhn": _COMMON_OPTIONS,
    "celeba64": _COMMON_OPTIONS,
    "npz": _COMMON_OPTIONS | {"path", "key", "layout", "likelihood", "binarize", "flip"},
}


def load_split(name: str, split: str, data_dir: str | os.PathLike | None = None,
               download: bool = False, **options: Any) -> ImageSplit:
    """Load split ``split`` (``"train"``, ``"valid"`` or ``"test"``) of dataset ``name``.

    ``data_dir`` defaults to ``$MRVAE_DATA`` / ``~/.cache/mrvae/data``; ``download=True`` fetches
    missing files (nothing is fetched otherwise).  Options: ``hold_out_valid`` (train excludes
    the carved validation images), ``cache`` (default True), ``verify`` (default True: check the
    published checksums, or the data root's ``SHA256SUMS``, on first use), and per dataset: omniglot ``source="auto"|"iwae"|"torchvision"``; npz ``path``, ``key``,
    ``layout``, ``likelihood``, ``binarize`` (None, ``"dynamic"``, ``"fixed-seed"``), ``flip``.

    Raises :class:`UnknownDatasetError`, ``ValueError`` (unknown split or option),
    :class:`DatasetMissingError` (a file is absent) or :class:`DataIntegrityError` (corrupt).
    """
    if name not in DATASETS:
        raise UnknownDatasetError(f"unknown dataset {name!r}; choose one of "
                                  f"{', '.join(DATASETS)}")
    info = DATASETS[name]
    if split not in info.splits:
        raise ValueError(f"unknown split {split!r} for {name}; choose one of "
                         f"{', '.join(info.splits)}")
    unknown = set(options) - _OPTIONS[name]
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for {name}; accepted: "
                         f"{sorted(_OPTIONS[name])}")
    root = resolve_data_root(data_dir)
    return _LOADERS[name](root, split, bool(download), **options)


# =========================================================================== shared policy

def valid_indices(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train_rest, valid)`` sorted indices: valid is the last ``VALID_FRACTION`` of a
    permutation drawn with seed ``VALID_SEED``."""
    if n < 2:
        raise DataIntegrityError(f"cannot carve a validation split from {n} training image(s)")
    n_valid = min(n - 1, max(1, int(round(VALID_FRACTION * n))))
    perm = np.random.default_rng(VALID_SEED).permutation(n)
    return np.sort(perm[: n - n_valid]), np.sort(perm[n - n_valid:])


def _carve(split: str, n: int, hold_out_valid: bool, base_protocol: str,
           base_name: str = "train") -> tuple[np.ndarray | None, str]:
    """Rows of the train source that make up ``split`` (``None``: all) and the protocol label."""
    if split == "valid" or (split == "train" and hold_out_valid):
        rest, valid = valid_indices(n)
        pct = f"{VALID_FRACTION:.0%}"
        if split == "valid":
            return valid, (f"{base_protocol}; valid = last {pct} ({len(valid)} of {n}) of a "
                           f"seed-{VALID_SEED} permutation of the {base_name} split")
        return rest, (f"{base_protocol}; train = {base_name} split minus a held-out {pct} "
                      f"validation set ({len(rest)} of {n})")
    return None, base_protocol


def fixed_binarize(images: np.ndarray, divisor: float = 1.0,
                   seed: int = FIXED_BINARIZATION_SEED) -> np.ndarray:
    """One Bernoulli draw of every pixel (numpy PCG64, ``seed``): uint8 0/1 of the same shape.

    ``images / divisor`` are the probabilities.  8-bit images (``divisor=255``) are compared with
    integers uniform on 0..254, which gives probability ``v / 255`` exactly.
    """
    rng = np.random.default_rng(seed)
    if images.dtype == np.uint8 and divisor == 255.0:
        return (rng.integers(0, 255, size=images.shape, dtype=np.uint8) < images).astype(np.uint8)
    u = rng.random(images.shape, dtype=np.float32)
    return (u * np.float32(divisor) < images).astype(np.uint8)


def _take(a: np.ndarray | None, rows: np.ndarray | None) -> np.ndarray | None:
    return a if a is None or rows is None else a[rows]


def _continuous_split(name: str, split: str, images: np.ndarray, labels: np.ndarray | None,
                      protocol: str, sources: Sequence[Path], hold_out_valid: bool,
                      notes: Sequence[str] = (), extra: dict | None = None) -> ImageSplit:
    """A uint8 colour split with flips for training (cifar10, svhn)."""
    rows, protocol = (None, protocol) if split == "test" else _carve(
        split, images.shape[0], hold_out_valid, protocol)
    return ImageSplit(name, split, _take(images, rows), protocol=protocol, binarization="none",
                      likelihood="continuous", divisor=255.0, flip=(split == "train"),
                      labels=_take(labels, rows), source_files=sources, notes=notes, extra=extra)


def _cached_pair(tag: str, sources: Sequence[Path], read: Callable[[], tuple], cache: bool
                 ) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Images and labels from ``read()``, through the processed cache (the raw files are read at
    most once, and not at all on a cache hit)."""
    memo: list = []

    def get() -> tuple:
        if not memo:
            memo.append(read())
        return memo[0]

    key = {"files": rd.file_signature(sources)}
    x, cinfo = rd.cached_array(f"{tag}-x", key, lambda: get()[0], enabled=cache)
    y, _ = rd.cached_array(f"{tag}-y", key, lambda: np.asarray(
        get()[1] if get()[1] is not None else np.zeros(0, np.int64)), enabled=cache)
    return x, (y if y.size else None), cinfo


def _torchvision_download(cls_name: str, dataset: str, **kwargs: Any) -> None:
    import torchvision

    try:
        getattr(torchvision.datasets, cls_name)(download=True, **kwargs)
    except Exception as err:  # network, checksum or extraction failure
        raise DatasetMissingError(f"{dataset}: torchvision.datasets.{cls_name}(download=True, "
                                  f"{kwargs}) failed: {err}") from err


def _verify(paths: Sequence[Path], root: Path, dataset: str, verify: bool) -> None:
    """Check each file against its published md5 (:data:`PUBLISHED_MD5`) or the data root's manifest."""
    if verify:
        for path in paths:
            expected = PUBLISHED_MD5.get(path.name)
            verify_file(path, dataset=dataset, algorithm="md5" if expected else None, expected=expected, root=root)


# =========================================================================== mnist

def _load_mnist(root: Path, split: str, download: bool, hold_out_valid: bool = False,
                cache: bool = True, verify: bool = True) -> ImageSplit:
    folder = root / "binarized_mnist"
    plain = folder / f"binarized_mnist_{split}.amat"
    gz = folder / f"binarized_mnist_{split}.amat.gz"
    url = MNIST_URL.format(split=split)
    if not plain.exists() and not gz.exists() and download:
        rd.download_url(url, plain, sha256=MNIST_SHA256[split], dataset="mnist")
    path = gz if gz.exists() and not plain.exists() else plain
    require_file(path, "mnist", url,
                 f"the .amat or gzip-compressed .amat.gz in {folder}; or load_split(..., "
                 f"download=True) / --download")
    n_expected = MNIST_SPLIT_SIZES[split]
    raw: dict[str, bytes] = {}

    def parse() -> np.ndarray:
        raw.setdefault("bytes", rd.read_maybe_gzip(path))
        return rd.parse_amat(raw["bytes"], path, 784, n_expected)

    if verify:
        verify_file(path, dataset="mnist", algorithm="sha256", expected=MNIST_SHA256[split],
                    content=lambda: raw.setdefault("bytes", rd.read_maybe_gzip(path)),
                    source="the published sha256 of the uncompressed .amat")
    key = {"split": split, "files": rd.file_signature([path]), "n": n_expected}
    flat, cinfo = rd.cached_array(f"mnist-{split}", key, parse, enabled=cache, pack_bits=784)
    if flat.shape != (n_expected, 784):
        raise DataIntegrityError(f"{path}: parsed shape {flat.shape}, expected ({n_expected}, 784)")
    return ImageSplit("mnist", split, flat.reshape(-1, 1, 28, 28), protocol=(
        "static binarised MNIST (Larochelle & Murray 2011), official 50k/10k/10k split"),
        binarization="static", likelihood="bernoulli", source_files=[path],
        extra={"cache": cinfo})


# =========================================================================== omniglot

def _load_omniglot(root: Path, split: str, download: bool, hold_out_valid: bool = False,
                   cache: bool = True, verify: bool = True, source: str = "auto") -> ImageSplit:
    if source not in ("auto", "iwae", "torchvision"):
        raise ValueError(f"omniglot: unknown source {source!r}; choose 'auto' (chardata.mat if "
                         f"present, else the torchvision PNGs), 'iwae' or 'torchvision'")
    folder = root / "omniglot"
    chardata = folder / "chardata.mat"
    png_root = folder / "omniglot-py"
    base = "test" if split == "test" else "train"
    png_dir = png_root / ("images_evaluation" if base == "test" else "images_background")
    use_iwae = source == "iwae" or (source == "auto" and (
        chardata.exists() or (download and not png_dir.is_dir())))
    notes: list[str] = []
    cinfo: dict = {"cache_file": None, "cache_hit": False}
    if use_iwae:
        if not chardata.exists() and download:
            rd.download_url(OMNIGLOT_CHARDATA_URL, chardata, md5=OMNIGLOT_CHARDATA_MD5,
                            dataset="omniglot")
        require_file(chardata, "omniglot", OMNIGLOT_CHARDATA_URL,
                     "the IWAE 28x28 split, md5 " + OMNIGLOT_CHARDATA_MD5 + "; or "
                     "load_split(..., download=True) / --download")
        if verify:
            verify_file(chardata, dataset="omniglot", algorithm="md5", expected=OMNIGLOT_CHARDATA_MD5)
        probs, divisor = rd.read_chardata(chardata)[base][:, None], 1.0
        protocol, sources = "iwae-chardata", [chardata]
    else:
        if not png_dir.is_dir() and download:
            _torchvision_download("Omniglot", "omniglot", root=str(folder),
                                  background=(base == "train"))
        require_file(png_dir, "omniglot", "torchvision.datasets.Omniglot(root/'omniglot', "
                     f"background={base == 'train'}, download=True)",
                     f"the extracted folder; or the IWAE file {chardata} from "
                     f"{OMNIGLOT_CHARDATA_URL}; or load_split(..., download=True) / --download")
        paths = rd.list_png_tree(png_dir)
        if not paths:
            raise DatasetMissingError(f"omniglot: no PNG images under {png_dir} (expected "
                                      f"<alphabet>/<character>/*.png); get them with "
                                      f"torchvision.datasets.Omniglot(download=True)")
        key = {"files": rd.file_signature(paths), "size": 28, "filter": "area"}
        arr, cinfo = rd.cached_array(f"omniglot-{png_dir.name}", key,
                                     lambda: rd.read_omniglot_pngs(paths), enabled=cache)
        probs, divisor = arr[:, None], 255.0
        protocol, sources = _SUBSTITUTE_OMNIGLOT, [png_dir]
        if len(paths) != OMNIGLOT_SUBSTITUTE_SIZES[base]:
            notes.append(f"{len(paths)} PNGs found in {png_dir}, the full set has "
                         f"{OMNIGLOT_SUBSTITUTE_SIZES[base]}")
    fixed = fixed_binarize(probs, divisor)
    extra = {"cache": cinfo, "fixed_binarization_seed": FIXED_BINARIZATION_SEED}
    if split == "test":
        return ImageSplit("omniglot", split, fixed, protocol=protocol, binarization="fixed-seed",
                          likelihood="bernoulli", source_files=sources, notes=notes, extra=extra)
    rows, protocol = _carve(split, probs.shape[0], hold_out_valid, protocol)
    if split == "valid":
        return ImageSplit("omniglot", split, _take(fixed, rows), protocol=protocol,
                          binarization="fixed-seed", likelihood="bernoulli",
                          source_files=sources, notes=notes, extra=extra)
    return ImageSplit("omniglot", split, _take(probs, rows), protocol=protocol,
                      binarization="dynamic", likelihood="bernoulli", divisor=divisor,
                      dynamic=True, eval_images=_take(fixed, rows), source_files=sources,
                      notes=notes + ["train=False serves the seed-777 binarisation"], extra=extra)


# =========================================================================== cifar10 / svhn

def _load_cifar10(root: Path, split: str, download: bool, hold_out_valid: bool = False,
                  cache: bool = True, verify: bool = True) -> ImageSplit:
    base = "test" if split == "test" else "train"
    npz = root / "cifar10" / f"cifar10_{base}.npz"
    batches = root / "cifar-10-batches-py"
    have_batches = all((batches / f).exists() for f in CIFAR_FILES[base])
    if not npz.exists() and not have_batches and download:
        _torchvision_download("CIFAR10", "cifar10", root=str(root), train=(base == "train"))
    if not npz.exists() and not batches.is_dir():
        require_file(npz, "cifar10", "torchvision.datasets.CIFAR10(root, download=True)",
                     f"or the python batches {batches}/{', '.join(CIFAR_FILES[base])}; run "
                     f"load_split('cifar10', '{split}', download=True) or pass --download")
    if npz.exists():
        sources = [npz]
        _verify(sources, root, "cifar10", verify)
        x, y, cinfo = _cached_pair(f"cifar10-{base}", sources,
                                   lambda: rd.read_image_npz(npz, "x", "NHWC"), cache)
    else:
        for f in CIFAR_FILES[base]:
            require_file(batches / f, "cifar10", "torchvision.datasets.CIFAR10(root, download=True)",
                         "the python batches; or load_split(..., download=True) / --download")
        sources = [batches / f for f in CIFAR_FILES[base]]
        _verify(sources, root, "cifar10", verify)
        x, y, cinfo = _cached_pair(f"cifar10-{base}", sources,
                                   lambda: rd.read_cifar_batches(batches, CIFAR_FILES[base]), cache)
    if x.shape[1:] != (3, 32, 32) or x.dtype != np.uint8:
        raise DataIntegrityError(f"cifar10: {sources[0]} holds {x.shape} {x.dtype}, expected "
                                 f"N x 32 x 32 x 3 uint8")
    return _continuous_split("cifar10", split, x, y, f"CIFAR-10 official {base} set",
                             sources, hold_out_valid, extra={"cache": cinfo})


def _load_svhn(root: Path, split: str, download: bool, hold_out_valid: bool = False,
               cache: bool = True, verify: bool = True) -> ImageSplit:
    base = "test" if split == "test" else "train"
    folder = root / "svhn"
    mat = folder / f"{base}_32x32.mat"
    npz = folder / f"svhn_{base}.npz"
    if not mat.exists() and not npz.exists() and download:
        _torchvision_download("SVHN", "svhn", root=str(folder), split=base)
    if mat.exists():
        source = mat
        _verify([mat], root, "svhn", verify)
        x, y, cinfo = _cached_pair(f"svhn-{base}", [mat], lambda: rd.read_svhn_mat(mat), cache)
    else:
        require_file(npz if npz.exists() else mat, "svhn",
                     "torchvision.datasets.SVHN(root/'svhn', split=..., download=True)",
                     f"or a pre-extracted {npz} with x (N,32,32,3 uint8) and y; run "
                     f"load_split('svhn', '{split}', download=True) or pass --download")
        source = npz
        _verify([npz], root, "svhn", verify)
        x, y, cinfo = _cached_pair(f"svhn-{base}", [npz],
                                   lambda: rd.read_image_npz(npz, "x", "NHWC"), cache)
    if x.shape[1:] != (3, 32, 32) or x.dtype != np.uint8:
        raise DataIntegrityError(f"svhn: {source} holds {x.shape} {x.dtype}, expected "
                                 f"32x32x3 uint8 images")
    return _continuous_split("svhn", split, x, y, f"SVHN official {base} set (no 'extra')",
                             [source], hold_out_valid, extra={"cache": cinfo})


# =========================================================================== celeba64

def _load_celeba64(root: Path, split: str, download: bool, hold_out_valid: bool = False,
                   cache: bool = True, verify: bool = True) -> ImageSplit:
    folder = root / "celeba"
    partition = folder / "list_eval_partition.txt"
    img_dir = folder / "img_align_celeba"
    source = "torchvision.datasets.CelebA(root, download=True)"
    if download and not (partition.exists() and img_dir.is_dir()):
        _torchvision_download("CelebA", "celeba64", root=str(root), split="all")
    require_file(partition, "celeba64", source, "the official split file; or --download")
    require_file(img_dir, "celeba64", source, "the aligned 178x218 JPEGs; or --download")
    _verify([partition], root, "celeba64", verify)
    names = rd.read_celeba_partition(partition)[{"train": 0, "valid": 1, "test": 2}[split]]
    present = set(os.listdir(img_dir))
    have = [n for n in names if n in present]
    if not have:
        raise DatasetMissingError(
            f"celeba64: none of the {len(names)} images of the official {split} split is in "
            f"{img_dir} (first expected: {names[0] if names else '-'}); get them from {source}")
    paths = [img_dir / n for n in have]
    key = {"split": split, "partition": rd.file_signature([partition]),
           "files": rd.file_signature(paths), "crop": rd.CELEBA_CROP, "size": 64}
    x, cinfo = rd.cached_array(f"celeba64-{split}", key, lambda: rd.read_celeba_images(paths),
                               enabled=cache)
    notes = []
    if len(have) < len(names):
        protocol = f"subset: {len(have)} of {len(names)} images of the official {split} split present"
        notes.append(f"{len(names) - len(have)} listed images are missing from {img_dir}")
    else:
        protocol = f"CelebA official {split} split, crop (15, 40, 163, 188), resized to 64x64"
    return ImageSplit("celeba64", split, x, protocol=protocol, binarization="none",
                      likelihood="continuous", divisor=255.0, flip=(split == "train"),
                      source_files=[partition, img_dir], notes=notes,
                      extra={"cache": cinfo, "n_listed": len(names), "first_file": have[0]})


# =========================================================================== npz

def _npz_path(root: Path, template: str, split: str) -> Path:
    p = Path(template.replace("{split}", split)).expanduser()
    if not p.is_absolute() and not p.exists() and (root / p).exists():
        return root / p
    return p


def _load_npz(root: Path, split: str, download: bool, hold_out_valid: bool = False,
              cache: bool = True, verify: bool = True, path: str | os.PathLike | None = None,
              key: str | None = None, layout: str | None = None, likelihood: str | None = None,
              binarize: str | None = None, flip: bool = False) -> ImageSplit:
    if path is None:
        raise ValueError("npz: pass the array file with path=... (option); '{split}' in it is "
                         "replaced by the split name, e.g. path='data/mine_{split}.npz'")
    if likelihood not in (None, "bernoulli", "continuous"):
        raise ValueError(f"npz: likelihood must be 'bernoulli' or 'continuous', got {likelihood!r}")
    if binarize not in (None, "dynamic", "fixed-seed"):
        raise ValueError(f"npz: binarize must be None, 'dynamic' or 'fixed-seed', got {binarize!r}")
    template = str(path)
    valid_file = _npz_path(root, template, "valid") if "{split}" in template else None
    carved_valid = valid_file is None or not valid_file.exists()
    carve = carved_valid and (split == "valid" or (split == "train" and hold_out_valid))
    file = _npz_path(root, template, "train" if carve else split)
    require_file(file, "npz", "your own pre-extracted array file (no download exists)",
                 "x as (N,H,W), (N,H,W,C) or (N,C,H,W)")
    _verify([file], root, "npz", verify)
    x, y = rd.read_image_npz(file, key, layout)
    if x.dtype == np.bool_:
        x = x.astype(np.uint8)
    divisor, binary = _npz_scale(x, file)
    rows, protocol = None, f"user array file {file.name}"
    if carve:
        rows, protocol = _carve(split, x.shape[0], hold_out_valid, protocol, file.name)
    x, y = _take(x, rows), _take(y, rows)
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
    lik = likelihood or ("bernoulli" if binary else "continuous")
    kw: dict[str, Any] = dict(protocol=protocol, likelihood=lik, divisor=divisor, flip=flip and
                              split == "train", labels=y, source_files=[file])
    if binary:
        return ImageSplit("npz", split, x, binarization="static", **kw)
    if binarize is None:
        return ImageSplit("npz", split, x, binarization="none", **kw)
    fixed = fixed_binarize(x, divisor)
    if binarize == "dynamic" and split == "train":
        return ImageSplit("npz", split, x, binarization="dynamic", dynamic=True,
                          eval_images=fixed, **kw)
    kw["divisor"] = 1.0
    return ImageSplit("npz", split, fixed, binarization="fixed-seed", **kw)


def _npz_scale(x: np.ndarray, file: Path) -> tuple[float, bool]:
    """``(divisor, is_binary)``: uint8 0/1 and float data are used as they are, other uint8 is
    divided by 255."""
    if x.dtype == np.uint8:
        counts = np.bincount(x.reshape(-1), minlength=256)
        used = np.flatnonzero(counts)
        if used.size and used.max() <= 1:
            return 1.0, True
        return 255.0, bool(set(used.tolist()) <= {0, 255})
    if x.dtype.kind not in "fiub":
        raise DataIntegrityError(f"{file}: images have dtype {x.dtype}; expected uint8 or float")
    if x.size and (np.nanmin(x) < 0 or np.nanmax(x) > 1 or np.isnan(x).any()):
        raise DataIntegrityError(f"{file}: float images must lie in [0, 1] (found "
                                 f"{np.nanmin(x):.3g}..{np.nanmax(x):.3g}); rescale them or store "
                                 f"uint8")
    return 1.0, bool(np.all((x == 0) | (x == 1)))


_LOADERS: dict[str, Callable[..., ImageSplit]] = {
    "mnist": _load_mnist, "omniglot": _load_omniglot, "cifar10": _load_cifar10,
    "svhn": _load_svhn, "celeba64": _load_celeba64, "npz": _load_npz,
}
