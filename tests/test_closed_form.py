"""Closed form of the linear beta-VAE against direct evaluation of the objective."""
import math

import numpy as np
import pytest
import torch

from linvae.closed_form import (LinearVAEParams, Spectrum, best_response, expected_loss,
                                expected_rate_distortion, joint_optimum, optimal_rate_distortion, rd_curve,
                                second_moment)
from linvae.conditioning import sigmoid_gate, sqrt_gate


def _data(rng, n=8, n_samples=4000, rank=None):
    rank = rank or n
    basis = rng.normal(size=(rank, n))
    scales = np.linspace(3.0, 0.3, rank)
    return (rng.normal(size=(n_samples, rank)) * scales) @ basis + rng.normal(size=n)


def _loss_of_vector(vec, shapes, moment, beta, mean):
    k, n = shapes
    e = vec[: k * n].reshape(k, n)
    log_c = vec[k * n: k * n + k]
    d = vec[k * n + k:].reshape(n, k)
    return expected_loss(LinearVAEParams(e, np.exp(log_c), d, mean), moment, beta)


def _pack(p):
    return np.concatenate([p.encoder.ravel(), np.log(p.variances), p.decoder.ravel()])


def _fd_gradient(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


@pytest.mark.parametrize("beta", [0.05, 0.7, 2.5, 30.0])
def test_joint_optimum_is_stationary_and_a_minimum(beta):
    rng = np.random.default_rng(0)
    x = _data(rng)
    sp = Spectrum.from_data(x)
    k = 4
    p = joint_optimum(sp, beta, k)
    f = lambda v: _loss_of_vector(v, (k, sp.dim), sp.covariance, beta, sp.mean)  # noqa: E731
    v0 = _pack(p)
    grad = _fd_gradient(f, v0)
    assert np.max(np.abs(grad)) < 1e-6
    base = f(v0)
    for _ in range(200):
        assert f(v0 + 1e-2 * rng.normal(size=v0.shape)) >= base - 1e-12


@pytest.mark.parametrize("beta", [0.05, 0.7, 2.5])
def test_closed_form_rate_distortion_match_direct_evaluation(beta):
    rng = np.random.default_rng(1)
    sp = Spectrum.from_data(_data(rng, n=10))
    for k in (1, 3, 10):
        r_cf, d_cf = optimal_rate_distortion(sp, beta, k)
        r, d = expected_rate_distortion(joint_optimum(sp, beta, k), sp.covariance)
        assert math.isclose(r, r_cf, rel_tol=1e-9, abs_tol=1e-10)
        assert math.isclose(d, d_cf, rel_tol=1e-9)
        lam = sp.eigvals[:k]
        assert math.isclose(r_cf, 0.5 * np.sum(np.log(lam[lam > beta] / beta)), rel_tol=1e-12, abs_tol=1e-12)


def test_direct_evaluation_matches_monte_carlo_objective():
    """expected_rate_distortion is the expectation of the per-example objective over q and the data."""
    rng = np.random.default_rng(2)
    x = _data(rng, n=5, n_samples=2000)
    sp = Spectrum.from_data(x)
    k = 3
    p = LinearVAEParams(rng.normal(size=(k, 5)) * 0.3, rng.uniform(0.2, 1.5, size=k), rng.normal(size=(5, k)), sp.mean)
    r, d = expected_rate_distortion(p, sp.covariance, include_constant=True)
    xc = x - sp.mean
    m = xc @ p.encoder.T
    kl = 0.5 * np.sum(m ** 2 + p.variances - np.log(p.variances) - 1, axis=1)
    assert math.isclose(kl.mean(), r, rel_tol=1e-10)
    z = m[:, None, :] + np.sqrt(p.variances) * rng.normal(size=(x.shape[0], 400, k))
    nll = 0.5 * np.sum((xc[:, None, :] - z @ p.decoder.T) ** 2, axis=-1) + 0.5 * 5 * math.log(2 * math.pi)
    assert abs(nll.mean() - d) < 4 * nll.mean(1).std() / math.sqrt(x.shape[0]) + 0.02


def test_best_response_is_stationary_for_a_fixed_decoder():
    rng = np.random.default_rng(3)
    sp = Spectrum.from_data(_data(rng, n=6))
    k, beta = 3, 0.4
    decoder = rng.normal(size=(6, k))
    encoder, c = best_response(decoder, beta)
    p = LinearVAEParams(encoder, c, decoder, sp.mean)

    def f(v):
        e = v[: k * 6].reshape(k, 6)
        return expected_loss(LinearVAEParams(e, np.exp(v[k * 6:]), decoder, sp.mean), sp.covariance, beta)
    v0 = np.concatenate([encoder.ravel(), np.log(c)])
    assert np.max(np.abs(_fd_gradient(f, v0))) < 1e-6
    assert all(f(v0 + 1e-2 * rng.normal(size=v0.shape)) >= f(v0) for _ in range(100))
    assert np.allclose(encoder, np.linalg.solve(decoder.T @ decoder + beta * np.eye(k), decoder.T))


def test_rank_deficient_data_and_more_latents_than_rank():
    rng = np.random.default_rng(4)
    x = _data(rng, n=9, rank=3)
    sp = Spectrum.from_data(x)
    assert sp.rank == 3 and np.all(sp.eigvals[3:] == 0)
    k, beta = 5, 0.2
    p = joint_optimum(sp, beta, k)
    assert np.all(np.isfinite(p.encoder)) and np.all(p.variances[3:] == 1.0)
    assert np.allclose(p.encoder[3:], 0) and np.allclose(p.decoder[:, 3:], 0)
    f = lambda v: _loss_of_vector(v, (k, 9), sp.covariance, beta, sp.mean)  # noqa: E731
    assert np.max(np.abs(_fd_gradient(f, _pack(p)))) < 1e-6
    r, d = expected_rate_distortion(p, sp.covariance)
    assert np.allclose((r, d), optimal_rate_distortion(sp, beta, k))


def test_rd_curve_is_monotone_with_slope_minus_beta():
    rng = np.random.default_rng(5)
    sp = Spectrum.from_data(_data(rng, n=12))
    betas = np.logspace(-2, 1.5, 400)
    c = rd_curve(sp, betas, 6)
    assert np.all(np.diff(c["rate"]) <= 1e-12) and np.all(np.diff(c["distortion"]) >= -1e-12)
    mid = slice(1, -1)
    slope = np.gradient(c["distortion"], betas)[mid] / np.gradient(c["rate"], betas)[mid]
    ok = np.abs(np.gradient(c["rate"], betas)[mid]) > 1e-6
    assert np.allclose(slope[ok], -betas[mid][ok], rtol=2e-2)


def test_sigma2_is_equivalent_to_rescaled_beta():
    rng = np.random.default_rng(6)
    sp = Spectrum.from_data(_data(rng, n=7))
    beta, s2 = 0.3, 2.5
    p_s2 = joint_optimum(sp, beta, 4, sigma2=s2)
    p_1 = joint_optimum(sp, beta * s2, 4)
    assert np.allclose(p_s2.decoder, p_1.decoder) and np.allclose(p_s2.variances, p_1.variances)
    r1, d1 = expected_rate_distortion(p_1, sp.covariance)
    r2, d2 = expected_rate_distortion(p_s2, sp.covariance, sigma2=s2)
    assert math.isclose(r1, r2) and math.isclose(d2, d1 / s2)


def test_theorem1_gate_constructions_numerically():
    rng = np.random.default_rng(7)
    sp = Spectrum.from_data(_data(rng, n=6))
    k = 4
    lam, u = sp.top(k)
    for beta in (0.05, 0.5, 1.5, 4.0, 20.0):
        eta = math.log(beta)
        # decoder: U Lambda^1/2 diag(sqrt_gate(eta - log lam)) = D*(beta)
        gate = sqrt_gate(torch.tensor(eta - np.log(lam))).numpy()
        assert np.allclose(u * np.sqrt(lam) * gate, joint_optimum(sp, beta, k).decoder)
        # encoder and covariance as best responses to a fixed full-rank decoder (sigmoid gates)
        d0 = rng.normal(size=(6, k))
        a, s, bt = np.linalg.svd(d0, full_matrices=False)
        sig = sigmoid_gate(torch.tensor(-eta + 2 * np.log(s))).numpy()
        e_gated = bt.T @ np.diag(1 / s) @ np.diag(sig) @ a.T
        e_star, c_star = best_response(d0, beta)
        assert np.allclose(e_gated, e_star)
        diag = np.diag(d0.T @ d0)
        assert np.allclose(sigmoid_gate(torch.tensor(eta - np.log(diag))).numpy(), c_star)


def test_mnist_spectrum_and_curve(data_root):
    from linvae.mnist import load_mnist

    x = load_mnist("train", data_root)
    xt = load_mnist("test", data_root)
    assert x.shape == (60000, 784) and xt.shape == (10000, 784)
    assert 0.0 <= x.min() and x.max() <= 1.0
    sp = Spectrum.from_data(x)
    assert 700 <= sp.rank < 784  # rank-deficient: constant border pixels
    for beta in (0.01, 0.3, 3.0):
        p = joint_optimum(sp, beta, 32)
        assert np.allclose(expected_rate_distortion(p, sp.covariance), optimal_rate_distortion(sp, beta, 32),
                           rtol=1e-8)
    # the train-fit optimum on test data is no better than on train data at moderate beta
    m = second_moment(xt, sp.mean)
    curve = rd_curve(sp, np.array([0.1, 1.0]), 32, moment=m)
    assert np.all(np.isfinite(curve["loss"]))
    # a random perturbation of the decoder never lowers the MNIST training loss
    rng = np.random.default_rng(0)
    p = joint_optimum(sp, 0.5, 32)
    base = expected_loss(p, sp.covariance, 0.5)
    for _ in range(20):
        q = LinearVAEParams(p.encoder, p.variances, p.decoder + 1e-3 * rng.normal(size=p.decoder.shape), p.mean)
        assert expected_loss(q, sp.covariance, 0.5) >= base
