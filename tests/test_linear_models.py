"""The gated linear MR-VAE (built on the conditioning core) against the closed form, and its trainer."""
import math

import numpy as np
import pytest
import torch

from linvae.closed_form import Spectrum, best_response, expected_rate_distortion, joint_optimum
from linvae.conditioning import BetaRange, gate_bias_for_value, sqrt_gate
from linvae.models import StackedLinearVAE, exp_min_gate
from linvae.training import (LinearRunSpec, StackedAdam, _beta_quantiles, exact_rate_distortion, lr_factor,
                             train_linear_stacks)


def _spectrum(seed=0, n=7, n_samples=3000):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n_samples, n)) * np.linspace(2.5, 0.2, n)) @ np.linalg.qr(rng.normal(size=(n, n)))[0]
    return Spectrum.from_data(x + 0.3), x + 0.3


def _set(model, name, value):
    getattr(model, name).data.copy_(torch.as_tensor(value, dtype=model.E1.dtype).expand_as(getattr(model, name)))


def _theory_model(sp, k, beta_range, encoder_gate, covariance_gate="sigmoid"):
    """Set the gated model's parameters to the constructions of Theorem 1 / paper-notes 2.5-2.6."""
    lam, u = sp.top(k)
    n = sp.dim
    m = StackedLinearVAE(1, 1, n, k, mr=True, beta_range=beta_range, encoder_gate=encoder_gate,
                         covariance_gate=covariance_gate, decoder_gate="sqrt", dtype=torch.float64)
    const = gate_bias_for_value("sqrt", 0.9)  # a constant sqrt gate of value 0.9
    # gate pre-activation w*u + b == log(beta) - log(lam)  <=>  w = scale, b = mid - log(lam)
    w_track, b_track = beta_range.scale, beta_range.mid - np.log(lam)
    _set(m, "D1", np.eye(k)); _set(m, "w_D1", w_track); _set(m, "b_D1", b_track)
    _set(m, "D2", u * np.sqrt(lam) / 0.9); _set(m, "w_D2", 0.0); _set(m, "b_D2", const)
    return m, lam, u, const


@pytest.mark.parametrize("beta", [0.01, 0.2, 0.9, 3.0, 10.0])
def test_sqrt_gated_model_represents_the_joint_optimum_exactly(beta):
    """Decoder and encoder of the joint optimum through the core's sqrt gates, and the variances
    min(1, beta / lam) through exp_min gates, for every beta (dimensions collapse at beta = lam)."""
    sp, _ = _spectrum()
    k, br = 4, BetaRange(0.01, 10.0)
    m, lam, u, const = _theory_model(sp, k, br, encoder_gate="sqrt", covariance_gate="exp_min")
    _set(m, "E1", u.T); _set(m, "w_E1", br.scale); _set(m, "b_E1", br.mid - np.log(lam))
    _set(m, "E2", np.diag(1 / np.sqrt(lam)) / 0.9); _set(m, "w_E2", 0.0); _set(m, "b_E2", const)
    # C1 = exp(min(log beta - log lam, 0)) * 1 ; C2 = exp(min(0, 0)) * 1
    _set(m, "log_C1", 0.0); _set(m, "w_C1", br.scale); _set(m, "b_C1", br.mid - np.log(lam))
    _set(m, "log_C2", 0.0); _set(m, "w_C2", 0.0); _set(m, "b_C2", 0.0)
    mats = m.matrices(beta)
    opt = joint_optimum(sp, beta, k)
    assert np.allclose(mats["decoder"][0, 0].numpy(), opt.decoder, atol=1e-12)
    assert np.allclose(mats["encoder"][0, 0].numpy(), opt.encoder, atol=1e-12)
    assert np.allclose(mats["variances"][0, 0].numpy(), opt.variances, atol=1e-12)
    assert np.allclose(opt.variances, np.minimum(1.0, beta / lam))


def test_exp_min_gate_is_one_minus_the_squared_sqrt_gate():
    x = torch.linspace(-8.0, 3.0, 221, dtype=torch.float64, requires_grad=True)
    g = exp_min_gate(x)
    assert torch.allclose(g, 1 - sqrt_gate(x) ** 2, atol=1e-12)
    assert torch.all(g[x >= 0] == 1.0) and torch.all(g[x < 0] < 1.0)
    g.sum().backward()
    assert torch.allclose(x.grad[x < 0], torch.exp(x[x < 0]).detach()) and torch.all(x.grad[x > 0] == 0)


@pytest.mark.parametrize("beta", [0.01, 0.2, 3.0, 10.0])
def test_sigmoid_gates_give_best_responses_to_a_fixed_decoder(beta):
    """Theorem 1 as stated: encoder and covariance gates = best responses to a fixed decoder D0."""
    sp, _ = _spectrum(1)
    k, br = 3, BetaRange(0.01, 10.0)
    rng = np.random.default_rng(0)
    d0 = rng.normal(size=(sp.dim, k))
    a, s, bt = np.linalg.svd(d0, full_matrices=False)
    m = StackedLinearVAE(1, 1, sp.dim, k, mr=True, beta_range=br, encoder_gate="sigmoid", dtype=torch.float64)
    # E1 = sigmoid(-log beta + 2 log s) (.)row A^T ; E2 = sigmoid(0) * 2 B S^-1
    _set(m, "E1", a.T); _set(m, "w_E1", -br.scale); _set(m, "b_E1", -br.mid + 2 * np.log(s))
    _set(m, "E2", 2 * bt.T @ np.diag(1 / s)); _set(m, "w_E2", 0.0); _set(m, "b_E2", 0.0)
    # C1 = sigmoid(log beta - log diag(D0^T D0)) * 1 ; C2 = sigmoid(0) * 2
    diag = np.diag(d0.T @ d0)
    _set(m, "log_C1", 0.0); _set(m, "w_C1", br.scale); _set(m, "b_C1", br.mid - np.log(diag))
    _set(m, "log_C2", math.log(2.0)); _set(m, "w_C2", 0.0); _set(m, "b_C2", 0.0)
    mats = m.matrices(beta)
    e_star, c_star = best_response(d0, beta)
    assert np.allclose(mats["encoder"][0, 0].numpy(), e_star, atol=1e-12)
    assert np.allclose(mats["variances"][0, 0].numpy(), c_star, atol=1e-12)


@pytest.mark.parametrize("covariance_gate", ["sigmoid", "exp_min"])
def test_forward_rate_and_distortion_are_unbiased_for_the_exact_terms(covariance_gate):
    """The training objective (closed-form rate, one-sample distortion) matches exact evaluation:
    the forward pass and the exact evaluation use the same gates."""
    sp, x = _spectrum(2)
    m = StackedLinearVAE(1, 2, sp.dim, 3, mr=True, generator=torch.Generator().manual_seed(0),
                         covariance_gate=covariance_gate, dtype=torch.float64)
    with torch.no_grad():
        m.w_D1.normal_(); m.w_E1.normal_(); m.w_C1.normal_()
        m.b_C1.add_(0.5)  # some exp_min gates sit on their flat part (pre-activation > 0) at this beta
    beta = 0.37
    xc = torch.tensor(x - sp.mean)[None]  # (1, N, n)
    b = torch.full((1, 2, xc.shape[1]), beta, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    rates, dists = [], []
    with torch.no_grad():
        for _ in range(20):
            out = m(xc, b, torch.randn(1, 2, xc.shape[1], 3, generator=g, dtype=torch.float64))
            rates.append(out.rate.mean(-1))
            dists.append(out.distortion.mean(-1))
    r_exact, d_exact = exact_rate_distortion(m, beta, sp.covariance, sp.mean)
    assert np.allclose(torch.stack(rates).mean(0).numpy(), r_exact, rtol=1e-10)
    assert np.allclose(torch.stack(dists).mean(0).numpy(), d_exact, rtol=5e-3)


def test_stacked_models_are_independent():
    sp, x = _spectrum(3)
    m = StackedLinearVAE(2, 3, sp.dim, 2, mr=True, generator=torch.Generator().manual_seed(0))
    xb = torch.tensor(x[:64] - sp.mean, dtype=torch.float32).expand(2, -1, -1)
    out = m(xb, torch.full((2, 3, 64), 0.5), torch.randn(2, 3, 64, 2))
    (out.distortion + 0.5 * out.rate).mean(-1)[1, 2].backward()
    for name, p in m.named_parameters():
        mask = torch.zeros_like(p, dtype=torch.bool)
        mask[1, 2] = True
        assert torch.all(p.grad[~mask] == 0), name
        assert torch.any(p.grad[mask] != 0), name


def test_stacked_adam_matches_torch_adam_per_model():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(1, 2, 5))
    ref = [torch.nn.Parameter(p.data[0, i].clone()) for i in range(2)]
    lrs = torch.tensor([[1e-2, 3e-3]])
    opt = StackedAdam([p], lrs)
    refs = [torch.optim.Adam([ref[i]], lr=float(lrs[0, i])) for i in range(2)]
    for step in range(5):
        target = torch.randn(5)
        opt.zero_grad(); ((p - target) ** 2).sum().backward(); opt.step()
        for i in range(2):
            refs[i].zero_grad(); ((ref[i] - target) ** 2).sum().backward(); refs[i].step()
    assert torch.allclose(p.data[0, 0], ref[0].data, atol=1e-6)
    assert torch.allclose(p.data[0, 1], ref[1].data, atol=1e-6)


def test_lr_schedule_warmup_then_cosine():
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10) == pytest.approx(0.0)


def test_stratified_beta_sampling_puts_one_beta_in_each_slice():
    g = torch.Generator().manual_seed(0)
    q = _beta_quantiles("stratified", 2, 3, 16, g)
    assert q.shape == (2, 3, 16) and torch.all((q >= 0) & (q < 1))
    slots = torch.floor(q * 16).long().sort(-1).values
    assert torch.equal(slots, torch.arange(16).expand(2, 3, 16))  # exactly one per slice [i/16, (i+1)/16)
    order = q.argsort(-1)
    assert not torch.equal(order[0, 0], torch.arange(16)) and not torch.equal(order[0, 0], order[0, 1])
    # every position is still uniform on [0, 1): the mean over many batches of one example's value
    many = torch.cat([_beta_quantiles("stratified", 1, 1, 8, g)[0, 0, :1] for _ in range(4000)])
    assert abs(float(many.mean()) - 0.5) < 0.02 and abs(float((many < 0.25).float().mean()) - 0.25) < 0.03
    assert _beta_quantiles("batch", 2, 3, 16, g).shape == (2, 3, 1)
    assert _beta_quantiles("example", 2, 3, 16, g).shape == (2, 3, 16)
    with pytest.raises(ValueError, match="stratified"):
        _beta_quantiles("per-step", 1, 1, 4, g)


@pytest.mark.parametrize("covariance_gate", ["sigmoid", "exp_min"])  # the paper's; the default preset's
def test_training_reaches_the_closed_form_on_synthetic_data(covariance_gate):
    """beta-VAEs and an MR-VAE trained by the vectorised loop approach the exact optimum."""
    sp, x = _spectrum(4, n=6, n_samples=4096)
    betas = (0.1, 1.0)
    spec = LinearRunSpec(baseline_betas=betas, learning_rates=(1e-2, 1e-3), seeds=(0, 1), latent_dim=3,
                         epochs=80, batch_size=128, beta_range=BetaRange(0.05, 5.0), init_log_variance=-2.0,
                         covariance_gate=covariance_gate)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    try:  # tiny matrices: one thread avoids spin-waiting when the cores are shared
        trained = train_linear_stacks(torch.tensor(x - sp.mean, dtype=torch.float32), spec, progress=False,
                                      threads=1)
    finally:
        torch.set_num_threads(threads)
    assert trained.beta_vae.E1.shape[:2] == (2, 4) and trained.mr.E1.shape[:2] == (2, 2)
    for j, beta in enumerate(betas):
        r, d = exact_rate_distortion(trained.beta_vae, beta, sp.covariance, sp.mean)
        r0, d0 = expected_rate_distortion(joint_optimum(sp, beta, 3), sp.covariance)
        excess = (d + beta * r)[:, 2 * j:2 * j + 2] / (d0 + beta * r0) - 1  # (seeds, lrs)
        assert np.all(excess > -1e-6), excess  # nothing beats the optimum on its own data
        assert np.all(excess.min(1) < 0.05), excess  # the selected learning rate gets close
    for beta in (0.1, 0.5, 2.0):
        r, d = exact_rate_distortion(trained.mr, beta, sp.covariance, sp.mean)
        r0, d0 = expected_rate_distortion(joint_optimum(sp, beta, 3), sp.covariance)
        excess = (d + beta * r) / (d0 + beta * r0) - 1
        assert np.all(excess > -1e-6), excess
        assert np.all(excess.min(1) < 0.05), (beta, excess)


def test_fused_beta_vae_distortion_equals_the_reconstruction_error():
    """The beta-VAE path computes 1/2 |x - D z|^2 without forming D z; compare with the direct sum."""
    sp, x = _spectrum(5)
    m = StackedLinearVAE(2, 3, sp.dim, 3, mr=False, generator=torch.Generator().manual_seed(0),
                         dtype=torch.float64)
    xb = torch.tensor(x[:50] - sp.mean).expand(2, -1, -1)
    noise = torch.randn(2, 3, 50, 3, dtype=torch.float64)
    out = m(xb, torch.full((2, 3, 1), 0.3, dtype=torch.float64), noise)
    mean = torch.einsum("sbn,sgkn->sgbk", xb, m.E2 @ m.E1)
    z = mean + torch.exp(0.5 * (m.log_C1 + m.log_C2)).unsqueeze(-2) * noise
    recon = z @ (m.D2 @ m.D1).transpose(-1, -2)
    direct = 0.5 * (xb.unsqueeze(1) - recon).pow(2).sum(-1)
    assert torch.allclose(out.distortion, direct, rtol=1e-10)
