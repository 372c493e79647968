"""paper_figures/fig_ais.py: draws from a small synthetic AIS results file, refuses malformed ones, reads what
deep.evaluate.ais.ais_results_json writes, and imports neither torch nor model code."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from linvae.closed_form import Spectrum, joint_optimum, optimal_rate_distortion
from linvae.decoder_rd import expected_decoder_rd
from paper_figures import fig_ais
from paper_figures.style import MalformedResultsError

ROOT = Path(__file__).resolve().parents[1]


def synthetic_results(n_beta: int = 5) -> dict:
    """Exact linear-VAE curves as 'AIS' curves, encoders a little off their decoder's optimum."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 12)) @ np.diag(np.linspace(3, 0.3, 12))
    spectrum = Spectrum.from_data(x)
    betas = np.geomspace(0.05, 5, n_beta)
    lam = np.concatenate([[0.0], np.geomspace(1e-3, 100, 60)])
    out = {"kind": "mrvae ais rd", "beta": betas.tolist(), "rate": [], "distortion": [], "ais_lam": [],
           "ais_rate": [], "ais_distortion": [], "ais_rate_at_beta": [], "ais_distortion_at_beta": [],
           "inference_gap": [], "bdmc_gap": [], "bdmc_lam": [], "protocol": {"label": "synthetic test file"},
           "conventions": {"units": "nats"}}
    for beta in betas:
        dec = joint_optimum(spectrum, beta, 6).decoder
        grid = np.sort(np.append(lam, 1 / beta))
        c = expected_decoder_rd(dec, spectrum.covariance, grid)
        i = int(np.flatnonzero(grid == 1 / beta)[0])
        r, d = optimal_rate_distortion(spectrum, beta, 6)
        r_enc, d_enc = r * 0.95, d + 0.3  # a sub-optimal encoder
        out["rate"].append(r_enc)
        out["distortion"].append(d_enc)
        out["ais_lam"].append(grid.tolist())
        out["ais_rate"].append(c["rate"].tolist())
        out["ais_distortion"].append(c["distortion"].tolist())
        out["ais_rate_at_beta"].append(float(c["rate"][i]))
        out["ais_distortion_at_beta"].append(float(c["distortion"][i]))
        out["inference_gap"].append(d_enc + beta * r_enc + beta * float(c["log_partition"][i]))
        out["bdmc_gap"].append(0.1)
        out["bdmc_lam"].append(1 / beta)
    out["bdmc_gap"][0] = None  # a beta without BDMC
    return out


def test_draws_from_a_synthetic_results_file(tmp_path):
    res = synthetic_results()
    assert all(g > 0 for g in res["inference_gap"])  # the sub-optimal encoders lie above their optimum
    path = tmp_path / "ais.json"
    path.write_text(json.dumps(res))
    paths = fig_ais.plot(path, tmp_path / "fig_ais")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 5000 for p in paths)
    loaded = fig_ais.load_ais_results(path)
    assert np.isnan(loaded["bdmc_gap"][0]) and loaded["bdmc_gap"][1] == 0.1


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.pop("ais_rate"), "ais_rate"),
    (lambda r: r.update(kind="rd"), "not an AIS results file"),
    (lambda r: r["rate"].pop(), "one entry per beta"),
    (lambda r: r["ais_distortion"][1].pop(), "different lengths"),
    (lambda r: r["inference_gap"].__setitem__(0, float("nan")), "non-finite"),
    (lambda r: r.update(beta=[-1.0] * len(r["beta"])), "positive"),
])
def test_refuses_malformed_files(tmp_path, mutate, message):
    res = synthetic_results(3)
    mutate(res)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(res, allow_nan=True))
    with pytest.raises(MalformedResultsError, match=message):
        fig_ais.plot(path, tmp_path / "out")


def test_reads_what_ais_results_json_writes(tmp_path):
    import torch

    from deep.evaluate.ais import AISSettings, ais_rd_curve, ais_results_json

    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    dec, x = rng.normal(size=(10, 3)), rng.normal(size=(4, 10))
    d_t = torch.tensor(dec)
    betas = [0.5, 2.0]
    curves = [ais_rd_curve(lambda xr, z: 0.5 * ((xr - z @ d_t.T) ** 2).sum(-1), 3, torch.tensor(x),
                           AISSettings(n_steps=20, lam_max=4.0, n_chains=4, n_leapfrog=3, include=(1 / b,)))
              for b in betas]
    out = ais_results_json(betas, [1.0, 0.5], [9.0, 11.0], curves, protocol="tiny AIS run")
    path = tmp_path / "ais.json"
    path.write_text(json.dumps(out))
    assert [p.exists() for p in fig_ais.plot(path, tmp_path / "fig")] == [True, True]


def test_imports_neither_torch_nor_model_code():
    """The figure reads result files only: no torch, and of deep/ only the torch-free manifest schema."""
    allowed = {"deep", "deep.protocol", "deep.experiments", "deep.experiments.manifest"}
    code = ("import sys, paper_figures.fig_ais; print(sorted(m for m in sys.modules if m == 'torch' or "
            "m.startswith('torch.') or m == 'deep' or m.startswith('deep.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    loaded = set(eval(out.stdout.strip()))
    assert "torch" not in loaded and loaded <= allowed, loaded
