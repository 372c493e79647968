"""MIG: the reference (Chen et al. 2018) and our two variants on encoders with known MIG, a closed-form MI,
the clamp, the grids each MIG is computed on, the real sub-grid and the full dSprites grid."""
import json
import math

import numpy as np
import pytest
import torch

from deep.evaluate import disentangle as D
from deep.data import dsprites as ds

pytestmark = pytest.mark.usefixtures("one_thread")

SIZES = (3, 4, 5, 6, 6)
NAMES = ds.FACTOR_NAMES                                                   # shape, scale, orientation, posX, posY


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


def test_factor_copying_encoder_has_mig_one_in_every_variant():
    c = ds.grid_classes(SIZES)
    perm = np.random.default_rng(0).permutation(len(c))                 # row order must not matter
    mu, lv = _copy_encoder(c[perm], SIZES)
    res = D.mig_all_factors(mu, lv, c[perm], SIZES, n_samples=2000, grid="toy grid")
    assert res.mig > 0.99 and min(res.gaps) > 0.98
    ref = D.mig_chen(mu, lv, c[perm], SIZES, factors=D.DSPRITES_MIG_FACTORS, factor_names=NAMES, n_samples=2000)
    assert ref.mig > 0.99 and ref.factor_names == list(NAMES[1:]) and ref.top_latents == [1, 2, 3, 4]
    assert ref.factor_entropy == pytest.approx([math.log(s) for s in SIZES[1:]])
    assert res.top_latents == [0, 1, 2, 3, 4] and res.grid == "toy grid"
    assert res.factor_entropy == pytest.approx([math.log(s) for s in SIZES])
    mi = np.array(res.mutual_information)
    np.testing.assert_allclose(np.diag(mi[:, :5]), [math.log(s) for s in SIZES], atol=0.02)
    dis = D.mig_discrete(mu, c[perm], SIZES, grid="toy grid")
    assert dis.mig == pytest.approx(1.0, abs=1e-9) and dis.grid == "toy grid"
    json.dumps(res.to_dict()), json.dumps(dis.to_dict())


def test_random_encoder_has_mig_near_zero_in_every_variant():
    c = ds.grid_classes(SIZES)
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(len(c), 8, generator=g)
    lv = torch.full((len(c), 8), -2.0)
    assert D.mig_all_factors(mu, lv, c, SIZES, n_samples=2000).mig < 0.01
    ref = D.mig_chen(mu, lv, c, SIZES, factors=(1, 2, 3, 4), n_samples=2000)
    assert 0.0 <= ref.mig < 0.01 and min(ref.gaps) >= 0.0
    # two random latents: Monte-Carlo noise makes some second-best estimates negative; the reference
    # clamps them to 0 (and so reports a smaller gap than the raw estimates give)
    two = D.mig_chen(mu[:, :2], torch.zeros(len(c), 2), c, SIZES, factors=(1, 2, 3, 4), n_samples=500)
    mi = np.array(two.mutual_information)
    assert (np.sort(mi, axis=1)[:, -2] < 0).any()
    assert two.gaps == D.mig_from_mi(np.maximum(mi, 0.0), two.factor_entropy)[1]
    assert two.mig < D.mig_from_mi(mi, two.factor_entropy)[0]
    assert D.mig_discrete(mu, c, SIZES).mig < 0.02


def _coded_encoder(classes, codes, n_noise=2):
    """Sharp latents ``z_j = codes[j](factor classes)`` (integer codes, posterior sd 0.0025) plus
    ``n_noise`` latents that are prior noise for every image."""
    c = np.asarray(classes)
    mu = torch.zeros(len(c), len(codes) + n_noise)
    for j, code in enumerate(codes):
        mu[:, j] = torch.as_tensor(code(c), dtype=torch.float32)
    lv = torch.zeros_like(mu)
    lv[:, :len(codes)] = -12.0
    return mu, lv


def test_a_latent_shared_by_two_factors_gives_the_known_mig_of_each_variant():
    """Grid 3x4x8x5x6 (shape, scale, orientation, posX, posY).  z0 = scale and posX jointly (one latent
    shared by two factors: I = log 4 with scale AND log 5 with posX), z1 = posX again, z2 = orientation // 2
    (4 of 8 values: I = log 4), z3 = posY, shape not encoded, two noise latents.  Gaps: scale 1, orientation
    log 4 / log 8 = 2/3, posX 0 (two latents hold it fully), posY 1, shape 0."""
    sizes = (3, 4, 8, 5, 6)
    c = ds.grid_classes(sizes)
    mu, lv = _coded_encoder(c, [lambda v: v[:, 1] * 5 + v[:, 3], lambda v: v[:, 3], lambda v: v[:, 2] // 2,
                                lambda v: v[:, 4]])
    ref = D.mig_chen(mu, lv, c, sizes, factors=D.DSPRITES_MIG_FACTORS, factor_names=NAMES, n_samples=500)
    np.testing.assert_allclose(ref.gaps, [1.0, 2 / 3, 0.0, 1.0], atol=1e-4)
    assert ref.mig == pytest.approx(2 / 3, abs=1e-4)                     # mean over the four factors
    mi = np.array(ref.mutual_information)
    np.testing.assert_allclose(mi[0, 0], math.log(4), atol=1e-4)         # scale from the shared latent
    np.testing.assert_allclose(mi[2, :2], [math.log(5)] * 2, atol=1e-4)  # posX from z0 and z1
    var = D.mig_all_factors(mu, lv, c, sizes, n_samples=500)
    np.testing.assert_allclose(var.gaps, [0.0, 1.0, 2 / 3, 0.0, 1.0], atol=1e-4)
    assert var.mig == pytest.approx(8 / 15, abs=1e-4)                     # shape's 0 in the mean
    assert D.mig_discrete(mu, c, sizes).mig == pytest.approx(8 / 15, abs=1e-9)


def test_reference_clamps_negative_mi_estimates_hand_computed():
    mi = np.array([[0.3, -0.1, -0.2],                   # second best < 0: clamped 0.3 - 0 = 0.3, raw 0.4
                   [0.5, 0.2, 0.1]])                    # unaffected: 0.3 / 2
    assert D.mig_from_mi(mi, [1.0, 2.0], clamp=True)[1] == pytest.approx([0.3, 0.15])
    assert D.mig_from_mi(mi, [1.0, 2.0], clamp=True)[0] == pytest.approx(0.225)
    assert D.mig_from_mi(mi, [1.0, 2.0])[0] == pytest.approx(0.275)
    assert D.mig_from_mi(-np.ones((1, 3)), [1.0], clamp=True)[0] == 0.0


def test_reference_mig_on_the_full_dsprites_grid_uses_its_four_factors_and_entropies():
    """All 737,280 factor combinations.  z0 = scale, z1 = orientation // 4 (10 of 40 values: I = log 10),
    z2 = posX, z3 = posY, z4 = shape.  Reference: gaps 1, log 10 / log 40, 1, 1 (H = log 6, 40, 32, 32);
    normalising orientation by the sub-grid's log 10 would give 1, averaging shape in would give 0.925."""
    c = ds.grid_classes(ds.FACTOR_SIZES)
    assert tuple(ds.FACTOR_SIZES) == D.DSPRITES_FACTOR_SIZES
    mu, lv = _coded_encoder(c, [lambda v: v[:, 1], lambda v: v[:, 2] // 4, lambda v: v[:, 3], lambda v: v[:, 4],
                                lambda v: v[:, 0]], n_noise=0)
    ref = D.mig_chen(mu, lv, c, ds.FACTOR_SIZES, factors=D.DSPRITES_MIG_FACTORS, factor_names=NAMES,
                     n_samples=20, grid="full grid")
    assert ref.factor_names == ["scale", "orientation", "posX", "posY"]
    assert ref.factor_entropy == pytest.approx([math.log(6), math.log(40), math.log(32), math.log(32)])
    np.testing.assert_allclose(ref.gaps, [1.0, math.log(10) / math.log(40), 1.0, 1.0], atol=1e-4)
    assert ref.mig == pytest.approx((3 + math.log(10) / math.log(40)) / 4, abs=1e-4)      # 0.906


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
    res = D.mig_all_factors(mu, lv, c, sizes, n_samples=8000, generator=torch.Generator().manual_seed(0))
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
        D.mig_all_factors(mu, lv, c[1:], SIZES)
    assert D.mig_discrete(mu, c[1:], SIZES).mig > 0.99                  # any labelled set works
    with pytest.raises(ValueError, match="two latent"):
        D.mig_from_mi(np.ones((2, 1)), [1.0, 1.0])


def test_mig_on_the_real_subgrid(data_root):
    data = ds.load_split("dsprites", "train", data_dir=data_root, source="subgrid", cache=False)
    rows, classes, sizes, desc = data.factor_grid("auto")
    assert "sub-grid" in desc and sizes == (3, 6, 10, 16, 16)
    mu, lv = _copy_encoder(classes, sizes, extra=5)
    res = D.mig_all_factors(mu, lv, classes, sizes, n_samples=500, grid=desc,
                         factor_names=list(data.factor_names))
    assert res.mig > 0.98 and res.grid == desc and res.factor_names[2] == "orientation"
    assert D.mig_discrete(mu, classes, sizes, grid=desc).mig == pytest.approx(1.0, abs=1e-9)
    g = torch.Generator().manual_seed(0)
    rnd = D.mig_all_factors(torch.randn(mu.shape, generator=g), torch.full(mu.shape, -1.0), classes, sizes,
                         n_samples=500, grid=desc)
    assert rnd.mig < 0.02


def _toy_dsprites(sizes):
    """A complete toy grid in the data contract of dSprites (real rendering, factor_grid, factor_names)."""
    own = ds.grid_classes(sizes)
    full = own * np.array([1, 1, 4, 2, 2])
    return ds.DSpritesData(ds.render(full, packed=True), own, ds.values_of(full), ds.grid_index(full), sizes,
                           split="train", source="test", protocol="test grid", grid="toy grid")


def test_plan_puts_the_reference_on_the_full_grid_only(data_root):
    sub = ds.load_split("dsprites", "train", data_dir=data_root, source="subgrid", cache=False)
    plan = D.plan_mig(sub)
    assert plan.reference_grid is None and "3x6x40x32x32" in plan.reference_note
    assert plan.grid[2] == (3, 6, 10, 16, 16)                       # the variants: on the sub-grid itself
    text = plan.describe(1000, 20)
    assert "log 10" in text["mig_all_factors"] and "not Chen" in text["mig_all_factors"]
    toy = _toy_dsprites((3, 2, 2, 4, 4))
    assert D.plan_mig(toy).reference_grid is None                   # not the dSprites full grid
    plan = D.plan_mig(toy, full_grid_sizes=(3, 2, 2, 4, 4))
    assert plan.reference_grid[2] == (3, 2, 2, 4, 4) and plan.reference_factors == [1, 2, 3, 4]
    assert plan.reference_factor_names == ["scale", "orientation", "posX", "posY"]
    assert "log 2, log 2, log 4, log 4" in plan.describe(100, 20)["mig"]
    off = D.plan_mig(toy, reference=False, full_grid_sizes=(3, 2, 2, 4, 4))
    assert off.reference_grid is None and "not requested" in off.reference_note and off.grid is not None


class _GridData:
    """A data set that is a full grid of `sizes` whose auto grid is a sub-grid (as full dSprites)."""

    factor_names = NAMES
    grid = "toy full grid"

    def __init__(self, sizes, steps):
        self.sizes, self.classes = sizes, ds.grid_classes(sizes)
        sub_sizes = tuple(-(-s // t) for s, t in zip(sizes, steps))
        sub = ds.grid_classes(sub_sizes) * np.asarray(steps)
        self.sub = (torch.as_tensor(ds.grid_index(sub, sizes)), torch.as_tensor(ds.grid_classes(sub_sizes)),
                    sub_sizes, "toy sub-grid")

    def factor_grid(self, which="auto"):
        whole = (torch.arange(len(self.classes)), torch.as_tensor(self.classes), self.sizes, self.grid)
        return whole if which == "full" else self.sub


def test_mig_metrics_encodes_each_image_once_and_matches_the_direct_calls():
    sizes = (3, 4, 8, 5, 6)
    data = _GridData(sizes, (1, 1, 2, 1, 2))
    mu, lv = _coded_encoder(data.classes, [lambda v: v[:, 1] * 5 + v[:, 3], lambda v: v[:, 3],
                                           lambda v: v[:, 2] // 2, lambda v: v[:, 4]])
    calls = []

    def encode(rows):
        calls.append(len(rows))
        return mu[rows], lv[rows]

    plan = D.plan_mig(data, full_grid_sizes=sizes)
    got = D.mig_metrics(plan, encode, n_samples=300, n_bins=20, seed=3)
    assert calls == [len(data.classes)] and set(got) == set(D.MIG_RESULT_KEYS)
    ref = D.mig_chen(mu, lv, data.classes, sizes, factors=(1, 2, 3, 4), n_samples=300,
                     generator=torch.Generator().manual_seed(3))
    rows, sub_classes, sub_sizes, _ = data.sub
    var = D.mig_all_factors(mu[rows], lv[rows], sub_classes, sub_sizes, n_samples=300,
                            generator=torch.Generator().manual_seed(3))
    assert got["mig"] == ref.mig and got["mig_per_factor"] == ref.gaps and got["mig_top_latents"] == ref.top_latents
    assert got["mig_all_factors"] == var.mig and got["mig_all_factors_per_factor"] == var.gaps
    assert got["mig_discrete"] == D.mig_discrete(mu[rows], sub_classes, sub_sizes).mig
    # on the sub-grid (orientation every 2nd value, posY every 2nd) z2 = orientation // 2 copies orientation:
    # the variant's gap is 1 there, normalised by the sub-grid's log 4; the reference's stays log 4 / log 8
    assert got["mig_all_factors_per_factor"][2] == pytest.approx(1.0, abs=1e-4)
    assert got["mig_per_factor"][1] == pytest.approx(2 / 3, abs=1e-4)
    none = D.mig_metrics(D.plan_mig(data), encode, n_samples=50)     # dSprites full sizes: no reference here
    assert none["mig"] is None and none["mig_all_factors"] is not None and calls[-1] == len(rows)
