"""Tests of the deep trainer (deep/train.py, deep/runs.py) and evaluator (deep/evaluate.py).

They run on tiny stand-ins that follow the deep/ contract (an MLP VAE with beta gates and a synthetic
ImageSplit-like dataset), so the whole file takes seconds; the real networks and data are exercised by
tests/test_deep_cli.py.
"""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

import _tiny_family as F
from linvae.conditioning import BetaRange, BetaRangeError
from deep.models.objectives import gaussian_kl
from deep.evaluate import run as E
from deep.evaluate.loop import noise_generator, rd_sweep
from deep import train as T
from deep.experiments import sweep as SW
from deep.train import loop as L, schedules as S
from deep.train.config import VAL_BETAS
from deep.train.runs import (CheckpointError, CheckpointMismatchError, NonFiniteLossError, RunError,
                       RunExistsError, RunPaths, load_checkpoint, read_jsonl)


# ------------------------------------------------------------------------------------------
# stand-ins following the contract
# ------------------------------------------------------------------------------------------
class TinyVAE(F.TinyVAE):
    """The tiny family's MLP VAE (tests/_tiny_family.py) registered here as architecture ``mlp``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, arch="mlp", **kwargs)


TinySplit = F.TinySplit


def tiny_config(tmp_path, **kw) -> T.TrainConfig:
    base = dict(dataset="tiny", arch="mlp", epochs=3, batch_size=32, lr=1e-2, device="cpu",
                out_dir=str(tmp_path), run_name="run", n_betas=5, eval_batch_size=40)
    base.update(kw)
    return T.TrainConfig(**base)


def make_model(config: T.TrainConfig, seed: int = 0) -> TinyVAE:
    torch.manual_seed(seed)
    return TinyVAE(mr=config.mr, beta_range=config.beta_range)


def run(config, model=None, **kw):
    model = model if model is not None else make_model(config)
    return T.train(config, model=model, data=TinySplit(), progress=False, **kw), model


# ------------------------------------------------------------------------------------------
# schedules and config
# ------------------------------------------------------------------------------------------
def test_kl_schedule_values_at_known_steps():
    f = S.schedule_factor
    # linear: 0 -> 1 over the first 30% of training, then 1
    assert f("linear", 0.0) == 0.0
    assert f("linear", 0.15) == pytest.approx(0.5)
    assert f("linear", 0.3) == pytest.approx(1.0)
    assert f("linear", 0.9) == 1.0
    # cyclical, 4 cycles of 0.25 with ratio 0.5: ramp over the first 0.125 of each cycle
    assert f("cyclical", 0.0) == 0.0
    assert f("cyclical", 0.0625) == pytest.approx(0.5)
    assert f("cyclical", 0.2) == 1.0
    assert f("cyclical", 0.25) == pytest.approx(0.0)
    assert f("cyclical", 0.25 + 0.0625) == pytest.approx(0.5)
    assert f("constant", 0.0) == 1.0
    # per step: 10 epochs x 10 steps; step 15 is 15% of training
    cfg = T.TrainConfig(mr=False, beta=2.0, kl_schedule="linear", epochs=10)
    assert S.kl_factor(cfg, 15, 10) == pytest.approx(0.5)
    assert S.kl_factor(cfg, 30, 10) == pytest.approx(1.0)
    # per epoch (reference code): step 15 lies in epoch 1 -> 1 / (0.3 * 10)
    cfg_e = cfg.replace(kl_schedule_unit="epoch")
    assert S.kl_factor(cfg_e, 15, 10) == pytest.approx(1 / 3)
    assert S.kl_factor(cfg_e, 9, 10) == 0.0


def test_lr_warmup_and_cosine_endpoints():
    cfg = T.TrainConfig(epochs=10, lr=1e-3, min_lr=1e-5, lr_warmup_epochs=2)
    spe = 5
    assert S.lr_factor(cfg, 0, spe) == pytest.approx(1 / 10)     # warm-up: (step + 1) / 10 steps
    assert S.lr_factor(cfg, 9, spe) == pytest.approx(1.0)
    assert S.lr_factor(cfg, 10, spe) == pytest.approx(1.0)       # cosine starts at lr
    mid = 10 + 20
    assert S.lr_factor(cfg, mid, spe) * 1e-3 == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5))
    assert S.lr_factor(cfg, 50, spe) * 1e-3 == pytest.approx(1e-5)


def test_config_validation_and_json_round_trip():
    with pytest.raises(BetaRangeError):
        T.TrainConfig(beta_a=10, beta_b=1)
    with pytest.raises(T.ConfigError, match="kl_schedule"):
        T.TrainConfig(kl_schedule="sigmoid")
    with pytest.raises(T.ConfigError, match="beta_sampling"):
        T.TrainConfig(beta_sampling="epoch")
    with pytest.raises(T.ConfigError, match="unknown config fields"):
        T.TrainConfig.from_dict({"datset": "mnist"})
    cfg = T.TrainConfig(hyper_hidden=(8, 4), max_train_examples=100)
    back = T.TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.hyper_hidden == (8, 4)
    assert T.BASELINE_BETAS == pytest.approx(np.logspace(-2, 1, 10).tolist())


def test_train_index_is_a_fixed_subset():
    a = L.train_index(100, 10)
    assert a.numel() == 10 and torch.equal(a, L.train_index(100, 10)) and bool((a[1:] > a[:-1]).all())
    assert torch.equal(L.train_index(5, None), torch.arange(5))


# ------------------------------------------------------------------------------------------
# training loop
# ------------------------------------------------------------------------------------------
def test_training_decreases_loss_and_writes_run_folder(tmp_path):
    cfg = tiny_config(tmp_path, epochs=6)
    run_dir, _ = run(cfg)
    paths = RunPaths(run_dir)
    hist = read_jsonl(paths.metrics)
    assert [r["epoch"] for r in hist] == list(range(1, 7))
    assert hist[-1]["loss"] < hist[0]["loss"] - 3.0
    for r in hist:
        assert r["examples_per_s"] > 0 and r["max_rss_mb"] > 0 and math.isfinite(r["rate"])
    conf = json.loads(paths.config.read_text())
    assert conf["config"]["mr"] is True and conf["n_train"] == 160 and conf["steps_per_epoch"] == 5
    conv = conf["conventions"]
    assert "nats per example" in conv["rate"] and conv["distortion"] == "bernoulli"
    assert conv["binarization"] == "dynamic" and conv["data_protocol"] == "synthetic stand-in"
    assert conv["beta_range"]["a"] == 0.01 and "mrvae" in conf["code_version"]
    ck = load_checkpoint(paths.checkpoint)
    assert ck["epoch"] == 6 and ck["step"] == 30
    summary = json.loads(paths.summary.read_text())
    assert summary["status"] == "complete" and summary["peak_memory"]["max_rss_mb"] > 0
    # the cosine schedule ended at min_lr
    assert hist[-1]["lr"] == pytest.approx(cfg.min_lr, rel=1e-6)


@pytest.mark.parametrize("extra", [{}, {"loss_normalization": "per_beta", "beta_density_power": 2.0}])
def test_resume_equals_uninterrupted_run_bit_for_bit(tmp_path, extra):
    cfg = tiny_config(tmp_path, epochs=3, run_name="straight", **extra)
    straight, m_straight = run(cfg)
    cfg_b = cfg.replace(run_name="interrupted")
    run(cfg_b, stop_after_epochs=1)
    assert load_checkpoint(RunPaths(tmp_path / "interrupted").checkpoint)["epoch"] == 1
    assert not RunPaths(tmp_path / "interrupted").summary.exists()
    fresh = make_model(cfg_b, seed=99)                      # different init: must be overwritten
    _, m_resumed = run(cfg_b, model=fresh, resume=True)
    for (k, a), (_, b) in zip(m_straight.state_dict().items(), m_resumed.state_dict().items()):
        assert torch.equal(a, b), k
    h1 = read_jsonl(RunPaths(straight).metrics)
    h2 = read_jsonl(RunPaths(tmp_path / "interrupted").metrics)
    assert [r["loss"] for r in h1] == [r["loss"] for r in h2]


def test_resume_run_uses_the_stored_config(tmp_path):
    cfg = tiny_config(tmp_path, epochs=2, lr=5e-3)
    run_dir, _ = run(cfg, stop_after_epochs=1)
    T.resume_run(run_dir, model=make_model(cfg, seed=3), data=TinySplit(), progress=False)
    ck = load_checkpoint(RunPaths(run_dir).checkpoint)
    assert ck["epoch"] == 2 and ck["config"]["lr"] == 5e-3
    # the run records every setting, its data root as an absolute path (so it works from any directory)
    from linvae.dataroot import resolve_data_root
    assert T.load_config(run_dir) == cfg.replace(data_dir=str(resolve_data_root(None).resolve()))
    with pytest.raises(RunError, match="not a run folder"):
        T.load_config(tmp_path)


def test_existing_checkpoint_needs_resume(tmp_path):
    cfg = tiny_config(tmp_path, epochs=1)
    run(cfg)
    with pytest.raises(RunExistsError, match="--resume"):
        run(cfg)


def test_resume_with_other_config_or_model_is_refused(tmp_path):
    cfg = tiny_config(tmp_path, epochs=2)
    run(cfg, stop_after_epochs=1)
    with pytest.raises(CheckpointMismatchError, match="lr: checkpoint=0.01, now=0.001"):
        run(cfg.replace(lr=1e-3), resume=True)
    wider = TinyVAE(mr=True, hidden=32)
    with pytest.raises(CheckpointMismatchError, match="holds model"):
        run(cfg, model=wider, resume=True)
    # runtime-only fields may change
    run(cfg.replace(num_threads=1, n_betas=7), resume=True)


def test_corrupt_checkpoint_gives_clear_error(tmp_path):
    cfg = tiny_config(tmp_path, epochs=2)
    run_dir, _ = run(cfg, stop_after_epochs=1)
    ck = RunPaths(run_dir).checkpoint
    good = ck.read_bytes()
    ck.write_bytes(good[: len(good) // 2])                  # truncated
    with pytest.raises(CheckpointError, match="corrupt"):
        run(cfg, resume=True)
    ck.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(ck)
    torch.save({"weights": torch.zeros(2)}, ck)            # a torch file, but not ours
    with pytest.raises(CheckpointError, match="not a mrvae"):
        load_checkpoint(ck)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny_config(tmp_path, epochs=3)
    model = make_model(cfg)
    model.nan_after = 7                                     # 5 steps per epoch: NaN in epoch 2
    with pytest.raises(NonFiniteLossError, match="non-finite loss at epoch 2.*epoch 1"):
        run(cfg, model=model)
    paths = RunPaths(tmp_path / "run")
    failure = json.loads(paths.failure.read_text())
    assert failure["reason"] == "non-finite loss" and failure["epoch"] == 2
    assert failure["last_good_checkpoint_epoch"] == 1
    ck = load_checkpoint(paths.checkpoint)
    assert ck["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ck["model"].values())
    assert len(read_jsonl(paths.metrics)) == 1
    # a NaN in the very first step: no checkpoint at all, and the reason is recorded
    first = make_model(cfg)
    first.nan_after = 0
    with pytest.raises(NonFiniteLossError, match="no checkpoint was written"):
        run(cfg.replace(run_name="first"), model=first)
    assert json.loads(RunPaths(tmp_path / "first").failure.read_text())["last_good_checkpoint_epoch"] is None
    assert not RunPaths(tmp_path / "first").checkpoint.exists()


def test_nan_parameters_are_never_checkpointed(tmp_path):
    cfg = tiny_config(tmp_path, epochs=3)
    model = make_model(cfg)
    model.poison_at = 10                                    # last step of epoch 2 leaves a NaN weight
    with pytest.raises(NonFiniteLossError, match="non-finite parameters"):
        run(cfg, model=model)
    ck = load_checkpoint(RunPaths(tmp_path / "run").checkpoint)
    assert ck["epoch"] == 1 and all(torch.isfinite(v).all() for v in ck["model"].values())


def log_position(betas: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """Where each beta lies in [log a, log b], as a fraction in [0, 1] (float64)."""
    return (torch.log(betas.double()) - math.log(a)) / math.log(b / a)


def log_slices(betas: torch.Tensor, a: float, b: float) -> list[int]:
    """Sorted index of the slice of [log a, log b], cut into len(betas) equal slices, that holds each beta."""
    return sorted((log_position(betas, a, b) * betas.numel()).floor().long().tolist())


@pytest.mark.parametrize("per", ["example", "batch", "stratified"])
def test_mr_beta_sampling_per_example_or_per_batch(tmp_path, per):
    cfg = tiny_config(tmp_path, epochs=1, beta_sampling=per, beta_a=0.1, beta_b=5.0)
    _, model = run(cfg)
    betas = model.seen_betas
    # one beta per batch reaches the model as one number (the nets fold their gates into the weights)
    assert len(betas) == 5 and [b.shape for b in betas] == [(1,) if per == "batch" else (32,)] * 5
    allb = torch.cat(betas)
    assert bool((allb >= 0.1).all() and (allb <= 5.0).all())
    distinct = [torch.unique(b).numel() for b in betas]
    if per == "example":
        assert all(d == 32 for d in distinct)
    elif per == "stratified":  # one beta in each of the 32 slices of [log 0.1, log 5]
        for b in betas:
            assert log_slices(b, 0.1, 5.0) == list(range(32))
    else:
        assert all(d == 1 for d in distinct) and torch.unique(allb).numel() == 5


@pytest.mark.parametrize("recipe, expected", [("mrvae", "stratified"), ("paper", "example")])
def test_the_recipe_decides_the_beta_sampling_left_unset(tmp_path, recipe, expected):
    """docs/recipe.md: the default recipe samples beta stratified over the range, the paper's one log-uniform
    beta per example; a value the user gives wins, also when the recipe is switched afterwards."""
    cfg = tiny_config(tmp_path, epochs=1, recipe=recipe, beta_a=0.1, beta_b=5.0)
    assert cfg.beta_sampling == expected
    _, model = run(cfg)
    # stratified: each batch of 32 has one beta in each of the 32 slices; 32 independent draws all land in
    # different slices with probability 32!/32^32 < 1e-12
    covered = [log_slices(b, 0.1, 5.0) == list(range(32)) for b in model.seen_betas]
    assert all(covered) is (expected == "stratified")
    other = "paper" if recipe == "mrvae" else "mrvae"
    assert cfg.replace(recipe=other).beta_sampling == {"mrvae": "stratified", "paper": "example"}[other]
    assert cfg.replace(beta_sampling="batch").replace(recipe=other).beta_sampling == "batch"


def test_the_shipped_families_take_the_recipe_values_docs_recipe_md_chose():
    """docs/recipe.md: under the default recipe the ResNet trains its gates at 100x (better than 30x at 6 of 6
    seeds); every other family keeps the shared 30x (100x collapses the Yahoo LSTM); ``paper`` is 1x for all.
    Switching the family or the recipe moves a value left at its default; a value the user gives stays."""
    from deep.train.config import RECIPES, recipe_change, recipe_settings

    resnet = T.TrainConfig(dataset="omniglot", arch="resnet")
    assert resnet.hyper_lr_mult == 100.0
    assert T.TrainConfig(dataset="omniglot", arch="conv").hyper_lr_mult == 30.0
    assert T.TrainConfig(dataset="yahoo", arch="lstm").hyper_lr_mult == 30.0
    assert T.TrainConfig(dataset="omniglot", arch="resnet", recipe="paper").hyper_lr_mult == 1.0
    assert resnet.replace(arch="conv").hyper_lr_mult == 30.0
    assert resnet.replace(recipe="paper").hyper_lr_mult == 1.0
    assert resnet.replace(arch="conv").replace(arch="resnet").hyper_lr_mult == 100.0
    assert resnet.replace(seed=3).hyper_lr_mult == 100.0
    mine = T.TrainConfig(dataset="omniglot", arch="resnet", hyper_lr_mult=30.0)
    assert mine.hyper_lr_mult == 30.0 and mine.replace(hyper_lr_mult=50.0).replace(arch="conv").hyper_lr_mult == 50.0
    # what a run records; a finished run of the 30x default (the gallery's) is not taken for one of 100x
    assert recipe_settings(resnet)["hyper_lr_mult"] == 100.0 and recipe_settings(resnet.replace(mr=False)) is None
    then = {"recipe_settings": {**RECIPES["mrvae"], "hyper_lr_mult": 30.0}}
    assert recipe_change(then, resnet) == ("it was trained when recipe 'mrvae' set other values "
                                           "(hyper_lr_mult: then 30.0, now 100.0)")
    assert recipe_change(then, resnet.replace(arch="conv")) is None


def test_a_family_of_ones_own_may_take_its_own_values_of_a_recipe(tmp_path):
    """``register_family(..., recipe_overrides=...)``: the library config, the optimiser and the run's record
    all take the family's value; an override of a setting the recipe does not have is refused."""
    with F.temporary_family("tinyfast", F.build, F.rebuild, ("tiny",),
                            recipe_overrides={"mrvae": {"hyper_lr_mult": 7.0}}):
        cfg = tiny_config(tmp_path, arch="tinyfast", beta_a=0.1, beta_b=5.0)
        assert cfg.hyper_lr_mult == 7.0 and cfg.replace(recipe="paper").hyper_lr_mult == 1.0
        model = make_model(cfg)
        lrs = sorted(g["lr"] for g in L._make_optimizer(cfg, model).param_groups)
        assert lrs == pytest.approx([cfg.lr, 7.0 * cfg.lr])
        run_dir, _ = run(cfg.replace(epochs=1), model=model)
        assert json.loads((run_dir / "config.json").read_text())["recipe_settings"]["hyper_lr_mult"] == 7.0
        # the help of --recipe says the family's value, read from the registry when asked
        assert "x30 (x100 for resnet, x7 for tinyfast)" in T.config.field_help("recipe")
    assert "x30 (x100 for resnet)," in T.config.field_help("recipe")
    # the cpu budgets (built once, from the families registered then) say the same text
    from deep.experiments.registry import EXPERIMENTS
    assert "(gate hyper-networks at lr x30 (x100 for resnet))" in EXPERIMENTS["fig9"].preset("cpu").budget
    with F.temporary_family("tinybad", F.build, F.rebuild, ("tiny",), recipe_overrides={"mrvae": {"hyper_lr": 7}}):
        with pytest.raises(T.ConfigError, match=r"family 'tinybad' overrides \['hyper_lr'\] of recipe 'mrvae'"):
            tiny_config(tmp_path, arch="tinybad")


def test_a_sweep_worker_restores_the_whole_family_and_dataset_spec(monkeypatch, tmp_path):
    """A parallel sweep's worker process registers the parent's dataset and family again: every field of
    their specs (the recipe overrides included) must come back, or the worker trains another recipe."""
    from deep.data.registry import _DATASETS
    from deep.models.registry import _FAMILIES

    monkeypatch.setattr(SW, "_sweep_one", lambda cfg, **kw: cfg)
    with F.temporary_dataset("tiny", F.load_split, recommended={"batch_size": 16}, description="d"), \
            F.temporary_family("tinyfast", F.build, F.rebuild, ("tiny",), recommended={"lr": 0.5},
                               recipe_overrides={"mrvae": {"hyper_lr_mult": 7.0}}):
        specs = {"dataset": _DATASETS["tiny"], "family": _FAMILIES["tinyfast"]}
        cfg = tiny_config(tmp_path, arch="tinyfast")
        del _DATASETS["tiny"], _FAMILIES["tinyfast"]   # a fresh worker process has neither
        SW._sweep_job(cfg.to_dict(), specs, {})
        assert _DATASETS["tiny"] == specs["dataset"]
        assert _FAMILIES["tinyfast"] == specs["family"]


def test_beta_vae_gets_its_fixed_beta_and_the_schedule_scales_the_kl(tmp_path):
    cfg = tiny_config(tmp_path, epochs=4, mr=False, beta=0.5, kl_schedule="linear")
    run_dir, model = run(cfg)
    assert all(bool((b == 0.5).all()) for b in model.seen_betas)
    hist = read_jsonl(RunPaths(run_dir).metrics)
    # 20 steps; linear warm-up over 6 steps: the factor after epoch 1 (step 4) is 4/6, then 1
    assert hist[0]["kl_factor"] == pytest.approx(4 / 6)
    assert [r["kl_factor"] for r in hist[1:]] == [1.0, 1.0, 1.0]


# ------------------------------------------------------------------------------------------
# evaluation
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_mr(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mr")
    cfg = tiny_config(tmp, epochs=4)
    run_dir, model = run(cfg)
    return run_dir, cfg


def test_batched_beta_evaluation_equals_one_pass_per_beta(trained_mr):
    run_dir, cfg = trained_mr
    _, model, _ = E.load_run_model(run_dir, "cpu", model=TinyVAE(mr=True))
    data = TinySplit(100, "test", seed=5)
    betas = BetaRange().grid(6).tolist()
    a = rd_sweep(model, data, betas, batch_size=30, iw_k=4, batched=True, n_images=3)
    b = rd_sweep(model, data, betas, batch_size=30, iw_k=4, batched=False, n_images=3)
    c = rd_sweep(model, data, betas, batch_size=30, iw_k=4, batched=True, n_images=3, max_rows=60)
    assert a["rows_per_pass"] == 180 and b["rows_per_pass"] == 30
    assert c["rows_per_pass"] == 60 and c["betas_per_pass"] == 2
    for key in ("rate", "distortion", "iw_nll", "mutual_information"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)
        np.testing.assert_allclose(a[key], c[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert a["active_units"] == b["active_units"] == c["active_units"]
    for j in range(6):
        torch.testing.assert_close(a["images"]["prior"][j], b["images"]["prior"][j])
    # the rate really is the analytic KL of the posterior at each beta
    x = data.get_batch(torch.arange(100))
    with torch.no_grad():
        mu, lv = model.encode(x, torch.full((100,), betas[2]))
    assert a["rate"][2] == pytest.approx(float(gaussian_kl(mu, lv).double().mean()), rel=1e-5)
    # an MR-VAE's curve changes with beta; the IW bound is below the single-sample negative ELBO on average
    assert a["rate"][0] != pytest.approx(a["rate"][-1])
    assert np.mean(a["iw_nll"]) <= np.mean(np.add(a["rate"], a["distortion"])) + 0.5


def test_same_prior_z_across_betas():
    torch.manual_seed(0)
    plain = TinyVAE(mr=False)       # ignores beta: identical z must give identical samples at every beta
    out = rd_sweep(plain, TinySplit(40, "test"), [0.1, 1.0, 10.0], batch_size=20, n_images=4)
    p = out["images"]["prior"]
    assert torch.equal(p[0], p[1]) and torch.equal(p[1], p[2])
    assert out["rate"][0] == pytest.approx(out["rate"][2])


def test_evaluate_run_json_schema_and_images(trained_mr):
    run_dir, cfg = trained_mr
    res = E.evaluate_run(run_dir, n_betas=5, iw_k=3, model=TinyVAE(mr=True), data=TinySplit(60, "test", 2),
                         n_images=4)
    on_disk = json.loads((RunPaths(run_dir).results / "rd.json").read_text())
    for key in ("beta", "rate", "distortion", "neg_elbo", "iw_nll", "active_units", "mutual_information",
                "config", "conventions", "protocol", "estimators", "evaluation", "model"):
        assert key in on_disk, key
    for key in ("beta", "rate", "distortion", "neg_elbo", "iw_nll", "active_units", "mutual_information"):
        assert len(on_disk[key]) == 5, key
    assert on_disk["beta"] == pytest.approx(np.logspace(-2, 1, 5).tolist())
    np.testing.assert_allclose(on_disk["neg_elbo"], np.add(on_disk["rate"], on_disk["distortion"]))
    assert all(0 <= au <= 3 for au in on_disk["active_units"])
    assert all(-0.5 < mi <= math.log(60) + 1e-6 for mi in on_disk["mutual_information"])
    assert on_disk["model"]["kind"] == "MR-VAE" and on_disk["model"]["epochs_trained"] == 4
    assert on_disk["protocol"]["split"] == "test" and on_disk["iw_k"] == 3
    assert on_disk["conventions"]["distortion"] == "bernoulli"
    assert set(on_disk["checks"]) >= {"rate_nonincreasing", "distortion_nondecreasing"}
    assert res["path"].endswith("rd.json")
    from PIL import Image
    img_dir = RunPaths(run_dir).results / "images"
    grid = Image.open(img_dir / on_disk["images"]["samples_across_beta"])
    assert min(grid.size) >= 250                             # 5 labelled rows (betas) of 4 columns (same z)
    assert on_disk["images"]["row_labels"] == ["β = 10", "β = 1.78", "β = 0.316", "β = 0.0562", "β = 0.01"]
    assert len(list(img_dir.glob("recon_0*_beta*.png"))) == 5
    assert on_disk["images"]["rows_beta_order"][0] == pytest.approx(10.0)


def test_fid_curve_matches_a_direct_frechet_distance_and_is_recorded(trained_mr, tmp_path, monkeypatch):
    run_dir, _ = trained_mr
    model, data = TinyVAE(mr=True), TinySplit(60, "test", 2)

    def extractor(images):  # a fixed feature map: per-row pixel means (6 features)
        return images.mean(dim=(1, 3))

    res = E.evaluate_run(run_dir, n_betas=3, model=model, data=data, images=False, fid_samples=50,
                         fid_extractor=extractor, out_name="rd_fid.json")
    assert len(res["fid"]) == 3 and all(f >= -1e-9 for f in res["fid"])
    # the same number computed by hand at the largest beta: decoded prior samples vs test images
    torch.manual_seed(0)
    z = torch.randn((50, model.latent_dim), generator=noise_generator(0, 0, salt=3))
    beta = torch.full((50,), 10.0)
    with torch.no_grad():
        fake = torch.sigmoid(model.eval().decode(z, beta).logits)
    from deep.evaluate import metrics as M
    want = M.fid(data.get_batch(torch.arange(50)), fake, extractor)
    assert res["fid"][-1] == pytest.approx(want, rel=1e-6)
    # without the Inception weights (offline) the evaluation still succeeds and says why
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    res = E.evaluate_run(run_dir, n_betas=2, model=TinyVAE(mr=True), data=data, images=False, fid_samples=10,
                         out_name="rd_nofid.json")
    assert "fid" not in res and "unavailable" in res["estimators"]["fid"]
    assert any("FID not computed" in note for note in res["evaluation"]["notes"])


def test_monotonicity_check():
    ok = E._monotonicity([1.0, 0.1, 10.0], [5.0, 9.0, 1.0], [3.0, 2.0, 7.0])
    assert ok["rate_nonincreasing"] and ok["distortion_nondecreasing"] and ok["max_rate_increase"] == 0.0
    bad = E._monotonicity([0.1, 1.0, 10.0], [9.0, 9.5, 1.0], [2.0, 1.25, 7.0])
    assert not bad["rate_nonincreasing"] and bad["max_rate_increase"] == pytest.approx(0.5)
    assert not bad["distortion_nondecreasing"] and bad["max_distortion_decrease"] == pytest.approx(0.75)


def test_evaluate_warns_outside_trained_range(trained_mr):
    run_dir, _ = trained_mr
    with pytest.warns(UserWarning, match="outside the"):
        res = E.evaluate_run(run_dir, betas=[0.001, 1.0, 50.0], model=TinyVAE(mr=True),
                             data=TinySplit(40, "test"), images=False, out_name="rd_wide.json")
    assert res["in_trained_range"] == [False, True, False]
    # the end points of the trained range (as float64 log-spaced values) raise no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ok = E.evaluate_run(run_dir, betas=np.logspace(-2, 1, 4).tolist(), model=TinyVAE(mr=True),
                            data=TinySplit(40, "test"), images=False, out_name="rd_ends.json")
    assert ok["in_trained_range"] == [True] * 4 and ok["evaluation"]["notes"] == []
    assert "outside the trained range" in res["evaluation"]["notes"][0]


def test_evaluate_beta_vae_gives_one_point(tmp_path):
    cfg = tiny_config(tmp_path, epochs=1, mr=False, beta=0.3)
    run_dir, _ = run(cfg)
    res = E.evaluate_run(run_dir, model=TinyVAE(mr=False), data=TinySplit(40, "test"), images=False)
    assert res["beta"] == [0.3] and len(res["rate"]) == 1 and res["model"]["kind"] == "beta-VAE"


def test_evaluate_with_mismatched_model_is_refused(trained_mr):
    run_dir, _ = trained_mr
    with pytest.raises(CheckpointMismatchError, match="does not fit this architecture"):
        E.evaluate_run(run_dir, model=TinyVAE(mr=True, latent_dim=5), data=TinySplit(40, "test"))


def test_batchnorm_recalibration_runs_once_per_beta(tmp_path, monkeypatch):
    import deep.models.convnets

    cfg = tiny_config(tmp_path, epochs=2)
    run_dir, _ = run(cfg, model=TinyVAE(mr=True, batch_norm=True))
    monkeypatch.setattr(E, "load_run_data", lambda c, split, data_dir=None: TinySplit())
    calls = []
    real = deep.models.convnets.recalibrate_batchnorm
    monkeypatch.setattr(deep.models.convnets, "recalibrate_batchnorm",
                        lambda m, batches, beta: calls.append(beta) or real(m, batches, beta))
    kw = dict(n_betas=3, model=TinyVAE(mr=True, batch_norm=True), data=TinySplit(40, "test"), images=False)
    recal = E.evaluate_run(run_dir, recalibrate_bn=True, out_name="rd_recal.json", **kw)
    assert calls == pytest.approx([0.01, 10 ** -0.5, 10.0])
    assert recal["evaluation"]["batched"] is False and recal["evaluation"]["recalibrate_bn"] is True
    kw["model"] = TinyVAE(mr=True, batch_norm=True)
    plain = E.evaluate_run(run_dir, **kw)
    assert plain["evaluation"]["recalibrate_bn"] is False
    assert not np.allclose(plain["rate"], recal["rate"])   # beta-specific statistics change the posterior


@pytest.fixture
def tiny_family(monkeypatch):
    """Register the tiny stand-ins as a dataset and an architecture, as a user would add a family."""
    with F.registered("tiny", lambda name, split, **kw: TinySplit(200 if split == "train" else 40, split), "mlp",
                      build=lambda c, data: TinyVAE(mr=c.mr, beta_range=c.beta_range),
                      rebuild=lambda mc: TinyVAE(mr=mc["mr"])):
        yield


def test_registered_family_trains_validates_and_evaluates(tmp_path, tiny_family):
    cfg = tiny_config(tmp_path, epochs=3, run_name=None, val_split="valid", lr_schedule="plateau",
                      plateau_patience=0, plateau_factor=0.5)
    run_dir = T.train(cfg, progress=False)
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["val_loss"]) and r["val_split"] == "valid" for r in history)
    # plateau: the scale halves exactly after every epoch whose validation loss did not improve
    scale, best = 1.0, np.inf
    for r in history:
        if r["val_loss"] < best:
            best = r["val_loss"]
        else:
            scale *= 0.5
        assert r["lr_plateau_scale"] == scale
    rd = E.evaluate_run(run_dir, n_betas=3, images=False)
    assert len(rd["rate"]) == 3 and rd["model"]["arch"] == "mlp"
    from deep.models.registry import UnknownArchError
    with pytest.raises(UnknownArchError, match="does not train on"):
        T.train(cfg.replace(arch="resnet", run_name="wrong"), progress=False)


def test_validation_split_reading_the_training_files_is_refused(tmp_path, request):
    class FileSplit(TinySplit):
        def meta(self):
            return {**super().meta(), "source_files": ["/data/train.txt"]}

    registered = F.registered("tiny", lambda name, split, **kw: FileSplit(64, split), "mlp",
                              build=lambda c, data: TinyVAE(mr=c.mr, beta_range=c.beta_range),
                              rebuild=lambda mc: TinyVAE())
    registered.__enter__()
    request.addfinalizer(lambda: registered.__exit__(None, None, None))
    with pytest.raises(T.ConfigError, match="same examples as the training split"):
        T.train(tiny_config(tmp_path, epochs=1, val_split="valid"), progress=False)


def test_validation_loss_is_the_mr_mean_over_betas(tmp_path):
    cfg = tiny_config(tmp_path, epochs=1)
    model = TinyVAE(mr=True, beta_range=cfg.beta_range)
    data = TinySplit(40, "valid")
    got = L.validation_loss(model, data, cfg, torch.device("cpu"))
    torch.manual_seed(0)
    x = data.get_batch(torch.arange(40))
    want = []
    for beta in cfg.beta_range.grid(VAL_BETAS).tolist():
        b = torch.full((40,), beta)
        with torch.no_grad():
            out = model.eval()(x, b)
        want.append(float((out.distortion + b * out.rate).mean()))
    assert got == pytest.approx(float(np.mean(want)), rel=1e-5)


def test_sweep_trains_one_run_per_beta_and_schedule(tmp_path, tiny_family):
    cfg = tiny_config(tmp_path, epochs=1, run_name=None)
    sweep_dir = SW.sweep(cfg, betas=[0.1, 1.0], schedules=("constant", "linear"), progress=False)
    index = json.loads((sweep_dir / "index.json").read_text())
    assert [(r["beta"], r["schedule"]) for r in index["runs"]] == [
        (0.1, "constant"), (1.0, "constant"), (0.1, "linear"), (1.0, "linear")]
    for r in index["runs"]:
        rd = json.loads((sweep_dir / r["results"]).read_text())
        assert rd["beta"] == [r["beta"]] and rd["config"]["kl_schedule"] == r["schedule"]
        assert rd["config"]["mr"] is False and rd["config"]["lr"] == cfg.lr
    # running it again skips finished runs (no RunExistsError)
    SW.sweep(cfg, betas=[0.1, 1.0], schedules=("constant", "linear"), progress=False)
    with pytest.raises(T.ConfigError, match="unknown schedule"):
        SW.sweep(cfg, schedules=("warm",))


def _blobs28(n: int = 256, seed: int = 0):
    """A real :class:`deep.data.images.ImageSplit` of 28x28 binary discs at random places (for the Conv/ResNet nets)."""
    from deep.data.images import ImageSplit

    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    centre = torch.rand((n, 2, 1, 1), generator=g) * 20 + 4
    images = (((yy - centre[:, :1]) ** 2 + (xx - centre[:, 1:]) ** 2) < 25).to(torch.uint8)  # (n, 1, 28, 28)
    return ImageSplit("blobs", "train", images.numpy(), protocol="synthetic discs", binarization="static",
                      likelihood="bernoulli")


@pytest.mark.parametrize("monotone", [False, True])
def test_trainer_keeps_monotone_decoder_gates_monotone(tmp_path, monotone):
    from deep.models.convnets import build_model
    from linvae.conditioning import Gate

    cfg = T.TrainConfig(dataset="mnist", arch="resnet", epochs=1, batch_size=32, lr=3e-3, hyper_lr_mult=30.0,
                        device="cpu", out_dir=str(tmp_path), run_name="run", n_betas=3,
                        model_options={"monotone_decoder": monotone})
    torch.manual_seed(0)
    model = build_model("mnist", "resnet", monotone_decoder=monotone)
    T.train(cfg, model=model, data=_blobs28(), progress=False)
    slopes = torch.cat([g.hyper.out.weight.reshape(-1) for g in model.decoder.modules() if isinstance(g, Gate)])
    if not monotone:  # eight steps at lr 0.09 move the free slopes both ways
        assert (slopes < 0).any() and (slopes > 0).any()
        return
    assert bool((slopes >= 0).all()) and (slopes > 0).any()
    u = model.beta_range.standardize(torch.logspace(-2, 1, 12))
    for g in model.decoder.modules():
        if isinstance(g, Gate):
            assert bool((torch.diff(g.factors(u), dim=0) <= 0).all())  # every decoder gate closes as beta grows


# ------------------------------------------------------------------------------------------
# beta density and the per-beta loss normalisation (issue 19's options)
# ------------------------------------------------------------------------------------------
def test_per_beta_loss_scale_equalises_the_bins():
    scale = L.PerBetaLossScale(BetaRange(0.01, 10.0), n_bins=8, momentum=0.5)
    beta = torch.tensor([0.0101, 0.0102, 9.9, 9.8])          # bins 0 and 7
    losses = torch.tensor([10.0, 10.0, 40.0, 40.0])
    w = scale.weights(beta, losses)
    torch.testing.assert_close(w, torch.tensor([2.5, 2.5, 0.625, 0.625]))   # mean of the bin means = 25
    torch.testing.assert_close(w * losses, torch.full((4,), 25.0))
    # running means: bin 0 sees 20 next, its mean moves halfway (momentum 0.5): 15
    w2 = scale.weights(beta[:1], torch.tensor([20.0]))
    assert scale.mean[0] == pytest.approx(15.0) and float(w2) == pytest.approx(27.5 / 15.0)
    again = L.PerBetaLossScale(BetaRange(0.01, 10.0), n_bins=8, momentum=0.5)
    again.load_state_dict(scale.state_dict())
    torch.testing.assert_close(again.mean, scale.mean, equal_nan=True)


def test_beta_density_power_puts_the_stated_mass_at_small_beta():
    r = BetaRange(0.01, 10.0)
    g = torch.Generator().manual_seed(0)
    quarter = r.log_a + 0.25 * (r.log_b - r.log_a)
    for power, expected in ((1.0, 0.25), (2.0, 0.5), (3.0, 0.25 ** (1 / 3))):
        beta = r.sample(200_000, generator=g, power=power, dtype=torch.float64)
        assert float((beta.log() < quarter).double().mean()) == pytest.approx(expected, abs=0.005)
        assert float(beta.min()) >= 0.01 * (1 - 1e-9) and float(beta.max()) <= 10.0 * (1 + 1e-9)
    strat = r.sample(64, per="stratified", generator=g, power=2.0, dtype=torch.float64)
    assert int((strat.log() < quarter).sum()) == 32                      # stratified: exactly half


def test_arcsine_beta_density_puts_the_stated_mass_at_both_ends():
    """shape="arcsine": the standardised log beta is Beta(1/2, 1/2), P(V < q) = (2 / pi) asin(sqrt(q)) at each
    end; with a power p on top, P(V^p < q) = (2 / pi) asin(q^(1 / 2p))."""
    r = BetaRange(0.01, 10.0)
    g = torch.Generator().manual_seed(0)

    def v(beta):
        return log_position(beta, r.a, r.b)

    def cdf(q, p=1.0):
        return 2 / math.pi * math.asin(q ** (0.5 / p))

    for per in ("example", "stratified"):
        beta = r.sample(200_000, per=per, generator=g, shape="arcsine", dtype=torch.float64)
        for q in (0.1, 0.25, 0.5):
            assert float((v(beta) < q).double().mean()) == pytest.approx(cdf(q), abs=0.005)
            assert float((v(beta) > 1 - q).double().mean()) == pytest.approx(cdf(q), abs=0.005)
        assert float(beta.min()) >= 0.01 * (1 - 1e-9) and float(beta.max()) <= 10.0 * (1 + 1e-9)
    both = r.sample(200_000, generator=g, shape="arcsine", power=2.0, dtype=torch.float64)
    assert float((v(both) < 0.1).double().mean()) == pytest.approx(cdf(0.1, 2.0), abs=0.005)
    # stratified: one draw per slice of the arcsine's quantiles, so the lowest tenth holds 64 * cdf(0.1) +- 1
    strat = r.sample(64, per="stratified", generator=g, shape="arcsine", dtype=torch.float64)
    assert abs(int((v(strat) < 0.1).sum()) - 64 * cdf(0.1)) <= 1
    with pytest.raises(ValueError, match="shape"):
        r.sample(4, shape="U-shaped")


def test_trainer_draws_betas_from_the_configured_density_shape(tmp_path):
    """TrainConfig.beta_density_shape reaches the sampler: the betas the model trains on put (2 / pi) asin(
    sqrt(0.1)) = 0.205 of the draws in each outer tenth of the log range under arcsine, 0.1 log-uniform; the
    run's protocol says so."""
    def outer_tenths(model, r):
        v = log_position(torch.cat(model.seen_betas), r.a, r.b)
        return float((v < 0.1).double().mean()), float((v > 0.9).double().mean())

    for shape, expected in (("uniform", 0.1), ("arcsine", 2 / math.pi * math.asin(math.sqrt(0.1)))):
        cfg = tiny_config(tmp_path, epochs=10, run_name=shape, beta_density_shape=shape)
        run_dir, model = run(cfg)
        low, high = outer_tenths(model, cfg.beta_range)
        assert low == pytest.approx(expected, abs=0.01) and high == pytest.approx(expected, abs=0.01)
        sampling = json.loads(RunPaths(run_dir).config.read_text())["conventions"]["beta_sampling"]
        assert ("sin(pi U / 2)^2" in sampling) == (shape == "arcsine")
