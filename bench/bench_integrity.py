"""Checksum verification of the real data files: first use (hashing) vs a cached verdict.

For every file with a published digest (or listed in the data root's SHA256SUMS) under the data root, times
:func:`linvae.dataroot.verify_file` three ways in one run, with a private, empty verdict cache:
first use (the file is hashed), again in the same process (in-memory verdict), and in a "new process"
(in-memory verdicts dropped: the verdict file on disk answers).

    python bench/bench_integrity.py [--data-dir ../shared/data]
"""
from __future__ import annotations

import argparse
import gzip
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("MRVAE_DATA", "../shared/data"))
    args = parser.parse_args()
    root = Path(args.data_dir).resolve()
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="mrvae-verdicts-")

    from deep.data import images, text
    from linvae import dataroot, mnist

    files: list[tuple[Path, dict]] = []
    for name, md5 in mnist.MNIST_MD5.items():
        files.append((root / "MNIST" / "raw" / name, {"algorithm": "md5", "expected": md5}))
    for split, sha in images.MNIST_SHA256.items():
        gz = root / "binarized_mnist" / f"binarized_mnist_{split}.amat.gz"
        files.append((gz, {"algorithm": "sha256", "expected": sha,
                           "content": (lambda p=gz: gzip.decompress(p.read_bytes()))}))
    for name, md5 in text.YAHOO_MD5.items():
        files.append((root / "yahoo" / name, {"algorithm": "md5", "expected": md5}))
    files.append((root / "celeba" / "list_eval_partition.txt",
                  {"algorithm": "md5", "expected": images.PUBLISHED_MD5["list_eval_partition.txt"]}))
    for rel in ("cifar10/cifar10_train.npz", "cifar10/cifar10_test.npz", "dsprites/dsprites_downsampled.npz",
                "dsprites/dsprites_subset.npz"):
        files.append((root / rel, {"root": root}))                   # the data root's SHA256SUMS
    files = [(p, kw) for p, kw in files if p.exists()]

    print(f"data root {root}; verdict cache {dataroot.verdict_cache_path()}")
    print(f"{'file':<45} {'MB':>7} {'first use s':>12} {'same process s':>15} {'new process s':>14}")
    totals = [0.0, 0.0, 0.0]
    for path, kw in files:
        t0 = time.perf_counter()
        dataroot.verify_file(path, dataset="bench", **kw)
        t1 = time.perf_counter()
        dataroot.verify_file(path, dataset="bench", **kw)
        t2 = time.perf_counter()
        dataroot.forget_verdicts(memory_only=True)
        dataroot.verify_file(path, dataset="bench", **kw)
        t3 = time.perf_counter()
        row = (t1 - t0, t2 - t1, t3 - t2)
        totals = [a + b for a, b in zip(totals, row)]
        print(f"{str(path.relative_to(root)):<45} {path.stat().st_size / 2**20:7.1f} {row[0]:12.4f} {row[1]:15.6f} "
              f"{row[2]:14.6f}")
    print(f"{'total (' + str(len(files)) + ' files)':<45} {'':>7} {totals[0]:12.3f} {totals[1]:15.6f} {totals[2]:14.6f}")
    print(f"ratio first use / cached (new process): {totals[0] / max(totals[2], 1e-9):.0f}x")


if __name__ == "__main__":
    main()
