"""Vectorised training of linear MR-VAEs and beta-VAEs (paper section 5.1, App. C.1).

Every (model kind, beta, learning rate, seed) combination is an independent model; all of them
train in one loop: one minibatch stream per seed, shared by every model of that seed, and one
Adam update over stacked parameters with a learning rate per model.

Objective per step: mean over the minibatch of ``distortion + beta * rate``, with the rate in
closed form and the distortion estimated with one reparameterised sample (as any VAE is
trained).  Evaluation is exact (no sampling): see :func:`exact_rate_distortion`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from .closed_form import LinearVAEParams, expected_rate_distortion
from .conditioning import BetaRange
from .models import StackedLinearVAE

__all__ = ["StackedAdam", "lr_factor", "LinearRunSpec", "train_linear_stacks", "exact_rate_distortion",
           "NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """A model's loss became NaN or infinite during training."""


class StackedAdam:
    """Adam over stacked parameters with one learning rate per model.

    ``lrs`` has shape ``(S, G)`` = the parameters' two leading dims; ``step(factor)`` scales
    every learning rate by the schedule ``factor``.
    """

    def __init__(self, params: list[torch.nn.Parameter], lrs: torch.Tensor, betas=(0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params = list(params)
        self.lrs = lrs
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.t = 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self, factor: float = 1.0) -> None:
        self.t += 1
        c1 = 1.0 - self.beta1 ** self.t
        c2 = 1.0 - self.beta2 ** self.t
        # lr * (m / c1) / (sqrt(v / c2) + eps) == [lr sqrt(c2) / c1] * m / (sqrt(v) + eps sqrt(c2)):
        # the bias corrections fold into the small per-model factor, saving two full passes
        scale = self.lrs * (factor * math.sqrt(c2) / c1)
        eps = self.eps * math.sqrt(c2)
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            g = p.grad
            m.lerp_(g, 1.0 - self.beta1)
            v.mul_(self.beta2).addcmul_(g, g, value=1.0 - self.beta2)
            update = torch.sqrt(v).add_(eps)
            torch.div(m, update, out=update)
            p.sub_(update.mul_(scale.reshape(*scale.shape, *([1] * (p.dim() - 2)))))

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def state_dict(self) -> dict:
        return {"t": self.t, "m": self.m, "v": self.v, "lrs": self.lrs}


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up over ``warmup_steps`` then cosine decay to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class LinearRunSpec:
    """What to train: every stack trains every (value, lr) pair for every seed.

    ``baseline_betas``: the beta of each beta-VAE; ``mr``: train MR-VAEs too.
    """

    baseline_betas: tuple[float, ...]
    learning_rates: tuple[float, ...]
    seeds: tuple[int, ...]
    mr: bool = True
    latent_dim: int = 32
    epochs: int = 20
    batch_size: int = 128
    warmup_fraction: float = 0.05
    beta_range: BetaRange = field(default_factory=BetaRange)
    beta_sampling: str = "example"
    encoder_gate: str = "sigmoid"
    covariance_gate: str = "sigmoid"
    decoder_gate: str = "sqrt"
    init_log_variance: float = 0.0
    gate_init: float = 0.9


@dataclass
class TrainedStacks:
    """The trained stacks and the layout of their models.

    ``beta_vae``: stack with G = len(baseline_betas) * len(lrs), model index ``j * L + l`` is
    beta ``baseline_betas[j]`` with learning rate ``lrs[l]``; ``mr``: G = len(lrs).
    Group index s is ``seeds[s]``.
    """

    spec: LinearRunSpec
    beta_vae: StackedLinearVAE | None
    mr: StackedLinearVAE | None
    seconds: float
    steps: int
    examples_per_second: float
    model_examples_per_second: float
    flops_per_second: float
    final_minibatch_loss: dict = field(default_factory=dict)


def _beta_quantiles(sampling: str, groups: int, models: int, batch: int, gen: torch.Generator) -> torch.Tensor:
    """Positions in [0, 1) of the minibatch's betas on the log-beta axis, shape ``(S, G, B)`` or
    ``(S, G, 1)`` for ``"batch"``.

    ``example``: independent uniforms (one beta per example); ``batch``: one uniform per minibatch
    (Algorithm 1); ``stratified``: one uniform in each of the B equal slices [i/B, (i+1)/B), in random
    order over the examples: every beta is still log-uniform, but each minibatch covers the range evenly.
    """
    if sampling == "batch":
        return torch.rand(groups, models, 1, generator=gen)
    u01 = torch.rand(groups, models, batch, generator=gen)
    if sampling == "stratified":
        slot = torch.argsort(torch.rand(groups, models, batch, generator=gen), dim=-1)
        u01 = (slot.to(u01.dtype) + u01) / batch
    elif sampling != "example":
        raise ValueError(f"beta sampling must be 'example', 'batch' or 'stratified', got {sampling!r}")
    return u01


def _layout_lrs(values: int, lrs: tuple[float, ...], groups: int) -> torch.Tensor:
    row = torch.tensor([lr for _ in range(values) for lr in lrs], dtype=torch.float32)
    return row.expand(groups, -1).contiguous()


def train_linear_stacks(x_train: torch.Tensor, spec: LinearRunSpec, *, progress: bool = True,
                        threads: int | None = None, device: str | torch.device = "cpu") -> TrainedStacks:
    """Train all beta-VAEs and MR-VAEs of ``spec`` on centred data ``x_train`` (N, n) float32."""
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device)
    x_train = x_train.to(device=device, dtype=torch.float32)
    n_examples, n = x_train.shape
    seeds, lrs = spec.seeds, spec.learning_rates
    S = len(seeds)
    gen = torch.Generator().manual_seed(int(seeds[0]) * 1_000_003 + 17)
    init_gens = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def build(mr: bool, values: int) -> StackedLinearVAE:
        # each group's initial weights come from its own seed
        parts = [StackedLinearVAE(1, values * len(lrs), n, spec.latent_dim, mr=mr,
                                  beta_range=spec.beta_range, encoder_gate=spec.encoder_gate,
                                  covariance_gate=spec.covariance_gate,
                                  decoder_gate=spec.decoder_gate, generator=g,
                                  init_log_variance=spec.init_log_variance, gate_init=spec.gate_init)
                 for g in init_gens]
        model = parts[0]
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.data = torch.cat([getattr(q, name).data for q in parts], dim=0)
        model.groups = S
        return model.to(device)

    stacks: dict[str, StackedLinearVAE] = {}
    optimisers: dict[str, StackedAdam] = {}
    if spec.baseline_betas:
        stacks["beta_vae"] = build(False, len(spec.baseline_betas))
        optimisers["beta_vae"] = StackedAdam(list(stacks["beta_vae"].parameters()),
                                             _layout_lrs(len(spec.baseline_betas), lrs, S).to(device))
        base_beta = torch.tensor([b for b in spec.baseline_betas for _ in lrs], dtype=torch.float32,
                                 device=device).reshape(1, -1, 1).expand(S, -1, 1)
    if spec.mr:
        stacks["mr"] = build(True, 1)
        optimisers["mr"] = StackedAdam(list(stacks["mr"].parameters()), _layout_lrs(1, lrs, S).to(device))

    steps_per_epoch = n_examples // spec.batch_size  # drop the last partial batch
    total = spec.epochs * steps_per_epoch
    warmup = int(round(spec.warmup_fraction * total))
    perm_gens = [torch.Generator().manual_seed(int(s) + 7919) for s in seeds]
    n_models = sum(m.groups * m.models for m in stacks.values())
    flops_per_example = next(iter(stacks.values())).flops_per_example()

    bar = tqdm(total=total, desc="linear VAEs", unit="step", disable=not progress, mininterval=1.0)
    start = time.perf_counter()
    step = 0
    last = {}
    for epoch in range(spec.epochs):
        perms = torch.stack([torch.randperm(n_examples, generator=g) for g in perm_gens]).to(device)
        for i in range(steps_per_epoch):
            idx = perms[:, i * spec.batch_size:(i + 1) * spec.batch_size]
            x = x_train[idx]  # (S, B, n)
            factor = lr_factor(step, total, warmup)
            for name, model in stacks.items():
                G = model.models
                if name == "mr":
                    u01 = _beta_quantiles(spec.beta_sampling, S, G, spec.batch_size, gen).to(device)
                    beta = torch.exp(spec.beta_range.log_a + (spec.beta_range.log_b - spec.beta_range.log_a) * u01)
                    beta = beta.expand(S, G, spec.batch_size)
                else:
                    beta = base_beta
                noise = torch.randn(S, G, spec.batch_size, spec.latent_dim, generator=gen).to(device)
                out = model(x, beta, noise)
                per_model = (out.distortion + beta * out.rate).mean(-1)  # (S, G)
                loss = per_model.sum()
                if not torch.isfinite(loss):
                    bad = (~torch.isfinite(per_model)).nonzero().tolist()
                    raise NonFiniteLossError(
                        f"non-finite loss in {name} models (group, model) {bad[:5]} at step {step}; "
                        "lower the learning rate")
                optimisers[name].zero_grad()
                loss.backward()
                optimisers[name].step(factor)
                if i == steps_per_epoch - 1:
                    last[name] = per_model.detach().cpu()
            step += 1
            if step % 50 == 0:
                bar.update(50)
                bar.set_postfix(epoch=f"{epoch + 1}/{spec.epochs}")
    bar.update(total - bar.n)
    bar.close()
    seconds = time.perf_counter() - start
    examples = total * spec.batch_size
    return TrainedStacks(
        spec=spec, beta_vae=stacks.get("beta_vae"), mr=stacks.get("mr"), seconds=seconds, steps=total,
        examples_per_second=examples * S / seconds,
        model_examples_per_second=examples * n_models / seconds,
        flops_per_second=examples * n_models * flops_per_example / seconds,
        final_minibatch_loss={k: v.tolist() for k, v in last.items()},
    )


def exact_rate_distortion(model: StackedLinearVAE, beta: float, moment: np.ndarray,
                          mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact expected rate and distortion, shape ``(S, G)``, of every model of a stack at ``beta``
    on data whose second moment about the training mean is ``moment``."""
    mats = model.matrices(beta)
    params = LinearVAEParams(encoder=mats["encoder"].cpu().numpy(), variances=mats["variances"].cpu().numpy(),
                             decoder=mats["decoder"].cpu().numpy(), mean=mean)
    rate, distortion = expected_rate_distortion(params, moment)
    return np.asarray(rate), np.asarray(distortion)
