"""The paper's experiments as data: one :class:`Experiment` per figure or table, three presets each.

An *experiment* (e.g. ``fig5_mnist``) has three presets (:data:`deep.experiments.manifest.PRESETS`):

* ``smoke``: seconds on a CPU; checks the pipeline end to end (tests use it); numbers are meaningless;
* ``cpu``: what a 2-core machine finishes in about 1.5 h for the image experiments (about 3 h with the
  beta-TCVAE, LSTM and NVAE families); every result is labelled ``REDUCED: ...``; ``estimate_s`` is the
  planned wall time on 2 quiet CPU cores (``mrvae-cli experiment list`` prints it);
* ``paper``: the App. C protocol (200 epochs, the learning-rate grid {1e-2 ... 1e-5} selected at beta = 1 on
  the validation split, 3 seeds), GPU-sized.

A preset is a list of *groups* (one curve or set of points of a figure): an MR-VAE (``kind="mr"``) or a
beta-VAE sweep (``kind="sweep"``, one KL schedule, several betas). Every run of a group is one
:class:`deep.train.TrainConfig` (all groups of a comparison share the same training settings); the runner
(:mod:`deep.experiments.runner`) trains and evaluates them. Experiments outside the deep trainer (Fig. 4's
linear VAE, Table 1's parameter counts) have no groups and a ``runner`` from
:mod:`deep.experiments.standalone`.

This module imports neither torch nor the models: listing the experiments is instant.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from ..data.registry import YAHOO_ENC_GATE_LAMBDA
from ..train.config import gate_lr_mult_text, recipe_values  # torch-free: the recipes and family registry
from .manifest import BASELINE_BETAS, FIG7_BETAS, FIG7_RESULTS, PAPER_LRS, PAPER_SEEDS, PRESETS, RD_RESULTS
from .standalone import run_linear, run_table1

__all__ = [
    "PRESETS", "SMOKE_BETAS", "ExperimentError", "Evaluation", "Group", "Preset", "Experiment", "EXPERIMENTS",
    "RUN_ALL_ORDER", "get_experiment", "missing_requirements", "run_fields",
]

SMOKE_BETAS = (0.01, 1.0, 10.0)


class ExperimentError(ValueError):
    """Unknown experiment or preset (the message lists the valid ones)."""


# ------------------------------------------------------------------------------------------
# data model
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Evaluation:
    """One call of :func:`deep.evaluate.evaluate_run`, written to ``<run>/results/<name>``.

    ``betas`` (explicit list) or ``n_betas`` (log-spaced over the MR-VAE's trained range); a beta-VAE is
    always evaluated at its own beta. ``applies_to``: the group kinds that get this evaluation.
    """

    name: str = RD_RESULTS
    n_betas: int = 20
    betas: tuple[float, ...] | None = None
    max_examples: int | None = None
    batch_size: int = 100
    iw_k: int = 0
    images: bool = True
    n_images: int = 8
    split: str = "test"
    applies_to: tuple[str, ...] = ("mr", "sweep")
    fid_samples: int = 0
    mi_examples: int | None = None

    def kwargs(self) -> dict:
        kw = {"n_betas": self.n_betas, "betas": list(self.betas) if self.betas else None,
              "max_examples": self.max_examples, "batch_size": self.batch_size, "iw_k": self.iw_k,
              "images": self.images, "n_images": self.n_images, "split": self.split, "out_name": self.name}
        if self.fid_samples:
            kw["fid_samples"] = self.fid_samples
        if self.mi_examples is not None:
            kw["mi_examples"] = self.mi_examples
        return kw

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas) if self.betas else None
        d["applies_to"] = list(self.applies_to)
        return d


@dataclass(frozen=True)
class Group:
    """One curve (``kind="mr"``) or set of beta-VAE points (``kind="sweep"``, one KL schedule) of a figure.

    ``config``: TrainConfig fields shared by the group's runs (``lr`` and ``seed`` come from the preset
    grid when it has one). ``params``: figure-specific values (e.g. the beta range of Fig. 8).
    ``unavailable``: the reason this group cannot be run in this code base (recorded, never faked).
    ``units``: ``"nats"`` or ``"bpd"`` (bits per dimension; ``dims`` values per example).
    """

    key: str
    label: str
    kind: str
    config: dict
    betas: tuple[float, ...] = ()
    panel: str = ""
    params: dict = field(default_factory=dict)
    evaluations: tuple[Evaluation, ...] = (Evaluation(),)
    unavailable: str | None = None
    units: str = "nats"
    dims: int | None = None

    @property
    def schedule(self) -> str | None:
        return self.config.get("kl_schedule", "constant") if self.kind == "sweep" else None

    def to_dict(self) -> dict:
        return {"key": self.key, "label": self.label, "kind": self.kind, "panel": self.panel,
                "dataset": self.config.get("dataset"), "arch": self.config.get("arch"),
                "schedule": self.schedule, "betas": list(self.betas) if self.kind == "sweep" else None,
                "params": dict(self.params), "units": self.units, "dims": self.dims,
                "config": dict(self.config), "evaluations": [e.to_dict() for e in self.evaluations]}


@dataclass(frozen=True)
class Preset:
    """The groups of one experiment at one budget.

    ``lrs``: learning-rate grid (``None``: each group's own ``config["lr"]``, no selection); with more than
    one, every group's LR is selected by the lowest mean-over-seeds loss at beta = 1 on
    ``selection_split`` (App. C: baselines at their beta = 1 run, MR-VAEs at beta = 1).
    ``estimate_s``: planned wall time on 2 quiet CPU cores when no run is shared with another experiment.
    """

    name: str
    groups: tuple[Group, ...]
    budget: str
    estimate: str
    estimate_s: float | None = None
    lrs: tuple[float, ...] | None = None
    seeds: tuple[int, ...] = (0,)
    selection_split: str = "valid"
    paper_protocol: bool = False

    def runs(self) -> list[tuple[Group, dict]]:
        """Every (group, TrainConfig fields) pair this preset trains (runtime fields not included)."""
        out = []
        for g in self.groups:
            if g.unavailable:
                continue
            for lr in (self.lrs or (g.config.get("lr", 1e-3),)):
                for seed in self.seeds:
                    for beta in (g.betas if g.kind == "sweep" else (None,)):
                        out.append((g, run_fields(g, lr, seed, beta)))
        return out


@dataclass(frozen=True)
class Experiment:
    """A figure or table's experiment: a title, the scripts that read it, its presets and the modules it
    needs (``requires``; missing ones make the experiment report ``unavailable`` instead of crashing)."""

    name: str
    title: str
    figures: tuple[str, ...]
    presets: dict
    requires: tuple[str, ...] = ()
    notes: str = ""
    #: for an experiment outside the deep trainer (Fig. 4: the linear VAE; Table 1: parameter counts),
    #: ``runner(preset, root, runtime, *, say, progress) -> (status, reason, outputs)`` does the whole work
    #: (see :mod:`deep.experiments.standalone`); its presets then have no groups
    runner: Callable[..., tuple[str, str | None, dict]] | None = None

    def preset(self, name: str) -> Preset:
        if name not in self.presets:
            raise ExperimentError(f"unknown preset {name!r} for {self.name}; choose one of {list(PRESETS)}")
        return self.presets[name]


def run_fields(group: Group, lr: float, seed: int, beta: float | None) -> dict:
    """The TrainConfig fields of one run of ``group`` (``beta``: the sweep member; ``None`` for an MR-VAE)."""
    fields = dict(group.config)
    fields["lr"] = float(lr)
    fields["seed"] = int(seed)
    if group.kind == "mr":
        fields["mr"] = True
    else:
        fields["mr"] = False
        fields["beta"] = float(beta)
    return fields


# ------------------------------------------------------------------------------------------
# preset building blocks
# ------------------------------------------------------------------------------------------
_SMOKE_TRAIN = {"epochs": 1, "batch_size": 16, "max_train_examples": 32, "lr": 1e-3}
_SMOKE_EVAL = Evaluation(n_betas=3, max_examples=16, batch_size=16, n_images=4)
_CPU_TRAIN = {"epochs": 3, "batch_size": 128, "max_train_examples": 8000, "lr": 1e-3}
_CPU_EVAL = Evaluation(n_betas=20, max_examples=2000, batch_size=100, n_images=8)
#: The cpu preset of the central comparison (Fig. 1, Fig. 5 MNIST / Omniglot, Table 2): ResNet only, the full
#: training split, every model (one MR-VAE, each beta-VAE) the same number of epochs, the full test set.
#: Epochs per dataset (docs/recipe.md): Omniglot 10 (1,510 steps of batch 128); MNIST 5 (1,955 steps, more than
#: Omniglot's; 10 MNIST epochs are ~3.3 h on 2 cores for the 11 runs, more than a working session here).
#: Every model warms its learning rate up linearly over the first epoch (as the reference code does over 10 of its
#: 200): on Omniglot it lowered the beta = 0.01 beta-VAE's test distortion by 9.6 nats and the MR-VAE's D + beta R
#: at beta = 0.01 by 5.7 and 10.8 nats at seeds 0 and 1 (docs/recipe.md).
CPU_FULL_WARMUP_EPOCHS = 1.0
CPU_FULL_EPOCHS = {"mnist": 5, "omniglot": 10}
#: Peak learning rate of every model of this preset. lr 2e-3 beat 1e-3 for the beta-VAE at each of the 10
#: baseline betas (D + beta R lower by 0.11 to 3.43 nats on Omniglot at 10 epochs, 0.61 to 2.88 on MNIST at 5)
#: and for the MR-VAE; 4e-3 was worse again (docs/recipe.md, "The cpu preset at lr 2e-3").
CPU_FULL_LR = 2e-3
#: The MR-VAE's gates keep the absolute learning rate the ResNet's default gives them (x100 of lr 1e-3 = 0.1):
#: x50 of CPU_FULL_LR, the setting measured at lr 2e-3 (a test checks the product).
CPU_FULL_HYPER_LR_MULT = 50.0
_CPU_FULL_TRAIN_EXAMPLES = {"mnist": 50_000, "omniglot": 19_280}
#: Planned wall time of one dataset's 11 runs (1 MR-VAE + 10 beta-VAEs) and their evaluations on 2 cores, from
#: the throughput measured here (~490 examples/s at 2 threads, ResNet, batch 128).
_CPU_FULL_SECONDS = {d: 11 * (CPU_FULL_EPOCHS[d] * n / 490 + {"mnist": 60, "omniglot": 80}[d])
                     for d, n in _CPU_FULL_TRAIN_EXAMPLES.items()}


def _cpu_full_train(dataset: str) -> dict:
    return {"epochs": CPU_FULL_EPOCHS[dataset], "batch_size": 128, "lr": CPU_FULL_LR,
            "lr_warmup_epochs": CPU_FULL_WARMUP_EPOCHS}


_CPU_FULL_EVAL = Evaluation(n_betas=20, max_examples=None, batch_size=100, n_images=8)
_PAPER_TRAIN = {"epochs": 200, "batch_size": 128, "recipe": "paper", "kl_schedule_unit": "epoch",
                "min_lr": 1e-6}
_PAPER_EVAL = Evaluation(n_betas=20, max_examples=None, batch_size=100, n_images=8)

_BUDGET_SMOKE = ("REDUCED (smoke preset): 1 epoch on at most 64 training examples, 3 betas per sweep, evaluation "
                 "on a few test examples; checks the pipeline only, the numbers mean nothing")
_BUDGET_CPU = ("REDUCED (cpu preset): every model {epochs} epochs on {n}, batch {batch}, Adam lr {lr:g} with "
               "cosine decay (gate hyper-networks at lr {gate_mults}), 1 seed, no LR grid; "
               "MR-VAE curves at 20 log-spaced betas; evaluation on the first 2,000 test examples (paper: 200 "
               "epochs, full splits, LR grid, 3 seeds)")
_BUDGET_PAPER = ("paper protocol (App. C.2): 200 epochs, batch 128, Adam with cosine decay, one learning rate "
                 "for all parameters, LR grid {1e-2 ... 1e-5} selected at beta = 1 on the validation split, "
                 "3 seeds (mean reported), KL annealing over the first 30% of epochs, full test set")


def _base(preset: str) -> dict:
    return dict({"smoke": _SMOKE_TRAIN, "cpu": _CPU_TRAIN, "paper": _PAPER_TRAIN}[preset])


def _eval(preset: str) -> Evaluation:
    return {"smoke": _SMOKE_EVAL, "cpu": _CPU_EVAL, "paper": _PAPER_EVAL}[preset]


def _betas(preset: str) -> tuple[float, ...]:
    return SMOKE_BETAS if preset == "smoke" else BASELINE_BETAS


_NAMES = {"mnist": "MNIST", "omniglot": "Omniglot", "celeba64": "CelebA64", "svhn": "SVHN",
          "cifar10": "CIFAR-10", "dsprites": "dSprites", "yahoo": "Yahoo"}
_ARCH_NAMES = {"conv": "ConvNet", "resnet": "ResNet", "nvae": "NVAE", "lstm": "LSTM", "mlp": "MLP"}


def _panel(dataset: str, arch: str) -> str:
    return f"{_NAMES.get(dataset, dataset)} ({_ARCH_NAMES.get(arch, arch)})"


def _mr(key: str, label: str, dataset: str, arch: str, base: dict, evals: tuple[Evaluation, ...],
        params: dict | None = None, **over: Any) -> Group:
    return Group(key=key, label=label, kind="mr", config={**base, "dataset": dataset, "arch": arch, **over},
                 panel=_panel(dataset, arch), params=params or {}, evaluations=evals)


def _sweep(key: str, dataset: str, arch: str, base: dict, betas: Iterable[float], schedule: str,
           evals: tuple[Evaluation, ...], label: str | None = None, **over: Any) -> Group:
    label = label or {"constant": "β-VAEs", "linear": "β-VAEs (KL annealing)"}.get(schedule, f"β-VAEs ({schedule})")
    cfg = {**base, "dataset": dataset, "arch": arch, **over}
    if schedule != "constant":
        cfg["kl_schedule"] = schedule
    return Group(key=key, label=label, kind="sweep", config=cfg, betas=tuple(float(b) for b in betas),
                 panel=_panel(dataset, arch), evaluations=evals)


def _preset(name: str, groups: list[Group], *, budget: str | None = None, estimate: str = "",
            estimate_s: float | None = None, seeds: tuple[int, ...] | None = None,
            lrs: tuple[float, ...] | None = None, selection_split: str = "valid", data_name: str = "") -> Preset:
    if name == "paper":
        return Preset(name, tuple(groups), budget or _BUDGET_PAPER, estimate or "GPU-scale (see App. C)",
                      None, lrs or PAPER_LRS, seeds or PAPER_SEEDS, selection_split, True)
    if name == "smoke":
        return Preset(name, tuple(groups), budget or _BUDGET_SMOKE, estimate or "seconds on 1 CPU core",
                      estimate_s, lrs, seeds or (0,), selection_split, False)
    default = _BUDGET_CPU.format(epochs=_CPU_TRAIN["epochs"],
                                 n=f"a fixed {_CPU_TRAIN['max_train_examples']:,}-example "
                                   f"{data_name + ' ' if data_name else ''}training subset",
                                 batch=_CPU_TRAIN["batch_size"], lr=_CPU_TRAIN["lr"],
                                 gate_mults=gate_lr_mult_text("mrvae"))
    return Preset(name, tuple(groups), budget or default, estimate, estimate_s, lrs, seeds or (0,),
                  selection_split, False)


def _baseline_eval(preset: str) -> Evaluation:
    """The MR-VAE evaluated at exactly the baseline betas (``rd_baselines.json``: delta(beta) of
    :mod:`paper_figures.claim`), on the test examples of the preset's main evaluation."""
    main = _CPU_FULL_EVAL if preset == "cpu" else _eval(preset)
    return Evaluation(name="rd_baselines.json", betas=_betas(preset), max_examples=main.max_examples,
                      batch_size=main.batch_size, images=False, applies_to=("mr",))


def _binary_groups(dataset: str, arch: str, preset: str, schedules: tuple[str, ...],
                   extra_evals: tuple[Evaluation, ...] = ()) -> list[Group]:
    full = preset == "cpu" and arch == "resnet"   # the central comparison at its cpu budget
    base = _cpu_full_train(dataset) if full else _base(preset)
    ev = ((_CPU_FULL_EVAL,) if full else (_eval(preset),)) + extra_evals
    prefix = f"{dataset}_{arch}"
    gates = {"hyper_lr_mult": CPU_FULL_HYPER_LR_MULT} if full else {}
    groups = [_mr(f"{prefix}_mr", "MR-VAE", dataset, arch, base, ev + (_baseline_eval(preset),), **gates)]
    for s in schedules:
        groups.append(_sweep(f"{prefix}_beta_{s}", dataset, arch, base, _betas(preset), s, ev))
    return groups


def _epochs_text(epochs: float) -> str:
    return "epoch" if epochs == 1 else f"{epochs:g} epochs"


def _budget_full(dataset: str) -> str:
    n = {"mnist": "50,000-image static binary MNIST", "omniglot": "19,280-image Omniglot (torchvision substitute)"}
    return (f"REDUCED (cpu preset): ResNet only; every model (the one MR-VAE and each beta-VAE) "
            f"{CPU_FULL_EPOCHS[dataset]} epochs on the full {n.get(dataset, dataset)} training split, batch 128, "
            f"Adam lr {CPU_FULL_LR:g} (linear warm-up over the first {_epochs_text(CPU_FULL_WARMUP_EPOCHS)}, "
            f"then cosine decay), the default (mrvae) recipe with the MR-VAE's gates at x{CPU_FULL_HYPER_LR_MULT:g} "
            f"that lr (= {CPU_FULL_LR * CPU_FULL_HYPER_LR_MULT:g}, what the ResNet's default "
            f"x{recipe_values('mrvae', 'resnet')['hyper_lr_mult']:g} gives at lr 1e-3), "
            "1 seed, no LR grid; evaluation on the full test set (MR-VAE at 20 log-spaced betas and at the 10 "
            "baseline betas) (paper: 200 epochs, LR grid, 3 seeds, ConvNet too)")


def _fig5_binary(dataset: str) -> dict[str, Preset]:
    both = ("constant", "linear")
    out = {}
    for p in PRESETS:
        if p == "cpu":   # the central comparison: ResNet, full split, constant-beta baselines (docs/recipe.md)
            groups = _binary_groups(dataset, "resnet", p, ("constant",))
            secs = _CPU_FULL_SECONDS[dataset]
            out[p] = _preset(p, groups, budget=_budget_full(dataset) + "; constant-beta baselines only",
                             estimate=f"~{secs / 3600:.1f} h on 2 CPU cores (11 ResNet runs)", estimate_s=secs)
            continue
        groups = _binary_groups(dataset, "conv", p, both) + _binary_groups(dataset, "resnet", p, both)
        out[p] = _preset(p, groups)
    return out


def _fig1() -> dict[str, Preset]:
    out = {}
    for p in PRESETS:
        groups = _binary_groups("omniglot", "resnet", p, ("constant", "linear"))
        if p == "cpu":
            secs = 2 * _CPU_FULL_SECONDS["omniglot"]
            out[p] = _preset(p, groups, budget=_budget_full("omniglot"), estimate=f"~{secs / 3600:.1f} h on 2 CPU "
                             "cores (21 ResNet runs); the MR-VAE and constant-beta runs are fig5_omniglot's",
                             estimate_s=secs)
            continue
        out[p] = _preset(p, groups, data_name="Omniglot")
    return out


def _table2() -> dict[str, Preset]:
    out = {}
    for p in PRESETS:
        f5m, f5o = _fig5_binary("mnist")[p], _fig5_binary("omniglot")[p]
        secs = _CPU_FULL_SECONDS["mnist"] + _CPU_FULL_SECONDS["omniglot"]
        out[p] = dataclasses.replace(f5m, groups=f5m.groups + f5o.groups,
                                     budget=(f5m.budget.replace(
                                         f"{CPU_FULL_EPOCHS['mnist']} epochs on the full 50,000-image static binary "
                                         "MNIST training split",
                                         f"{CPU_FULL_EPOCHS['mnist']} (MNIST) / {CPU_FULL_EPOCHS['omniglot']} "
                                         "(Omniglot) epochs on the full training splits")
                                             if p == "cpu" else f5m.budget),
                                     estimate=(f"~{secs / 3600:.1f} h on 2 CPU cores; 0 after fig5_mnist and "
                                               "fig5_omniglot (same runs)") if p == "cpu" else f5m.estimate,
                                     estimate_s=secs if p == "cpu" else None)
    return out


def _colour_base(preset: str, dataset: str) -> dict:
    base = _base(preset)
    if preset == "cpu":
        base["epochs"] = 6
        # the CelebA64 copy here holds 2,400 training images: use all of them
        base["max_train_examples"] = None if dataset == "celeba64" else 8000
    return base


#: Prior samples (and as many test images) per beta for the FID of Fig. 6 (the paper does not state its count).
_FID_SAMPLES = {"smoke": 16, "cpu": 800, "paper": 10_000}


def _fig6_fig7(fig: str) -> dict[str, Preset]:
    out = {}
    for p in PRESETS:
        ev = _eval(p)
        extra = ()
        if fig == "fig7":
            fig7_ev = Evaluation(name=FIG7_RESULTS, betas=FIG7_BETAS, n_betas=len(FIG7_BETAS),
                                 max_examples=ev.max_examples, batch_size=ev.batch_size, images=True,
                                 n_images=8 if p != "smoke" else 4, applies_to=("mr",))
            extra = (fig7_ev,)
        sweep_betas = _betas(p)
        if fig == "fig7" and p != "smoke":
            sweep_betas = tuple(sorted(FIG7_BETAS))
        groups = []
        for dataset in ("omniglot", "svhn", "celeba64"):
            base = _base(p) if dataset == "omniglot" else _colour_base(p, dataset)
            prefix = f"{dataset}_resnet"
            # colour data: FID of prior samples per beta (deep.evaluate records why when the Inception
            # weights are unavailable); the same evaluation in fig6 and fig7 so the shared runs agree
            dev = ev if dataset == "omniglot" else dataclasses.replace(ev, fid_samples=_FID_SAMPLES[p])
            groups.append(_mr(f"{prefix}_mr", "MR-VAE", dataset, "resnet", base, (dev,) + extra))
            groups.append(_sweep(f"{prefix}_beta_linear", dataset, "resnet", base, sweep_betas, "linear", (dev,)))
        budget = None
        if p == "cpu":
            budget = (_BUDGET_CPU.format(epochs=3, n="a fixed 8,000-example Omniglot subset", batch=128, lr=1e-3,
                                         gate_mults=gate_lr_mult_text("mrvae"))
                      + "; CelebA64: 6 epochs on the 2,400 training images available here (substitute subset); "
                      "SVHN: 6 epochs on 8,000 examples when the data exists; beta-VAEs with KL annealing; FID of "
                      f"{_FID_SAMPLES[p]} prior samples per beta against as many test images (when the Inception "
                      "weights are available)")
        if fig == "fig6":
            est = ("~21 min on 2 CPU cores (CelebA64: 11 ResNet runs of 14.4k examples at ~230 examples/s, ~13 min; "
                   "Omniglot: 10 KL-annealed beta-VAEs of 24k examples, ~8 min, and fig8_sensitivity's default "
                   "MR-VAE; SVHN skipped when missing)")
            secs = 1260
        else:
            est = ("~2 min on 2 CPU cores after fig6 (extra evaluations at beta = 10, 1, 0.1, 0.01; the runs are "
                   "shared), else ~10 min")
            secs = 600
        out[p] = _preset(p, groups, budget=budget, estimate=est if p == "cpu" else "",
                         estimate_s=secs if p == "cpu" else None)
    return out


def _fig8_sensitivity() -> dict[str, Preset]:
    ranges = [((0.001, 10.0), "left"), ((0.01, 10.0), "both"), ((0.1, 10.0), "left"), ((1.0, 10.0), "left"),
              ((0.01, 1.0), "middle"), ((0.01, 0.1), "middle")]
    out = {}
    for p in PRESETS:
        base, ev = _base(p), _eval(p)
        groups = [_mr(f"range_a{a:g}_b{b:g}", f"a={a:g}, b={b:g}", "omniglot", "resnet", base, (ev,),
                      params={"a": a, "b": b, "panel": panel},
                      **({} if (a, b) == (0.01, 10.0) else {"beta_a": a, "beta_b": b}))
                  for (a, b), panel in ranges]
        out[p] = _preset(p, groups, estimate="~7 min on 2 CPU cores (6 Omniglot ResNet MR-VAEs of 24k examples "
                         "+ 6 evaluations; the default range's run is also fig9's and fig6's)" if p == "cpu" else "",
                         estimate_s=420 if p == "cpu" else None, data_name="Omniglot")
    return out


#: Kept for result files written before deep.models.convnets had ``shared_hyper``.
SHARED_MLP_UNAVAILABLE = ("deep.models.convnets has no option to share the first hyper-network layer between gates: "
                          "TrainConfig.hyper_hidden builds one independent MLP per gate, so the 'shared 2-layer "
                          "MLP' variant of App. D cannot be built without a new model option")


def _fig9() -> dict[str, Preset]:
    variants = [
        ("hyper_linear", "linear (default)", "hypernetwork", {}),
        ("hyper_mlp2", "2-layer MLP (width 64)", "hypernetwork", {"hyper_hidden": [64]}),
        ("hyper_shared_mlp2", "shared 2-layer MLP (width 64)", "hypernetwork",
         {"model_options": {"shared_hyper": 64}}),
        ("hyper_mlp5", "5-layer MLP (width 64)", "hypernetwork", {"hyper_hidden": [64, 64, 64, 64]}),
        ("enc_sigmoid", "sigmoid (default)", "encoder gate", {}),
        ("enc_sqrt", "sqrt", "encoder gate", {"enc_gate": "sqrt"}),
        ("enc_film", "FiLM", "encoder gate", {"enc_gate": "film"}),
        ("dec_sqrt", "sqrt (default)", "decoder gate", {}),
        ("dec_sigmoid", "sigmoid", "decoder gate", {"dec_gate": "sigmoid"}),
        ("dec_film", "FiLM", "decoder gate", {"dec_gate": "film"}),
    ]
    out = {}
    for p in PRESETS:
        base, ev = _base(p), _eval(p)
        groups = []
        for key, label, panel, over in variants:
            if over is None:
                groups.append(Group(key=key, label=label, kind="mr",
                                    config={**base, "dataset": "omniglot", "arch": "resnet"},
                                    panel=panel, params={"panel": panel}, evaluations=(ev,),
                                    unavailable=SHARED_MLP_UNAVAILABLE))
                continue
            g = _mr(key, label, "omniglot", "resnet", base, (ev,), params={"panel": panel}, **over)
            groups.append(dataclasses.replace(g, panel=panel))
        out[p] = _preset(p, groups, estimate="~9 min on 2 CPU cores (7 new Omniglot ResNet MR-VAEs of 24k "
                         "examples + 8 evaluations; the default is fig8_sensitivity's run)" if p == "cpu" else "",
                         estimate_s=540 if p == "cpu" else None, data_name="Omniglot")
    return out


# -- families written by other modules (deep.models.tcvae, deep.models.text, deep.models.nvae.model) ---------
def _fig8_tcvae() -> dict[str, Preset]:
    out = {}
    for p in PRESETS:
        if p == "smoke":
            base = {"epochs": 1, "batch_size": 32, "max_train_examples": 64, "lr": 1e-3}
            betas, seeds = (0.1, 1.0, 10.0), (0,)
            ev = Evaluation(n_betas=3, betas=(0.1, 1.0, 10.0), max_examples=256, batch_size=64, images=False,
                            mi_examples=256)
            data = {"source": "subgrid"}
        elif p == "cpu":
            # the full factor grid (regenerated once and cached): Chen et al.'s MIG needs it (issue 17); training
            # on a fixed 20,000-image subset, rate / distortion / TC on 20,000 evaluated images, MIG over all
            # 737,280 with 1,000 samples per entropy estimate (the reference uses 10,000)
            base = {"epochs": 3, "batch_size": 256, "max_train_examples": 20000, "lr": 1e-3,
                    "eval_options": {"mig_samples": 1000}}
            betas, seeds = tuple(float(b) for b in np.logspace(-1, 1, 5)), (0, 1)
            ev = Evaluation(n_betas=5, betas=betas, max_examples=20000, batch_size=1000, images=False,
                            mi_examples=5000)
            data = {"source": "generated"}
        else:  # App. C.2.1: Adam, 50 epochs, batch 2048, 3 seeds, 10 betas in [0.1, 10], all dSprites images
            base = {"epochs": 50, "batch_size": 2048, "recipe": "paper"}
            betas, seeds = tuple(float(b) for b in np.logspace(-1, 1, 10)), PAPER_SEEDS
            ev = Evaluation(n_betas=10, betas=tuple(float(b) for b in np.logspace(-1, 1, 10)), max_examples=None,
                            batch_size=2048, images=False, mi_examples=5000)
            data = {"source": "generated"}
        common = {**base, "objective": "tcvae", "data_options": data}
        groups = [
            _mr("dsprites_mlp_mr", "MR-VAE (β-TCVAE objective)", "dsprites", "mlp", common, (ev,),
                beta_a=0.1, beta_b=10.0),
            _sweep("dsprites_mlp_beta_constant", "dsprites", "mlp", common, betas, "constant", (ev,),
                   label="β-TCVAEs"),
        ]
        budget = None
        if p == "cpu":
            budget = ("REDUCED (cpu preset): dSprites full factor grid regenerated here (737,280 images, checked "
                      "against the real subsets), every model 3 epochs on a fixed 20,000-image subset, batch 256, "
                      "Adam lr 1e-3, 2 seeds, 5 β-TCVAE betas in [0.1, 10], the MR-VAE evaluated at the same 5 "
                      "betas; rate, distortion and TC on 20,000 images, MIG (Chen et al.) over the full grid with "
                      "1,000 samples per entropy (paper: 50 epochs on all images, batch 2048, 10 betas, 3 seeds, "
                      "LR grid)")
        elif p == "paper":
            budget = ("paper protocol (App. C.2.1): dSprites (regenerated full factor grid), 50 epochs, batch 2048, "
                      "Adam, LR grid selected by the training loss at beta = 1, 3 seeds, 10 betas in [0.1, 10]")
        out[p] = _preset(p, groups, budget=budget, seeds=seeds, selection_split="train",
                         estimate="~75 min on 2 CPU cores (12 MLP runs of 60k examples, then 20 encodings of the "
                                  "737,280-image grid for the MIG)" if p == "cpu" else "",
                         estimate_s=4500 if p == "cpu" else None)
    return out


def _fig5_yahoo() -> dict[str, Preset]:
    out = {}
    for p in PRESETS:
        if p == "smoke":
            base = {"epochs": 1, "batch_size": 8, "max_train_examples": 16, "lr": 1e-3}
            ev = Evaluation(n_betas=3, max_examples=8, batch_size=8, images=False)
            schedules, betas = ("constant",), SMOKE_BETAS
            data = {"train_split": "valid"}
        elif p == "cpu":
            base = {"epochs": 2, "batch_size": 32, "max_train_examples": 1000, "lr": 1e-3, "grad_clip": 5.0}
            ev = Evaluation(n_betas=10, max_examples=500, batch_size=50, images=False)
            schedules, betas = ("constant",), tuple(float(b) for b in np.logspace(-2, 1, 5))
            data = {"train_split": "valid"}
        else:  # §5.2: Adam, 200 epochs, batch 32, LR halved after 2 stalled validation epochs, clip 5
            base = {"epochs": 200, "batch_size": 32, "grad_clip": 5.0, "lr_schedule": "plateau",
                    "plateau_patience": 2, "plateau_factor": 0.5, "val_split": "valid", "recipe": "paper",
                    "kl_schedule_unit": "epoch"}
            ev = Evaluation(n_betas=20, max_examples=None, batch_size=50, images=False)
            schedules, betas = ("constant", "linear"), BASELINE_BETAS
            data = {}
        common = {**base, "data_options": data}
        # not the paper's: the MR encoder's last-state gate starts as the linear-VAE response lambda / (lambda + beta)
        # (docs/yahoo.md; with open gates the MR-VAE's rate at beta = 0.01 is that of a beta ~ 1 VAE at this budget)
        mr_over = {} if p == "paper" else {"model_options": {"enc_gate_lambda": YAHOO_ENC_GATE_LAMBDA}}
        groups = [_mr("yahoo_lstm_mr", "MR-VAE", "yahoo", "lstm", common, (ev,), **mr_over)]
        groups += [_sweep(f"yahoo_lstm_beta_{s}", "yahoo", "lstm", common, betas, s, (ev,)) for s in schedules]
        budget = None
        if p == "cpu":
            budget = ("REDUCED (cpu preset): Yahoo LSTM VAE trained on yahoo.valid.txt (the 100k training split is "
                      "not available), every model 2 epochs on 1,000 documents, batch 32, Adam lr 1e-3, grad clip "
                      "5, 5 constant-beta baselines, MR-VAE at 10 betas with its encoder's last-state gate initialised "
                      f"as {YAHOO_ENC_GATE_LAMBDA:g} / ({YAHOO_ENC_GATE_LAMBDA:g} + beta) (docs/yahoo.md; the paper's "
                      "gates start open), evaluation on 500 yahoo.test.txt documents "
                      "(paper: 200 epochs, full training split, plateau LR halving, 10 betas with and without KL "
                      "warm-up)")
        elif p == "paper":
            budget = ("paper protocol (§5.2): Yahoo full training split, 200 epochs, batch 32, Adam, LR halved when "
                      "the validation loss stalls 2 epochs, grad clip 5, LR grid selected at beta = 1, 3 seeds, "
                      "10 betas with and without KL warm-up")
        out[p] = _preset(p, groups, budget=budget,
                         estimate="~30 min on 2 CPU cores (6 LSTM runs of 2,000 documents at ~10 documents/s, "
                                  "the 20k-word softmax dominates; measured ~3 documents/s on a loaded machine)"
                         if p == "cpu" else "", estimate_s=1800 if p == "cpu" else None)
    return out


def _fig5_nvae() -> dict[str, Preset]:
    """NVAE settings follow deep.models.nvae.model.recommended_training (Adamax, cosine decay; paper: weight decay 3e-4,
    min lr 1e-4, beta-NVAE baselines with constant KL and with a 30% KL warm-up)."""
    out = {}
    nvae_betas = tuple(float(b) for b in np.logspace(-2, 1, 4))  # the paper's 4 NVAE baselines
    for p in PRESETS:
        if p == "smoke":
            base = {"epochs": 1, "batch_size": 16, "max_train_examples": 32, "lr": 1e-2, "optimizer": "adamax",
                    "model_options": {"preset": "small"}}
            ev, datasets, betas = Evaluation(n_betas=3, max_examples=16, batch_size=16, n_images=4), ("mnist",), \
                SMOKE_BETAS
            schedules = ("constant",)
        elif p == "cpu":
            base = {"epochs": 5, "batch_size": 64, "max_train_examples": 20000, "lr": 1e-2, "optimizer": "adamax",
                    "model_options": {"preset": "small"}}
            ev = Evaluation(n_betas=10, max_examples=1000, batch_size=100)
            datasets, betas, schedules = ("mnist", "omniglot"), nvae_betas, ("constant",)
        else:  # §5.2: Adamax, 400 epochs, batch 256 (binary) / 16 (CelebA64), 4 baseline betas
            base = {"epochs": 400, "batch_size": 256, "optimizer": "adamax", "recipe": "paper",
                    "weight_decay": 3e-4, "min_lr": 1e-4, "kl_schedule_unit": "epoch",
                    "model_options": {"preset": "paper"}}
            ev = _PAPER_EVAL
            datasets, betas, schedules = ("mnist", "omniglot", "celeba64"), nvae_betas, ("constant", "linear")
        groups = []
        for d in datasets:
            cfg = dict(base)
            extra: dict = {}
            if d == "celeba64":
                cfg["batch_size"] = 16
                extra = {"units": "bpd", "dims": 3 * 64 * 64}
            mr_over = {"kl_schedule": "linear"} if d == "celeba64" else {}
            groups.append(dataclasses.replace(_mr(f"{d}_nvae_mr", "MR-VAE", d, "nvae", cfg, (ev,), **mr_over),
                                              **extra))
            for s in schedules:
                groups.append(dataclasses.replace(_sweep(f"{d}_nvae_beta_{s}", d, "nvae", cfg, betas, s, (ev,)),
                                                  **extra))
        budget = None
        if p == "cpu":
            budget = ("REDUCED (cpu preset): a small NVAE (model preset 'small': 1 scale, 3 groups of 4 latents) on "
                      "binary MNIST and Omniglot, every model 5 epochs on 20,000 training images, batch 64, Adamax "
                      "lr 1e-2, 4 constant-KL baseline betas, MR-VAE at 10 betas, evaluation on 1,000 test images "
                      "(paper: full NVAE, 400 epochs, MNIST, Omniglot and CelebA64)")
        elif p == "paper":
            budget = ("paper protocol (§5.2): NVAE (preset 'paper'), Adamax, 400 epochs, batch 256 (CelebA64: 16), "
                      "cosine decay, LR grid {3e-2, 1e-2, 3e-3} (history scripts), 4 baseline betas with constant "
                      "KL and with KL warm-up, 3 seeds; CelebA64 MR-VAE with a KL warm-up over the first 30% "
                      "(a linear ramp here; the paper holds a small constant)")
        out[p] = _preset(p, groups, budget=budget, lrs=(3e-2, 1e-2, 3e-3) if p == "paper" else None,
                         estimate="~35 min on 2 CPU cores (10 small-NVAE runs of 100,000 examples; the previous "
                                  "preset's 5 runs of 6,000 took 65 s on 1 loaded thread, ~500 images/s)"
                                  if p == "cpu" else "",
                         estimate_s=2100 if p == "cpu" else None)
    return out


def _fig4_presets() -> dict[str, Preset]:
    labels = {"smoke": "REDUCED (smoke preset): 1 epoch of the linear VAEs on 6,000 images (pipeline check)",
              "cpu": "REDUCED (cpu preset = `mrvae-cli linear compare`, its default preset): 30 epochs, lr 1e-2, "
                     "1 seed, exp_min covariance gates (paper: 200 epochs, LR grid, 3 seeds, sigmoid gates)",
              "paper": "paper protocol (`mrvae-cli linear compare --preset paper`, App. C.1)"}
    estimate = "~2 min on 2 quiet CPU cores (90 s measured)"
    return {p: Preset(p, (), labels[p], estimate if p == "cpu" else "", 120 if p == "cpu" else None, None, (0,),
                      "valid", p == "paper") for p in PRESETS}


def _table1_presets() -> dict[str, Preset]:
    """Parameter counts do not depend on a training budget: the cpu and paper presets count the same models
    (every Table 1 ConvNet/ResNet row, the NVAE at its 'paper' and 'small' model presets); smoke skips the
    paper-size NVAE."""
    full = ("parameter counts of the models of Table 1 (ConvNet and ResNet per dataset, NVAE at its 'paper' "
            "model preset and at the 'small' one trained at --preset cpu), built on the CPU; nothing trained, "
            "no data read; the same at the cpu and paper presets")
    labels = {"smoke": "REDUCED (smoke preset): parameter counts of the ConvNet/ResNet rows of Table 1 and of the "
                       "small NVAE only (the paper-size NVAE is not built); nothing trained",
              "cpu": full, "paper": full}
    estimate = "~5 s on 1 CPU core (the models are built, not trained)"
    return {p: Preset(p, (), labels[p], estimate if p == "cpu" else "", 5 if p == "cpu" else None, None, (0,),
                      "valid", p != "smoke") for p in PRESETS}


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in [
    Experiment("fig4", "Fig. 4: linear VAE on MNIST, MR-VAE vs 10 beta-VAEs vs the exact optimum", ("fig4",),
               _fig4_presets(), runner=run_linear),
    Experiment("table1", "Table 1: parameter counts of beta-VAEs and MR-VAEs (ConvNet, ResNet, NVAE)",
               ("table1",), _table1_presets(), runner=run_table1),
    Experiment("fig1", "Fig. 1: Omniglot ResNet RD curve (VAE, beta-VAEs with/without KL annealing, MR-VAE) "
               "with parameter counts and training times", ("fig1",), _fig1()),
    Experiment("fig5_mnist", "Fig. 5 (MNIST panels): ConvNet and ResNet, MR-VAE vs the 10-beta sweep",
               ("fig5", "table2"), _fig5_binary("mnist")),
    Experiment("fig5_omniglot", "Fig. 5 (Omniglot panels): ConvNet and ResNet, MR-VAE vs the 10-beta sweep",
               ("fig5", "table2"), _fig5_binary("omniglot")),
    Experiment("fig5_yahoo", "Fig. 5 (Yahoo panel): LSTM text VAE", ("fig5",), _fig5_yahoo(),
               requires=("deep.models.text",)),
    Experiment("fig5_nvae", "Fig. 5 (NVAE panels): MNIST, Omniglot, CelebA64 (bits/dim)", ("fig5",),
               _fig5_nvae(), requires=("deep.models.nvae.model",)),
    Experiment("fig6", "Fig. 6: active units and FID vs beta (Omniglot, SVHN, CelebA64)", ("fig6",),
               _fig6_fig7("fig6"),
               notes="FID needs Inception-v3 FID weights, which are not available offline; rd.json has no "
                     "'fid' array, so the FID panels are marked missing"),
    Experiment("fig7", "Fig. 7: prior samples across beta (same z per column)", ("fig7",), _fig6_fig7("fig7")),
    Experiment("fig8_sensitivity", "Fig. 8 (left, middle): sensitivity to the sampling range [a, b]",
               ("fig8",), _fig8_sensitivity()),
    Experiment("fig8_tcvae", "Fig. 8 (right): MIG vs beta, beta-TCVAE vs MR-VAE on dSprites", ("fig8",),
               _fig8_tcvae(), requires=("deep.models.tcvae", "deep.data.dsprites")),
    Experiment("fig9", "Fig. 9: hypernetwork architecture and gate-function ablations (Omniglot ResNet)",
               ("fig9",), _fig9()),
    Experiment("table2", "Table 2: lowest test negative ELBO with its rate and distortion (MNIST, Omniglot)",
               ("table2",), _table2()),
]}

#: ``run all`` order: the experiments whose runs others reuse come first.
RUN_ALL_ORDER = ("fig4", "table1", "fig5_omniglot", "fig5_mnist", "fig1", "table2", "fig8_sensitivity", "fig9",
                 "fig6", "fig7", "fig8_tcvae", "fig5_yahoo", "fig5_nvae")
assert sorted(RUN_ALL_ORDER) == sorted(EXPERIMENTS)


def get_experiment(name: str) -> Experiment:
    """The registered experiment ``name`` (:class:`ExperimentError` lists the valid names)."""
    if name not in EXPERIMENTS:
        raise ExperimentError(f"unknown experiment {name!r}; choose one of: {', '.join(RUN_ALL_ORDER)} (or 'all')")
    return EXPERIMENTS[name]


def missing_requirements(experiment: Experiment) -> list[str]:
    """The modules in ``experiment.requires`` that cannot be imported in this checkout."""
    missing = []
    for mod in experiment.requires:
        try:
            found = importlib.util.find_spec(mod) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(mod)
    return missing
