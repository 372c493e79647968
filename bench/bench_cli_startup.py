"""Start-up cost of ``mrvae-cli``: wall time and peak memory of ``--help`` vs a bare interpreter and vs
``import torch`` (one run, each command in fresh subprocesses, rounds interleaved so all see the same load).

``mrvae-cli --help`` and ``mrvae-cli deep train --help`` should not import torch (the help is built from
:class:`deep.train.TrainConfig` and name tables only), so their cost should sit near the bare interpreter's
and far below ``import torch``.

Usage::

    python bench/bench_cli_startup.py [--rounds 7] [--baseline DIR]

``--baseline DIR`` adds ``mrvae-cli --help`` run from another checkout (e.g. an older commit unpacked with
``git archive <commit> | tar -x -C DIR``), interleaved with the others, for a before/after ratio.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "mrvae-cli --help": [sys.executable, "-m", "cli.main", "--help"],
    "mrvae-cli deep train --help": [sys.executable, "-m", "cli.main", "deep", "train", "--help"],
}

# max RSS of one child, in MB, printed by a wrapper (ru_maxrss is in kB on Linux)
_WRAP = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True); "
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")


def measure(cmd: list[str], env: dict, root: Path = ROOT) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one fresh run of ``cmd`` with ``root`` first on the path."""
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, env=env, check=True, cwd=root)
    wall = time.perf_counter() - t0
    out = subprocess.run([sys.executable, "-c", _WRAP, *cmd], capture_output=True, text=True, env=env,
                         check=True, cwd=root)
    return wall, float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout to time --help from")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {name: (cmd, ROOT) for name, cmd in COMMANDS.items()}
    if args.baseline is not None:
        runs["mrvae-cli --help (baseline)"] = (COMMANDS["mrvae-cli --help"], args.baseline.resolve())
    walls: dict[str, list[float]] = {k: [] for k in runs}
    rss: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name, (cmd, root) in runs.items():
            w, m = measure(cmd, env, root)
            walls[name].append(w)
            rss[name].append(m)
    med = {k: statistics.median(v) for k, v in walls.items()}
    print(f"{'command':<32} {'median s':>9} {'min s':>7} {'peak MB':>8}   ({args.rounds} rounds)")
    for name in runs:
        print(f"{name:<32} {med[name]:9.3f} {min(walls[name]):7.3f} {max(rss[name]):8.0f}")
    if args.baseline is not None:
        print(f"mrvae-cli --help: {med['mrvae-cli --help (baseline)'] / med['mrvae-cli --help']:.1f}x faster than "
              f"the baseline checkout")
    bare, torch_ = med["python -c pass"], med["python -c 'import torch'"]
    for name in ("mrvae-cli --help", "mrvae-cli deep train --help"):
        print(f"{name}: {med[name] / torch_:.2f}x the time of `import torch`, "
              f"+{med[name] - bare:.3f} s over a bare interpreter")


if __name__ == "__main__":
    main()
