"""Exact RD curve of a linear-Gaussian decoder (linvae.decoder_rd) against independent computations:
quadrature, the Gaussian marginal likelihood, the exact posterior, sympy, and the beta-VAE joint optimum."""
import math

import numpy as np
import pytest
import sympy as sp
from scipy.stats import multivariate_normal

from linvae.closed_form import Spectrum, joint_optimum, optimal_rate_distortion, second_moment
from linvae.decoder_rd import decoder_rd, expected_decoder_rd, tempered_posterior


def _decoder(rng, n, k, rank=None):
    d = rng.normal(size=(n, k)) * np.linspace(1.5, 0.2, k)
    if rank is not None:
        d[:, rank:] = d[:, :k - rank] * 0.5  # rank-deficient: repeated columns
    return d


def _grid_rd(decoder, x, mean, lam, sigma2, half_width=9.0, points=1201):
    """D, R, log Z by brute-force quadrature on a grid over z (k <= 2)."""
    k = decoder.shape[1]
    axis = np.linspace(-half_width, half_width, points)
    h = axis[1] - axis[0]
    zs = np.stack(np.meshgrid(*([axis] * k), indexing="ij"), -1).reshape(-1, k)
    log_prior = -0.5 * np.sum(zs ** 2, -1) - 0.5 * k * math.log(2 * math.pi)
    d = np.sum((x - mean - zs @ decoder.T) ** 2, -1) / (2 * sigma2)
    log_f = log_prior - lam * d
    shift = log_f.max()
    z_int = np.sum(np.exp(log_f - shift)) * h ** k
    log_z = math.log(z_int) + shift
    q = np.exp(log_f - log_z)
    dist = np.sum(q * d) * h ** k
    rate = np.sum(q * (log_f - log_z - log_prior)) * h ** k
    return rate, dist, log_z


@pytest.mark.parametrize("k,n,lam,sigma2", [(1, 1, 0.3, 1.0), (1, 3, 2.0, 0.5), (2, 3, 0.7, 1.0),
                                            (2, 5, 4.0, 1.3), (2, 3, 0.0, 1.0)])
def test_matches_quadrature(k, n, lam, sigma2):
    rng = np.random.default_rng(k * 10 + n)
    decoder = _decoder(rng, n, k)
    mean = rng.normal(size=n)
    x = mean + rng.normal(size=n) * 1.5
    exact = decoder_rd(decoder, x[None], mean, [lam], sigma2)
    rate, dist, log_z = _grid_rd(decoder, x, mean, lam, sigma2, points=1201 if k == 1 else 401)
    assert exact["rate"][0, 0] == pytest.approx(rate, abs=1e-7)
    assert exact["distortion"][0, 0] == pytest.approx(dist, rel=1e-7)
    assert exact["log_partition"][0, 0] == pytest.approx(log_z, abs=1e-7)


def test_lambda_one_is_the_exact_posterior_and_the_marginal_likelihood():
    rng = np.random.default_rng(1)
    n, k, sigma2 = 10, 4, 0.7
    decoder, mean = _decoder(rng, n, k), rng.normal(size=n)
    x = mean + rng.normal(size=(6, n)) @ np.diag(np.linspace(2, 0.5, n))
    # textbook probabilistic-PCA posterior: M = D^T D + s2 I, mean M^-1 D^T (x - mu), cov s2 M^-1
    m_mat = decoder.T @ decoder + sigma2 * np.eye(k)
    post_mean = np.linalg.solve(m_mat, decoder.T @ (x - mean).T).T
    q_mean, q_cov = tempered_posterior(decoder, x, mean, 1.0, sigma2)
    np.testing.assert_allclose(q_mean, post_mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(q_cov, sigma2 * np.linalg.inv(m_mat), rtol=1e-12, atol=1e-14)
    # log Z(1) with the normalising constant kept is log p(x) = log N(x; mu, D D^T + s2 I)
    out = decoder_rd(decoder, x, mean, [1.0], sigma2, include_constant=True)
    log_px = multivariate_normal(mean, decoder @ decoder.T + sigma2 * np.eye(n)).logpdf(x)
    np.testing.assert_allclose(out["log_partition"][:, 0], log_px, rtol=1e-12)


@pytest.mark.parametrize("rank", [None, 3])
def test_svd_formula_matches_direct_gaussian_algebra(rank):
    """R = KL(N(m, Sigma) || N(0, I)) and D = E_q[d] written with plain matrices, at several lam."""
    rng = np.random.default_rng(2)
    n, k, sigma2 = 12, 5, 0.8
    decoder, mean = _decoder(rng, n, k, rank), rng.normal(size=n)
    x = mean + rng.normal(size=(7, n))
    lams = np.array([0.0, 0.05, 0.5, 1.0, 3.0, 40.0])
    out = decoder_rd(decoder, x, mean, lams, sigma2)
    for j, lam in enumerate(lams):
        m, cov = tempered_posterior(decoder, x, mean, lam, sigma2)
        rate = 0.5 * (np.trace(cov) + np.sum(m ** 2, -1) - k - np.linalg.slogdet(cov)[1])
        resid = x - mean - m @ decoder.T
        dist = (np.sum(resid ** 2, -1) + np.trace(decoder @ cov @ decoder.T)) / (2 * sigma2)
        np.testing.assert_allclose(out["rate"][:, j], rate, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(out["distortion"][:, j], dist, rtol=1e-12)
    assert np.all(out["rate"][:, 0] == 0.0)


def test_slope_is_minus_one_over_lambda_and_curve_is_monotone():
    rng = np.random.default_rng(3)
    n, k = 9, 4
    decoder, mean = _decoder(rng, n, k), rng.normal(size=n)
    x = mean + rng.normal(size=(3, n))
    for lam in (0.1, 1.0, 7.0):
        h = 1e-5 * lam
        out = decoder_rd(decoder, x, mean, [lam - h, lam + h])
        slope = np.diff(out["distortion"], axis=1) / np.diff(out["rate"], axis=1)
        np.testing.assert_allclose(slope[:, 0], -1.0 / lam, rtol=1e-6)
        # d log Z / d lam = -D(lam)
        dlogz = np.diff(out["log_partition"], axis=1)[:, 0] / (2 * h)
        mid = decoder_rd(decoder, x, mean, [lam])["distortion"][:, 0]
        np.testing.assert_allclose(dlogz, -mid, rtol=1e-7)
    curve = decoder_rd(decoder, x, mean, np.geomspace(1e-3, 1e3, 50))
    assert np.all(np.diff(curve["rate"], axis=1) > 0) and np.all(np.diff(curve["distortion"], axis=1) < 0)


def test_expected_curve_is_the_data_average():
    rng = np.random.default_rng(4)
    n, k = 8, 3
    decoder, mean = _decoder(rng, n, k), rng.normal(size=n)
    x = mean + rng.normal(size=(50, n)) * 1.3 + 0.2
    lams = np.geomspace(0.01, 100, 7)
    per = decoder_rd(decoder, x, mean, lams, 0.9, include_constant=True)
    avg = expected_decoder_rd(decoder, second_moment(x, mean), lams, 0.9, include_constant=True)
    for key in ("rate", "distortion", "log_partition"):
        np.testing.assert_allclose(avg[key], per[key].mean(0), rtol=1e-12)


@pytest.mark.parametrize("sigma2", [1.0, 0.6])
def test_joint_optimum_point_is_on_its_decoder_curve(sigma2):
    """At the beta-VAE joint optimum (D^T D diagonal) the encoder is the exact tempered posterior, so the
    closed-form (R, D) of the beta-VAE equals this decoder's curve at lam = 1/beta."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3000, 10)) @ np.diag(np.linspace(3, 0.2, 10)) @ np.linalg.qr(rng.normal(size=(10, 10)))[0]
    spectrum = Spectrum.from_data(x)
    for beta in (0.05, 0.5, 2.0):
        params = joint_optimum(spectrum, beta, 4, sigma2)
        rate, dist = optimal_rate_distortion(spectrum, beta, 4, sigma2)
        curve = expected_decoder_rd(params.decoder, spectrum.covariance, [1.0 / beta], sigma2)
        assert curve["rate"][0] == pytest.approx(rate, rel=1e-10, abs=1e-12)
        assert curve["distortion"][0] == pytest.approx(dist, rel=1e-10)


def test_sympy_one_direction():
    """One eigen-direction of the formula (all terms are sums of these plus an orthogonal residual):
    the integral of N(z; 0, 1) exp(-a (y - S z)^2 / 2) is Z, and R = -lam D - log Z, dD/dR = -1/lam."""
    z = sp.symbols("z", real=True)
    a, S, lam, s2 = sp.symbols("a S lam sigma2", positive=True)
    y = sp.symbols("y", real=True)
    integrand = sp.exp(-z ** 2 / 2 - a * (y - S * z) ** 2 / 2) / sp.sqrt(2 * sp.pi)
    z_exact = sp.simplify(sp.integrate(integrand, (z, -sp.oo, sp.oo)))
    s = S ** 2
    # the module's per-direction terms, with a = lam / sigma2
    dist = (y ** 2 / (1 + a * s) ** 2 + s / (1 + a * s)) / (2 * s2)
    rate = sp.Rational(1, 2) * (1 / (1 + a * s) - 1 + sp.log(1 + a * s) + a ** 2 * s * y ** 2 / (1 + a * s) ** 2)
    log_z = -lam * dist - rate
    sub = {a: lam / s2}
    diff = sp.simplify(sp.expand_log(sp.log(z_exact).subs(sub) - log_z.subs(sub), force=True))
    assert diff == 0
    slope = sp.simplify(sp.diff(dist.subs(sub), lam) / sp.diff(rate.subs(sub), lam))
    assert sp.simplify(slope + 1 / lam) == 0
