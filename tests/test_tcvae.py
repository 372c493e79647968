"""beta-TCVAE: MSS / MWS weights, the decomposition identity, the MLP models, build/rebuild, sweep."""
import itertools
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from deep.evaluate import rd_sweep
from deep.evaluate.beta_metrics import MIGMetric
import torch
from torch import nn

from deep.data import dsprites as ds
from deep.models import tcvae as T
from deep.models.convnets import EncoderOutput
from linvae.conditioning import BetaRange

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------ weights
def test_mss_weight_matrix_structure():
    b, n = 6, 50
    m = b - 1
    w = T.mss_log_weights(b, n, dtype=torch.float64).exp()
    assert torch.allclose(torch.diagonal(w), torch.full((b,), 1.0 / n, dtype=torch.float64))
    for i in range(b):
        assert w[i, (i + 1) % b] == pytest.approx((n - m) / (n * m))
        others = [j for j in range(b) if j not in (i, (i + 1) % b)]
        assert torch.allclose(w[i, others], torch.full((len(others),), 1.0 / m, dtype=torch.float64))
    torch.testing.assert_close(w.sum(1), torch.ones(b, dtype=torch.float64))
    assert w[3, 0] == pytest.approx(1.0 / m)       # column 0 is NOT special (the widely copied bug)
    torch.testing.assert_close(T.mws_log_weights(b, n, dtype=torch.float64).exp(),
                               torch.full((b, b), 1.0 / b, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 2"):
        T.mss_log_weights(1, 10)
    with pytest.raises(ValueError, match="smaller than the batch"):
        T.mss_log_weights(8, 4)


def _column0_bug(b, n):
    """The widely copied matrix: 1/N written with stride B into column 0 instead of the diagonal."""
    m = b - 1
    w = torch.full((b, b), 1.0 / m, dtype=torch.float64)
    w.view(-1)[::m + 1] = 1.0 / n
    w.view(-1)[1::m + 1] = (n - m) / (n * m)
    w[m - 1, 0] = (n - m) / (n * m)
    return w


def _mss_expectation(weights, dens, star, b):
    """Average of sum_j W_ij q(z|x_{batch_j}) over every ordered batch of b distinct examples with
    the generating example `star` at every position i (uniform without-replacement sampling)."""
    n = dens.numel()
    total, count = 0.0, 0
    others = [k for k in range(n) if k != star]
    for i in range(b):
        for rest in itertools.permutations(others, b - 1):
            batch = list(rest[:i]) + [star] + list(rest[i:])
            total += float((weights[i] * dens[batch]).sum())
            count += 1
    return total / count


def test_mss_is_unbiased_by_brute_force_and_the_column0_bug_is_not():
    g = torch.Generator().manual_seed(0)
    n, b = 7, 4
    mu = torch.randn(n, 2, generator=g, dtype=torch.float64)
    log_var = torch.randn(n, 2, generator=g, dtype=torch.float64) * 0.3
    star = 2
    z = mu[star] + torch.exp(0.5 * log_var[star]) * torch.randn(2, generator=g, dtype=torch.float64)
    dens = T.gaussian_log_density(z, mu, log_var).sum(1).exp()          # q(z | x_n) for every n
    exact = float(dens.mean())                                          # q(z) = 1/N sum_n q(z|x_n)
    w = T.mss_log_weights(b, n, dtype=torch.float64).exp()
    assert _mss_expectation(w, dens, star, b) == pytest.approx(exact, rel=1e-12)
    buggy = _mss_expectation(_column0_bug(b, n), dens, star, b)
    assert abs(buggy - exact) / exact > 1e-3


# ------------------------------------------------------------------------------------------ decomposition
def _gaussian_population():
    """Posteriors N(mu, diag s2) with mu ~ N(0, S_m), correlated: the aggregate posterior is exactly
    q(z) = N(0, S), S = S_m + diag(s2), so MI, TC and dim-KL have closed forms (nats)."""
    a = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.3, -0.4, 0.7]], dtype=torch.float64)
    s_m = 0.8 * a @ a.T
    s2 = torch.tensor([0.3, 0.2, 0.4], dtype=torch.float64)
    cov = s_m + torch.diag(s2)
    var = torch.diagonal(cov)
    exact = {"mi": float(0.5 * (torch.logdet(cov) - s2.log().sum())),          # h(z) - h(z|x)
             "tc": float(0.5 * (var.log().sum() - torch.logdet(cov))),         # KL(q(z) || prod q(z_j))
             "dim_kl": float(0.5 * (var - 1 - var.log()).sum())}               # sum_j KL(q(z_j) || N(0, 1))
    return torch.linalg.cholesky(s_m), s2, exact


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_each_term_matches_a_closed_form_gaussian_population(estimator):
    """Minibatches (B = 512, N = 10^7) of a Gaussian population: each estimated term is within its O(1/B)
    bias + Monte-Carlo error (measured: MI -0.022 (MWS) / +0.006 (MSS), TC and dim-KL within 0.009) of the
    closed form (MI 1.63, TC 0.277, dim-KL 0.0024).  A TC that sums the latents inside the logsumexp (TC = 0), MWS weights 1/(N B) (MI off by
    log N) or a swapped TC / dim-KL fail this."""
    chol, s2, exact = _gaussian_population()
    g = torch.Generator().manual_seed(1)
    terms = []
    for _ in range(30):
        mu = torch.randn(512, 3, generator=g, dtype=torch.float64) @ chol.T
        z = mu + s2.sqrt() * torch.randn(512, 3, generator=g, dtype=torch.float64)
        d = T.tc_decomposition(z, mu, s2.log().expand(512, 3), dataset_size=10 ** 7, estimator=estimator)
        terms.append(torch.stack([d.mi, d.tc, d.dim_kl], dim=1))
        torch.testing.assert_close(d.mi + d.tc + d.dim_kl, d.log_qz_x - d.log_pz, rtol=0, atol=1e-10)
    got = torch.cat(terms).mean(0).tolist()
    assert got[0] == pytest.approx(exact["mi"], abs=0.05)
    assert got[1] == pytest.approx(exact["tc"], abs=0.03)
    assert got[2] == pytest.approx(exact["dim_kl"], abs=0.02)


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_separated_posteriors_give_each_term_exactly(estimator):
    """Posteriors of a batch that do not overlap in any latent: q(z_i) is the own term alone, so with
    MSS weights (1/N on the diagonal) every row has MI = log N, TC = (K - 1) log N and dim-KL =
    log q(z|x) - log p(z) - K log N, the true values for a data set of N such posteriors; MWS (1/B for
    every term) gives log B in place of log N.  The column-0 MSS bug (1/N in column 0 instead of on the
    diagonal) gives rows 2.. MI = log(B - 1)."""
    b, k, n = 8, 3, 5000
    g = torch.Generator().manual_seed(2)
    mu = 30.0 * torch.arange(b, dtype=torch.float64).unsqueeze(1) * torch.tensor([1.0, -2.0, 3.0],
                                                                                  dtype=torch.float64)
    log_var = torch.randn(b, k, generator=g, dtype=torch.float64) * 0.3
    z = mu + torch.exp(0.5 * log_var) * torch.randn(b, k, generator=g, dtype=torch.float64)
    d = T.tc_decomposition(z, mu, log_var, dataset_size=n, estimator=estimator)
    log_n = math.log(n if estimator == "mss" else b)
    own = T.gaussian_log_density(z, mu, log_var).sum(1)
    log_p = (-0.5 * (math.log(2 * math.pi) + z.pow(2))).sum(1)
    torch.testing.assert_close(d.mi, torch.full((b,), log_n, dtype=torch.float64), rtol=0, atol=1e-9)
    torch.testing.assert_close(d.tc, torch.full((b,), (k - 1) * log_n, dtype=torch.float64), rtol=0, atol=1e-9)
    torch.testing.assert_close(d.dim_kl, own - log_p - k * log_n, rtol=0, atol=1e-9)


def test_one_sample_kl_averages_to_the_closed_form_kl():
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(64, 5, generator=g, dtype=torch.float64)
    log_var = torch.randn(64, 5, generator=g, dtype=torch.float64) * 0.5 - 1
    from deep.models.objectives import gaussian_kl
    zs = mu + torch.exp(0.5 * log_var) * torch.randn(4000, 64, 5, generator=g, dtype=torch.float64)
    kl_mc = (T.gaussian_log_density(zs, mu, log_var) + 0.5 * (math.log(2 * math.pi) + zs.pow(2))).sum(-1).mean(0)
    torch.testing.assert_close(kl_mc, gaussian_kl(mu, log_var), rtol=0.03, atol=0.05)


def _correlated_posteriors(n, g, var):
    """N posteriors whose means are correlated across two of three latents (TC > 0)."""
    a = torch.randn(n, 1, generator=g, dtype=torch.float64)
    mu = torch.cat([a, a + 0.3 * torch.randn(n, 1, generator=g, dtype=torch.float64),
                    torch.randn(n, 1, generator=g, dtype=torch.float64)], dim=1)
    return mu, torch.full_like(mu, math.log(var))


def _estimates(var, n=2000, b=200, batches=30, seed=2):
    g = torch.Generator().manual_seed(seed)
    mu, log_var = _correlated_posteriors(n, g, var)
    z_all = mu + torch.exp(0.5 * log_var) * torch.randn(mu.shape, generator=g, dtype=torch.float64)
    pair = T.gaussian_log_density(z_all.unsqueeze(1), mu.unsqueeze(0), log_var.unsqueeze(0))  # (N, N, K)
    exact_log_qz = torch.logsumexp(pair.sum(2), dim=1) - math.log(n)          # all N posteriors
    exact_log_prod = (torch.logsumexp(pair, dim=1) - math.log(n)).sum(1)
    exact = {"tc": float((exact_log_qz - exact_log_prod).mean())}
    est = {"mws": [], "mss": []}
    for _ in range(batches):
        idx = torch.randperm(n, generator=g)[:b]
        for name in est:
            d = T.tc_decomposition(z_all[idx], mu[idx], log_var[idx], n, name)
            est[name].append((float(d.tc.mean()), float((d.log_qz - exact_log_qz[idx]).mean()),
                              float((d.log_prod_qzj - exact_log_prod[idx]).mean())))
    return exact, {k: np.mean(v, axis=0) for k, v in est.items()}


def test_mws_and_mss_agree_on_average_where_posteriors_overlap():
    exact, est = _estimates(var=0.5)
    assert exact["tc"] > 0.2                                             # a real total correlation
    tc_mws, tc_mss = est["mws"][0], est["mss"][0]
    assert abs(tc_mws - tc_mss) < 0.15 * exact["tc"]
    assert abs(tc_mss - exact["tc"]) < 0.1 * exact["tc"]
    for name in ("mws", "mss"):                                           # log q(z), sum_j log q(z_j)
        assert abs(est[name][1]) < 0.05 and abs(est[name][2]) < 0.05


def test_with_sharp_posteriors_mss_stays_closer_to_the_exact_aggregate():
    exact, est = _estimates(var=0.05)
    assert abs(est["mss"][1]) < 0.2 and abs(est["mss"][2]) < 0.1        # log of an unbiased estimate
    assert abs(est["mss"][0] - exact["tc"]) < 0.15 * exact["tc"]
    assert abs(est["mss"][0] - exact["tc"]) < abs(est["mws"][0] - exact["tc"])
    assert est["mws"][1] > 0.1                                           # MWS over-weights the own posterior


# ------------------------------------------------------------------------------------------ models
def _small(mr=True, **kw):
    return T.build_model(mr=mr, hidden=32, image_shape=(1, 8, 8), dataset_size=500, **kw)


def test_full_size_architecture_and_gates():
    with torch.device("meta"):
        mr, base = T.build_model(mr=True), T.build_model(mr=False)
    n_base = sum(p.numel() for p in base.parameters())
    # 4096*1200+1200 + 1200^2+1200 + 1200*20+20  +  10*1200+1200 + 2*(1200^2+1200) + 1200*4096+4096
    assert n_base == 14_196_516
    gates = mr.gates()
    assert [g.kind for g in gates] == ["sigmoid", "sigmoid", "sqrt", "sqrt"]
    assert all(g.features == 1200 for g in gates)
    assert sum(p.numel() for p in mr.parameters()) - n_base == 4 * 2 * 1200
    assert mr.encoder.gate1 is not None and mr.decoder.gate1 is None and mr.decoder.gate3 is not None
    with torch.device("meta"):
        first = T.build_model(mr=True, gate_first_decoder=True)
    assert len(first.gates()) == 5 and not base.gates()
    assert mr.beta_range == BetaRange(0.1, 10.0) and mr.latent_dim == 10 and mr.estimator == "mws"


def test_forward_shapes_beta_conditioning_and_objective():
    torch.manual_seed(0)
    model = _small(estimator="mss")
    x = (torch.rand(16, 1, 8, 8) < 0.4).float()
    out = model(x, torch.full((16,), 0.5), generator=torch.Generator().manual_seed(0))
    for name in ("rate", "distortion", "mi", "tc", "dim_kl", "kl_sample"):
        assert getattr(out, name).shape == (16,)
    assert out.logits.shape == (16, 1, 8, 8) and out.mu.shape == (16, 10)
    torch.testing.assert_close(out.mi + out.tc + out.dim_kl, out.kl_sample, rtol=0, atol=1e-4)
    w = torch.linspace(0.1, 10, 16)
    torch.testing.assert_close(model.objective(out, w) - model.objective(out, torch.zeros(16)), w * out.tc)
    assert set(model.train_metrics(out)) == {"mi", "tc", "dim_kl"}
    # gates open the same way at init; after moving a gate the encoder depends on beta (MR only)
    with torch.no_grad():
        for g in model.gates():
            g.hyper.out.weight.fill_(0.5)
    e1, e2 = model.encode(x, 0.1), model.encode(x, 10.0)
    assert not torch.allclose(e1.mu, e2.mu)
    plain = _small(mr=False)
    torch.testing.assert_close(plain.encode(x, 0.1).mu, plain.encode(x, 10.0).mu)
    assert model.log_likelihood(x, out.z, 0.5).shape == (16,)
    elbo = _small(objective="elbo")
    o2 = elbo(x, 1.0)
    torch.testing.assert_close(elbo.objective(o2, torch.full((16,), 2.0)), o2.distortion + 2.0 * o2.rate)
    with pytest.raises(ValueError, match="expects inputs"):
        model(torch.zeros(2, 1, 64, 64), 1.0)


def test_a_few_optimisation_steps_lower_the_loss():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    protos = (torch.rand(4, 1, 8, 8, generator=g) < 0.5).float()
    data = protos[torch.randint(0, 4, (256,), generator=g)]
    model = _small(estimator="mws")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def evaluate():
        with torch.no_grad():
            betas = BetaRange(0.1, 10).grid(4).float()
            return float(np.mean([model.loss(data[:128], float(b), generator=torch.Generator().manual_seed(9))[0]
                                  for b in betas]))

    before = evaluate()
    for step in range(60):
        idx = torch.randint(0, 256, (64,), generator=g)
        beta = BetaRange(0.1, 10).sample(64, generator=g)
        loss, _ = model.loss(data[idx], beta)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = evaluate()
    assert after < min(0.9 * before, before - 5.0), (before, after)


def test_build_and_rebuild_follow_the_family_contract():
    config = SimpleNamespace(mr=True, beta_a=0.2, beta_b=5.0, latent_dim=None, objective="tcvae",
                             model_options={"estimator": "mss", "hidden": 16}, enc_gate="sigmoid",
                             dec_gate="sqrt", hyper_hidden=(), max_train_examples=300, distortion=None)
    data = type("Data", (), {"shape": (1, 8, 8), "__len__": lambda self: 1000})()
    model = T.build(config, data)
    assert model.dataset_size == 300 and model.estimator == "mss" and model.beta_range == BetaRange(0.2, 5.0)
    assert model.is_mr and model.latent_dim == 10
    cfg = json.loads(json.dumps(model.config))
    again = T.rebuild(cfg)
    assert again.config == model.config
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    again.load_state_dict(model.state_dict())
    with pytest.raises(ValueError, match="accepted"):
        T.build(SimpleNamespace(**{**vars(config), "model_options": {"bogus": 1}}), data)
    with pytest.raises(ValueError, match="estimator"):
        T.build_model(estimator="exact")
    with pytest.raises(ValueError, match="Bernoulli"):
        T.build_model(distortion="sse")


def _tiny_dsprites(sizes=(3, 2, 2, 4, 4)):
    """A complete small factor grid of real-convention dSprites images (192 images)."""
    own = ds.grid_classes(sizes)
    steps = np.array([1, 5, 20, 10, 10])
    full = own * steps
    return ds.DSpritesData(ds.render(full, packed=True), own, ds.values_of(full), ds.grid_index(full), sizes,
                           split="train", source="test", protocol="test grid", grid="test grid 3x2x2x4x4")


def test_sweep_returns_every_array_per_beta():
    torch.manual_seed(0)
    data = _tiny_dsprites()
    model = T.build_model(mr=True, hidden=16, dataset_size=len(data), estimator="mss")
    mig, _ = MIGMetric.for_data(data, mig_samples=200, mig_full_grid_sizes=(3, 2, 2, 4, 4))
    out = rd_sweep(model, data, [0.1, 1.0, 10.0], batch_size=64, iw_k=3, seed=0, max_examples=None,
                   progress=False, mi_examples=100, metrics=[mig], n_images=0)
    for key in ("beta", "rate", "distortion", "neg_elbo", "loss", "tc", "mi", "dim_kl", "kl_sample", "iw_nll",
                "active_units", "mutual_information", "mig", "mig_all_factors", "mig_discrete"):
        assert len(out[key]) == 3, key
        assert all(np.isfinite(v) for v in out[key]), key
    # the reference on the (toy) full grid over scale, orientation, posX, posY; the variants over all five
    assert out["mig_factors"] == ("scale", "orientation", "posX", "posY") and out["mig_note"] is None
    assert [len(g) for g in out["mig_per_factor"]] == [4] * 3 and len(out["mig_all_factors_per_factor"][0]) == 5
    assert all(0 <= v <= 1 for v in out["mig"])                             # clamped
    assert out["mig_grid"] == out["mig_reference_grid"] == "test grid 3x2x2x4x4"
    assert "Chen et al." in out["estimators"]["mig"] and "not Chen" in out["estimators"]["mig_all_factors"]
    assert all(0 <= v <= 1.05 for v in out["mig_discrete"])
    json.dumps({k: v for k, v in out.items() if k != "protocol"})
    # the same noise for every call: a repeated sweep is identical
    again = rd_sweep(model, data, [1.0], batch_size=64, iw_k=0, seed=0, max_examples=None, progress=False,
                     mi_examples=100, n_images=0)
    assert again["distortion"][0] == pytest.approx(out["distortion"][1]) and "mig" not in again
    # without the full-grid sizes the toy grid is not dSprites' full grid: no reference MIG, and why
    mig_toy, _ = MIGMetric.for_data(data, mig_samples=50)
    other = rd_sweep(model, data, [1.0], batch_size=64, seed=0, mi_examples=100, metrics=[mig_toy], n_images=0)
    assert other["mig"] is None and "3x6x40x32x32" in other["mig_note"] and len(other["mig_all_factors"]) == 1


class _SeparatedEncoder(nn.Module):
    """Posteriors that overlap in no latent: ``mu`` a fixed random projection of the image (distinct images,
    distinct means, gaps >> sd), ``log_var = -30`` (sd 3e-7)."""

    def __init__(self, latent_dim: int, pixels: int = 64 * 64):
        super().__init__()
        self.register_buffer("proj", torch.randn(pixels, latent_dim, generator=torch.Generator().manual_seed(4)))

    def forward(self, x, u):
        mu = x.flatten(1) @ self.proj
        return EncoderOutput(mu, torch.full_like(mu, -30.0))


@pytest.mark.parametrize("estimator", ["mss", "mws"])
def test_sweep_reports_the_exact_terms_of_separated_posteriors(estimator):
    """With non-overlapping posteriors the MSS terms are exact: MI = log N and TC = (K - 1) log N with N =
    len(data) (192), whatever the minibatch (16); MWS gives log B.  A sweep that passes the batch size as
    N, or MSS weights with 1/N in column 0 (MI = log 15 on most rows), fails."""
    data = _tiny_dsprites()
    model = T.build_model(mr=True, hidden=16, dataset_size=len(data), estimator="mss")
    model.encoder = _SeparatedEncoder(model.latent_dim)
    model.set_evaluation_options(tc_batch_size=None, report_estimator=estimator)
    out = rd_sweep(model, data, [0.5, 2.0], batch_size=16, seed=0, mi_examples=32, n_images=0)
    log_n = math.log(len(data) if estimator == "mss" else 16)
    k = model.latent_dim
    np.testing.assert_allclose(out["mi"], [log_n] * 2, atol=1e-4)
    np.testing.assert_allclose(out["tc"], [(k - 1) * log_n] * 2, atol=1e-3)
    np.testing.assert_allclose(out["dim_kl"], np.subtract(out["kl_sample"], k * log_n), atol=1e-3)
