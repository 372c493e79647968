"""The deep trainer and evaluator reproduce the numbers recorded before the ``deep/`` restructure.

``tests/behaviour.py`` trains every model family for 20 steps on tiny data and evaluates it at 3 betas;
``tests/data/behaviour.json`` holds its numbers as recorded on commit efde188 (before any code moved).
Where a later change alters a number on purpose (a bug fix), the fixture is re-recorded and the commit
says which numbers changed and why.
"""
import json
from pathlib import Path

import pytest

from behaviour import run_all

FIXTURE = Path(__file__).parent / "data" / "behaviour.json"


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    return run_all(tmp_path_factory.mktemp("behaviour"))


@pytest.mark.parametrize("case", sorted(json.loads(FIXTURE.read_text())))
def test_numbers_unchanged(measured, case):
    expected = json.loads(FIXTURE.read_text())[case]
    got = measured[case]
    missing = sorted(set(expected) - set(got))
    assert not missing, f"{case}: numbers no longer produced: {missing[:10]}"
    changed = {k: (expected[k], got[k]) for k in expected
               if abs(got[k] - expected[k]) > 1e-6 * max(1.0, abs(expected[k]))}
    assert not changed, f"{case}: {len(changed)} numbers changed, e.g. {dict(list(changed.items())[:8])}"
