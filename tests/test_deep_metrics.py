"""Estimators of deep/metrics.py and deep/objectives.py checked against a linear-Gaussian VAE with
analytic answers: p(z) = N(0, I), p(x|z) = N(W z + b, s2 I), encoder = the exact posterior."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from deep.evaluate.metrics import active_units, fid, frechet_distance, gaussian_log_density_matrix, iw_nll, \
    mutual_information
from deep.evaluate import metrics as M
from deep.models.objectives import gaussian_kl

LOG_2PI = math.log(2 * math.pi)


pytestmark = pytest.mark.usefixtures("one_thread")


class LinearGaussian:
    """Linear-Gaussian model with orthogonal decoder columns, so the exact posterior is diagonal."""

    def __init__(self, snr=(1.0, 0.5, 0.2), data_dim: int = 6, s2: float = 0.5, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        k = len(snr)
        q, _ = torch.linalg.qr(torch.randn(data_dim, k, generator=g, dtype=torch.float64))
        self.s2 = s2
        self.d = torch.sqrt(torch.tensor(snr, dtype=torch.float64) * s2)  # d_k^2 / s2 = snr_k
        self.W = q * self.d  # (D, K), W^T W = diag(d^2)
        self.b = torch.randn(data_dim, generator=g, dtype=torch.float64)
        self.post_var = 1.0 / (1.0 + self.d.pow(2) / s2)  # (K,)
        self.D, self.K = data_dim, k

    def sample_x(self, n: int, g: torch.Generator) -> torch.Tensor:
        z = torch.randn(n, self.K, generator=g, dtype=torch.float64)
        return z @ self.W.T + self.b + math.sqrt(self.s2) * torch.randn(n, self.D, generator=g, dtype=torch.float64)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu = self.post_var * ((x - self.b) @ self.W) / self.s2
        return mu, torch.log(self.post_var).expand_as(mu)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        r = x - z @ self.W.T - self.b
        return -0.5 * (self.D * math.log(2 * math.pi * self.s2) + r.pow(2).sum(-1) / self.s2)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        cov = self.W @ self.W.T + self.s2 * torch.eye(self.D, dtype=torch.float64)
        return torch.distributions.MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x)

    def mutual_information(self) -> float:
        return 0.5 * float(torch.log1p(self.d.pow(2) / self.s2).sum())


@pytest.fixture(scope="module")
def model() -> LinearGaussian:
    return LinearGaussian()


# ---------------------------------------------------------------------------------------------------
# KL (rate)
# ---------------------------------------------------------------------------------------------------
def test_gaussian_kl_closed_form_matches_monte_carlo():
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(4, 3, generator=g, dtype=torch.float64)
    log_var = 0.5 * torch.randn(4, 3, generator=g, dtype=torch.float64)
    kl = gaussian_kl(mu, log_var)
    assert kl.shape == (4,)
    n = 200_000
    eps = torch.randn(n, 4, 3, generator=g, dtype=torch.float64)
    z = mu + torch.exp(0.5 * log_var) * eps
    log_q = -0.5 * (LOG_2PI + log_var + eps.pow(2)).sum(-1)
    log_p = -0.5 * (LOG_2PI + z.pow(2)).sum(-1)
    mc = (log_q - log_p).mean(0)
    stderr = (log_q - log_p).std(0) / math.sqrt(n)
    assert torch.all((kl - mc).abs() < 5 * stderr + 1e-6), (kl, mc)
    # zero exactly at the prior
    assert torch.allclose(gaussian_kl(torch.zeros(2, 5), torch.zeros(2, 5)), torch.zeros(2))


# ---------------------------------------------------------------------------------------------------
# mutual information
# ---------------------------------------------------------------------------------------------------
def test_log_density_matrix_matches_torch_distributions():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(5, 3, generator=g, dtype=torch.float64)
    mu = torch.randn(4, 3, generator=g, dtype=torch.float64)
    lv = torch.randn(4, 3, generator=g, dtype=torch.float64)
    got = gaussian_log_density_matrix(z, mu, lv)
    dist = torch.distributions.Normal(mu.unsqueeze(0), torch.exp(0.5 * lv).unsqueeze(0))
    want = dist.log_prob(z.unsqueeze(1)).sum(-1)
    assert torch.allclose(got, want, atol=1e-10)


def test_mutual_information_matches_analytic_and_is_far_from_log_n(model):
    g = torch.Generator().manual_seed(3)
    n = 3000
    x = model.sample_x(n, g)
    mu, log_var = model.encode(x)
    z = mu + torch.exp(0.5 * log_var) * torch.randn(mu.shape, generator=g, dtype=torch.float64)
    true_mi = model.mutual_information()
    est = mutual_information(mu, log_var, z, chunk=512)
    assert abs(est - true_mi) < 0.05, (est, true_mi)
    # chunking does not change the value
    assert est == pytest.approx(mutual_information(mu, log_var, z, chunk=7), abs=1e-9)
    # the known bug (each z scored only against its own q(z|x)) gives exactly log N = 8.0; the truth is 0.97
    assert abs(est - math.log(n)) > 5.0


def test_mutual_information_saturates_at_log_n_for_separated_posteriors():
    """Posteriors that do not overlap: each sample's aggregate density is its own posterior's over N, so the
    estimate is log N (+ the Monte-Carlo error of the one-sample log q(z|x), SE ~0.01 here), whatever the
    number of samples per example; normalising the aggregate by the number of SAMPLES (S N) instead of
    posteriors would give log(S N)."""
    g = torch.Generator().manual_seed(4)
    n, k = 500, 3
    mu = 100.0 * torch.randn(n, k, generator=g, dtype=torch.float64)
    log_var = torch.full((n, k), -20.0, dtype=torch.float64)
    for s in (1, 4):
        z = mu + torch.exp(0.5 * log_var) * torch.randn(s, n, k, generator=g, dtype=torch.float64)
        est = mutual_information(mu, log_var, z.squeeze(0) if s == 1 else z, chunk=128)
        assert est == pytest.approx(math.log(n), abs=0.1), s


def test_mutual_information_zero_for_uninformative_encoder():
    g = torch.Generator().manual_seed(4)
    mu = torch.zeros(500, 2, dtype=torch.float64)
    log_var = torch.zeros(500, 2, dtype=torch.float64)
    z = torch.randn(500, 2, generator=g, dtype=torch.float64)
    assert abs(mutual_information(mu, log_var, z)) < 0.05


def test_mutual_information_shape_errors():
    with pytest.raises(ValueError):
        mutual_information(torch.zeros(4, 2), torch.zeros(4, 2), torch.zeros(5, 2))


# ---------------------------------------------------------------------------------------------------
# IW-NLL
# ---------------------------------------------------------------------------------------------------
def test_iw_nll_with_exact_posterior_is_exact_for_every_k(model):
    g = torch.Generator().manual_seed(5)
    x = model.sample_x(20, g)
    want = -model.log_marginal(x)
    for k in (1, 3, 50):
        got = iw_nll(x, model.encode, model.log_likelihood, k, chunk=16, generator=g)
        assert got.shape == (20,)
        assert torch.allclose(got, want, atol=1e-8), (k, (got - want).abs().max())


def test_iw_nll_with_worse_encoder_decreases_in_k_towards_the_truth(model):
    g = torch.Generator().manual_seed(6)
    x = model.sample_x(200, g)
    want = float(-model.log_marginal(x).mean())

    def worse_encode(x):
        mu, log_var = model.encode(x)
        return mu + 0.4, log_var + 0.7

    ks = (1, 4, 16, 64, 512)
    means = [float(iw_nll(x, worse_encode, model.log_likelihood, k, chunk=100, generator=g).mean()) for k in ks]
    gap_1 = means[0] - want
    assert gap_1 > 0.3  # k=1 is the negative ELBO: clearly above -log p(x)
    for a, b in zip(means, means[1:]):
        assert b <= a + 0.01, means
    assert means[-1] - want < 0.05 * gap_1, (means, want)
    assert means[-1] >= want - 0.01  # an upper bound on -log p(x) in expectation


def test_iw_nll_logsumexp_is_stable_for_large_log_weights(model):
    g = torch.Generator().manual_seed(7)
    x = model.sample_x(3, g)

    def shifted(x, z):  # log-likelihood shifted by -1e4: naive exp underflows
        return model.log_likelihood(x, z) - 1e4

    got = iw_nll(x, model.encode, shifted, 10, chunk=3, generator=g)
    assert torch.allclose(got, -model.log_marginal(x) + 1e4, atol=1e-6)


# ---------------------------------------------------------------------------------------------------
# active units
# ---------------------------------------------------------------------------------------------------
def test_active_units_counts_known_variances():
    g = torch.Generator().manual_seed(8)
    variances = torch.tensor([1.0, 0.5, 0.02, 0.0100001, 0.0099, 0.001, 0.0], dtype=torch.float64)
    base = torch.randn(1000, variances.numel(), generator=g, dtype=torch.float64)
    base = (base - base.mean(0)) / base.std(0, unbiased=False)  # exact zero mean, unit population variance
    mu_all = 3.0 + base * variances.sqrt()
    count, got = active_units(mu_all, threshold=0.01)
    assert count == 4
    assert torch.allclose(got, variances, atol=1e-12)
    assert active_units(mu_all, threshold=0.3).count == 2


# ---------------------------------------------------------------------------------------------------
# Frechet distance
# ---------------------------------------------------------------------------------------------------
def test_frechet_distance_identical_and_diagonal_closed_form():
    rng = np.random.default_rng(9)
    a = rng.normal(size=(5, 5))
    cov = a @ a.T + 0.1 * np.eye(5)
    mu = rng.normal(size=5)
    assert abs(frechet_distance(mu, cov, mu, cov)) < 1e-9
    s1 = rng.uniform(0.1, 3.0, size=4)
    s2 = rng.uniform(0.1, 3.0, size=4)
    m1, m2 = rng.normal(size=4), rng.normal(size=4)
    want = np.sum((m1 - m2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(m1, np.diag(s1), m2, np.diag(s2)) == pytest.approx(want, rel=1e-10)


def test_frechet_distance_matches_scipy_sqrtm_for_full_covariances():
    rng = np.random.default_rng(10)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    c1, c2 = a @ a.T, b @ b.T + np.eye(6)
    m1, m2 = rng.normal(size=6), rng.normal(size=6)
    ref = np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * scipy.linalg.sqrtm(c1 @ c2).real)
    assert frechet_distance(m1, c1, m2, c2) == pytest.approx(ref, rel=1e-8)


def test_fid_wrapper_with_a_feature_extractor():
    g = torch.Generator().manual_seed(11)
    real = torch.rand(400, 1, 2, 2, generator=g)
    fake = real * 0.5 + 0.25  # known affine change of the features
    extractor = lambda batch: batch.flatten(1)  # noqa: E731
    got = fid(real, fake, extractor, batch_size=64)
    f_real = real.flatten(1).double().numpy()
    f_fake = fake.flatten(1).double().numpy()
    want = frechet_distance(f_real.mean(0), np.cov(f_real, rowvar=False), f_fake.mean(0), np.cov(f_fake, rowvar=False))
    assert got == pytest.approx(want, rel=1e-6)
    assert fid(real, real, extractor) == pytest.approx(0.0, abs=1e-8)
    assert got > 0.01


@pytest.mark.parametrize("bad", [[], [0.1, 0.0], [-1.0], [float("nan")], [float("inf")]])
def test_evaluation_betas_rejects_empty_nonpositive_and_nonfinite(bad):
    with pytest.raises(ValueError, match="positive finite"):
        M.evaluation_betas(bad)


def test_evaluation_betas_accepts_lists_arrays_and_tensors():
    for given in ([0.01, 1.0], np.array([0.01, 1.0]), torch.tensor([0.01, 1.0]), (0.01, 1.0)):
        b = M.evaluation_betas(given)
        assert b.dtype == torch.float64 and b.tolist() == pytest.approx([0.01, 1.0])
