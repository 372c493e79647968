"""The deep trainer and evaluator reproduce the numbers recorded before the ``deep/`` restructure.

``tests/behaviour.py`` trains every model family for 20 steps on tiny data and evaluates it at 3 betas;
``tests/data/behaviour.json`` holds its numbers as recorded on commit efde188 (before any code moved).
Where a later change alters a number on purpose (a bug fix), the fixture is re-recorded and the commit
says which numbers changed and why.

The convolution families' numbers depend on the CPU: oneDNN picks its convolution kernels by instruction
set and they round differently, and 20 training steps amplify that. Measured on 2026-12-07: an AVX-512/AMX
machine differs from the efde188 recording by up to 4.1e-3 (relative) in conv_mr, nvae_mr, resnet_beta and
resnet_mr, and the same machine with oneDNN capped at AVX2 by up to 4.4e-2; the other families agree to
1.3e-7. So each CPU kind has its own recording, ``tests/data/behaviour*.json``, all of the same code:

* a recording stores the CPU's kernel fingerprint (``behaviour.kernel_fingerprint``: a hash of a few float32
  convolutions; the efde188 recording predates it). On a CPU whose fingerprint has a recording, every case
  must equal that recording (relative 1e-6);
* otherwise a case passes when it equals one of the recordings (the efde188 machine's numbers still match
  behaviour.json), and else it must stay within :data:`KERNEL_RTOL` of the nearest recording, with a warning
  that the exact check was not available. That fallback only catches large changes (a 5% change of the beta
  weight in the loss moves these numbers by less), so add a recording for such a machine with
  ``python tests/behaviour.py tests/data/behaviour-<cpu>.json``.

A change meant to alter the numbers re-records on every CPU kind it can, and deletes the recordings it
cannot redo.
"""
import json
import warnings
from pathlib import Path

import pytest

from behaviour import kernel_fingerprint, run_all

FIXTURES = sorted((Path(__file__).parent / "data").glob("behaviour*.json"))
#: exact check: numbers equal to a recording made on the same CPU kind
EXACT_RTOL = 1e-6
#: the fallback on a CPU kind without a recording: 2x the largest kernel difference measured (4.4e-2)
KERNEL_RTOL = 0.1
#: every recording as written: {file name: {case: numbers, "_cpu": {"kernel_fingerprint": ...}}}
RAW = {p.name: json.loads(p.read_text()) for p in FIXTURES}
#: {file name: {case: numbers}} (the ``_cpu`` entry dropped)
RECORDINGS = {name: {k: v for k, v in rec.items() if not k.startswith("_")} for name, rec in RAW.items()}


def _rel(expected: dict, got: dict) -> dict:
    """Relative difference of every recorded number (relative to max(1, |expected|))."""
    return {k: abs(got[k] - expected[k]) / max(1.0, abs(expected[k])) for k in expected}


def _changed(expected: dict, got: dict, rtol: float) -> dict:
    return {k: (expected[k], got[k]) for k, r in _rel(expected, got).items() if r > rtol}


def _max_rel(expected: dict, got: dict) -> float:
    return max(_rel(expected, got).values(), default=0.0)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    return run_all(tmp_path_factory.mktemp("behaviour"))


@pytest.fixture(scope="module")
def own_recordings() -> list[str]:
    """The recordings made on a CPU with this machine's kernel fingerprint."""
    here = kernel_fingerprint()
    return [name for name, rec in RAW.items() if rec.get("_cpu", {}).get("kernel_fingerprint") == here]


def test_every_recording_holds_the_same_cases_and_numbers():
    """The recordings differ in value only, never in what they record."""
    assert "behaviour.json" in RECORDINGS
    first = RECORDINGS["behaviour.json"]
    for name, rec in RECORDINGS.items():
        assert sorted(rec) == sorted(first), name
        for case in first:
            assert sorted(rec[case]) == sorted(first[case]), (name, case)


@pytest.mark.parametrize("case", sorted(RECORDINGS["behaviour.json"]))
def test_numbers_unchanged(measured, own_recordings, case):
    got = measured[case]
    recs = {name: rec[case] for name, rec in RECORDINGS.items()}
    for name, expected in recs.items():
        missing = sorted(set(expected) - set(got))
        assert not missing, f"{case}: numbers no longer produced: {missing[:10]}"
    own = own_recordings
    if own:   # this CPU kind has its recording: exact, no fallback
        changed = _changed(recs[own[0]], got, EXACT_RTOL)
        assert not changed, (f"{case}: {len(changed)} numbers changed from {own[0]}, "
                             f"e.g. {dict(list(changed.items())[:8])}")
        return
    if any(not _changed(expected, got, EXACT_RTOL) for expected in recs.values()):
        return
    nearest = min(recs, key=lambda name: _max_rel(recs[name], got))
    changed = _changed(recs[nearest], got, KERNEL_RTOL)
    assert not changed, (f"{case}: {len(changed)} numbers changed beyond the CPU-kernel tolerance "
                         f"{KERNEL_RTOL} from {nearest}, e.g. {dict(list(changed.items())[:8])}")
    warnings.warn(f"{case}: no recording of this CPU kind; within {KERNEL_RTOL} of {nearest} (largest relative "
                  f"difference {_max_rel(recs[nearest], got):.1e}), not checked exactly; add one with "
                  "`python tests/behaviour.py tests/data/behaviour-<cpu>.json`")
