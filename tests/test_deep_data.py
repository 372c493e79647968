"""Tests for deep/data.py: every file format on synthetic files, the binarisation and flip
policies, the cache, the error messages, and (with the data_root fixture) the real datasets.

Synthetic files carry the names of published ones but not their checksums: the binarised-MNIST fixture
registers its files' digests in place of the published ones; the reader tests of other formats load with
``verify=False`` (checksum verification itself is tested in tests/test_integrity.py)."""
from __future__ import annotations

import gzip
import hashlib
import json
import pickle
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from deep.data import _readers as rd
from deep.data import images as data
from deep.data.images import (DATASETS, DataIntegrityError, DatasetMissingError, ImageSplit,
                       UnknownDatasetError, fixed_binarize, load_split, valid_indices)


# --------------------------------------------------------------------------- fixtures and helpers

@pytest.fixture(autouse=True)
def _isolation(request, monkeypatch, tmp_path):
    """No test may touch the network; synthetic tests get a private processed-data cache
    (real-data tests keep the user cache so that only their first run is slow)."""
    calls = []

    def no_network(*args, **kwargs):
        calls.append(args)
        raise AssertionError("the network was touched")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    if "realdata" not in request.keywords:
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    yield calls


def write_amat(path: Path, bits: np.ndarray, newline: str = "\n", trailing: str = "") -> bytes:
    text = newline.join(" ".join(str(int(v)) for v in row) + trailing for row in bits) + newline
    raw = text.encode()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return raw


@pytest.fixture
def mnist_root(tmp_path, monkeypatch):
    """Synthetic binarized_mnist: .amat for train/valid, .amat.gz for test; sizes 6/3/4."""
    sizes = {"train": 6, "valid": 3, "test": 4}
    for k, v in sizes.items():
        monkeypatch.setitem(data.MNIST_SPLIT_SIZES, k, v)
    folder = tmp_path / "binarized_mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    bits, raws = {}, {}
    for split, n in sizes.items():
        bits[split] = (rng.random((n, 784)) < 0.3).astype(np.uint8)
        suffix = ".amat.gz" if split == "test" else ".amat"
        raws[split] = write_amat(folder / f"binarized_mnist_{split}{suffix}", bits[split])
        # these synthetic files stand in for the published ones: their digests replace the published ones
        monkeypatch.setitem(data.MNIST_SHA256, split, hashlib.sha256(raws[split]).hexdigest())
    return tmp_path, bits, raws


def png_tree(root: Path, folder: str, images: list[np.ndarray]) -> list[Path]:
    """Write 105x105 1-bit PNGs (True = white) as <folder>/<alphabet>/<character>/<id>.png,
    named so that the loader's sorted order is the order of ``images``."""
    from PIL import Image

    paths = []
    for i, img in enumerate(images):
        d = root / "omniglot" / "omniglot-py" / folder / f"Alpha{i // 4}" / f"character{i % 4:02d}"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"{i:04d}_01.png"
        Image.fromarray(img).convert("1").save(p)
        paths.append(p)
    return paths


def ink_columns(n_cols: int) -> np.ndarray:
    """White 105x105 page with black ink in the first ``n_cols`` columns."""
    img = np.full((105, 105), 255, dtype=np.uint8)
    img[:, :n_cols] = 0
    return img


@pytest.fixture
def omniglot_png_root(tmp_path):
    # 15 ink columns = exactly 4 output columns (105 / 28 = 3.75); 17 adds 2/3.75 of column 4
    png_tree(tmp_path, "images_background", [ink_columns(15), ink_columns(17)] * 3)
    png_tree(tmp_path, "images_evaluation", [ink_columns(17), ink_columns(15)])
    return tmp_path


def asymmetric_rgb(n: int, h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    """(N, H, W, 3) uint8 with a bright left edge, so a flip is visible."""
    x = np.random.default_rng(seed).integers(0, 100, (n, h, w, 3), dtype=np.uint8)
    x[:, :, 0, :] = 255
    return x


# --------------------------------------------------------------------------- registry and errors

def test_registry_entries():
    assert set(DATASETS) == {"mnist", "omniglot", "cifar10", "svhn", "celeba64", "npz"}
    assert DATASETS["mnist"].shape == (1, 28, 28) and DATASETS["mnist"].likelihood == "bernoulli"
    assert DATASETS["omniglot"].shape == (1, 28, 28)
    assert DATASETS["cifar10"].shape == (3, 32, 32) == DATASETS["svhn"].shape
    assert DATASETS["celeba64"].shape == (3, 64, 64)
    assert DATASETS["celeba64"].likelihood == "continuous"
    for info in DATASETS.values():
        assert info.splits == ("train", "valid", "test") and info.description


def test_unknown_dataset_split_and_option_errors(tmp_path):
    with pytest.raises(UnknownDatasetError, match="mnist.*omniglot.*cifar10.*svhn.*celeba64"):
        load_split("imagenet", "train", tmp_path)
    with pytest.raises(ValueError, match="train, valid, test") as err:
        load_split("mnist", "training", tmp_path)
    assert not isinstance(err.value, UnknownDatasetError)
    with pytest.raises(ValueError, match="unknown option.*'colour'.*accepted"):
        load_split("mnist", "train", tmp_path, colour=True)


@pytest.mark.parametrize("name,split,needle", [
    ("mnist", "train", "binarized_mnist_train.amat"),
    ("omniglot", "train", "images_background"),
    ("cifar10", "test", "cifar10_test.npz"),
    ("svhn", "test", "test_32x32.mat"),
    ("celeba64", "valid", "list_eval_partition.txt"),
])
def test_download_false_never_touches_network(tmp_path, monkeypatch, _isolation, name, split,
                                              needle):
    import torchvision

    for cls in ("CIFAR10", "SVHN", "Omniglot", "CelebA"):
        monkeypatch.setattr(torchvision.datasets, cls, lambda *a, **k: pytest.fail("download"))
    with pytest.raises(DatasetMissingError, match=needle) as err:
        load_split(name, split, tmp_path, download=False)
    assert str(tmp_path) in str(err.value)          # where it was expected
    assert "download" in str(err.value) or "http" in str(err.value)
    assert _isolation == []


def test_missing_mnist_message_names_file_location_and_url(tmp_path):
    with pytest.raises(DatasetMissingError) as err:
        load_split("mnist", "test", tmp_path)
    msg = str(err.value)
    assert "binarized_mnist_test.amat" in msg
    assert str(tmp_path / "binarized_mnist") in msg
    assert "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/" in msg


def test_missing_cifar_train_names_both_locations_and_download(tmp_path):
    (tmp_path / "cifar10").mkdir()
    np.savez(tmp_path / "cifar10" / "cifar10_test.npz", x=asymmetric_rgb(2), y=np.zeros(2))
    assert len(load_split("cifar10", "test", tmp_path)) == 2
    with pytest.raises(DatasetMissingError) as err:
        load_split("cifar10", "train", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "cifar10" / "cifar10_train.npz") in msg
    assert str(tmp_path / "cifar-10-batches-py") in msg and "data_batch_1" in msg
    assert "download=True" in msg and "torchvision.datasets.CIFAR10" in msg


# --------------------------------------------------------------------------- mnist (.amat)

def test_amat_and_amat_gz_read_exactly(mnist_root):
    root, bits, _ = mnist_root
    for split in ("train", "valid", "test"):          # test is the .gz file
        s = load_split("mnist", split, root)
        assert (len(s), s.shape, s.binarization) == (len(bits[split]), (1, 28, 28), "static")
        x = s.get_batch(torch.arange(len(s)))
        assert x.dtype == torch.float32
        np.testing.assert_array_equal(x.reshape(len(s), 784).numpy(), bits[split])
        # static: training batches are the same pixels
        assert torch.equal(s.get_batch(torch.arange(len(s)), train=True), x)
    # pixel order is row-major: value k of a line is pixel (k // 28, k % 28)
    s = load_split("mnist", "train", root)
    assert s.get_batch([0])[0, 0, 3, 5] == bits["train"][0, 3 * 28 + 5]


def test_amat_slow_path_accepts_crlf_and_trailing_spaces(tmp_path):
    bits = (np.random.default_rng(1).random((3, 784)) < 0.5).astype(np.uint8)
    raw = write_amat(tmp_path / "a.amat", bits, newline="\r\n", trailing=" ")
    np.testing.assert_array_equal(rd.parse_amat(raw, tmp_path / "a.amat", 784, 3), bits)


@pytest.mark.parametrize("corrupt,match", [
    (lambda raw: raw[: len(raw) - 700], "line 4 has"),                # truncated mid-line
    (lambda raw: raw[: 3 * 1568], "3 images.*expected 4"),            # a line missing
    (lambda raw: raw.replace(b"1 ", b"2 ", 1), "holds only 0 and 1"),  # a non-binary value
])
def test_corrupt_amat_raises_integrity_error(mnist_root, corrupt, match):
    root, _, raws = mnist_root
    path = root / "binarized_mnist" / "binarized_mnist_test.amat.gz"
    path.unlink()
    (root / "binarized_mnist" / "binarized_mnist_test.amat").write_bytes(corrupt(raws["test"]))
    with pytest.raises(DataIntegrityError, match=match):
        load_split("mnist", "test", root, cache=False, verify=False)


def test_truncated_gzip_raises_integrity_error(mnist_root):
    root, _, _ = mnist_root
    path = root / "binarized_mnist" / "binarized_mnist_test.amat.gz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DataIntegrityError, match="gzip"):
        load_split("mnist", "test", root)


def test_verify_checks_sha256_of_uncompressed_bytes(mnist_root, monkeypatch):
    root, _, raws = mnist_root
    monkeypatch.setitem(data.MNIST_SHA256, "test", hashlib.sha256(raws["test"]).hexdigest())
    assert len(load_split("mnist", "test", root, verify=True)) == 4
    monkeypatch.setitem(data.MNIST_SHA256, "test", "0" * 64)
    with pytest.raises(DataIntegrityError, match="sha256"):
        load_split("mnist", "test", root, verify=True)


def test_cache_hit_and_invalidation(mnist_root):
    root, bits, _ = mnist_root
    first = load_split("mnist", "train", root)
    second = load_split("mnist", "train", root)
    assert not first.meta()["cache"]["cache_hit"] and second.meta()["cache"]["cache_hit"]
    cache_file = Path(second.meta()["cache"]["cache_file"])
    assert cache_file.parent == rd.processed_cache_dir()
    assert cache_file.stat().st_size < 784 * 6 // 8 + 200       # bit-packed
    assert torch.equal(first.get_batch(torch.arange(6)), second.get_batch(torch.arange(6)))
    # a changed source file (size) is a new key: the new content is read, not the stale cache
    write_amat(root / "binarized_mnist" / "binarized_mnist_train.amat", 1 - bits["train"],
               trailing=" ")
    third = load_split("mnist", "train", root, verify=False)
    assert not third.meta()["cache"]["cache_hit"]
    np.testing.assert_array_equal(third.get_batch(torch.arange(6)).reshape(6, 784).numpy(),
                                  1 - bits["train"])


def test_unwritable_cache_only_warns(mnist_root, monkeypatch, tmp_path):
    root, bits, _ = mnist_root
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    with pytest.warns(UserWarning, match="cache"):
        s = load_split("mnist", "valid", root)
    np.testing.assert_array_equal(s.get_batch(torch.arange(3)).reshape(3, 784).numpy(),
                                  bits["valid"])


class _FakeResponse:
    def __init__(self, payload: bytes):
        self._buf = payload

    def read(self, n: int = -1) -> bytes:
        out, self._buf = (self._buf, b"") if n < 0 else (self._buf[:n], self._buf[n:])
        return out

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_checks_sha256(tmp_path, monkeypatch):
    monkeypatch.setitem(data.MNIST_SPLIT_SIZES, "valid", 2)
    bits = np.eye(2, 784, dtype=np.uint8)
    payload = ("\n".join(" ".join(str(v) for v in row) for row in bits) + "\n").encode()
    urls = []

    def fake_urlopen(url, timeout=None):
        urls.append(url)
        return _FakeResponse(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    target = tmp_path / "binarized_mnist" / "binarized_mnist_valid.amat"
    with pytest.raises(DataIntegrityError, match="sha256"):        # the real digest differs
        load_split("mnist", "valid", tmp_path, download=True)
    assert not target.exists() and list(target.parent.iterdir()) == []
    assert urls == ["http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
                    "binarized_mnist_valid.amat"]
    monkeypatch.setitem(data.MNIST_SHA256, "valid", hashlib.sha256(payload).hexdigest())
    s = load_split("mnist", "valid", tmp_path, download=True)
    assert target.exists() and len(s) == 2
    np.testing.assert_array_equal(s.get_batch([0, 1]).reshape(2, 784).numpy(), bits)
    load_split("mnist", "valid", tmp_path, download=True)        # present: no second fetch
    assert len(urls) == 2


# --------------------------------------------------------------------------- omniglot

def test_chardata_reader_orientation(tmp_path):
    import scipy.io

    img = np.zeros((28, 28))
    img[2, 20] = 1.0                      # one pixel, top right: not symmetric under transpose
    img[10:14, 0:3] = 0.5                 # a grey bar on the left edge
    other = np.linspace(0, 1, 784).reshape(28, 28)
    train = np.stack([img.flatten(order="F"), other.flatten(order="F")], axis=1)   # (784, 2)
    test = other.T.flatten(order="F")[:, None]
    folder = tmp_path / "omniglot"
    folder.mkdir()
    scipy.io.savemat(folder / "chardata.mat", {"data": train, "testdata": test})
    out = rd.read_chardata(folder / "chardata.mat")
    np.testing.assert_allclose(out["train"][0], img, atol=1e-7)
    np.testing.assert_allclose(out["train"][1], other, atol=1e-7)
    np.testing.assert_allclose(out["test"][0], other.T, atol=1e-7)

    s = load_split("omniglot", "train", tmp_path, verify=False)
    assert s.protocol == "iwae-chardata" and s.binarization == "dynamic" and len(s) == 2
    x = s.get_batch([0])                   # seed-777 binarisation of a 0/0.5/1 image
    assert x[0, 0, 2, 20] == 1 and x[0, 0, 0, 0] == 0 and x[0, 0, 2, 19] == 0
    assert len(load_split("omniglot", "test", tmp_path, verify=False)) == 1
    with pytest.raises(DataIntegrityError, match="testdata"):
        scipy.io.savemat(folder / "chardata.mat", {"data": train})
        load_split("omniglot", "test", tmp_path, verify=False)


def test_omniglot_png_inversion_and_area_resize(omniglot_png_root):
    s = load_split("omniglot", "train", omniglot_png_root)
    assert s.protocol == ("substitute: torchvision Omniglot (background=train, evaluation=test) "
                          "resized to 28x28")
    assert len(s) == 6 and s.shape == (1, 28, 28) and s.binarization == "dynamic"
    probs = s.get_means(torch.arange(6))[:, 0].double().numpy()     # the Bernoulli means
    # 15 ink columns of 105 = output columns 0..3 fully inked, the rest blank
    np.testing.assert_array_equal(probs[0, :, :4], 1.0)
    np.testing.assert_array_equal(probs[0, :, 4:], 0.0)
    # 17 ink columns: column 4 covers input columns [15, 18.75), of which 2 are ink
    np.testing.assert_allclose(probs[1, :, 4], 2 / 3.75, atol=0.5 / 255)
    np.testing.assert_array_equal(probs[1, :, 5:], 0.0)
    test = load_split("omniglot", "test", omniglot_png_root)
    assert len(test) == 2 and test.binarization == "fixed-seed"
    assert any("6 PNGs found" in n for n in s.meta()["notes"])


def test_dynamic_binarisation_statistics_and_generators(omniglot_png_root):
    s = load_split("omniglot", "train", omniglot_png_root)
    idx = torch.tensor([1, 1, 1, 1])
    draws = torch.stack([s.get_batch(idx, train=True, generator=torch.Generator().manual_seed(i))
                         for i in range(250)])           # 1000 draws of image 1
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    mean = draws.mean(dim=(0, 1))[0]                     # (28, 28)
    p = 2 / 3.75
    assert abs(mean[:, 4].mean().item() - p) < 0.02      # 28,000 draws: sd 0.003
    assert torch.all(mean[:, :4] == 1) and torch.all(mean[:, 5:] == 0)
    g = lambda seed: torch.Generator().manual_seed(seed)
    a = s.get_batch(idx, train=True, generator=g(0))
    assert torch.equal(a, s.get_batch(idx, train=True, generator=g(0)))
    assert not torch.equal(a, s.get_batch(idx, train=True, generator=g(1)))


def test_area_matrix_is_exact_area_averaging():
    w = rd.area_matrix(105, 28)
    np.testing.assert_allclose(w.sum(1), 1.0)
    np.testing.assert_allclose(w[4, 15:19], np.array([1, 1, 1, 0.75]) / 3.75)
    np.testing.assert_allclose(w.sum(0), 28 / 105)       # every input pixel counted once
    np.testing.assert_allclose(rd.area_matrix(6, 3), np.kron(np.eye(3), [[0.5, 0.5]]))


def test_grey_ramp_dynamic_mean_matches_probability():
    levels = np.arange(0, 256, 15, dtype=np.uint8)                 # 18 grey levels
    images = np.tile(levels, (1, 1, 1, 1))                         # (1, 1, 1, 18)
    split = ImageSplit("ramp", "train", images, protocol="test", binarization="dynamic",
                       likelihood="bernoulli", divisor=255.0, dynamic=True,
                       eval_images=fixed_binarize(images, 255.0))
    x = split.get_batch(torch.zeros(20000, dtype=torch.long), train=True,
                        generator=torch.Generator().manual_seed(3))
    np.testing.assert_allclose(x.mean(0)[0, 0].numpy(), levels / 255, atol=0.015)


def test_fixed_binarize_is_exact_in_expectation_and_seeded():
    v = np.full((200_000,), 51, dtype=np.uint8)                    # p = 0.2
    b = fixed_binarize(v, 255.0)
    assert abs(b.mean() - 0.2) < 0.004 and np.array_equal(b, fixed_binarize(v, 255.0))
    assert not np.array_equal(b, fixed_binarize(v, 255.0, seed=778))
    f = np.full((200_000,), 0.7, dtype=np.float32)
    assert abs(fixed_binarize(f).mean() - 0.7) < 0.004
    assert fixed_binarize(np.array([0, 255], np.uint8), 255.0).tolist() == [0, 1]


def test_fixed_seed_evaluation_is_stable_across_loads(omniglot_png_root):
    idx = torch.arange(2)
    t1 = load_split("omniglot", "test", omniglot_png_root, cache=False).get_batch(idx)
    t2 = load_split("omniglot", "test", omniglot_png_root).get_batch(idx, train=True)
    assert torch.equal(t1, t2) and set(t1.unique().tolist()) == {0.0, 1.0}
    tr1 = load_split("omniglot", "train", omniglot_png_root)
    tr2 = load_split("omniglot", "train", omniglot_png_root, cache=False)
    e = tr1.get_batch(torch.arange(6))
    assert torch.equal(e, tr2.get_batch(torch.arange(6))) and torch.equal(e, tr1.get_batch(
        torch.arange(6)))
    # the carved validation images are the train split's seed-777 binarisation
    _, valid_rows = valid_indices(6)
    valid = load_split("omniglot", "valid", omniglot_png_root)
    assert valid.binarization == "fixed-seed" and "valid = last 5%" in valid.protocol
    assert torch.equal(valid.get_batch(torch.arange(len(valid))), e[torch.from_numpy(valid_rows)])


# --------------------------------------------------------------------------- cifar10 / svhn

def write_cifar_batches(root: Path, train: np.ndarray, test: np.ndarray) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    chunks = np.array_split(train, 5)
    for i, chunk in enumerate(chunks, start=1):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": chunk.transpose(0, 3, 1, 2).reshape(len(chunk), -1),
                         b"labels": list(range(len(chunk)))}, f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": test.transpose(0, 3, 1, 2).reshape(len(test), -1),
                     b"labels": [0] * len(test)}, f)


def test_cifar_batches_and_npz_give_the_same_images(tmp_path):
    train, test = asymmetric_rgb(10), asymmetric_rgb(3, seed=1)
    write_cifar_batches(tmp_path / "a", train, test)
    (tmp_path / "b" / "cifar10").mkdir(parents=True)
    np.savez_compressed(tmp_path / "b" / "cifar10" / "cifar10_train.npz", x=train,
                        y=np.arange(10))
    from_batches = load_split("cifar10", "train", tmp_path / "a", verify=False)
    from_npz = load_split("cifar10", "train", tmp_path / "b")
    expected = torch.from_numpy(train).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(from_batches.get_batch(torch.arange(10)), expected)
    assert torch.equal(from_npz.get_batch(torch.arange(10)), expected)
    assert from_batches.binarization == "none" and from_batches.likelihood == "continuous"
    assert len(load_split("cifar10", "test", tmp_path / "a", verify=False)) == 3
    (tmp_path / "a" / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetMissingError, match="data_batch_3"):
        load_split("cifar10", "train", tmp_path / "a", verify=False)


def test_flips_only_when_training_on_the_train_split(tmp_path):
    (tmp_path / "cifar10").mkdir()
    x = asymmetric_rgb(64)
    for split in ("train", "test"):
        np.savez(tmp_path / "cifar10" / f"cifar10_{split}.npz", x=x, y=np.zeros(64))
    train = load_split("cifar10", "train", tmp_path)
    idx = torch.arange(64)
    plain = train.get_batch(idx)
    assert torch.equal(plain, train.get_batch(idx))                      # train=False: no flip
    aug = train.get_batch(idx, train=True, generator=torch.Generator().manual_seed(0))
    same = (aug == plain).flatten(1).all(1)
    flipped = (aug == plain.flip(-1)).flatten(1).all(1)
    assert torch.all(same ^ flipped) and 10 < flipped.sum() < 54
    test = load_split("cifar10", "test", tmp_path)
    assert torch.equal(test.get_batch(idx, train=True), plain)          # never on test
    valid = load_split("cifar10", "valid", tmp_path)
    assert len(valid) == 3 and "valid = last 5%" in valid.protocol       # round(0.05 * 64)


def test_svhn_mat_reader(tmp_path):
    import scipy.io

    rng = np.random.default_rng(0)
    x_hwcn = rng.integers(0, 256, (32, 32, 3, 5), dtype=np.uint8)
    y = np.array([[10], [1], [2], [10], [9]], dtype=np.uint8)
    (tmp_path / "svhn").mkdir()
    scipy.io.savemat(tmp_path / "svhn" / "train_32x32.mat", {"X": x_hwcn, "y": y})
    s = load_split("svhn", "train", tmp_path, verify=False)
    assert len(s) == 5 and s.shape == (3, 32, 32)
    assert s.labels.tolist() == [0, 1, 2, 0, 9]
    b = s.get_batch(torch.arange(5))
    # X[row, col, channel, i] is pixel (channel, row, col) of image i
    assert b[3, 2, 7, 30].item() == pytest.approx(x_hwcn[7, 30, 2, 3] / 255)
    assert torch.equal(b, torch.from_numpy(x_hwcn).permute(3, 2, 0, 1).float() / 255)
    scipy.io.savemat(tmp_path / "svhn" / "test_32x32.mat", {"X": x_hwcn[:, :, :1], "y": y})
    with pytest.raises(DataIntegrityError, match="32x32x3xN"):
        load_split("svhn", "test", tmp_path, verify=False)


# --------------------------------------------------------------------------- celeba64

def write_celeba(root: Path, listed: dict[str, int], present: list[str]) -> None:
    from PIL import Image

    folder = root / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    (root / "celeba" / "list_eval_partition.txt").write_text(
        "".join(f"{n} {p}\n" for n, p in listed.items()))
    for name in present:
        img = np.zeros((218, 178, 3), dtype=np.uint8)
        img[..., 0] = 255                                   # red outside the crop box
        img[40:188, 15:163] = (0, 0, 255)                   # blue inside it
        img[40:188, 15:30] = (0, 255, 0)                    # green on its left edge
        Image.fromarray(img).save(folder / name, quality=95, subsampling=0)


def test_celeba_crop_resize_subset_and_errors(tmp_path):
    listed = {f"{i:06d}.jpg": p for i, p in enumerate([0, 0, 0, 0, 1, 2, 2], start=1)}
    write_celeba(tmp_path, listed, ["000001.jpg", "000003.jpg", "000004.jpg", "000006.jpg"])
    train = load_split("celeba64", "train", tmp_path, verify=False)
    assert len(train) == 3 and train.shape == (3, 64, 64)
    assert train.protocol == "subset: 3 of 4 images of the official train split present"
    assert train.meta()["notes"] and train.binarization == "none"
    x = train.get_batch(torch.arange(3))
    assert x[:, 0].max() < 0.15                              # no red: the crop removed it
    assert x[:, 2, :, 20:].min() > 0.85                      # blue interior
    assert x[:, 1, :, :4].min() > 0.85                       # green stays on the left...
    flips = train.get_batch(torch.arange(3).repeat(8), train=True,
                            generator=torch.Generator().manual_seed(0))
    assert (flips[:, 1, :, -4:].amin(dim=(1, 2)) > 0.85).any()   # ...unless flipped
    test = load_split("celeba64", "test", tmp_path, verify=False)
    assert len(test) == 1 and "subset: 1 of 2" in test.protocol
    assert torch.equal(test.get_batch([0], train=True), test.get_batch([0]))
    with pytest.raises(DatasetMissingError, match=r"none of the 1 images of the official valid"):
        load_split("celeba64", "valid", tmp_path, verify=False)


# --------------------------------------------------------------------------- generic npz

def test_npz_layouts_agree(tmp_path):
    rng = np.random.default_rng(0)
    nchw = rng.integers(0, 256, (4, 3, 8, 6), dtype=np.uint8)
    files = {"nchw.npz": nchw, "nhwc.npz": nchw.transpose(0, 2, 3, 1)}
    for name, arr in files.items():
        np.savez(tmp_path / name, x=arr)
    np.savez(tmp_path / "float.npz", data=nchw.transpose(0, 2, 3, 1).astype(np.float32) / 255)
    expected = torch.from_numpy(nchw).float() / 255
    for name in ("nchw.npz", "nhwc.npz", "float.npz"):
        s = load_split("npz", "test", path=tmp_path / name)
        assert s.shape == (3, 8, 6) and s.likelihood == "continuous"
        torch.testing.assert_close(s.get_batch(torch.arange(4)), expected)
    grey = rng.integers(0, 256, (5, 7, 9), dtype=np.uint8)
    np.save(tmp_path / "grey.npy", grey)
    s = load_split("npz", "train", path=str(tmp_path / "grey.npy"))
    assert s.shape == (1, 7, 9)
    torch.testing.assert_close(s.get_batch([2])[0, 0], torch.from_numpy(grey[2]).float() / 255)


def test_npz_binary_template_valid_and_hold_out(tmp_path):
    imgs = (np.random.default_rng(0).random((40, 6, 6)) < 0.5).astype(np.uint8)   # dsprites-like
    np.savez(tmp_path / "toy_train.npz", imgs=imgs, y=np.arange(40))
    s = load_split("npz", "train", tmp_path, path="toy_{split}.npz")    # relative to the root
    assert (s.binarization, s.likelihood, len(s)) == ("static", "bernoulli", 40)
    assert set(s.get_batch(torch.arange(40)).unique().tolist()) == {0.0, 1.0}
    valid = load_split("npz", "valid", tmp_path, path="toy_{split}.npz")
    rest = load_split("npz", "train", tmp_path, path="toy_{split}.npz", hold_out_valid=True)
    assert len(valid) == 2 and len(rest) == 38
    assert sorted(valid.labels.tolist() + rest.labels.tolist()) == list(range(40))
    assert "held-out" in rest.protocol and "valid = last 5%" in valid.protocol
    with pytest.raises(DatasetMissingError, match="toy_test.npz"):
        load_split("npz", "test", tmp_path, path="toy_{split}.npz")
    np.savez(tmp_path / "toy_valid.npz", imgs=imgs[:3])               # an own valid file wins
    assert len(load_split("npz", "valid", tmp_path, path="toy_{split}.npz")) == 3


def test_npz_dynamic_option_and_bad_values(tmp_path):
    grey = np.full((3, 4, 4), 0.25, dtype=np.float32)
    np.savez(tmp_path / "g.npz", x=grey)
    s = load_split("npz", "train", path=tmp_path / "g.npz", binarize="dynamic",
                   likelihood="bernoulli")
    assert s.binarization == "dynamic"
    draws = s.get_batch(torch.zeros(4000, dtype=torch.long), train=True,
                        generator=torch.Generator().manual_seed(0))
    assert abs(draws.mean().item() - 0.25) < 0.01
    np.savez(tmp_path / "bad.npz", x=grey * 5)
    with pytest.raises(DataIntegrityError, match=r"\[0, 1\]"):
        load_split("npz", "train", path=tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="path="):
        load_split("npz", "train")


# --------------------------------------------------------------------------- ImageSplit misc

def test_valid_indices_deterministic_disjoint():
    rest, valid = valid_indices(1000)
    assert len(valid) == 50 and len(rest) == 950
    assert np.intersect1d(rest, valid).size == 0 and np.union1d(rest, valid).size == 1000
    assert np.array_equal(valid, valid_indices(1000)[1])
    assert not np.array_equal(valid, np.arange(950, 1000))              # permuted, not a tail


def test_meta_is_json_and_get_batch_checks_index(mnist_root):
    s = load_split("mnist", "valid", mnist_root[0])
    meta = json.loads(json.dumps(s.meta()))
    for key in ("name", "split", "n", "shape", "protocol", "binarization", "source_files"):
        assert key in meta
    assert meta["n"] == 3 and meta["shape"] == [1, 28, 28]
    assert meta["source_files"][0].endswith("binarized_mnist_valid.amat")
    with pytest.raises(IndexError, match="out of range"):
        s.get_batch(torch.tensor([3]))
    assert s.get_batch(torch.tensor([], dtype=torch.long)).shape == (0, 1, 28, 28)


# --------------------------------------------------------------------------- real data

MNIST_TEST_SHA256 = "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c"


@pytest.mark.realdata
def test_real_binarized_mnist(data_root):
    if not (data_root / "binarized_mnist").is_dir():
        pytest.skip("binarized_mnist absent from the data root")
    raw = gzip.decompress((data_root / "binarized_mnist" / "binarized_mnist_test.amat.gz")
                          .read_bytes())
    assert hashlib.sha256(raw).hexdigest() == MNIST_TEST_SHA256
    sizes = {s: len(load_split("mnist", s, data_root, verify=(s == "test")))
             for s in ("train", "valid", "test")}
    assert sizes == {"train": 50000, "valid": 10000, "test": 10000}
    x = load_split("mnist", "test", data_root).get_batch(torch.arange(0, 10000, 100))
    assert set(x.unique().tolist()) == {0.0, 1.0} and 0.08 < x.mean() < 0.2


@pytest.mark.realdata
def test_real_omniglot_pngs_handful(data_root):
    folder = data_root / "omniglot" / "omniglot-py" / "images_background"
    if not folder.is_dir():
        pytest.skip("omniglot PNGs absent")
    paths = sorted(next(next(folder.iterdir()).iterdir()).glob("*.png"))[:5]
    arr = rd.read_omniglot_pngs(paths).astype(np.float64) / 255
    assert arr.shape == (5, 28, 28)
    ink = arr.mean(axis=(1, 2))
    assert np.all((ink > 0.01) & (ink < 0.4))          # strokes: ink is the minority
    assert np.all(arr[:, 0, 0] == 0) and len(np.unique(arr)) > 2     # background 0, grey edges


@pytest.mark.realdata
def test_real_omniglot_substitute_full(data_root):
    if not (data_root / "omniglot" / "omniglot-py").is_dir():
        pytest.skip("omniglot PNGs absent")
    train = load_split("omniglot", "train", data_root)
    test = load_split("omniglot", "test", data_root)
    assert (len(train), len(test)) == (19280, 13180)
    assert train.protocol.startswith("substitute: torchvision Omniglot")
    x = train.get_batch(torch.arange(0, 19280, 97), train=True,
                        generator=torch.Generator().manual_seed(0))
    assert x.min() >= 0 and x.max() <= 1 and set(x.unique().tolist()) == {0.0, 1.0}
    means = train.get_means(torch.arange(0, 19280, 7))
    assert means.min() == 0 and means.max() == 1 and 0.02 < means.mean() < 0.2
    assert ((means > 0) & (means < 1)).any()            # grey edges kept as Bernoulli means


@pytest.mark.realdata
def test_real_cifar10_test(data_root):
    if not (data_root / "cifar10" / "cifar10_test.npz").exists():
        pytest.skip("cifar10_test.npz absent")
    s = load_split("cifar10", "test", data_root)
    assert len(s) == 10000 and s.shape == (3, 32, 32)
    assert np.bincount(s.labels).tolist() == [1000] * 10


@pytest.mark.realdata
def test_real_celeba64_subset(data_root):
    if not (data_root / "celeba" / "list_eval_partition.txt").exists():
        pytest.skip("celeba absent")
    sizes = {}
    for split in ("train", "valid", "test"):
        s = load_split("celeba64", split, data_root)
        sizes[split] = len(s)
        assert s.shape == (3, 64, 64) and s.protocol.startswith("subset: ")
    assert sizes == {"train": 2400, "valid": 400, "test": 800}
    assert "of 162770 images of the official train split" in load_split(
        "celeba64", "train", data_root).protocol
