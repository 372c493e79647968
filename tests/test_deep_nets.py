"""Conv/ResNet beta-VAEs and MR-VAEs (deep/nets.py) and their objectives (deep/objectives.py)."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deep.models.convnets import ARCHS, NET_DATASETS, VERIFIED_BETA_VAE_PARAMS, UnknownArchError, UnknownNetDatasetError, \
    build_model, count_parameters, parameter_table, recalibrate_batchnorm
from deep.models.objectives import DISTORTIONS, NotALikelihoodError, UnknownDistortionError, get_distortion, vae_loss
from linvae.conditioning import BetaRange, Gate


pytestmark = pytest.mark.usefixtures("one_thread")


def _binary_batch(n: int, shape=(1, 28, 28), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, *shape, generator=g) < 0.3).float()


def _randomize_gates(model: nn.Module, seed: int = 0) -> None:
    """Give every gate a beta-dependent response (at init gates are 0.9 for every beta)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for gate in model.modules():
            if isinstance(gate, Gate):
                w = gate.hyper.out.weight
                w.copy_(torch.randn(w.shape, generator=g))


def _expected_gated_channels(model: nn.Module) -> int:
    """Out-channels of every conv except the decoder's output conv (counted from the module tree)."""
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    return sum(m.out_channels for m in convs) - model.decoder.out.out_channels


# ---------------------------------------------------------------------------------------------------
# shapes and parameter counts
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset", sorted(NET_DATASETS))
@pytest.mark.parametrize("arch", ARCHS)
def test_forward_values_rate_distortion_and_sampling(dataset, arch):
    """Eval mode, two examples at two betas.  Every number recomputed independently: z = mu + sd * eps from
    the same generator, the rate as the closed-form Gaussian KL, the distortion as the dataset's default
    (Bernoulli NLL for the binary sets, sum of squared errors of sigmoid(logits) for colour), decoding z
    again, each example alone at its own beta (per-example gates), and prior samples from the same noise."""
    torch.manual_seed(0)
    model = build_model(dataset, arch, mr=True).eval()
    _randomize_gates(model)
    shape = NET_DATASETS[dataset].shape
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(1))
    beta = torch.tensor([0.05, 5.0])
    with torch.no_grad():
        out = model(x, beta, generator=torch.Generator().manual_seed(2))
        assert out.logits.shape == x.shape and out.mu.shape == (2, model.latent_dim)
        eps = torch.randn(out.mu.shape, generator=torch.Generator().manual_seed(2))
        torch.testing.assert_close(out.z, out.mu + torch.exp(0.5 * out.log_var) * eps)
        kl = 0.5 * (out.mu.pow(2) + out.log_var.exp() - 1.0 - out.log_var).sum(1)
        torch.testing.assert_close(out.rate, kl)
        if shape[0] == 1:
            nll = F.binary_cross_entropy_with_logits(out.logits, x, reduction="none").flatten(1).sum(1)
        else:
            nll = (torch.sigmoid(out.logits) - x).pow(2).flatten(1).sum(1)
        torch.testing.assert_close(out.distortion, nll)
        torch.testing.assert_close(model.decode(out.z, beta).logits, out.logits, rtol=1e-4, atol=1e-4)
        for i in range(2):                                    # per-example betas: no cross-talk between rows
            alone = model.encode(x[i:i + 1], float(beta[i]))
            torch.testing.assert_close(alone.mu[0], out.mu[i], rtol=1e-4, atol=1e-4)
        z = torch.randn((3, model.latent_dim), generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(model.sample(3, 1.0, generator=torch.Generator().manual_seed(3)),
                                   torch.sigmoid(model.decode(z, 1.0).logits))


def test_default_latent_sizes_and_distortions():
    want = {"mnist": (32, "bernoulli"), "omniglot": (32, "bernoulli"), "cifar10": (256, "sse"),
            "svhn": (32, "sse"), "celeba64": (64, "sse")}
    with torch.device("meta"):
        for dataset, (latent, dist) in want.items():
            m = build_model(dataset, "resnet", mr=False)
            assert (m.latent_dim, m.distortion.name) == (latent, dist)


@pytest.mark.parametrize("key", sorted(VERIFIED_BETA_VAE_PARAMS))
def test_parameter_counts_match_reference_and_gate_overhead(key):
    dataset, arch = key
    with torch.device("meta"):
        beta_vae = build_model(dataset, arch, mr=False)
        mr_vae = build_model(dataset, arch, mr=True)
    assert count_parameters(beta_vae) == VERIFIED_BETA_VAE_PARAMS[key]
    gated = _expected_gated_channels(mr_vae)
    assert mr_vae.num_gated_channels == gated
    assert count_parameters(mr_vae) - count_parameters(beta_vae) == 2 * gated
    if key == ("mnist", "resnet"):
        assert 2 * gated == 3072  # paper-notes 7.5


def test_parameter_counts_for_the_other_datasets_and_hyper_hidden():
    with torch.device("meta"):
        assert count_parameters(build_model("omniglot", "conv", mr=False)) == 17_526_977
        svhn = build_model("svhn", "resnet", mr=False)
        # svhn differs from cifar10 only by the latent size (32 vs 256): heads and decoder Linear
        feat = 128 * 8 * 8
        assert count_parameters(svhn) == 7_895_619 - 3 * feat * (256 - 32) - 2 * (256 - 32)
        plain = build_model("mnist", "resnet", mr=False)
        mlp = build_model("mnist", "resnet", mr=True, hyper_hidden=(8,))
    # each gate: Linear(1, 8) + Linear(8, C) = 16 + 9 C parameters
    n_gates, channels = len(mlp.gates()), mlp.num_gated_channels
    assert count_parameters(mlp) - count_parameters(plain) == 16 * n_gates + 9 * channels


def test_parameter_table_rows():
    rows = parameter_table()
    assert len(rows) == 6
    for r in rows:
        assert r["beta_vae_params"] == r["verified_reference_beta_vae_params"]
        assert r["mr_vae_params"] - r["beta_vae_params"] == 2 * r["gated_channels"]
        assert r["increase_pct"] == pytest.approx(100 * (r["mr_vae_params"] / r["beta_vae_params"] - 1))
        # corrected exponent: the paper's mantissa agrees with the count to 4 significant digits
        assert r["paper_beta_vae_params"] == pytest.approx(r["beta_vae_params"], rel=1e-3)
        assert "x10^" in r["note"]
    json.dumps(rows)


# ---------------------------------------------------------------------------------------------------
# training signal, gates and beta
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mr", [True, False])
def test_adam_steps_lower_the_loss(mr):
    torch.manual_seed(1)
    model = build_model("mnist", "resnet", mr=mr)
    x = _binary_batch(4)
    beta = torch.tensor([0.01, 0.1, 1.0, 10.0])

    def loss_value() -> float:
        with torch.no_grad():
            return float(model.loss(x, beta, generator=torch.Generator().manual_seed(0))[0])

    before = loss_value()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(6):
        opt.zero_grad()
        loss, _ = model.loss(x, beta, generator=torch.Generator().manual_seed(step))
        loss.backward()
        opt.step()
    after = loss_value()
    assert after < 0.95 * before, (before, after)


def test_gate_gradients_are_nonzero_at_init():
    torch.manual_seed(2)
    model = build_model("mnist", "resnet", mr=True)
    x = _binary_batch(6)
    beta = BetaRange().sample(6, generator=torch.Generator().manual_seed(0))
    loss, _ = model.loss(x, beta)
    loss.backward()
    gates = model.gates()
    assert len(gates) == 3 + 4 + 2 + 4  # encoder convs + 2 resblocks, decoder convTs + 2 resblocks
    kinds = {g.kind for g in gates}
    assert kinds == {"sigmoid", "sqrt"}
    for gate in gates:
        w, b = gate.hyper.out.weight.grad, gate.hyper.out.bias.grad
        assert w is not None and b is not None
        # most channels receive gradient (an encoder channel can be silenced by its ReLU on a tiny batch);
        # decoder sqrt gates, the ones that can die at the kink, all do
        assert torch.count_nonzero(b) >= (b.numel() if gate.kind == "sqrt" else 0.75 * b.numel()), gate
        assert torch.count_nonzero(w) >= (w.numel() if gate.kind == "sqrt" else 0.75 * w.numel()), gate
        # the gate function itself has a nonzero slope for every channel over the whole beta range
        u = model.beta_range.standardize(model.beta_range.grid(5).float())
        gate.zero_grad()
        gate.factors(u).sum().backward()
        assert torch.count_nonzero(gate.hyper.out.bias.grad) == b.numel(), gate


def test_mr_vae_responds_to_beta_and_beta_vae_does_not():
    torch.manual_seed(3)
    x = _binary_batch(3)
    mr = build_model("mnist", "resnet", mr=True).eval()
    _randomize_gates(mr)
    plain = build_model("mnist", "resnet", mr=False).eval()
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    with torch.no_grad():
        lo, hi = mr(x, 0.01, generator=g()), mr(x, 10.0, generator=g())
        assert not torch.allclose(lo.mu, hi.mu)
        assert not torch.allclose(lo.logits, hi.logits)
        z = torch.randn(3, mr.latent_dim)
        assert not torch.allclose(mr.decode(z, 0.01).logits, mr.decode(z, 10.0).logits)
        # per-example beta: row i of a mixed batch equals the single-beta forward
        mixed = mr(x, torch.tensor([0.01, 10.0, 0.01]), generator=g())
        assert torch.allclose(mixed.mu[1], hi.mu[1], atol=1e-5) and torch.allclose(mixed.mu[0], lo.mu[0], atol=1e-5)
        a, b = plain(x, 0.01, generator=g()), plain(x, 10.0, generator=g())
        assert torch.equal(a.logits, b.logits) and torch.equal(a.mu, b.mu)


def test_hyper_input_is_the_standardised_log_beta():
    model = build_model("mnist", "resnet", mr=True, beta_range=(0.1, 10.0))
    x = torch.zeros(3, 1, 28, 28)
    u = model.hyper_input(torch.tensor([0.1, 1.0, 10.0]), 3, x)
    assert torch.allclose(u, torch.tensor([-math.sqrt(3), 0.0, math.sqrt(3)]), atol=1e-6)
    assert build_model("mnist", "resnet", mr=False).hyper_input(1.0, 3, x) is None


@pytest.mark.parametrize("dataset,arch,kwargs", [
    ("mnist", "resnet", {}),
    ("mnist", "conv", {}),                                   # BatchNorm: the gate folds into BN's affine
    ("svhn", "conv", {"latent_dim": 4}),                     # transposed convs in the decoder
    ("mnist", "resnet", {"hyper_hidden": (4,), "dec_gate": "sigmoid"}),
    ("mnist", "resnet", {"shared_hyper": 8}),
    ("mnist", "resnet", {"enc_gate": "film"}),               # FiLM is not folded: same numbers either way
])
def test_one_beta_per_batch_folds_the_gates_into_the_weights_with_the_same_numbers(dataset, arch, kwargs):
    torch.manual_seed(0)
    model = build_model(dataset, arch, mr=True, **kwargs)
    with torch.no_grad():  # gates away from their initial constant, so a wrong fold would show
        for g in model.gates():
            g.hyper.out.weight.normal_(0.0, 1.0)
    twin = build_model(dataset, arch, mr=True, **kwargs)
    twin.load_state_dict(model.state_dict())
    model.double(), twin.double()  # float64: the two orders of operations agree to ~1e-12
    x = torch.rand(5, *model.data_shape, dtype=torch.float64)
    if model.distortion.name == "bernoulli":
        x = x.round()
    beta = 0.37
    out_one = model(x, beta, generator=torch.Generator().manual_seed(1))            # u has one row: folded
    out_all = twin(x, torch.full((5,), beta, dtype=torch.float64),
                   generator=torch.Generator().manual_seed(1))                       # per-example path
    assert model.hyper_input(beta, 5, x).shape[0] == 1
    for a, b in [(out_one.logits, out_all.logits), (out_one.rate, out_all.rate)]:
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-9)
    (out_one.distortion + beta * out_one.rate).mean().backward()
    (out_all.distortion + beta * out_all.rate).mean().backward()
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-8, atol=1e-10), name
    for (name, a), b in zip(model.named_buffers(), twin.buffers()):  # BatchNorm running statistics
        assert torch.equal(a, b) if not a.is_floating_point() else torch.allclose(a, b, rtol=1e-9), name
    model.eval(), twin.eval()
    with torch.no_grad():
        assert torch.allclose(model.decode(out_one.mu, beta).logits,
                              twin.decode(out_one.mu, torch.full((5,), beta, dtype=torch.float64)).logits,
                              rtol=1e-9, atol=1e-9)


def test_beta_shape_errors():
    model = build_model("mnist", "resnet", mr=True)
    with pytest.raises(ValueError, match="beta must be"):
        model(torch.zeros(3, 1, 28, 28), torch.ones(2))
    with pytest.raises(ValueError, match="expects inputs of shape"):
        model(torch.zeros(3, 3, 28, 28), 1.0)


# ---------------------------------------------------------------------------------------------------
# config round trip and validation
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [
    dict(dataset="mnist", arch="resnet"),
    dict(dataset="mnist", arch="conv", monotone_decoder=True),
    dict(dataset="omniglot", arch="resnet", monotone_decoder=True, gate_init_slope=0.5),
    dict(dataset="mnist", arch="conv", gate_latents=True),
    dict(dataset="omniglot", arch="resnet", mr=False),
    dict(dataset="svhn", arch="resnet", latent_dim=8, enc_gate="film", dec_gate="sigmoid", hyper_hidden=(4,),
         beta_range=BetaRange(0.1, 5.0), distortion="gaussian_nll"),
])
def test_build_model_config_round_trip(kwargs):
    torch.manual_seed(4)
    model = build_model(**kwargs).eval()
    config = json.loads(json.dumps(model.config))
    rebuilt = build_model(**config).eval()
    assert rebuilt.config == model.config
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.rand(2, *model.data_shape)
    with torch.no_grad():
        assert torch.equal(model.encode(x, 0.3).mu, rebuilt.encode(x, 0.3).mu)
    assert model.describe()["parameters"] == count_parameters(model)
    json.dumps(model.describe())


def test_build_model_validation_errors():
    with pytest.raises(UnknownArchError, match="conv"):
        build_model("mnist", "vgg")
    with pytest.raises(UnknownNetDatasetError, match="celeba64"):
        build_model("imagenet")
    with pytest.raises(ValueError, match="sigmoid"):
        build_model("mnist", enc_gate="tanh")
    with pytest.raises(ValueError, match="sqrt"):
        build_model("mnist", dec_gate="relu")
    with pytest.raises(UnknownDistortionError, match="bernoulli"):
        build_model("mnist", distortion="l1")
    with pytest.raises(ValueError, match="latent_dim"):
        build_model("mnist", latent_dim=0)
    with pytest.raises(ValueError):
        build_model("mnist", beta_range=(1.0, 0.1))
    with pytest.raises(ValueError, match="affine gate map"):
        build_model("mnist", monotone_decoder=True, hyper_hidden=(4,))
    with pytest.raises(ValueError, match="true or false"):
        build_model("mnist", monotone_decoder="yes")


def test_monotone_decoder_constrains_only_the_decoder_gates():
    model = build_model("mnist", "resnet", monotone_decoder=True)
    assert model.config["monotone_decoder"] is True
    assert {g.direction for g in model.decoder.modules() if isinstance(g, Gate)} == {"decreasing"}
    assert {g.direction for g in model.encoder.modules() if isinstance(g, Gate)} == {None}
    assert "monotone_decoder" not in build_model("mnist", "resnet").config  # the paper's free gates
    assert "monotone_decoder" not in build_model("mnist", "resnet", mr=False, monotone_decoder=True).config


def test_gate_init_slope_starts_every_gate_closing_with_beta():
    model = build_model("omniglot", "resnet", gate_init_slope=0.5)
    assert model.config["gate_init_slope"] == 0.5
    u = model.beta_range.standardize(torch.tensor([0.01, 1.0, 10.0]))
    for gate in model.gates():
        values = gate.factors(u)
        assert bool((torch.diff(values, dim=0) < -0.01).all())
    flat = build_model("omniglot", "resnet")  # the default start: the same gate value at every beta
    assert "gate_init_slope" not in flat.config
    assert all(torch.equal(g.hyper.out.weight, torch.zeros_like(g.hyper.out.weight)) for g in flat.gates())
    assert "gate_init_slope" not in build_model("omniglot", "resnet", mr=False, gate_init_slope=0.5).config
    with pytest.raises(ValueError, match="number >= 0"):
        build_model("omniglot", "resnet", gate_init_slope=-0.5)
    with pytest.raises(ValueError, match="affine gate map"):
        build_model("omniglot", "resnet", gate_init_slope=0.5, hyper_hidden=(4,))


def test_gate_latents_closed_gives_the_prior_and_a_decoder_blind_to_z():
    torch.manual_seed(6)
    model = build_model("omniglot", "resnet", gate_latents=True, monotone_decoder=True).eval()
    plain = build_model("omniglot", "resnet")
    assert count_parameters(model) - count_parameters(plain) == 3 * 2 * model.latent_dim  # (w, b) per latent
    assert model.decoder.z_gate.direction == "decreasing" and model.encoder.mu_gate.direction is None
    x = _binary_batch(4)
    with torch.no_grad():
        assert float(model(x, 0.1).rate.min()) > 1e-3  # open gates: the untrained posterior is not the prior
        for gate in (model.encoder.mu_gate, model.encoder.log_var_gate):
            gate.hyper.out.bias.fill_(-60.0)  # sigmoid(-60) = 0: mu = 0 and log var = 0, the prior
        assert float(model(x, torch.tensor([0.01, 0.1, 1.0, 10.0])).rate.abs().max()) < 1e-6
        model.decoder.z_gate.hyper.out.bias.fill_(1.0)  # sqrt gate of a pre-activation >= 0 is exactly 0
        z1, z2 = torch.randn(4, model.latent_dim), torch.randn(4, model.latent_dim)
        assert torch.equal(model.decoder(z1, model.hyper_input(0.3, 4, z1)).logits,
                           model.decoder(z2, model.hyper_input(0.3, 4, z2)).logits)
    assert "gate_latents" not in build_model("omniglot", "resnet", mr=False, gate_latents=True).config
    with pytest.raises(ValueError, match="true or false"):
        build_model("omniglot", "resnet", gate_latents="yes")


def test_log_likelihood_is_minus_distortion_and_refused_for_sse():
    torch.manual_seed(5)
    model = build_model("mnist", "resnet", mr=True).eval()
    x = _binary_batch(3)
    with torch.no_grad():
        out = model(x, 0.5)
        ll = model.log_likelihood(x, out.z, 0.5)
    assert torch.allclose(ll, -out.distortion, atol=1e-4)
    sse_model = build_model("svhn", "resnet")
    with pytest.raises(NotALikelihoodError, match="gaussian_nll"):
        sse_model.log_likelihood(torch.rand(1, 3, 32, 32), torch.zeros(1, 32), 1.0)


# ---------------------------------------------------------------------------------------------------
# objectives
# ---------------------------------------------------------------------------------------------------
def test_bernoulli_distortion_hand_computation():
    logits = torch.tensor([[[[2.0, -1.0], [0.0, 30.0]]], [[[-3.0, 0.5], [1.0, -40.0]]]], dtype=torch.float64)
    x = torch.tensor([[[[1.0, 0.0], [0.3, 1.0]]], [[[0.0, 1.0], [0.7, 1.0]]]], dtype=torch.float64)
    p = 1.0 / (1.0 + torch.exp(-logits))
    hand = -(x * torch.log(p) + (1 - x) * torch.log1p(-p)).reshape(2, -1).sum(1)
    got = DISTORTIONS["bernoulli"](logits, x)
    assert torch.allclose(got, hand, rtol=1e-10)
    # numerically stable far in the tails, where log(sigmoid) would underflow
    assert torch.isfinite(DISTORTIONS["bernoulli"](torch.tensor([[200.0]]), torch.tensor([[0.0]]))).all()
    assert DISTORTIONS["bernoulli"](torch.tensor([[200.0]]), torch.tensor([[0.0]])).item() == pytest.approx(200.0)


def test_continuous_distortions_relations():
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(3, 3, 4, 4, generator=g, dtype=torch.float64)
    x = torch.rand(3, 3, 4, 4, generator=g, dtype=torch.float64)
    sse = DISTORTIONS["sse"](logits, x)
    assert torch.allclose(sse, ((torch.sigmoid(logits) - x) ** 2).reshape(3, -1).sum(1))
    assert torch.allclose(DISTORTIONS["half_sse"](logits, x), 0.5 * sse)
    n = 3 * 4 * 4
    diff = DISTORTIONS["gaussian_nll"](logits, x) - DISTORTIONS["half_sse"](logits, x)
    assert torch.allclose(diff, torch.full((3,), 0.5 * n * math.log(2 * math.pi), dtype=torch.float64))
    # gaussian_nll is the true NLL of N(sigmoid(logits), I)
    ref = -torch.distributions.Normal(torch.sigmoid(logits), 1.0).log_prob(x).reshape(3, -1).sum(1)
    assert torch.allclose(DISTORTIONS["gaussian_nll"](logits, x), ref)
    assert {k for k, d in DISTORTIONS.items() if d.is_nll} == {"bernoulli", "gaussian_nll"}
    assert all(d.description for d in DISTORTIONS.values())
    with pytest.raises(UnknownDistortionError):
        get_distortion("mse")


def test_vae_loss_per_example_beta():
    d = torch.tensor([1.0, 2.0, 3.0])
    r = torch.tensor([10.0, 20.0, 30.0])
    beta = torch.tensor([0.1, 1.0, 0.0])
    assert vae_loss(d, r, beta).item() == pytest.approx((2.0 + 22.0 + 3.0) / 3)
    assert vae_loss(d, r, 0.5).item() == pytest.approx((6.0 + 12.0 + 18.0) / 3)


# ---------------------------------------------------------------------------------------------------
# BatchNorm recalibration
# ---------------------------------------------------------------------------------------------------
def test_recalibrate_batchnorm_sets_the_statistics_of_one_beta():
    torch.manual_seed(7)
    model = build_model("mnist", "conv", mr=True)
    _randomize_gates(model)
    batches = [_binary_batch(3, seed=s) for s in (10, 11)]
    # pooled statistics from training with mixed betas
    model.train()
    with torch.no_grad():
        for s in range(2):
            model(_binary_batch(3, seed=s), BetaRange().sample(3, generator=torch.Generator().manual_seed(s)))
    bn = model.encoder.units[1].bn  # its input depends on beta through the first gate
    momentum = bn.momentum

    def batch_stats(beta: float):
        captured = []
        hook = bn.register_forward_hook(lambda m, inp, out: captured.append(inp[0].detach()))
        model.train()
        with torch.no_grad():
            for x in batches:  # a per-example beta vector: the unfolded path, where the BN module runs
                model(x, torch.full((x.shape[0],), beta))
        hook.remove()
        means = torch.stack([c.mean(dim=(0, 2, 3)) for c in captured]).mean(0)
        vars_ = torch.stack([c.var(dim=(0, 2, 3), unbiased=True) for c in captured]).mean(0)
        return means, vars_

    mean_lo, var_lo = batch_stats(0.01)  # (train-mode forwards: these also move the running stats)
    mean_hi, _ = batch_stats(10.0)
    assert not torch.allclose(mean_lo, mean_hi, atol=1e-3)  # beta changes the statistics

    model.eval()
    seen = recalibrate_batchnorm(model, batches, 0.01)
    assert seen == 6
    assert not model.training and bn.momentum == momentum  # modes restored
    assert torch.allclose(bn.running_mean, mean_lo, atol=1e-5, rtol=1e-4)
    assert torch.allclose(bn.running_var, var_lo, atol=1e-5, rtol=1e-4)
    assert int(bn.num_batches_tracked) == 2
    recalibrate_batchnorm(model, batches, 10.0)
    assert torch.allclose(bn.running_mean, mean_hi, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(bn.running_mean, mean_lo, atol=1e-3)


def test_shared_hyper_mlp_variant_of_appendix_d():
    """shared_hyper=H: one relu(Linear(1->H)) shared by all gates, each gate its own Linear(H->C)."""
    from deep.train import TrainConfig
    from deep.train.loop import _make_optimizer

    torch.manual_seed(0)
    plain = build_model("mnist", "resnet", mr=True)
    shared = build_model("mnist", "resnet", mr=True, shared_hyper=8)
    channels = plain.num_gated_channels
    assert shared.num_gated_channels == channels
    # affine gates: 2 per channel; shared: (8 + 1) per channel + the trunk's 8 weights + 8 biases
    assert count_parameters(shared) - count_parameters(plain) == 7 * channels + 16
    rebuilt = build_model(**shared.config)
    assert rebuilt.config == shared.config and count_parameters(rebuilt) == count_parameters(shared)
    assert "shared_hyper" not in plain.config          # old configs stay unchanged
    x = (torch.rand(3, 1, 28, 28) > 0.5).float()
    with torch.no_grad():
        for p in shared.parameters():
            p.add_(0.1 * torch.randn_like(p))
        lo, hi = shared.eval().encode(x, 0.01).mu, shared.encode(x, 10.0).mu
    assert not torch.allclose(lo, hi)                  # the response depends on beta through the trunk
    opt = _make_optimizer(TrainConfig(dataset="mnist", hyper_lr_mult=30.0), shared)
    hyper = {id(p) for p in opt.param_groups[1]["params"]}
    assert all(id(p) in hyper for p in shared.hyper_trunk.parameters())
    with pytest.raises(ValueError, match="shared_hyper"):
        build_model("mnist", "resnet", shared_hyper=-1)
