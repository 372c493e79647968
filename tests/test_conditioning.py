"""The conditioning core: beta range, sampling, hyper-input, gates."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from linvae.conditioning import (BetaRange, BetaRangeError, Gate, GateContext, gate_bias_for_value, sigmoid_gate,
                                 sqrt_gate)


@pytest.mark.parametrize("a,b", [(0.0, 1.0), (-1.0, 1.0), (1.0, 1.0), (10.0, 0.01), (float("nan"), 1.0),
                                 (0.1, float("inf"))])
def test_invalid_ranges_are_rejected(a, b):
    with pytest.raises(BetaRangeError):
        BetaRange(a, b)


def test_standardisation_maps_range_to_plus_minus_sqrt3_and_round_trips():
    r = BetaRange(0.01, 10.0)
    u = r.standardize(torch.tensor([0.01, 10.0, math.sqrt(0.1)], dtype=torch.float64))
    assert torch.allclose(u, torch.tensor([-math.sqrt(3), math.sqrt(3), 0.0], dtype=torch.float64))
    beta = torch.logspace(-3, 2, 50, dtype=torch.float64)
    assert torch.allclose(r.unstandardize(r.standardize(beta)), beta, rtol=1e-12)
    with pytest.raises(BetaRangeError):
        r.standardize(torch.tensor([1.0, 0.0]))


def test_per_example_sampling_is_log_uniform_and_standardised():
    r = BetaRange(0.01, 10.0)
    g = torch.Generator().manual_seed(0)
    beta = r.sample(200_000, generator=g, dtype=torch.float64)
    assert beta.min() >= 0.01 and beta.max() <= 10.0
    u = r.standardize(beta)
    assert abs(float(u.mean())) < 0.01 and abs(float(u.var()) - 1.0) < 0.01
    # log beta is uniform on [log a, log b]
    p = stats.kstest(np.log(beta.numpy()), stats.uniform(loc=r.log_a, scale=r.log_b - r.log_a).cdf).pvalue
    assert p > 1e-3
    # and beta itself is far from uniform
    assert stats.kstest(beta.numpy(), stats.uniform(loc=0.01, scale=9.99).cdf).pvalue < 1e-6


def test_per_batch_sampling_repeats_one_beta():
    r = BetaRange(0.1, 10.0)
    g = torch.Generator().manual_seed(1)
    beta = r.sample(64, per="batch", generator=g)
    assert beta.shape == (64,) and torch.all(beta == beta[0])
    with pytest.raises(ValueError):
        r.sample(4, per="epoch")


def test_stratified_sampling_covers_every_slice_and_keeps_the_log_uniform_marginal():
    r = BetaRange(0.01, 10.0)
    g = torch.Generator().manual_seed(2)
    n = 16
    batches = torch.stack([r.sample(n, per="stratified", generator=g, dtype=torch.float64)
                           for _ in range(5000)])
    t = (torch.log(batches) - r.log_a) / (r.log_b - r.log_a)  # position in [0, 1] of log beta
    # each batch has exactly one beta in each of the n equal slices of [log a, log b]
    slots = torch.sort((t * n).floor().long(), dim=1).values
    assert torch.equal(slots, torch.arange(n).expand_as(slots))
    # the order is random: the slice at position 0 is uniform over the n slices
    first = (t[:, 0] * n).floor().long()
    counts = torch.bincount(first, minlength=n).numpy()
    assert stats.chisquare(counts).pvalue > 1e-3
    # each position's beta is log-uniform on [a, b]
    assert stats.kstest(t[:, 3].numpy(), stats.uniform.cdf).pvalue > 1e-3
    # a batch mean has lower variance than with independent draws (log beta: n^-3 vs n^-1 scaling)
    iid = torch.stack([r.sample(n, generator=g, dtype=torch.float64) for _ in range(5000)])
    assert float(torch.log(batches).mean(1).var()) < 0.05 * float(torch.log(iid).mean(1).var())

def test_grid_and_range_check():
    r = BetaRange(0.01, 10.0)
    grid = r.grid(10).numpy()
    assert np.allclose(grid, np.logspace(-2, 1, 10))
    assert r.contains(grid)
    with pytest.warns(UserWarning, match="outside"):
        r.check(20.0)


def test_sqrt_gate_values_and_gradient():
    x = torch.tensor([-3.0, -0.5, -1e-9, 0.0, 0.7], dtype=torch.float64, requires_grad=True)
    y = sqrt_gate(x)
    expected = torch.sqrt(torch.clamp(1 - torch.exp(x.detach()), min=0))
    assert torch.allclose(y, expected)
    assert y[3] == 0 and y[4] == 0
    y.sum().backward()
    assert torch.all(torch.isfinite(x.grad))
    assert x.grad[3] == 0 and x.grad[4] == 0
    # analytic derivative away from the kink
    xs = torch.linspace(-4, -0.05, 20, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(sqrt_gate, (xs,))


@pytest.mark.parametrize("kind", ["sigmoid", "sqrt"])
def test_gate_bias_inverts_gate(kind):
    fn = sigmoid_gate if kind == "sigmoid" else sqrt_gate
    for v in (0.1, 0.5, 0.9, 0.99):
        assert math.isclose(float(fn(torch.tensor(gate_bias_for_value(kind, v), dtype=torch.float64))), v,
                            rel_tol=1e-9)


@pytest.mark.parametrize("kind", ["sigmoid", "sqrt"])
def test_gates_start_open_with_live_gradients(kind):
    gate = Gate(6, kind)
    u = BetaRange().standardize(torch.tensor([0.01, 0.3, 10.0]))
    assert torch.allclose(gate.factors(u), torch.full((3, 6), 0.9), atol=1e-6)
    x = torch.randn(3, 6)
    gate(x, u).pow(2).sum().backward()
    w, b = gate.hyper.out.weight.grad, gate.hyper.out.bias.grad
    assert torch.all(b.abs() > 0) and torch.all(w.abs() > 0)


@pytest.mark.parametrize("kind", ["sigmoid", "sqrt"])
@pytest.mark.parametrize("direction", ["increasing", "decreasing"])
def test_projected_monotone_gate_is_monotone_in_beta(kind, direction):
    torch.manual_seed(0)
    gate, free = Gate(8, kind, direction=direction), Gate(8, kind)
    with torch.no_grad():  # slopes of both signs, as training leaves them
        for g in (gate, free):
            g.hyper.out.weight.copy_(torch.linspace(-2.0, 2.0, 8).reshape(8, 1))
            g.hyper.out.bias.fill_(-1.0)
    beta = torch.logspace(-2, 1, 30)
    u = BetaRange().standardize(beta)
    steps = torch.diff(free.factors(u), dim=0)
    assert (steps > 1e-6).any() and (steps < -1e-6).any()  # the free gate goes both ways
    gate.project_()
    free.project_()  # a free gate is left alone
    assert torch.equal(free.hyper.out.weight, torch.linspace(-2.0, 2.0, 8).reshape(8, 1))
    steps = torch.diff(gate.factors(u), dim=0)
    assert bool((steps >= 0).all() if direction == "increasing" else (steps <= 0).all())
    # channels already going the right way keep their slope; the others become constant in beta
    w = gate.hyper.out.weight.reshape(-1)
    kept = (w != 0)
    assert kept.sum() == 4 and torch.equal(w[kept], torch.linspace(-2.0, 2.0, 8)[kept])


@pytest.mark.parametrize("kind", ["sigmoid", "sqrt"])
def test_decreasing_initialisation_has_the_stated_slope_and_centre(kind):
    gate = Gate(5, kind)
    gate.init_decreasing_(0.5)
    u = torch.tensor([-math.sqrt(3.0), 0.0, math.sqrt(3.0)], dtype=torch.float64)
    b = gate_bias_for_value(kind, 0.9)
    pre = b + (-0.5 if kind == "sigmoid" else 0.5) * u  # the gate closes as beta (and u) grows
    expected = torch.sigmoid(pre) if kind == "sigmoid" else torch.sqrt(-torch.expm1(pre))
    got = gate.factors(u.float()).detach()
    assert torch.allclose(got, expected.float().unsqueeze(1).expand(3, 5), atol=1e-6)
    assert math.isclose(float(got[1, 0]), 0.9, rel_tol=1e-6) and bool((torch.diff(got, dim=0) < 0).all())
    # a monotone gate keeps it: the slope already has the sign its direction needs
    mono = Gate(5, kind, direction="decreasing")
    mono.init_decreasing_(0.5)
    before = mono.hyper.out.weight.clone()
    mono.project_()
    assert torch.equal(mono.hyper.out.weight, before)
    with pytest.raises(ValueError, match=">= 0"):
        gate.init_decreasing_(-1.0)
    with pytest.raises(ValueError, match="affine"):
        Gate(5, kind, hidden=(3,)).init_decreasing_(0.5)


def test_monotone_gate_needs_the_affine_one_input_map():
    for kwargs in (dict(kind="film"), dict(hidden=(4,)), dict(in_features=3)):
        kind = kwargs.pop("kind", "sqrt")
        with pytest.raises(ValueError, match="affine map"):
            Gate(4, kind, direction="decreasing", **kwargs)
    with pytest.raises(ValueError, match="direction"):
        Gate(4, "sqrt", direction="down")


def test_gate_applies_per_channel_on_every_layout():
    gate = Gate(4, "sigmoid")
    with torch.no_grad():
        gate.hyper.out.weight.copy_(torch.tensor([[1.0], [-1.0], [2.0], [0.0]]))
        gate.hyper.out.bias.copy_(torch.tensor([0.0, 1.0, -1.0, 3.0]))
    u = torch.tensor([0.5, -1.0])
    g = torch.sigmoid(u[:, None] * torch.tensor([1.0, -1.0, 2.0, 0.0]) + torch.tensor([0.0, 1.0, -1.0, 3.0]))
    x2 = torch.randn(2, 4)
    assert torch.allclose(gate(x2, u), g * x2)
    x4 = torch.randn(2, 4, 3, 5)
    assert torch.allclose(gate(x4, u), g[:, :, None, None] * x4)
    seq = Gate(4, "sigmoid", channel_dim=-1)
    seq.load_state_dict(gate.state_dict())
    x3 = torch.randn(2, 7, 4)
    assert torch.allclose(seq(x3, u), g[:, None, :] * x3)
    with pytest.raises(ValueError, match="channels"):
        gate(torch.randn(2, 5), u)


def test_film_gate_is_identity_at_init_and_mlp_hyper_network_trains():
    film = Gate(3, "film")
    x = torch.randn(4, 3, 2, 2)
    u = torch.randn(4)
    assert torch.allclose(film(x, u), x)
    mlp = Gate(3, "sqrt", hidden=(8, 8))
    out = mlp(x, u)
    assert out.shape == x.shape
    out.sum().backward()
    assert mlp.hyper.body[0].weight.grad is not None
    with pytest.raises(ValueError, match="unknown gate kind"):
        Gate(3, "tanh")


def test_gate_context_equals_each_gate_and_its_gradients():
    """Fused evaluation of many gates = each Gate on its own, values and gradients."""
    torch.manual_seed(0)
    gates = [Gate(3, "sigmoid"), Gate(4, "sqrt"), Gate(2, "sigmoid"), Gate(5, "film"), Gate(3, "sqrt", hidden=(4,))]
    for g in gates:
        with torch.no_grad():
            for p in g.parameters():
                p.add_(0.5 * torch.randn_like(p))
    u = torch.randn(6)
    xs = [torch.randn(6, g.features, 2, 2) for g in gates]
    ctx = GateContext(u, gates)
    fused = sum((ctx.apply(g, x) ** 2).sum() for g, x in zip(gates, xs))
    fused_grads = torch.autograd.grad(fused, [p for g in gates for p in g.parameters()])
    plain = sum((g(x, u) ** 2).sum() for g, x in zip(gates, xs))
    plain_grads = torch.autograd.grad(plain, [p for g in gates for p in g.parameters()])
    assert torch.allclose(fused, plain, rtol=1e-6)
    for a, b in zip(fused_grads, plain_grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    assert len(ctx._factors) == 3          # the three affine sigmoid/sqrt gates were fused
    assert torch.allclose(ctx.factors(gates[1]), gates[1].factors(u))


def test_beta_batch_broadcasts_scalars_and_rejects_wrong_shapes():
    from linvae.conditioning import beta_batch

    like = torch.zeros(3, dtype=torch.float64)
    assert beta_batch(0.5, 4, like).tolist() == [0.5] * 4 and beta_batch(0.5, 4, like).dtype == torch.float64
    assert beta_batch(torch.tensor([2.0]), 3, like).tolist() == [2.0] * 3
    v = torch.tensor([0.1, 1.0, 10.0])
    assert torch.equal(beta_batch(v, 3, like), v.double())
    with pytest.raises(ValueError, match="B=4"):
        beta_batch(v, 4, like)


def test_fold_scale_only_for_a_shared_context_and_a_multiplicative_gate():
    from linvae.conditioning import beta_batch, fold_scale

    sig, film = Gate(3, "sigmoid"), Gate(3, "film")
    with torch.no_grad():
        sig.hyper.out.weight.copy_(torch.tensor([[1.0], [-2.0], [0.5]]))
    like = torch.zeros(4)
    one = BetaRange().standardize(beta_batch(0.3, 4, like, keep_one=True))
    every = BetaRange().standardize(beta_batch(torch.full((4,), 0.3), 4, like, keep_one=True))
    assert one.shape == (1,) and every.shape == (4,)
    assert beta_batch(0.3, 4, like).shape == (4,)                     # broadcast unless asked to keep one
    shared = GateContext(one, [sig, film])
    assert torch.allclose(fold_scale(sig, shared), sig.factors(one).reshape(-1))
    assert fold_scale(film, shared) is None                             # FiLM adds a shift: not foldable
    assert fold_scale(None, shared) is None
    assert fold_scale(sig, GateContext(every, [sig])) is None           # one beta per example
    assert fold_scale(sig, one) is None                                  # a bare hyper-input, no context


# ----------------------------------------------------------------------------------------------------
# the public multi-rate layers
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, shape", [
    (lambda gate: __import__("linvae.conditioning", fromlist=["GatedLinear"]).GatedLinear(6, 5, gate=gate), (4, 6)),
    (lambda gate: __import__("linvae.conditioning", fromlist=["GatedConv2d"]).GatedConv2d(3, 5, 3, 2, 1, gate=gate),
     (4, 3, 8, 8)),
    (lambda gate: __import__("linvae.conditioning", fromlist=["GatedConvTranspose2d"]).GatedConvTranspose2d(
        3, 5, 3, 2, 1, 1, gate=gate), (4, 3, 4, 4)),
])
@pytest.mark.parametrize("gate", ["sigmoid", "sqrt"])
def test_gated_layers_scale_each_output_channel_by_its_gate_and_fold_for_one_beta(make, shape, gate):
    from linvae.conditioning import GateContext

    torch.manual_seed(0)
    layer = make(gate).double()
    with torch.no_grad():   # a gate that depends on u, different per channel
        layer.gate.hyper.out.weight.copy_(torch.linspace(-1.5, 1.5, 5).reshape(5, 1))
    x = torch.randn(shape, dtype=torch.float64)
    u = torch.tensor([-1.0, -0.2, 0.4, 1.6], dtype=torch.float64)
    plain = layer.layer(x)
    f = layer.gate.factors(u)                                  # (4, 5)
    expected = plain * f.reshape(4, 5, *([1] * (plain.dim() - 2)))
    torch.testing.assert_close(layer(x, u), expected)
    # one beta for the whole batch: the gate is folded into the weights, same values
    one = u[2:3]
    torch.testing.assert_close(layer(x, one), layer(x, one.expand(4)))
    assert GateContext(one, [layer.gate]).shared
    # gradients reach the gate's hyper-parameters and the base weights, in both paths
    for uu in (u, one):
        layer.zero_grad()
        layer(x, uu).square().sum().backward()
        assert float(layer.gate.hyper.out.weight.grad.abs().sum()) > 0
        assert float(layer.layer.weight.grad.abs().sum()) > 0
    # no hyper-input (a plain beta-VAE) or no gate: the plain layer
    torch.testing.assert_close(layer(x, None), plain)
    ungated = make(None)
    assert ungated.gate is None and sum(p.numel() for p in ungated.parameters()) == \
        sum(p.numel() for p in layer.layer.parameters())


def test_gate_parameter_groups_and_projection_helpers():
    from torch import nn

    from linvae.conditioning import GatedLinear, gate_parameter_groups, hyper_parameters, project_gates_

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = GatedLinear(4, 3, gate="sigmoid")
            self.b = GatedLinear(3, 2, gate="sqrt", direction="decreasing")
            self.trunk = nn.Linear(1, 2)
            self.trunk.is_hyper = True   # a shared hyper-input layer trains with the gates

    net = Net()
    groups = gate_parameter_groups(net, lr=0.1, hyper_lr_mult=10.0)
    assert [g["lr"] for g in groups] == [0.1, pytest.approx(1.0)]
    hyper = {id(p) for p in hyper_parameters(net)}
    assert hyper == {id(p) for p in groups[1]["params"]}
    assert {id(p) for p in net.trunk.parameters()} <= hyper
    assert {id(net.a.layer.weight), id(net.b.layer.bias)} <= {id(p) for p in groups[0]["params"]}
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(net.parameters()))
    # projection: the monotone sqrt gate's slope is clamped to the sign that keeps it non-increasing in beta
    with torch.no_grad():
        net.b.gate.hyper.out.weight.fill_(-0.7)
        net.a.gate.hyper.out.weight.fill_(-0.7)
    project_gates_(net)
    assert float(net.b.gate.hyper.out.weight.detach().min()) >= 0.0          # sqrt: w >= 0 <=> decreasing in beta
    assert float(net.a.gate.hyper.out.weight.detach().max()) == pytest.approx(-0.7)  # free gate untouched
    u = torch.linspace(-2, 2, 9)
    with torch.no_grad():
        net.b.gate.hyper.out.weight.fill_(0.5)
        v = net.b.gate.factors(u)
    assert bool((v[1:] <= v[:-1]).all())
