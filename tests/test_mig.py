"""MIG: both variants on factor-copying and random encoders, a closed-form MI, grids, real sub-grid."""
import json
import math

import numpy as np
import pytest
import torch

from deep.evaluate import disentangle as D
from deep.data import dsprites as ds

pytestmark = pytest.mark.usefixtures("one_thread")

SIZES = (3, 4, 5, 6, 6)


def _copy_encoder(classes, sizes, extra=3, log_var=-12.0):
    """Latent j < F copies factor j (scaled to [0, 3]) with a sharp posterior; `extra` latents are
    pure prior noise (posterior N(0, 1) for every image)."""
    c = torch.as_tensor(classes, dtype=torch.float32)
    n, f = c.shape
    mu = torch.zeros(n, f + extra)
    mu[:, :f] = 3 * c / (torch.tensor(sizes, dtype=torch.float32) - 1)
    lv = torch.zeros(n, f + extra)
    lv[:, :f] = log_var
    return mu, lv


def test_factor_copying_encoder_has_mig_one_in_both_variants():
    c = ds.grid_classes(SIZES)
    perm = np.random.default_rng(0).permutation(len(c))                 # row order must not matter
    mu, lv = _copy_encoder(c[perm], SIZES)
    res = D.mig_sampling(mu, lv, c[perm], SIZES, n_samples=2000, grid="toy grid")
    assert res.mig > 0.99 and min(res.gaps) > 0.98
    assert res.top_latents == [0, 1, 2, 3, 4] and res.grid == "toy grid"
    assert res.factor_entropy == pytest.approx([math.log(s) for s in SIZES])
    mi = np.array(res.mutual_information)
    np.testing.assert_allclose(np.diag(mi[:, :5]), [math.log(s) for s in SIZES], atol=0.02)
    dis = D.mig_discrete(mu, c[perm], SIZES, grid="toy grid")
    assert dis.mig == pytest.approx(1.0, abs=1e-9) and dis.grid == "toy grid"
    json.dumps(res.to_dict()), json.dumps(dis.to_dict())


def test_random_encoder_has_mig_near_zero_in_both_variants():
    c = ds.grid_classes(SIZES)
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(len(c), 8, generator=g)
    lv = torch.full((len(c), 8), -2.0)
    assert D.mig_sampling(mu, lv, c, SIZES, n_samples=2000).mig < 0.01
    assert D.mig_discrete(mu, c, SIZES).mig < 0.02


def test_sampling_mi_matches_a_closed_form_value():
    """Binary factor v, latent z_0 | x ~ N(2v - 1, 1): I(z_0; v) = h(mixture) - h(N(0, 1))."""
    sizes = (2, 4000)
    c = ds.grid_classes(sizes)
    mu = torch.zeros(len(c), 2)
    mu[:, 0] = 2.0 * torch.as_tensor(c[:, 0], dtype=torch.float32) - 1.0
    lv = torch.zeros(len(c), 2)
    grid = np.linspace(-12, 12, 200_001)
    mix = 0.5 * (np.exp(-0.5 * (grid + 1) ** 2) + np.exp(-0.5 * (grid - 1) ** 2)) / math.sqrt(2 * math.pi)
    h_mix = -np.sum(mix * np.log(mix)) * (grid[1] - grid[0])
    exact = h_mix - 0.5 * math.log(2 * math.pi * math.e)
    res = D.mig_sampling(mu, lv, c, sizes, n_samples=8000, generator=torch.Generator().manual_seed(0))
    mi = np.array(res.mutual_information)
    assert mi[0, 0] == pytest.approx(exact, abs=0.012)              # Monte-Carlo SE ~0.004
    assert abs(mi[1, 0]) < 0.01 and abs(mi[0, 1]) < 1e-6               # independent pairs
    assert res.gaps[0] == pytest.approx(exact / math.log(2), abs=0.015)


def test_discrete_information_known_answers():
    a = np.repeat(np.arange(8), 5)
    assert D.discrete_entropy(a) == pytest.approx(math.log(8))
    assert D.discrete_mutual_information(a, a) == pytest.approx(math.log(8))
    grid = ds.grid_classes((4, 6))
    assert D.discrete_mutual_information(grid[:, 0], grid[:, 1]) == pytest.approx(0.0, abs=1e-12)
    codes = D.discretize(np.stack([np.arange(40.0), np.full(40, 3.0)], axis=1), n_bins=20)
    np.testing.assert_array_equal(codes[:, 0], np.arange(40) // 2)      # 2 values per equal-width bin
    assert np.unique(codes[:, 1]).size == 1


def test_discrete_mig_is_capped_when_a_factor_has_more_values_than_bins():
    """40 orientations in 20 bins: the copying latent carries log 20 of the log 40 nats."""
    sizes = (2, 40)
    c = ds.grid_classes(sizes)
    mu, _ = _copy_encoder(c, sizes, extra=0)
    res = D.mig_discrete(mu, c, sizes, n_bins=20)
    assert res.gaps[1] == pytest.approx(math.log(20) / math.log(40), abs=1e-9)
    assert res.gaps[0] == pytest.approx(1.0, abs=1e-9)


def test_grid_checks_and_errors():
    c = ds.grid_classes(SIZES)
    assert D.is_complete_grid(c, SIZES) and D.is_complete_grid(c[::-1], SIZES)
    assert not D.is_complete_grid(c[1:], SIZES)
    assert not D.is_complete_grid(np.concatenate([c[:1], c[:-1]]), SIZES)
    mu, lv = _copy_encoder(c[1:], SIZES)
    with pytest.raises(D.GridError, match="complete factor grid"):
        D.mig_sampling(mu, lv, c[1:], SIZES)
    assert D.mig_discrete(mu, c[1:], SIZES).mig > 0.99                  # any labelled set works
    with pytest.raises(ValueError, match="two latent"):
        D.mig_from_mi(np.ones((2, 1)), [1.0, 1.0])


def test_mig_on_the_real_subgrid(data_root):
    data = ds.load_split("dsprites", "train", data_dir=data_root, source="subgrid", cache=False)
    rows, classes, sizes, desc = data.factor_grid("auto")
    assert "sub-grid" in desc and sizes == (3, 6, 10, 16, 16)
    mu, lv = _copy_encoder(classes, sizes, extra=5)
    res = D.mig_sampling(mu, lv, classes, sizes, n_samples=500, grid=desc,
                         factor_names=list(data.factor_names))
    assert res.mig > 0.98 and res.grid == desc and res.factor_names[2] == "orientation"
    assert D.mig_discrete(mu, classes, sizes, grid=desc).mig == pytest.approx(1.0, abs=1e-9)
    g = torch.Generator().manual_seed(0)
    rnd = D.mig_sampling(torch.randn(mu.shape, generator=g), torch.full(mu.shape, -1.0), classes, sizes,
                         n_samples=500, grid=desc)
    assert rnd.mig < 0.02
