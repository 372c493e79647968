"""Tests for linvae.symbolic: every identity is proved, the prover can fail (negative controls),
and numeric cross-checks (numpy finite differences on the paper's matrix objective) confirm that
the proved closed forms really are stationary points / optima of the linear beta-VAE loss."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import sympy as sp
import torch

from linvae import symbolic as sym
from linvae.closed_form import Spectrum, optimal_rate_distortion, rd_curve
from linvae.conditioning import BetaRange, sqrt_gate

EXPECTED_NAMES = {
    "objective_per_dimension",
    "best_response_encoder_covariance",
    "decoder_stationary_points",
    "joint_optimum_is_global",
    "active_beats_collapsed",
    "hessian_positive_definite_active",
    "collapsed_point_stability",
    "rate_distortion_at_optimum",
    "rd_slope",
    "decoder_sqrt_gate",
    "sigmoid_gate_best_response",
    "encoder_sqrt_gate_joint",
    "covariance_exp_min_gate_joint",
    "sigmoid_cannot_vanish",
    "sigmoid_cannot_match_kink",
    "hyper_input_standardised",
    "affine_gate_reparametrisation",
}


@pytest.fixture(scope="module")
def verified():
    start = time.perf_counter()
    identities = sym.verify_all()
    return identities, time.perf_counter() - start


# ------------------------------------------------------------------------------------------------
# verify_all / format_report
# ------------------------------------------------------------------------------------------------
def test_every_identity_is_proved(verified):
    identities, _ = verified
    failed = [f"{i.name}: {i.detail}" for i in identities if not i.proved]
    assert not failed, "\n".join(failed)
    for identity in identities:
        assert "FAILED" not in identity.detail
        assert identity.statement and "\n" not in identity.statement


def test_names_unique_and_complete(verified):
    identities, _ = verified
    names = [i.name for i in identities]
    assert len(names) == len(set(names))
    assert set(names) == EXPECTED_NAMES
    assert tuple(names) == sym.PROOF_NAMES


def test_verify_all_is_fast(verified):
    _, elapsed = verified
    assert elapsed < 30.0


def test_format_report_lists_every_identity(verified):
    identities, _ = verified
    report = sym.format_report(identities)
    for identity in identities:
        assert identity.name in report
    assert "NOT PROVED" not in report
    assert f"{len(identities)}/{len(identities)} identities proved" in report
    failing = [sym.Identity("fake", "1 = 2", False, "simplify(1 - 2) = -1")]
    bad = sym.format_report(failing)
    assert "NOT PROVED" in bad and "simplify(1 - 2) = -1" in bad and "0/1" in bad


def test_verify_all_never_raises(monkeypatch):
    def raises():
        raise ZeroDivisionError("boom")

    def wrong():
        x = sp.Symbol("x", positive=True)
        proof = sym._Proof()
        proof.equal("x == x + 1", x, x + 1)
        return proof

    monkeypatch.setattr(sym, "_PROOFS", [sym._Registered("raises", "raises", raises),
                                         sym._Registered("wrong", "x = x + 1", wrong)])
    result = sym.verify_all()
    assert [i.name for i in result] == ["raises", "wrong"]
    assert not any(i.proved for i in result)
    assert "ZeroDivisionError" in result[0].detail
    assert "FAILED" in result[1].detail


def test_import_does_no_symbolic_work():
    # sympy is imported lazily; the module-level registry holds functions, not results.
    assert all(callable(entry.run) for entry in sym._PROOFS)
    assert len(sym._PROOFS) == len(EXPECTED_NAMES)


# ------------------------------------------------------------------------------------------------
# Negative controls: the provers reject wrong identities
# ------------------------------------------------------------------------------------------------
lam, beta, s = sp.symbols("lam beta s", positive=True)
d = sp.Symbol("d", positive=True)


def test_prove_equal_accepts_true_identities():
    x = sp.Symbol("x", real=True)
    assert sym.prove_equal(sym.sym_sigmoid(x) + sym.sym_sigmoid(-x), 1)
    assert sym.prove_equal(sp.sqrt(sp.Max(0, lam - beta)),
                           sp.sqrt(lam) * sym.sym_sqrt_gate(sp.log(beta) - sp.log(lam)),
                           {lam: beta + s})


def test_prove_equal_rejects_swapped_sqrt_gate():
    wrong = sp.sqrt(lam) * sym.sym_sqrt_gate(sp.log(lam) - sp.log(beta))
    assert not sym.prove_equal(sp.sqrt(sp.Max(0, lam - beta)), wrong, {lam: beta + s})
    assert not sym.prove_equal(sp.sqrt(sp.Max(0, lam - beta)), wrong, {beta: lam + s})


def test_prove_equal_rejects_wrong_best_responses():
    obj = sym.per_dimension_objective()
    root = sp.solve(sp.diff(obj.loss, obj.c), obj.c)[0]
    assert sym.prove_equal(root, obj.beta / (obj.d**2 + obj.beta))
    assert not sym.prove_equal(root, obj.beta / (obj.d**2 + 2 * obj.beta))
    # sigmoid gate with the wrong sign of its argument
    assert not sym.prove_equal(d / (d**2 + beta), sym.sym_sigmoid(sp.log(beta) - 2 * sp.log(d)) / d)


def test_prove_equal_needs_the_right_branch():
    e_joint = sp.sqrt(sp.Max(0, lam - beta)) / lam
    assert sym.prove_equal(e_joint, 0, {beta: lam + s})
    assert not sym.prove_equal(e_joint, 0, {lam: beta + s})
    assert not sym.prove_equal(e_joint, 0)  # undecided without a branch
    assert not sym.prove_equal(sp.Min(1, beta / lam), beta / lam, {beta: lam + s})


def test_sign_provers_reject_wrong_signs():
    assert not sym.prove_positive(lam - beta)  # sign unknown without a branch
    assert sym.prove_positive(lam - beta, {lam: beta + s})
    assert not sym.prove_positive(lam * (beta - lam), {lam: beta + s})
    assert sym.prove_negative(lam * (beta - lam), {lam: beta + s})
    assert not sym.prove_negative(sym.sym_sigmoid(sp.Symbol("x", real=True)))


def test_provers_never_raise_on_garbage():
    assert sym.prove_equal("1/", 0) is False
    assert sym.prove_positive("((") is False


def test_per_dimension_objective_substitution():
    obj = sym.per_dimension_objective(d=sp.Integer(0), e=sp.Integer(0), c=sp.Integer(1))
    assert sp.simplify(obj.loss - obj.lam / 2) == 0
    assert obj.rate == 0


# ------------------------------------------------------------------------------------------------
# Numeric cross-checks with numpy: the symbols match the objective
# ------------------------------------------------------------------------------------------------
def _loss_fn():
    obj = sym.per_dimension_objective()
    args = (obj.d, obj.e, obj.c, obj.lam, obj.beta)
    return (sp.lambdify(args, obj.loss, "numpy"), sp.lambdify(args, obj.distortion, "numpy"),
            sp.lambdify(args, obj.rate, "numpy"))


def _fd_grad(f, x, h=1e-6):
    x = np.asarray(x, dtype=np.float64)
    g = np.zeros_like(x)
    for i in range(x.size):
        step = np.zeros_like(x)
        step.flat[i] = h
        g.flat[i] = (f(x + step) - f(x - step)) / (2 * h)
    return g


def _matrix_terms(S, D, E, c):
    """Paper-notes 2.2 (sigma^2 = 1, constant dropped): distortion and rate, nats per example."""
    k = len(c)
    C = np.diag(c)
    distortion = 0.5 * (np.trace(S) - 2 * np.trace(D @ E @ S) + np.trace(E.T @ D.T @ D @ E @ S)
                        + np.trace(D @ C @ D.T))
    rate = 0.5 * (-np.sum(np.log(c)) + np.trace(E.T @ E @ S) + np.sum(c) - k)
    return distortion, rate


def _joint(lam_, beta_):
    d_ = np.sqrt(np.maximum(lam_ - beta_, 0.0))
    return d_, d_ / lam_, np.minimum(1.0, beta_ / lam_)


def test_best_responses_are_stationary_numerically():
    loss, _, _ = _loss_fn()
    rng = np.random.default_rng(0)
    for _ in range(5):
        lam_, beta_, d_ = rng.uniform(0.1, 5.0), rng.uniform(0.05, 5.0), rng.normal() * 2
        e_, c_ = d_ / (d_**2 + beta_), beta_ / (d_**2 + beta_)
        g = _fd_grad(lambda v: loss(d_, v[0], v[1], lam_, beta_), [e_, c_])
        assert np.max(np.abs(g)) < 1e-7
        # the deliberately wrong covariance is not stationary: the check can fail
        g_bad = _fd_grad(lambda v: loss(d_, v[0], v[1], lam_, beta_),
                         [e_, beta_ / (d_**2 + 2 * beta_)])
        assert np.abs(g_bad[1]) > 1e-3


def test_joint_optimum_is_stationary_and_minimal_numerically():
    loss, distortion, rate = _loss_fn()
    rng = np.random.default_rng(1)
    for active in (True, False):
        for _ in range(4):
            lam_ = rng.uniform(0.2, 5.0)
            beta_ = lam_ * (rng.uniform(0.05, 0.95) if active else rng.uniform(1.05, 3.0))
            x0 = np.array(_joint(lam_, beta_))
            f = lambda v: loss(v[0], v[1], v[2], lam_, beta_)  # noqa: E731
            assert np.max(np.abs(_fd_grad(f, x0))) < 1e-7
            for _ in range(20):  # random perturbations never lower the loss
                delta = rng.normal(size=3) * 0.05 * np.array([1.0, 1.0, x0[2]])  # keeps c > 0
                assert f(x0 + delta) >= f(x0) - 1e-12
            r, dist = rate(*x0, lam_, beta_), distortion(*x0, lam_, beta_)
            assert r == pytest.approx(0.5 * math.log(lam_ / beta_) if active else 0.0, abs=1e-12)
            assert dist == pytest.approx(beta_ / 2 if active else lam_ / 2, rel=1e-12)


def test_matrix_objective_matches_per_dimension_sum_and_is_stationary():
    loss, distortion, rate = _loss_fn()
    rng = np.random.default_rng(2)
    n, k, beta_ = 5, 3, 0.7
    lam_ = np.array([3.0, 1.5, 0.6, 0.5, 0.2])  # top-3 latents: two active, one collapsed
    U, _ = np.linalg.qr(rng.normal(size=(n, n)))
    S = U @ np.diag(lam_) @ U.T
    dk, ek, ck = _joint(lam_[:k], beta_)
    D = U[:, :k] @ np.diag(dk)
    E = np.diag(ek) @ U[:, :k].T

    # 1) matrix objective == sum of the sympy per-dimension objectives + unused lam_j / 2,
    #    at random aligned (not optimal) parameters
    dr, er, cr = rng.normal(size=k), rng.normal(size=k), rng.uniform(0.1, 2.0, size=k)
    dist_m, rate_m = _matrix_terms(S, U[:, :k] @ np.diag(dr), np.diag(er) @ U[:, :k].T, cr)
    per_dim = sum(loss(dr[i], er[i], cr[i], lam_[i], beta_) for i in range(k))
    assert dist_m + beta_ * rate_m == pytest.approx(per_dim + lam_[k:].sum() / 2, rel=1e-12)

    # 2) the joint optimum is stationary in every entry of D, E and diag C
    shapes = [(n, k), (k, n), (k,)]

    def full_loss(v):
        parts, pos = [], 0
        for shape in shapes:
            size = int(np.prod(shape))
            parts.append(v[pos:pos + size].reshape(shape))
            pos += size
        dist, r = _matrix_terms(S, parts[0], parts[1], parts[2])
        return dist + beta_ * r

    x0 = np.concatenate([D.ravel(), E.ravel(), ck])
    assert np.max(np.abs(_fd_grad(full_loss, x0))) < 1e-6
    for _ in range(20):
        delta = rng.normal(size=x0.size) * 0.02
        assert full_loss(x0 + delta) >= full_loss(x0) - 1e-12

    # 3) R(beta), D(beta) closed forms of rate_distortion_at_optimum
    dist_o, rate_o = _matrix_terms(S, D, E, ck)
    active = lam_[:k] > beta_
    assert rate_o == pytest.approx(0.5 * np.sum(np.log(lam_[:k][active] / beta_)), rel=1e-12)
    assert dist_o == pytest.approx(0.5 * (np.trace(S) - np.sum(lam_[:k][active] - beta_)),
                                   rel=1e-12)


def test_rd_slope_of_the_project_closed_form_numerically():
    """dD/dR = -beta (the sympy identity rd_slope) holds for linvae.closed_form's optimum: finite differences
    of optimal_rate_distortion and of rd_curve on a rotated 4-d spectrum (3 latents), at betas between,
    below and above its eigenvalues."""
    lam_ = np.array([4.0, 2.0, 1.0, 0.3])
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(4, 4)))
    spectrum = Spectrum.from_covariance(q @ np.diag(lam_) @ q.T, np.zeros(4), 100)
    h = 1e-6
    for b in (0.5, 1.5, 3.0):
        (r1, d1), (r2, d2) = (optimal_rate_distortion(spectrum, b - h, 3), optimal_rate_distortion(spectrum, b + h, 3))
        assert (d2 - d1) / (r2 - r1) == pytest.approx(-b, rel=1e-6)
        curve = rd_curve(spectrum, np.array([b - h, b + h]), 3, moment=spectrum.covariance)
        assert np.diff(curve["distortion"])[0] / np.diff(curve["rate"])[0] == pytest.approx(-b, rel=1e-5)


def test_symbolic_gates_match_project_gates():
    x = sp.Symbol("x", real=True)
    sig = sp.lambdify(x, sym.sym_sigmoid(x), "numpy")
    sq = sp.lambdify(x, sym.sym_sqrt_gate(x), "numpy")
    grid = np.linspace(-6.0, 3.0, 37)
    t = torch.tensor(grid, dtype=torch.float64)
    np.testing.assert_allclose(sig(grid), torch.sigmoid(t).numpy(), rtol=1e-12)
    np.testing.assert_allclose(np.array([sq(v) for v in grid], dtype=float),
                               sqrt_gate(t).numpy(), atol=1e-12)
    # decoder optimum through the project's sqrt gate: sqrt(lam) * gate(log beta - log lam)
    lam_ = 1.7
    betas = np.array([0.01, 0.5, 1.69, 1.7, 2.5, 10.0])
    gated = math.sqrt(lam_) * sqrt_gate(torch.log(torch.tensor(betas / lam_))).numpy()
    np.testing.assert_allclose(gated, np.sqrt(np.maximum(lam_ - betas, 0.0)), atol=1e-12)
    # the linear MR-VAE's exp-min covariance gate: the sympy expression, and the joint optimum's variances
    from linvae.models import exp_min_gate

    em = sp.lambdify(x, sym.sym_exp_min_gate(x), "numpy")
    np.testing.assert_allclose(np.array([em(v) for v in grid], dtype=float), exp_min_gate(t).numpy(), rtol=1e-12)
    variances = exp_min_gate(torch.log(torch.tensor(betas / lam_))).numpy()
    np.testing.assert_allclose(variances, np.minimum(1.0, betas / lam_), rtol=1e-12)


def test_hyper_input_matches_beta_range():
    log_a, log_b, eta = sp.symbols("log_a log_b eta", real=True)
    mid, half = (log_a + log_b) / 2, (log_b - log_a) / 2
    u = sp.lambdify((eta, log_a, log_b), (eta - mid) / (half / sp.sqrt(3)), "numpy")
    rng = BetaRange(0.01, 10.0)
    betas = np.array([0.01, 0.1, 1.0, 3.0, 10.0])
    expected = rng.standardize(torch.tensor(betas, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(u(np.log(betas), math.log(0.01), math.log(10.0)), expected,
                               rtol=1e-12, atol=1e-12)
