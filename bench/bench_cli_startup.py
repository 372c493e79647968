"""Start-up cost of ``mrvae-cli``: wall time and peak memory of ``--help`` vs a bare interpreter and vs
``import torch`` (one run, each command in fresh subprocesses, rounds interleaved so all see the same load).

``mrvae-cli --help`` and ``mrvae-cli deep train --help`` should not import torch (the help is built from
:class:`deep.train.TrainConfig` and name tables only), so their cost should sit near the bare interpreter's
and far below ``import torch``.

Usage::

    python bench/bench_cli_startup.py [--rounds 7]
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


def measure(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one fresh run of ``cmd``."""
    t0 = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, env=env, check=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    out = subprocess.run([sys.executable, "-c", _WRAP, *cmd], capture_output=True, text=True, env=env,
                         check=True, cwd=ROOT)
    return wall, float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    walls: dict[str, list[float]] = {k: [] for k in COMMANDS}
    rss: dict[str, list[float]] = {k: [] for k in COMMANDS}
    for _ in range(args.rounds):
        for name, cmd in COMMANDS.items():
            w, m = measure(cmd, env)
            walls[name].append(w)
            rss[name].append(m)
    med = {k: statistics.median(v) for k, v in walls.items()}
    print(f"{'command':<30} {'median s':>9} {'min s':>7} {'peak MB':>8}   ({args.rounds} rounds)")
    for name in COMMANDS:
        print(f"{name:<30} {med[name]:9.3f} {min(walls[name]):7.3f} {max(rss[name]):8.0f}")
    bare, torch_ = med["python -c pass"], med["python -c 'import torch'"]
    for name in ("mrvae-cli --help", "mrvae-cli deep train --help"):
        print(f"{name}: {med[name] / torch_:.2f}x the time of `import torch`, "
              f"+{med[name] - bare:.3f} s over a bare interpreter")


if __name__ == "__main__":
    main()
