"""The trainer's optimiser gives the MR gates' hyper-networks their own learning rate."""
import torch

from deep.models.convnets import build_model
from deep.train.config import TrainConfig
from deep.train.loop import _make_optimizer
from linvae.conditioning import Gate


def test_gate_parameters_get_the_multiplied_learning_rate():
    model = build_model("mnist", "resnet", mr=True)
    config = TrainConfig(dataset="mnist", arch="resnet", lr=2e-3, hyper_lr_mult=30.0)
    opt = _make_optimizer(config, model)
    base, hyper = opt.param_groups
    gate_params = {id(p) for m in model.modules() if isinstance(m, Gate) for p in m.parameters()}
    assert {id(p) for p in hyper["params"]} == gate_params and len(gate_params) > 0
    assert not gate_params & {id(p) for p in base["params"]}
    assert hyper["lr"] == 30.0 * base["lr"] == 30.0 * 2e-3
    n_all = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == n_all


def test_beta_vae_has_one_group():
    opt = _make_optimizer(TrainConfig(dataset="mnist", arch="resnet", mr=False), build_model("mnist", "resnet", mr=False))
    assert len(opt.param_groups) == 1
