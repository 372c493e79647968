"""The trained-model API (issue 18, problem 5): ``deep.evaluate.load_run`` and ``mrvae-cli deep sample``.

A tiny registered MR-VAE is trained once per module; every call of the API is checked against the model's own
hooks or the evaluator's loop (the same numbers, not just the same shapes).
"""
from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from click.testing import CliRunner

import _tiny_family as F
from cli.main import cli
from deep.evaluate import evaluate_run, load_run
from deep.train import TrainConfig, train
from linvae.conditioning import BetaRangeError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_module():
    with F.registered_all():
        yield


@pytest.fixture(scope="module")
def mr_run(tmp_path_factory, tiny_module):
    out = tmp_path_factory.mktemp("trained")
    cfg = TrainConfig(dataset=F.DATASET, arch=F.ARCH, epochs=6, batch_size=32, lr=1e-2, device="cpu",
                      num_threads=1, out_dir=str(out), run_name="mr", n_betas=4, eval_examples=20,
                      eval_batch_size=10)
    return train(cfg, progress=False)


@pytest.fixture(scope="module")
def beta_vae_run(tmp_path_factory, tiny_module):
    out = tmp_path_factory.mktemp("trained_bvae")
    cfg = TrainConfig(dataset=F.DATASET, arch=F.ARCH, mr=False, beta=0.5, epochs=1, batch_size=32, device="cpu",
                      num_threads=1, out_dir=str(out), run_name="b")
    return train(cfg, progress=False)


def test_hooks_are_the_models_own_at_the_given_beta(mr_run):
    tm = load_run(mr_run)
    assert tm.is_mr and tm.beta_range.a == 0.01 and tm.beta_range.b == 10.0 and tm.epochs_trained == 6
    x = tm.data("test").get_batch(torch.arange(5))
    b = torch.tensor([0.1])
    with torch.no_grad():
        mu, log_var = tm.model.encode(x, b)
        torch.testing.assert_close(tm.encode(x, 0.1).mu, mu)
        torch.testing.assert_close(tm.encode(x, 0.1).log_var, log_var)
        z = torch.randn(5, tm.model.latent_dim)
        torch.testing.assert_close(tm.decode(z, 0.1).logits, tm.model.decode(z, b).logits)
        torch.testing.assert_close(tm.reconstruct(x, 0.1), tm.model.decode(mu, b).mean)
    # the encoder depends on beta (a trained MR-VAE): more rate at small beta
    r_small, _ = tm.rate_distortion(x, 0.01)
    r_large, _ = tm.rate_distortion(x, 10.0)
    assert float(r_small.mean()) > float(r_large.mean())


def test_samples_use_the_same_prior_draws_at_every_beta(mr_run):
    tm = load_run(mr_run)
    a, b = tm.sample(6, 0.05, seed=3), tm.sample(6, 0.05, seed=3)
    assert a.shape == (6, 1, 6, 6) and torch.equal(a, b)
    assert not torch.equal(a, tm.sample(6, 0.05, seed=4))
    noise = tm.model.sample_noise(6, torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(tm.sample(6, 2.0, seed=3), tm.model.sample(6, torch.tensor([2.0]), noise=noise))


def test_rate_distortion_and_rd_curve_are_the_evaluators_numbers(mr_run):
    tm = load_run(mr_run)
    x = tm.data("test").get_batch(torch.arange(10))
    rate, distortion = tm.rate_distortion(x, 0.3, seed=0)
    assert rate.shape == distortion.shape == (10,)
    curve = tm.rd_curve(betas=[0.3], max_examples=10, batch_size=10, seed=0)
    assert float(rate.double().mean()) == pytest.approx(curve["rate"][0], rel=1e-6)
    assert float(distortion.double().mean()) == pytest.approx(curve["distortion"][0], rel=1e-6)
    # the default curve uses the run's own evaluation settings, like evaluate_run
    default = tm.rd_curve()
    assert len(default["beta"]) == 4 and default["n_examples"] == 20
    rd = evaluate_run(mr_run, images=False, out_name="rd_check.json")
    assert rd["rate"] == pytest.approx(default["rate"]) and rd["distortion"] == pytest.approx(default["distortion"])


@pytest.mark.parametrize("quantity", ["rate", "distortion"])
def test_beta_for_a_target_rate_or_distortion(mr_run, quantity):
    tm = load_run(mr_run)
    ends = tm.rd_curve(betas=[0.01, 10.0])
    target = 0.5 * (ends[quantity][0] + ends[quantity][1])
    find = tm.beta_for_rate if quantity == "rate" else tm.beta_for_distortion
    found = find(target, tol=1e-3)
    assert 0.01 < found.beta < 10.0
    assert abs(getattr(found, quantity) - target) <= 1e-3
    check = tm.rd_curve(betas=[found.beta])
    assert check[quantity][0] == pytest.approx(getattr(found, quantity), rel=1e-9)
    # a target outside what the trained range reaches is an error stating the reachable range
    beyond = max(ends[quantity]) + 100.0
    with pytest.raises(ValueError, match=rf"{quantity} .* not reachable.*between"):
        find(beyond)


def test_betas_outside_the_trained_range_warn_or_raise_when_strict(mr_run):
    tm = load_run(mr_run)
    x = tm.data("test").get_batch(torch.arange(3))
    with pytest.warns(UserWarning, match="outside"):
        tm.reconstruct(x, 50.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tm.reconstruct(x, 5.0)                                 # inside: silent
    strict = load_run(mr_run, strict=True)
    with pytest.raises(BetaRangeError, match=r"outside.*\[0.01, 10\]"):
        strict.sample(2, 0.001)
    with pytest.raises(BetaRangeError):
        strict.rd_curve(betas=[0.1, 20.0])


def test_a_beta_vae_is_used_at_its_own_beta(beta_vae_run):
    tm = load_run(beta_vae_run)
    assert not tm.is_mr and tm.beta_range is None
    x = tm.data("test").get_batch(torch.arange(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tm.encode(x, 0.5)
    with pytest.warns(UserWarning, match="beta-VAE trained at beta=0.5"):
        tm.encode(x, 2.0)
    with pytest.raises(ValueError, match="one beta"):
        tm.beta_for_rate(1.0)


def test_a_family_without_a_hook_gets_a_clear_error(tmp_path, tiny_module):
    from deep.models import MultiRateVAE, VAEOutput, gaussian_kl
    from linvae.conditioning import BetaRange, GatedLinear

    class OnlyForward(MultiRateVAE):
        def __init__(self, mr=True):
            super().__init__()
            self.is_mr, self.latent_dim, self.beta_range = mr, 2, BetaRange(0.01, 10.0)
            self._config = {"mr": mr}
            self.enc = GatedLinear(36, 4, gate="sigmoid" if mr else None)
            self.dec = GatedLinear(2, 36, gate="sqrt" if mr else None)

        def forward(self, x, beta, *, noise=None):
            u = self.hyper_input(beta, x.shape[0], x)
            mu, log_var = self.enc(x.flatten(1), u).chunk(2, dim=1)
            noise = torch.randn_like(mu) if noise is None else noise
            logits = self.dec(mu + torch.exp(0.5 * log_var) * noise, u)
            d = torch.nn.functional.binary_cross_entropy_with_logits(logits, x.flatten(1), reduction="none").sum(1)
            return VAEOutput(mu, log_var, mu, logits, gaussian_kl(mu, log_var), d)

    with F.temporary_family("onlyforward", lambda c, d: OnlyForward(c.mr), lambda mc: OnlyForward(**mc),
                            (F.DATASET,)):
        run = train(TrainConfig(dataset=F.DATASET, arch="onlyforward", epochs=1, batch_size=32, device="cpu",
                                out_dir=str(tmp_path), run_name="of"), progress=False)
        tm = load_run(run)
        x = tm.data("test").get_batch(torch.arange(4))
        rate, distortion = tm.rate_distortion(x, 0.1)            # forward is all it needs
        assert rate.shape == (4,) and torch.isfinite(distortion).all()
        for call in (lambda: tm.encode(x, 0.1), lambda: tm.decode(torch.zeros(4, 2), 0.1),
                     lambda: tm.reconstruct(x, 0.1), lambda: tm.sample(4, 0.1)):
            with pytest.raises(NotImplementedError, match="onlyforward.*has no"):
                call()


# ------------------------------------------------------------------------------------------
# mrvae-cli deep sample
# ------------------------------------------------------------------------------------------
def invoke(*args: str):
    return CliRunner().invoke(cli, ["deep", *args], catch_exceptions=False)


def test_cli_sample_writes_a_labelled_grid(mr_run, tmp_path):
    from PIL import Image

    out = tmp_path / "grid.png"
    r = invoke("sample", str(mr_run), "--beta", "0.1", "--n", "16", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert out.exists() and f"samples: {out}" in r.output and "beta 0.1" in r.output
    with Image.open(out) as im:
        assert min(im.size) >= 200
    r = invoke("sample", str(mr_run), "--beta", "0.01,1,10", "--n", "4", "--out", str(tmp_path / "three.png"),
               "--reconstructions")
    assert r.exit_code == 0, r.output and (tmp_path / "three.png").exists()


def test_cli_sample_at_a_target_rate(mr_run, tmp_path):
    tm = load_run(mr_run)
    ends = tm.rd_curve(betas=[0.01, 10.0])
    target = 0.5 * (ends["rate"][0] + ends["rate"][1])
    r = invoke("sample", str(mr_run), "--target-rate", f"{target:.4f}", "--n", "4", "--out", str(tmp_path / "t.png"))
    assert r.exit_code == 0, r.output
    beta = float(r.output.split("beta ")[1].split()[0])
    assert tm.rd_curve(betas=[beta])["rate"][0] == pytest.approx(target, abs=0.02)
    r = invoke("sample", str(mr_run), "--target-rate", "1e6", "--out", str(tmp_path / "x.png"))
    assert r.exit_code != 0 and "not reachable" in r.output and "Traceback" not in r.output
    r = invoke("sample", str(mr_run), "--beta", "100", "--out", str(tmp_path / "w.png"))
    assert r.exit_code == 0 and "Warning: beta outside" in r.output
    r = invoke("sample", str(mr_run), "--beta", "100", "--strict", "--out", str(tmp_path / "s.png"))
    assert r.exit_code != 0 and "outside" in r.output
    r = invoke("sample", str(mr_run), "--beta", "1", "--target-rate", "3", "--out", str(tmp_path / "y.png"))
    assert r.exit_code != 0 and "one of" in r.output
