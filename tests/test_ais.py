"""AIS rate-distortion curves of a decoder (deep.evaluate.ais) against exact answers: the linear-Gaussian
decoder's closed form (linvae.decoder_rd), a Bernoulli decoder with a 2-d latent by quadrature, BDMC
sandwiches, HMC invariance and step-size adaptation.  float64 throughout."""
import math
from pathlib import Path
from dataclasses import replace

import numpy as np
import pytest
import torch

from deep.evaluate.ais import (AISSettings, DistortionTarget, ais_rd_curve, ais_results_json, bdmc,
                               bernoulli_data_sampler, gaussian_data_sampler, hmc_step, inference_gap,
                               make_schedule)
from linvae.closed_form import Spectrum, joint_optimum, optimal_rate_distortion
from linvae.decoder_rd import decoder_rd, expected_decoder_rd, tempered_posterior

pytestmark = pytest.mark.usefixtures("one_thread")


def _linear_decoder(seed: int = 0, n: int = 64, k: int = 32):
    """A random decoder with an MNIST-like decaying spectrum (squared singular values 5 / i)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, k)))
    return q * np.sqrt(5.0 / np.arange(1, k + 1)), rng.normal(size=n) * 0.1, rng


def _linear_distortion(dec, mu, half: bool = True):
    """``d = ||x - mu - D z||^2 / 2`` (Gaussian NLL, sigma2 = 1, no constant) or without the 1/2 (``sse``)."""
    d_t, mu_t = torch.tensor(dec), torch.tensor(mu)
    scale = 0.5 if half else 1.0
    return lambda x, z: scale * ((x - mu_t - z @ d_t.T) ** 2).sum(-1)


# ----------------------------------------------------------------------------------------------------
# the oracle: AIS reproduces the exact curve of a linear decoder (k = 32)
# ----------------------------------------------------------------------------------------------------
def test_ais_reproduces_exact_linear_decoder_curve():
    dec, mu, rng = _linear_decoder(0)
    x = mu + rng.normal(size=(8, 32)) @ dec.T + rng.normal(size=(8, 64))
    dist = _linear_distortion(dec, mu)
    settings = AISSettings(n_steps=300, lam_max=10.0, lam_min=1e-3, n_chains=16, n_leapfrog=8, batch_size=8,
                           include=(1.0, 0.5), seed=1)
    res = ais_rd_curve(dist, 32, torch.tensor(x), settings)
    sim = bdmc(dist, 32, gaussian_data_sampler(lambda z: torch.tensor(mu) + z @ torch.tensor(dec).T, 1.0), 8,
               replace(settings, n_chains=8), dtype=torch.float64)
    gap = max(sim.mean_gap, 0.0)
    exact = decoder_rd(dec, x, mu, res.lam)
    m = res.mean()
    ex = {key: exact[key].mean(0) for key in ("rate", "distortion", "log_partition")}

    assert res.lam[0] == 0.0 and res.lam[-1] == 10.0 and res.index_of(1.0) > 0 and res.index_of(0.5) > 0
    assert np.all(res.rate[:, 0] == 0.0) and np.all(res.log_partition[:, 0] == 0.0)
    # within the reported error at EVERY lam: 5 Monte Carlo standard errors, plus the BDMC gap for the
    # quantities that carry the AIS bias of log Z
    assert np.all(np.abs(m["log_partition"] - ex["log_partition"]) <= 5 * m["log_partition_se"] + gap + 1e-9)
    assert np.all(np.abs(m["rate"] - ex["rate"]) <= 5 * m["rate_se"] + gap + 1e-9)
    assert np.all(np.abs(m["distortion"] - ex["distortion"]) <= 5 * m["distortion_se"] + 1e-9)
    # ... and the reported error is informative: under a tenth of the rate at lam_max
    assert m["rate_se"][-1] + gap < 0.1 * ex["rate"][-1]
    # log_partition is a stochastic lower bound: on average over the schedule it does not exceed the truth
    assert np.mean(m["log_partition"] - ex["log_partition"]) < np.mean(m["log_partition_se"])
    # the frozen run really ran at the step sizes of the first run, and they shrink as q_lam sharpens
    assert res.step_size.shape == (len(res.lam) - 1, 8)
    assert np.all(res.step_size[-1] < res.step_size[0])


@pytest.mark.parametrize("half", [True, False], ids=["gaussian_nll", "sse"])
def test_bdmc_sandwiches_exact_log_partition_and_gap_shrinks(half):
    dec, mu, _ = _linear_decoder(1)
    dist = _linear_distortion(dec, mu, half)
    sigma2 = 1.0 if half else 0.5  # sse = ||.||^2 is the Gaussian NLL shape with sigma2 = 1/2
    sampler = gaussian_data_sampler(lambda z: torch.tensor(mu) + z @ torch.tensor(dec).T, sigma2)
    gaps = {}
    for steps in (15, 150):
        s = AISSettings(n_steps=steps, lam_max=5.0, n_chains=8, n_leapfrog=5, batch_size=16, seed=3)
        res = bdmc(dist, 32, sampler, 16, s, dtype=torch.float64)
        exact = decoder_rd(dec, res.data, mu, [5.0], sigma2)["log_partition"][:, 0]
        se = np.std(res.gap, ddof=1) / 4.0
        # lower <= exact <= upper on average over the simulated examples
        assert np.mean(res.log_partition_lower - exact) < se
        assert np.mean(res.log_partition_upper - exact) > -se
        gaps[steps] = res.mean_gap
    assert gaps[15] > 2.0 and gaps[150] < gaps[15] / 4


# ----------------------------------------------------------------------------------------------------
# the HMC kernel and its step-size adaptation
# ----------------------------------------------------------------------------------------------------
def test_hmc_leaves_the_tempered_gaussian_invariant():
    rng = np.random.default_rng(5)
    n, k, lam = 6, 4, 3.0
    dec = rng.normal(size=(n, k)) * np.array([1.5, 1.0, 0.6, 0.2])
    mu, x = np.zeros(n), rng.normal(size=(2, n)) * 2
    mean, cov = tempered_posterior(dec, x, mu, lam)
    chol = np.linalg.cholesky(cov)
    chains = 3000
    gen = torch.Generator().manual_seed(0)
    eps = torch.randn((chains, 2, k), generator=gen, dtype=torch.float64)
    z = torch.tensor(mean)[None] + eps @ torch.tensor(chol).T  # exact samples of q_lam
    target = DistortionTarget(_linear_distortion(dec, mu), torch.tensor(x), chains)
    d, grad = target(z)
    step = torch.tensor([0.35, 0.35], dtype=torch.float64)  # large: a fifth of the proposals are rejected
    accepts = []
    for _ in range(15):
        z, d, grad, accepted, _ = hmc_step(z, d, grad, lam, step, 6, target, gen)
        accepts.append(float(accepted.double().mean()))
    assert 0.5 < np.mean(accepts) < 0.95
    prec = np.linalg.inv(cov)
    zc = z.numpy() - mean[None]
    maha = np.einsum("cbi,ij,cbj->cb", zc, prec, zc)  # chi-square with k dof under q_lam
    se = math.sqrt(2 * k / maha.size)
    assert abs(maha.mean() - k) < 4 * se
    np.testing.assert_allclose(zc.mean(0) / np.sqrt(np.diag(cov)), 0.0, atol=4 / math.sqrt(chains))
    # and the cached distortion is the distortion of the returned state
    torch.testing.assert_close(d, target(z)[0])


@pytest.mark.parametrize("target_accept", [0.5, 0.85])
def test_adapted_step_sizes_hit_the_target_acceptance_in_the_frozen_run(target_accept):
    dec, mu, rng = _linear_decoder(2, n=32, k=16)
    x = mu + rng.normal(size=(4, 32))
    settings = AISSettings(n_steps=120, lam_max=20.0, n_chains=16, n_leapfrog=5, batch_size=4,
                           target_accept=target_accept)
    res = ais_rd_curve(_linear_distortion(dec, mu), 16, torch.tensor(x), settings)
    # the estimates come from the second run, whose step sizes are frozen: its acceptance is the target's
    assert abs(np.mean(res.accept_rate[20:]) - target_accept) < 0.06
    assert np.all(np.abs(res.accept_rate[20:].reshape(-1, 10).mean(1) - target_accept) < 0.15)


# ----------------------------------------------------------------------------------------------------
# a non-Gaussian case: Bernoulli decoder, 2-d latent, exact answers by quadrature
# ----------------------------------------------------------------------------------------------------
def _bernoulli_problem():
    rng = np.random.default_rng(7)
    n = 20
    w, b = rng.normal(size=(n, 2)) * 2.0, rng.normal(size=n)
    z_true = rng.normal(size=(3, 2))
    p = 1 / (1 + np.exp(-(z_true @ w.T + b)))
    x = (rng.uniform(size=p.shape) < p).astype(np.float64)
    w_t, b_t = torch.tensor(w), torch.tensor(b)

    def logits(z):
        return z @ w_t.T + b_t

    def dist(xr, z):
        return torch.nn.functional.binary_cross_entropy_with_logits(logits(z), xr, reduction="none").sum(-1)

    return w, b, x, dist, logits


def _grid_curve(w, b, x, lams, half_width=7.0, points=351):
    axis = np.linspace(-half_width, half_width, points)
    h = axis[1] - axis[0]
    zs = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    log_prior = -0.5 * np.sum(zs ** 2, -1) - math.log(2 * math.pi)
    logit = zs @ w.T + b                                          # (G, n)
    out = {k: np.empty((x.shape[0], len(lams))) for k in ("rate", "distortion", "log_partition")}
    for i, xi in enumerate(x):
        d = np.sum(np.logaddexp(0, logit) - xi * logit, -1)      # Bernoulli NLL (G,)
        for j, lam in enumerate(lams):
            log_f = log_prior - lam * d
            shift = log_f.max()
            log_z = math.log(np.sum(np.exp(log_f - shift)) * h * h) + shift
            q = np.exp(log_f - log_z) * h * h
            out["log_partition"][i, j] = log_z
            out["distortion"][i, j] = np.sum(q * d)
            out["rate"][i, j] = -lam * out["distortion"][i, j] - log_z
    return out


def test_ais_on_a_bernoulli_decoder_matches_quadrature():
    w, b, x, dist, logits = _bernoulli_problem()
    settings = AISSettings(n_steps=150, lam_max=4.0, lam_min=1e-2, n_chains=32, n_leapfrog=5, batch_size=3,
                           include=(1.0,), seed=2)
    res = ais_rd_curve(dist, 2, torch.tensor(x), settings)
    sel = np.unique(np.linspace(1, len(res.lam) - 1, 25).astype(int).tolist() + [res.index_of(1.0)])
    exact = _grid_curve(w, b, x, res.lam[sel])
    m = res.mean()
    for key in ("log_partition", "rate", "distortion"):
        err = np.abs(m[key][sel] - exact[key].mean(0))
        assert np.all(err <= 5 * m[key + "_se"][sel] + 0.05), (key, err)
    # BDMC exists for a Bernoulli decoder at lam = 1 only
    sampler = bernoulli_data_sampler(logits)
    one = AISSettings(n_steps=100, lam_max=1.0, n_chains=8, n_leapfrog=5, batch_size=8)
    sim = bdmc(dist, 2, sampler, 8, one, dtype=torch.float64)
    assert sim.data.shape == (8, 20) and set(np.unique(sim.data)) <= {0.0, 1.0}
    assert abs(sim.mean_gap) < 0.1
    with pytest.raises(ValueError, match="lam = 1"):
        bdmc(dist, 2, sampler, 2, AISSettings(n_steps=5, lam_max=2.0), dtype=torch.float64)


# ----------------------------------------------------------------------------------------------------
# schedule, gap and the results file
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", ["geometric", "sigmoid", "linear"])
def test_schedule_shapes(shape):
    lam = make_schedule(50, 8.0, shape, 1e-3, include=(0.25, 8.0))
    assert lam[0] == 0.0 and lam[-1] == 8.0 and np.all(np.diff(lam) > 0)
    assert np.any(lam == 0.25) and len(lam) in (51, 52)
    if shape == "geometric":
        np.testing.assert_allclose(lam[1], 1e-3)
    with pytest.raises(ValueError):
        AISSettings(schedule="cosine")
    with pytest.raises(ValueError):
        AISSettings(include=(20.0,), lam_max=10.0)


def test_inference_gap_is_zero_at_the_linear_joint_optimum_and_results_file():
    """At the joint optimum of the linear beta-VAE the encoder is the exact tempered posterior, so its beta-VAE
    loss equals -beta log Z(1/beta): the gap is zero with the exact log Z, and about zero with AIS."""
    rng = np.random.default_rng(11)
    data = rng.normal(size=(4000, 24)) @ np.diag(np.linspace(2.5, 0.3, 24))
    spectrum = Spectrum.from_data(data)
    betas = [0.3, 1.0]
    rates, dists, curves = [], [], []
    for beta in betas:
        params = joint_optimum(spectrum, beta, 8)
        r, d = optimal_rate_distortion(spectrum, beta, 8)
        exact = expected_decoder_rd(params.decoder, spectrum.covariance, [1.0 / beta])
        assert inference_gap(r, d, beta, exact["log_partition"][0]) == pytest.approx(0.0, abs=1e-10)
        rates.append(r)
        dists.append(d)
        s = AISSettings(n_steps=100, lam_max=5.0, n_chains=8, n_leapfrog=5, batch_size=6, include=(1.0 / beta,))
        curves.append(ais_rd_curve(_linear_distortion(params.decoder, spectrum.mean), 8,
                                   torch.tensor(data[:6]), s))
    out = ais_results_json(betas, rates, dists, curves, protocol="test", max_points=30)
    assert out["beta"] == betas and len(out["ais_lam"]) == 2 and len(out["ais_lam"][0]) <= 31
    assert all(1.0 / b in lam for b, lam in zip(betas, out["ais_lam"]))
    assert out["bdmc_gap"] == [None, None] and "inference_gap" in out["conventions"]
    # per example the joint optimum is the exact tempered posterior too: the gap on these 6 examples
    for j, beta in enumerate(betas):
        params = joint_optimum(spectrum, beta, 8)
        ex = decoder_rd(params.decoder, data[:6], spectrum.mean, [1.0 / beta])
        enc_loss = ex["distortion"][:, 0].mean() + beta * ex["rate"][:, 0].mean()
        gap = enc_loss + beta * out["ais_log_partition_at_beta"][j]
        assert abs(gap) < beta * (5 * curves[j].point(1.0 / beta)["log_partition_se"] + 0.05)


# ----------------------------------------------------------------------------------------------------
# the evaluator: AIS as a beta-level metric of the one evaluation loop, through evaluate_run and the CLI
# ----------------------------------------------------------------------------------------------------
def test_evaluate_run_with_ais_writes_the_figure_file(tmp_path):
    import json

    from _tiny_family import TinySplit, TinyVAE, registered

    from deep.evaluate import evaluate_run
    from deep.train import TrainConfig, train
    from paper_figures.fig_ais import load_ais_results

    with registered():
        run = train(TrainConfig(dataset="tiny", arch="tinymlp", epochs=1, batch_size=16, device="cpu", n_betas=2,
                                out_dir=str(tmp_path)), progress=False)
        res = evaluate_run(run, images=False, ais={"n_steps": 30, "n_chains": 4, "lam_max": 20.0}, ais_examples=3,
                           ais_bdmc=True)
    for key in ("ais_rate_at_beta", "ais_distortion_at_beta", "inference_gap", "bdmc_gap"):
        assert len(res[key]) == 2 and all(v is not None and np.isfinite(v) for v in res[key]), key
    ais = load_ais_results(res["ais_path"])      # the figure's reader accepts it
    on_disk = json.loads(Path(res["ais_path"]).read_text())
    assert on_disk["beta"] == res["beta"] and len(on_disk["ais_lam"][0]) > 30
    assert on_disk["bdmc_lam"] == [1.0, 1.0]       # Bernoulli decoder: BDMC at lam = 1 only
    # the encoder's numbers in the AIS file are those of the same examples, and the gap is the Lagrangian one
    for j, beta in enumerate(res["beta"]):
        lz = on_disk["ais_log_partition_at_beta"][j]
        want = res["ais_encoder_distortion"][j] + beta * res["ais_encoder_rate"][j] + beta * lz
        assert res["inference_gap"][j] == pytest.approx(want, rel=1e-9, abs=1e-9)
    assert "test examples" in on_disk["protocol"]["label"] and ais is not None


def test_ais_is_refused_for_a_family_without_a_decoder_distortion():
    from deep.evaluate.run import _ais_metric
    from deep.models.base import EvaluationOptionError
    from deep.models.nvae.model import build_nvae

    model = build_nvae("mnist", preset="small", mr=True)

    class Data:
        def get_batch(self, index, *, train=False):
            return torch.zeros(len(index), 1, 28, 28)

    with pytest.raises(EvaluationOptionError, match="not available for the NVAE: its prior is hierarchical"):
        _ais_metric(model, Data(), True, 2, False, 0, [1.0])


def test_cli_evaluate_ais_options(tmp_path):
    from click.testing import CliRunner

    from _tiny_family import registered

    from cli.main import cli
    from deep.train import TrainConfig, train

    with registered():
        run = train(TrainConfig(dataset="tiny", arch="tinymlp", epochs=1, batch_size=16, device="cpu", n_betas=2,
                                out_dir=str(tmp_path)), progress=False)
        r = CliRunner().invoke(cli, ["deep", "evaluate", str(run), "--no-images", "--quiet", "--ais", "--ais-steps",
                                     "12", "--ais-examples", "2", "--ais-chains", "3"], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        assert "AIS curves:" in r.output and (run / "results" / "ais.json").exists()
        settings = __import__("json").loads((run / "results" / "ais.json").read_text())["ais_settings"]
        assert (settings["n_steps"], settings["n_chains"]) == (12, 3)
        bad = CliRunner().invoke(cli, ["deep", "evaluate", str(run), "--ais-bdmc"])
        assert bad.exit_code == 2 and "--ais-bdmc only applies to AIS" in bad.output
