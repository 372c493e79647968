"""Data integrity (issue 18, problem 6): published checksums are verified on first use, the verdict is
cached (by path, size, mtime, ctime and inode), and a mismatch names the file and the expected value.

Synthetic files stand in for the real ones (their digests registered in place of the published ones); the
real-data tests overwrite bytes of a copy of the real MNIST file, as in the issue.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from linvae import dataroot, mnist
from linvae.dataroot import DataIntegrityError


@pytest.fixture(autouse=True)
def private_verdict_cache(tmp_path, monkeypatch):
    """Every test starts with an empty verdict cache of its own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    dataroot.forget_verdicts()
    yield
    dataroot.forget_verdicts()


def write_idx(path: Path, n: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    raw = (2051).to_bytes(4, "big") + n.to_bytes(4, "big") + (28).to_bytes(4, "big") + (28).to_bytes(4, "big")
    raw += rng.integers(0, 256, n * 784, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    return raw


def overwrite(path: Path, offset: int, data: bytes) -> None:
    """Change bytes in place (same size), as a bad copy or bit rot does."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.fixture
def idx_root(tmp_path, monkeypatch):
    """A synthetic t10k IDX file of 5 images whose md5 stands in for the published one."""
    monkeypatch.setitem(mnist.MNIST_FILES, "test", ("t10k-images-idx3-ubyte", 5))
    path = tmp_path / "data" / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    raw = write_idx(path, 5)
    monkeypatch.setitem(mnist.MNIST_MD5, "t10k-images-idx3-ubyte", hashlib.md5(raw).hexdigest())
    return tmp_path / "data", path


def test_p6_bytes_overwritten_in_the_mnist_idx_file_are_refused(idx_root):
    root, path = idx_root
    assert mnist.load_mnist("test", root).shape == (5, 784)
    size = path.stat().st_size
    overwrite(path, 1000, b"\x00" * 10)
    assert path.stat().st_size == size
    with pytest.raises(DataIntegrityError) as err:
        mnist.load_mnist("test", root)
    msg = str(err.value)
    assert str(path) in msg and mnist.MNIST_MD5["t10k-images-idx3-ubyte"] in msg and "md5" in msg
    mnist.load_mnist("test", root, verify=False)          # the user may opt out, knowingly


def test_the_verdict_is_cached_until_the_file_changes(idx_root, monkeypatch):
    root, path = idx_root
    hashed = []
    real = dataroot.file_digest
    monkeypatch.setattr(dataroot, "file_digest", lambda p, algo="md5", **kw: hashed.append(p) or real(p, algo))
    mnist.load_mnist("test", root)
    mnist.load_mnist("test", root)
    assert len(hashed) == 1
    dataroot.forget_verdicts(memory_only=True)            # a new process: the verdict file on disk answers
    mnist.load_mnist("test", root)
    assert len(hashed) == 1
    cache = dataroot.verdict_cache_path()
    assert cache.exists() and str(path.resolve()) in cache.read_text()
    # any change to the file (here: same size, new mtime) means checking again, and failing
    overwrite(path, 100, b"\xff")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10 ** 9))
    with pytest.raises(DataIntegrityError):
        mnist.load_mnist("test", root)
    assert len(hashed) == 2


def test_an_unwritable_verdict_cache_only_costs_time(idx_root, monkeypatch, tmp_path):
    root, _ = idx_root
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    dataroot.forget_verdicts()
    assert mnist.load_mnist("test", root).shape == (5, 784)


def test_binarised_mnist_is_verified_by_default(tmp_path, monkeypatch):
    from deep.data import images as data
    from deep.data.images import load_split

    monkeypatch.setitem(data.MNIST_SPLIT_SIZES, "test", 3)
    bits = (np.random.default_rng(0).random((3, 784)) < 0.3).astype(np.uint8)
    raw = ("\n".join(" ".join(str(v) for v in row) for row in bits) + "\n").encode()
    folder = tmp_path / "binarized_mnist"
    folder.mkdir()
    gz = folder / "binarized_mnist_test.amat.gz"
    gz.write_bytes(gzip.compress(raw, mtime=0))
    monkeypatch.setitem(data.MNIST_SHA256, "test", hashlib.sha256(raw).hexdigest())
    assert len(load_split("mnist", "test", tmp_path, cache=False)) == 3
    flipped = raw.replace(b"1 ", b"0 ", 1)                     # a valid file, but not the published one
    gz.write_bytes(gzip.compress(flipped, mtime=0))
    with pytest.raises(DataIntegrityError, match=rf"{gz.name}.*sha256.*{data.MNIST_SHA256['test']}"):
        load_split("mnist", "test", tmp_path, cache=False)
    assert len(load_split("mnist", "test", tmp_path, cache=False, verify=False)) == 3


def test_a_sha256sums_manifest_in_the_data_root_is_honoured(tmp_path):
    (tmp_path / "sub").mkdir()
    f = tmp_path / "sub" / "file.bin"
    f.write_bytes(b"hello")
    (tmp_path / "SHA256SUMS").write_text(f"{hashlib.sha256(b'hello').hexdigest()}  ./sub/file.bin\n")
    assert dataroot.verify_file(f, dataset="x", root=tmp_path) == "sha256"
    overwrite(f, 0, b"j")
    with pytest.raises(DataIntegrityError, match=r"file.bin.*SHA256SUMS"):
        dataroot.verify_file(f, dataset="x", root=tmp_path)
    other = tmp_path / "sub" / "unlisted.bin"
    other.write_bytes(b"x")
    assert dataroot.verify_file(other, dataset="x", root=tmp_path) is None     # nothing known: nothing checked


@pytest.mark.realdata
def test_p6_real_mnist_idx_with_bytes_overwritten(data_root, tmp_path):
    src = data_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    if not src.exists():
        pytest.skip("MNIST IDX files absent from the data root")
    dst = tmp_path / "MNIST" / "raw" / src.name
    dst.parent.mkdir(parents=True)
    shutil.copyfile(src, dst)
    assert mnist.load_mnist("test", tmp_path).shape == (10000, 784)
    overwrite(dst, 5000, bytes(16))
    with pytest.raises(DataIntegrityError, match="2646ac647ad5339dbf082846283269ea"):
        mnist.load_mnist("test", tmp_path)


@pytest.mark.realdata
def test_the_real_files_pass(data_root):
    assert mnist.load_mnist("test", data_root).shape == (10000, 784)
    from deep.data.images import load_split

    if (data_root / "binarized_mnist").is_dir():
        assert len(load_split("mnist", "test", data_root)) == 10000
