"""deep.train.runtime: the CPU allocator setting keeps a training step's buffers in the process."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Minor page faults of each of 6 optimisation steps of the ResNet MR-VAE (batch 128): every page a step
# touches for the first time since it was given back to the OS is one fault (and one zeroed 4 KiB page).
_STEPS = r"""
import json, resource, torch
from deep.train.runtime import tune_cpu_allocator
from deep.models.convnets import build_model
state = tune_cpu_allocator()
torch.set_num_threads(1)
torch.manual_seed(0)
m = build_model("mnist", "resnet", mr=True)
opt = torch.optim.Adam(m.parameters(), 1e-3)
x = (torch.rand(128, 1, 28, 28) < 0.13).float()
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    beta = torch.exp(torch.empty(128).uniform_(-4.6, 2.3))
    out = m(x, beta)
    loss = (out.distortion + beta * out.rate).mean()
    opt.zero_grad(); loss.backward(); opt.step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"state": state, "faults": faults}))
"""


def _run(env_value: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MRVAE_CPU_MALLOC"}
    if env_value is not None:
        env["MRVAE_CPU_MALLOC"] = env_value
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", _STEPS], capture_output=True, text=True, env=env, check=True,
                          timeout=300)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt and ru_minflt: Linux only")
def test_tuned_allocator_reuses_a_steps_memory():
    tuned = _run(None)
    if not tuned["state"]["applied"]:
        pytest.skip(f"allocator not tuned here: {tuned['state']['reason']}")
    steady = tuned["faults"][3:]
    # One step touches ~25,000 pages (100 MiB) and, untuned, faults 17,000-21,000 of them again every step.
    # Tuned, the first steps grow the heap (random betas change the sizes: a fresh clone once needed three
    # steps, [32911, 7060, 8624, 0, 0, 0]); later steps reuse it: at most a few thousand new pages over three.
    assert sum(steady) < 8000, tuned["faults"]
    off = _run("0")
    assert off["state"] == {"applied": False, "reason": "MRVAE_CPU_MALLOC=0"}


def test_tune_is_applied_once_and_reports_settings(monkeypatch):
    from deep.train import runtime
    monkeypatch.setattr(runtime, "_STATE", None)
    monkeypatch.setenv("MRVAE_CPU_MALLOC", "off")
    assert runtime.tune_cpu_allocator() == {"applied": False, "reason": "MRVAE_CPU_MALLOC=off"}
    monkeypatch.setenv("MRVAE_CPU_MALLOC", "1")
    # Once decided, the process keeps its setting (mallopt is process-wide; no half-applied states).
    assert runtime.tune_cpu_allocator()["applied"] is False
    monkeypatch.setattr(runtime, "_STATE", None)
    state = runtime.tune_cpu_allocator()
    if runtime._glibc() is None:
        assert state == {"applied": False, "reason": "not glibc"}
    else:
        assert state == {"allocator": "glibc", "applied": True, **runtime.MALLOC_SETTINGS}
