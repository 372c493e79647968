"""The paper's experiments as data, and the runner that trains and evaluates them into a results root.

An *experiment* (one per figure or table, e.g. ``fig5_mnist``) has three *presets*:

* ``smoke``: seconds on a CPU; checks the pipeline end to end (tests use it); numbers are meaningless;
* ``cpu``: what a 2-core machine finishes in about 1.5 h for the image experiments (about 3 h with the
  beta-TCVAE, LSTM and NVAE families); every result is labelled ``REDUCED: ...``;
* ``paper``: the App. C protocol (200 epochs, the learning-rate grid {1e-2 ... 1e-5} selected at beta = 1 on
  the validation split, 3 seeds), GPU-sized.

A preset is a list of *groups* (one curve or set of points of a figure): an MR-VAE (``kind="mr"``) or a
beta-VAE sweep (``kind="sweep"``, one KL schedule, several betas). Every run of a group is one
:class:`deep.train.TrainConfig` (all groups of a comparison share the same training settings), trained
with :func:`deep.train.train` and evaluated with :func:`deep.evaluate.evaluate_run`.

Layout of a results root (default ``results/<preset>/``)::

    runs/<dataset>_<arch>/<tag>_lr<lr>_s<seed>_<hash>/   one run folder per distinct training config
        config.json, metrics.jsonl, checkpoint.pt, summary.json, results/rd.json (+ images/)
    manifests/<experiment>.json                          which runs and rd.json files make the figure

Run folders are named by a hash of the non-default training fields, so experiments that need the same
model (Fig. 1, Fig. 5 Omniglot, Table 2, Fig. 8's default range, Fig. 9's default gates) share one run.
Running an experiment again skips finished runs and evaluations, resumes interrupted ones, and rewrites
the manifest. Paths in a manifest are relative to the results root.

Typical use::

    from deep.experiments.paper import run_experiment
    manifest = run_experiment("fig8_sensitivity", preset="cpu")     # results/cpu/manifests/fig8_sensitivity.json
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import importlib.util
import json
import math
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

__all__ = [
    "PRESETS", "PAPER_LRS", "PAPER_SEEDS", "BASELINE_BETAS", "ExperimentError", "Evaluation", "Group",
    "Preset", "Experiment", "EXPERIMENTS", "RUN_ALL_ORDER", "get_experiment", "run_experiment",
    "run_all", "run_command", "default_results_root", "manifest_path", "config_hash", "run_folder_name",
    "missing_requirements", "CachedLoader",
]

PRESETS = ("smoke", "cpu", "paper")
#: The paper's learning-rate grid (App. C) and seeds.
PAPER_LRS = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5)
PAPER_SEEDS = (0, 1, 2)
#: The paper's 10 baseline betas, np.logspace(-2, 1, 10).
BASELINE_BETAS = tuple(float(b) for b in np.logspace(-2, 1, 10))
SMOKE_BETAS = (0.01, 1.0, 10.0)
#: Rows of Fig. 7 (prior samples across beta).
FIG7_BETAS = (10.0, 1.0, 0.1, 0.01)
MANIFEST_KIND = "mrvae experiment manifest"
MANIFEST_VERSION = 1


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

    name: str = "rd.json"
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
                        out.append((g, _run_fields(g, lr, seed, beta)))
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
    #: for an experiment outside the deep trainer (Fig. 4: the linear VAE), ``runner(preset, root, runtime,
    #: say) -> (status, reason)`` does the whole work; its presets then have no groups
    runner: Callable[..., tuple[str, str | None]] | None = None

    def preset(self, name: str) -> Preset:
        if name not in self.presets:
            raise ExperimentError(f"unknown preset {name!r} for {self.name}; choose one of {list(PRESETS)}")
        return self.presets[name]


def _run_fields(group: Group, lr: float, seed: int, beta: float | None) -> dict:
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
_PAPER_TRAIN = {"epochs": 200, "batch_size": 128, "hyper_lr_mult": 1.0, "kl_schedule_unit": "epoch",
                "min_lr": 1e-6}
_PAPER_EVAL = Evaluation(n_betas=20, max_examples=None, batch_size=100, n_images=8)

_BUDGET_SMOKE = ("REDUCED (smoke preset): 1 epoch on at most 64 training examples, 3 betas per sweep, evaluation "
                 "on a few test examples; checks the pipeline only, the numbers mean nothing")
_BUDGET_CPU = ("REDUCED (cpu preset): every model {epochs} epochs on {n}, batch {batch}, Adam lr {lr:g} with "
               "cosine decay (gate hyper-networks at lr x30), 1 seed, no LR grid; MR-VAE curves at 20 "
               "log-spaced betas; evaluation on the first 2,000 test examples (paper: 200 epochs, full "
               "splits, LR grid, 3 seeds)")
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
                                 batch=_CPU_TRAIN["batch_size"], lr=_CPU_TRAIN["lr"])
    return Preset(name, tuple(groups), budget or default, estimate, estimate_s, lrs, seeds or (0,),
                  selection_split, False)


def _binary_groups(dataset: str, arch: str, preset: str, schedules: tuple[str, ...],
                   extra_evals: tuple[Evaluation, ...] = ()) -> list[Group]:
    base, ev = _base(preset), (_eval(preset),) + extra_evals
    prefix = f"{dataset}_{arch}"
    groups = [_mr(f"{prefix}_mr", "MR-VAE", dataset, arch, base, ev)]
    for s in schedules:
        groups.append(_sweep(f"{prefix}_beta_{s}", dataset, arch, base, _betas(preset), s, ev))
    return groups


def _fig5_binary(dataset: str) -> dict[str, Preset]:
    both = ("constant", "linear")
    out = {}
    for p in PRESETS:
        # cpu: the ConvNet baselines only with constant beta (the ConvNet is 2.5x slower per example)
        conv_s = ("constant",) if p == "cpu" else both
        groups = _binary_groups(dataset, "conv", p, conv_s) + _binary_groups(dataset, "resnet", p, both)
        budget = None
        if p == "cpu":
            budget = _BUDGET_CPU.format(epochs=3, n=f"a fixed 8,000-example {_NAMES[dataset]} training subset",
                                        batch=128, lr=1e-3) + "; ConvNet baselines with constant beta only"
        out[p] = _preset(p, groups, budget=budget, estimate="~34 min on 2 CPU cores (21 ResNet runs at ~600 "
                         "examples/s, 11 ConvNet runs at ~250 examples/s, 24k examples each)" if p == "cpu" else "",
                         estimate_s=2040 if p == "cpu" else None)
    return out


def _fig1() -> dict[str, Preset]:
    out = {}
    for p in PRESETS:
        groups = _binary_groups("omniglot", "resnet", p, ("constant", "linear"))
        out[p] = _preset(p, groups, estimate="~15 min on 2 CPU cores (21 ResNet runs); 0 after fig5_omniglot "
                         "(same runs)" if p == "cpu" else "", estimate_s=900 if p == "cpu" else None,
                         data_name="Omniglot")
    return out


def _table2() -> dict[str, Preset]:
    out = {}
    for p in PRESETS:
        f5m, f5o = _fig5_binary("mnist")[p], _fig5_binary("omniglot")[p]
        out[p] = dataclasses.replace(f5m, groups=f5m.groups + f5o.groups,
                                     budget=f5m.budget.replace("MNIST training subset", "MNIST / Omniglot "
                                                               "training subset"),
                                     estimate=("~68 min on 2 CPU cores; 0 after fig5_mnist and fig5_omniglot "
                                               "(same runs)") if p == "cpu" else f5m.estimate,
                                     estimate_s=4080 if p == "cpu" else None)
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
            fig7_ev = Evaluation(name="rd_fig7.json", betas=FIG7_BETAS, n_betas=len(FIG7_BETAS),
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
            budget = (_BUDGET_CPU.format(epochs=3, n="a fixed 8,000-example Omniglot subset", batch=128, lr=1e-3)
                      + "; CelebA64: 6 epochs on the 2,400 training images available here (substitute subset); "
                      "SVHN: 6 epochs on 8,000 examples when the data exists; beta-VAEs with KL annealing; FID of "
                      f"{_FID_SAMPLES[p]} prior samples per beta against as many test images (when the Inception "
                      "weights are available)")
        if fig == "fig6":
            est = ("~13 min on 2 CPU cores (CelebA64: 11 ResNet runs of 14.4k examples at ~230 examples/s; "
                   "Omniglot shared with fig5_omniglot, else +8 min; SVHN skipped when missing)")
            secs = 780
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
                         "+ 6 evaluations; the default range is shared with fig5_omniglot)" if p == "cpu" else "",
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
        out[p] = _preset(p, groups, estimate="~9 min on 2 CPU cores (6 new Omniglot ResNet MR-VAEs of 24k "
                         "examples + 7 evaluations; the default is shared with fig5_omniglot)" if p == "cpu" else "",
                         estimate_s=540 if p == "cpu" else None, data_name="Omniglot")
    return out


# -- families written by other modules (deep.models.tcvae, deep.models.text, deep.models.nvae.model) --------------------
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
            base = {"epochs": 3, "batch_size": 256, "max_train_examples": 20000, "lr": 1e-3}
            betas, seeds = tuple(float(b) for b in np.logspace(-1, 1, 5)), (0, 1)
            ev = Evaluation(n_betas=10, betas=tuple(float(b) for b in np.logspace(-1, 1, 10)), max_examples=None,
                            batch_size=256, images=False, mi_examples=5000)
            data = {"source": "subgrid"}
        else:  # App. C.2.1: Adam, 50 epochs, batch 2048, 3 seeds, 10 betas in [0.1, 10], all dSprites images
            base = {"epochs": 50, "batch_size": 2048, "hyper_lr_mult": 1.0}
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
            budget = ("REDUCED (cpu preset): dSprites regular sub-grid (46,080 real images), every model 3 epochs "
                      "on a fixed 20,000-image subset, batch 256, Adam lr 1e-3, 2 seeds, 5 β-TCVAE betas in "
                      "[0.1, 10] (paper: 50 epochs on all 737,280 images, batch 2048, 10 betas, 3 seeds, LR grid)")
        elif p == "paper":
            budget = ("paper protocol (App. C.2.1): dSprites (regenerated full factor grid), 50 epochs, batch 2048, "
                      "Adam, LR grid selected by the training loss at beta = 1, 3 seeds, 10 betas in [0.1, 10]")
        out[p] = _preset(p, groups, budget=budget, seeds=seeds, selection_split="train",
                         estimate="~25 min on 2 CPU cores (12 MLP runs of 60k examples at ~650 examples/s + MIG; "
                                  "an estimate: deep.models.tcvae is not measured here)" if p == "cpu" else "",
                         estimate_s=1500 if p == "cpu" else None)
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
                    "plateau_patience": 2, "plateau_factor": 0.5, "val_split": "valid", "hyper_lr_mult": 1.0,
                    "kl_schedule_unit": "epoch"}
            ev = Evaluation(n_betas=20, max_examples=None, batch_size=50, images=False)
            schedules, betas = ("constant", "linear"), BASELINE_BETAS
            data = {}
        common = {**base, "data_options": data}
        groups = [_mr("yahoo_lstm_mr", "MR-VAE", "yahoo", "lstm", common, (ev,))]
        groups += [_sweep(f"yahoo_lstm_beta_{s}", "yahoo", "lstm", common, betas, s, (ev,)) for s in schedules]
        budget = None
        if p == "cpu":
            budget = ("REDUCED (cpu preset): Yahoo LSTM VAE trained on yahoo.valid.txt (the 100k training split is "
                      "not available), every model 2 epochs on 1,000 documents, batch 32, Adam lr 1e-3, grad clip "
                      "5, 5 constant-beta baselines, MR-VAE at 10 betas, evaluation on 500 yahoo.test.txt documents "
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
            base = {"epochs": 400, "batch_size": 256, "optimizer": "adamax", "hyper_lr_mult": 1.0,
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
                         estimate_s=1800 if p == "cpu" else None)
    return out


#: Fig. 4's presets map onto ``mrvae-cli linear compare --preset``
_LINEAR_PRESETS = {"smoke": "smoke", "cpu": "default", "paper": "paper"}


def _run_linear(preset: str, root: Path, runtime: dict, *, say: Callable[[str], None],
                progress: bool = False) -> tuple[str, str | None]:
    """Fig. 4: ``mrvae-cli linear compare --preset {smoke|default|paper} --out <root>/linear``."""
    from linvae.experiment import PRESETS as LINEAR_PRESETS, run_linear_compare

    cfg = LINEAR_PRESETS[_LINEAR_PRESETS[preset]]
    updates: dict[str, Any] = {}
    if runtime.get("threads"):
        updates["threads"] = int(runtime["threads"])
    if runtime.get("device") and runtime["device"] != "auto":
        updates["device"] = runtime["device"]
    cfg = dataclasses.replace(cfg, **updates)
    out = root / "linear"
    say(f" linear VAE, preset {cfg.preset}: {cfg.protocol_label()} -> {out / 'results.json'}")
    run_linear_compare(cfg, out, data_dir=runtime.get("data_dir"), progress=progress)
    return "complete", None


def _fig4_presets() -> dict[str, Preset]:
    labels = {"smoke": "REDUCED (smoke preset): 1 epoch of the linear VAEs on 6,000 images (pipeline check)",
              "cpu": "REDUCED (cpu preset = `mrvae-cli linear compare`, its default preset): 30 epochs, lr 1e-2, "
                     "1 seed, exp_min covariance gates (paper: 200 epochs, LR grid, 3 seeds, sigmoid gates)",
              "paper": "paper protocol (`mrvae-cli linear compare --preset paper`, App. C.1)"}
    estimate = "~2 min on 2 quiet CPU cores (90 s measured)"
    return {p: Preset(p, (), labels[p], estimate if p == "cpu" else "", None, None, (0,),
                      "valid", p == "paper") for p in PRESETS}


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in [
    Experiment("fig4", "Fig. 4: linear VAE on MNIST, MR-VAE vs 10 beta-VAEs vs the exact optimum", ("fig4",),
               _fig4_presets(), runner=_run_linear),
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
RUN_ALL_ORDER = ("fig4", "fig5_omniglot", "fig5_mnist", "fig1", "table2", "fig8_sensitivity", "fig9", "fig6", "fig7",
                 "fig8_tcvae", "fig5_yahoo", "fig5_nvae")
assert sorted(RUN_ALL_ORDER) == sorted(EXPERIMENTS)


def get_experiment(name: str) -> Experiment:
    """The registered experiment ``name`` (:class:`ExperimentError` lists the valid names)."""
    if name not in EXPERIMENTS:
        raise ExperimentError(f"unknown experiment {name!r}; choose one of: {', '.join(RUN_ALL_ORDER)} (or 'all')")
    return EXPERIMENTS[name]


# ------------------------------------------------------------------------------------------
# paths, names, availability
# ------------------------------------------------------------------------------------------
def default_results_root(preset: str) -> Path:
    return Path("results") / preset


def manifest_path(results_root: str | os.PathLike, experiment: str) -> Path:
    return Path(results_root) / "manifests" / f"{experiment}.json"


def run_command(experiment: str, preset: str = "cpu", results_root: str | os.PathLike | None = None) -> str:
    """The command line that produces ``experiment``'s manifest."""
    cmd = f"mrvae-cli experiment run {experiment} --preset {preset}"
    if results_root is not None and Path(results_root) != default_results_root(preset):
        cmd += f" --results {results_root}"
    return cmd


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


def _train_module():
    from deep import train as T  # lazy: torch is imported only when running experiments
    return T


def _defaults() -> dict:
    T = _train_module()
    out = {}
    for f in dataclasses.fields(T.TrainConfig):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out


def _canon(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_canon(v) for v in value]
    if isinstance(value, list):
        return [_canon(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _canon(v) for k, v in sorted(value.items())}
    return value


def config_hash(config_dict: dict) -> str:
    """10 hex digits identifying a training configuration: a hash of the fields that differ from the
    TrainConfig defaults, runtime fields (device, threads, paths, evaluation sizes) excluded, so the hash
    stays the same when new fields with defaults are added to TrainConfig."""
    T = _train_module()
    defaults = _defaults()
    runtime = set(getattr(T, "RUNTIME_FIELDS", ())) | {"device", "num_threads", "out_dir", "data_dir", "run_name",
                                                        "download", "n_betas", "iw_k", "eval_batch_size"}
    relevant = {}
    for k, v in config_dict.items():
        if k in runtime:
            continue
        if k in defaults and _canon(defaults[k]) == _canon(v):
            continue
        relevant[k] = _canon(v)
    text = json.dumps(relevant, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def run_folder_name(config_dict: dict) -> str:
    """``<mr|beta<b>_<schedule>>_lr<lr>_s<seed>_<hash>`` (readable, and unique per training config)."""
    if config_dict.get("mr", True):
        tag = "mr"
    else:
        tag = f"beta{float(config_dict['beta']):.4g}_{config_dict.get('kl_schedule', 'constant')}"
    return f"{tag}_lr{float(config_dict['lr']):g}_s{int(config_dict.get('seed', 0))}_{config_hash(config_dict)}"


# ------------------------------------------------------------------------------------------
# the runner
# ------------------------------------------------------------------------------------------
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _write_json_atomic(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _rd_matches(path: Path, ev: Evaluation, kind: str) -> bool:
    """Whether an existing result file was written with ``ev``'s beta grid and example count."""
    try:
        rd = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    betas = rd.get("beta")
    if not isinstance(betas, list) or not betas:
        return False
    if kind == "mr":
        if ev.betas is not None:
            if len(betas) != len(ev.betas) or not np.allclose(sorted(betas), sorted(ev.betas), rtol=1e-9):
                return False
        elif len(betas) != ev.n_betas:
            return False
    n = (rd.get("evaluation") or {}).get("n_examples")
    if ev.max_examples is not None and n is not None and n > ev.max_examples:
        return False
    if ev.max_examples is None and n is not None:
        total = (rd.get("protocol") or {}).get("n") if isinstance(rd.get("protocol"), dict) else None
        if total is not None and n < total:
            return False
    if ev.fid_samples and "fid" not in rd and "fid" not in (rd.get("estimators") or {}):
        return False
    return True


def _selection_evaluation(preset: Preset) -> Evaluation:
    return Evaluation(name=f"rd_select_{preset.selection_split}.json", betas=(1.0,), n_betas=1,
                      max_examples=None, batch_size=100, images=False, split=preset.selection_split)


def _needs_selection(preset: Preset) -> bool:
    return preset.lrs is not None and len(preset.lrs) > 1


def _selection_member(group: Group) -> float | None:
    """The sweep member used for LR selection: the beta closest to 1 (log scale)."""
    if group.kind != "sweep":
        return None
    return min(group.betas, key=lambda b: abs(math.log(b)))


def _train_and_evaluate(fields: dict, group: Group, evaluations: list[Evaluation], *, root: Path,
                        data_factory: Callable | None, progress: bool, say: Callable[[str], None],
                        device: str) -> dict:
    T = _train_module()
    from deep.evaluate import evaluate_run
    from deep.train.runs import RunPaths, read_json

    config = T.TrainConfig(**fields)
    run_dir = T.run_dir_for(config)
    paths = RunPaths(run_dir)
    record: dict[str, Any] = {"lr": config.lr, "seed": config.seed,
                              "beta": None if config.mr else config.beta,
                              "run_dir": _rel(run_dir, root), "results": {}}
    if paths.summary.exists():
        record["trained"] = "skipped (already complete)"
    else:
        resume = paths.checkpoint.exists()
        say(f"  {'resuming' if resume else 'training'} {run_dir.name} ({config.epochs} epoch(s))")
        data = data_factory(config, "train") if data_factory else None
        t0 = time.perf_counter()
        T.train(config, resume=resume, data=data, progress=progress, log=None)
        record["trained"] = f"trained in {time.perf_counter() - t0:.1f} s" + (" (resumed)" if resume else "")
    summary = read_json(paths.summary) if paths.summary.exists() else {}
    cfg_json = read_json(paths.config) if paths.config.exists() else {}
    record["train_time_s"] = summary.get("time_s")
    record["examples_per_s"] = summary.get("examples_per_s")
    record["n_params"] = summary.get("n_params", cfg_json.get("n_params"))
    record["epochs"] = summary.get("epochs")
    record["n_train"] = cfg_json.get("n_train")
    for ev in evaluations:
        if group.kind not in ev.applies_to:
            continue
        out = paths.results / ev.name
        if out.exists() and _rd_matches(out, ev, group.kind):
            record["results"][ev.name] = _rel(out, root)
            continue
        say(f"  evaluating {run_dir.name} -> results/{ev.name}")
        data = data_factory(config, ev.split) if data_factory else None
        kw = ev.kwargs()
        if group.kind != "mr":
            kw.pop("betas")
        evaluate_run(run_dir, **kw, device=device, data=data, data_dir=config.data_dir, progress=progress)
        record["results"][ev.name] = _rel(out, root)
    record["status"] = "complete"
    return record


class CachedLoader:
    """``callable(config, split) -> data``: the real splits (via the dataset's loader in
    :mod:`deep.models.registry`), each loaded once per (dataset, split, data options, data root) and reused by
    every run of an experiment (loading Yahoo or the Omniglot PNGs takes seconds each time)."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def __call__(self, config: Any, split: str) -> Any:
        key = json.dumps([config.dataset, split, _canon(dict(config.data_options or {})), config.data_dir,
                          bool(config.download)], sort_keys=True, default=str)
        if key not in self._cache:
            T = _train_module()
            load = getattr(T, "load_data", None)
            if load is not None:
                self._cache[key] = load(config, split)
            elif split == "train":
                from deep.train.loop import load_train_data
                self._cache[key] = load_train_data(config)
            else:
                from deep.evaluate import load_eval_data
                self._cache[key] = load_eval_data(config, split)
        return self._cache[key]


def _select_lr(group_rec: dict, group: Group, preset: Preset, root: Path) -> None:
    """Fill ``selected_lr`` and ``selection`` of a group record (App. C: lowest loss at beta = 1)."""
    runs = [r for r in group_rec["runs"] if r.get("status") == "complete"]
    if not runs:
        group_rec["selected_lr"] = None
        return
    if not _needs_selection(preset):
        group_rec["selected_lr"] = runs[0]["lr"]
        group_rec["selection"] = {"criterion": "single learning rate (no grid)"}
        return
    ev = _selection_evaluation(preset)
    member = _selection_member(group)
    per_lr: dict[str, list[float]] = {}
    for r in runs:
        if member is not None and not math.isclose(r["beta"], member, rel_tol=1e-9):
            continue
        path = r["results"].get(ev.name)
        if not path:
            continue
        rd = json.loads((root / path).read_text())
        j = int(np.argmin([abs(math.log(b)) for b in rd["beta"]]))
        per_lr.setdefault(f"{r['lr']:g}", []).append(float(rd["loss"][j]))
    if not per_lr:
        group_rec["selected_lr"] = None
        group_rec["selection"] = {"criterion": "no complete selection run"}
        return
    means = {lr: float(np.mean(v)) for lr, v in per_lr.items()}
    best = min(means, key=means.get)
    group_rec["selected_lr"] = float(best)
    group_rec["selection"] = {
        "criterion": (f"lowest mean-over-seeds loss D + beta R at beta = {member if member else 1:g} on the "
                      f"{preset.selection_split} split"
                      + (" (the sweep's beta = 1 run)" if member is not None else " (MR-VAE queried at beta = 1)")),
        "mean_loss_per_lr": means, "seeds_per_lr": {lr: len(v) for lr, v in per_lr.items()}}


def _unavailable_config(fields: dict) -> str | None:
    """Why ``fields`` cannot become a TrainConfig in this checkout (unknown fields), else None."""
    T = _train_module()
    known = {f.name for f in dataclasses.fields(T.TrainConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        return (f"TrainConfig has no field(s) {unknown} yet (deep/train.py must add them; see "
                "notes/families.md)")
    return None


def run_experiment(name: str, preset: str = "cpu", results_root: str | os.PathLike | None = None, *,
                   data_dir: str | None = None, device: str = "auto", threads: int | None = None,
                   progress: bool = False, log: Callable[[str], None] | None = None,
                   data_factory: Callable[[Any, str], Any] | None = None, strict: bool = False) -> dict:
    """Train and evaluate every run of experiment ``name`` at ``preset``; write and return its manifest.

    Parameters
    ----------
    results_root: default ``results/<preset>``. data_dir, device, threads: passed to every run (runtime
        settings; they do not change run folder names). progress: tqdm bars. log: callable(str).
    data_factory: ``callable(config, split) -> data object`` (tests: synthetic data); ``None``: the real
        splits through :class:`CachedLoader` (each split loaded once per call).
    strict: re-raise the first training/evaluation error instead of recording it as a failed run.

    Missing modules (``requires``) or TrainConfig fields make the experiment ``unavailable``; missing data
    makes a group ``unavailable``; a failing run is recorded as ``failed`` (with the error) and the others
    continue. Returns the manifest dict (``manifest["path"]`` is where it was written).
    """
    if preset not in PRESETS:
        raise ExperimentError(f"unknown preset {preset!r}; choose one of {list(PRESETS)}")
    exp = get_experiment(name)
    spec = exp.preset(preset)
    root = Path(results_root) if results_root is not None else default_results_root(preset)
    root.mkdir(parents=True, exist_ok=True)
    say = log or (lambda msg: None)
    mpath = manifest_path(root, name)
    t_start = time.perf_counter()
    manifest: dict[str, Any] = {
        "kind": MANIFEST_KIND, "version": MANIFEST_VERSION, "experiment": name, "title": exp.title,
        "figures": list(exp.figures), "preset": preset, "paper_protocol": spec.paper_protocol,
        "budget": spec.budget, "estimate": spec.estimate, "status": "running", "reason": None,
        "requires": list(exp.requires), "notes": exp.notes,
        "lrs": list(spec.lrs) if spec.lrs else None, "seeds": list(spec.seeds),
        "selection_split": spec.selection_split if _needs_selection(spec) else None,
        "command": run_command(name, preset, root), "runtime": {"device": device, "threads": threads,
                                                                "data_dir": data_dir},
        "started": _now(), "updated": _now(), "wall_time_s": 0.0, "groups": [],
    }
    group_recs = []
    for g in spec.groups:
        rec = g.to_dict()
        rec.update({"status": "pending", "reason": None, "runs": [], "selected_lr": None})
        if g.unavailable:
            rec.update(status="unavailable", reason=g.unavailable)
        group_recs.append(rec)
    manifest["groups"] = group_recs

    def flush() -> None:
        manifest["updated"] = _now()
        manifest["wall_time_s"] = round(time.perf_counter() - t_start, 3)
        _write_json_atomic(mpath, manifest)

    missing = missing_requirements(exp)
    if not missing:
        all_fields: dict = {}
        for _, fields in spec.runs():
            all_fields.update(fields)
        why = _unavailable_config(all_fields)
        if why:
            missing = [why]
    if missing:
        reason = ("requires " + ", ".join(missing)) if all(m.startswith("deep.") for m in missing) else missing[0]
        manifest.update(status="unavailable", reason=f"unavailable: {reason}")
        for rec in group_recs:
            if rec["status"] != "unavailable":
                rec.update(status="unavailable", reason=manifest["reason"])
        flush()
        say(f"{name}: {manifest['reason']} (manifest written: {mpath})")
        manifest["path"] = str(mpath)
        return manifest

    from linvae.dataroot import DatasetMissingError

    if exp.runner is not None:
        say(f"{name} [{preset}]: {exp.title}")
        try:
            status, reason = exp.runner(preset, root, {"data_dir": data_dir, "device": device, "threads": threads},
                                        say=say, progress=progress)
        except DatasetMissingError as exc:
            status, reason = "unavailable", f"data missing: {exc}"
        except Exception as exc:  # recorded like a failed run (strict: re-raise)
            if strict:
                raise
            status, reason = "failed", f"{type(exc).__name__}: {exc}"
        manifest.update(status=status, reason=reason)
        flush()
        say(f"{name}: {status}{' (' + reason + ')' if reason else ''} (manifest: {mpath})")
        manifest["path"] = str(mpath)
        return manifest

    if data_factory is None:
        data_factory = CachedLoader()
    if threads:
        import torch
        torch.set_num_threads(int(threads))
    say(f"{name} [{preset}]: {exp.title}")
    selection = _needs_selection(spec)
    for g, rec in zip(spec.groups, group_recs):
        if g.unavailable:
            say(f" {g.key}: unavailable ({g.unavailable})")
            continue
        say(f" {g.key}: {g.label} ({g.kind}{', ' + str(len(g.betas)) + ' betas' if g.kind == 'sweep' else ''})")
        rec["status"] = "running"
        flush()
        for lr in (spec.lrs or (g.config.get("lr", 1e-3),)):
            for seed in spec.seeds:
                for beta in (g.betas if g.kind == "sweep" else (None,)):
                    fields = _run_fields(g, lr, seed, beta)
                    sub = f"{fields['dataset']}_{fields['arch']}"
                    fields.update(out_dir=str(root / "runs" / sub), run_name=run_folder_name(fields),
                                  device=device, num_threads=threads, data_dir=data_dir)
                    evals = list(g.evaluations)
                    if selection and (g.kind == "mr" or math.isclose(beta, _selection_member(g), rel_tol=1e-12)):
                        evals.append(_selection_evaluation(spec))
                    try:
                        run_rec = _train_and_evaluate(fields, g, evals, root=root, data_factory=data_factory,
                                                      progress=progress, say=say, device=device)
                    except DatasetMissingError as exc:
                        rec.update(status="unavailable", reason=f"data missing: {exc}")
                        say(f"  {g.key}: data missing, group skipped: {exc}")
                        break
                    except Exception as exc:  # recorded, the experiment goes on (strict: re-raise)
                        if strict:
                            raise
                        run_rec = {"lr": fields["lr"], "seed": fields["seed"], "beta": beta,
                                   "run_dir": _rel(Path(fields["out_dir"]) / fields["run_name"], root),
                                   "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                                   "traceback": traceback.format_exc(limit=8), "results": {}}
                        say(f"  FAILED {fields['run_name']}: {type(exc).__name__}: {exc}")
                    rec["runs"].append(run_rec)
                    flush()
                if rec["status"] == "unavailable":
                    break
            if rec["status"] == "unavailable":
                break
        if rec["status"] == "unavailable":
            continue
        failed = [r for r in rec["runs"] if r["status"] != "complete"]
        rec["status"] = "complete" if not failed else ("failed" if len(failed) == len(rec["runs"]) else "partial")
        if failed:
            rec["reason"] = f"{len(failed)} of {len(rec['runs'])} runs failed; first: {failed[0].get('error')}"
        _select_lr(rec, g, spec, root)
        flush()
    states = {r["status"] for r in group_recs}
    if states <= {"complete"}:
        manifest["status"] = "complete"
    elif "complete" in states or "partial" in states:
        manifest["status"] = "partial"
    elif states <= {"unavailable"}:
        manifest["status"] = "unavailable"
        manifest["reason"] = "unavailable: " + "; ".join(sorted({r["reason"] for r in group_recs if r["reason"]}))
    else:
        manifest["status"] = "failed"
    flush()
    say(f"{name}: {manifest['status']} (manifest: {mpath})")
    manifest["path"] = str(mpath)
    return manifest


def run_all(preset: str = "smoke", results_root: str | os.PathLike | None = None, **kwargs: Any) -> list[dict]:
    """Run every experiment in :data:`RUN_ALL_ORDER` (shared runs are trained once); returns the manifests."""
    return [run_experiment(name, preset, results_root, **kwargs) for name in RUN_ALL_ORDER]
