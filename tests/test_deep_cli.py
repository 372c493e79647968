"""Tests of ``mrvae-cli deep`` (cli/deep.py) with click's CliRunner, on the real networks and data."""
from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from _tiny_family import temporary_dataset
from cli.main import cli


def invoke(*args: str):
    return CliRunner().invoke(cli, ["deep", *args], catch_exceptions=False)


def assert_clean_error(result, *fragments: str) -> None:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in result.output, (f, result.output)


def test_unknown_dataset_lists_the_valid_ones():
    r = invoke("train", "--dataset", "imagenet")
    assert_clean_error(r, "unknown dataset 'imagenet'", "mnist", "omniglot", "cifar10", "svhn", "celeba64")


def test_unknown_arch_lists_the_valid_ones():
    r = invoke("train", "--dataset", "mnist", "--arch", "vgg")
    assert_clean_error(r, "unknown architecture 'vgg'", "conv", "resnet")


def test_bad_beta_range_message():
    r = invoke("train", "--dataset", "mnist", "--beta-range", "10", "1")
    assert_clean_error(r, "beta range needs a < b")
    r = invoke("train", "--dataset", "mnist", "--beta-range", "0", "1")
    assert_clean_error(r, "a > 0")


def test_bad_schedule_and_sweep_betas():
    assert_clean_error(invoke("sweep", "--dataset", "mnist", "--schedules", "constant,warm"), "unknown schedule 'warm'")
    assert_clean_error(invoke("sweep", "--dataset", "mnist", "--betas", "0.1,x"), "comma-separated list")


def test_missing_data_files_give_the_dataset_message(tmp_path):
    r = invoke("train", "--dataset", "mnist", "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path),
               "--quiet")
    assert_clean_error(r, "missing file", "binarized_mnist_train.amat", "--data-dir")


def test_evaluate_missing_or_corrupt_run(tmp_path):
    assert_clean_error(invoke("evaluate", str(tmp_path / "nope")), "does not exist")
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"garbage")
    assert_clean_error(invoke("evaluate", str(run)), "corrupt")


def test_params_prints_table_1():
    r = invoke("params")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    rows = [ln for ln in lines if ln.startswith(("MNIST & Omniglot", "CIFAR & SVHN", "CelebA64"))]
    assert len(rows) == 8   # 6 Conv/ResNet rows + 2 NVAE rows
    assert any("ResNet" in ln and "1,881,217" in ln and "18.81e5" in ln for ln in rows)
    assert any("CNN" in ln and "17,526,977" in ln and "17.53e6" in ln for ln in rows)
    nvae = [ln for ln in rows if " NVAE " in ln]
    assert len(nvae) == 2 and all("8,869,519" in ln or "8,890,504" in ln for ln in nvae)
    assert "paper 8,868,000 -> 8,950,000 (+0.92%)" in nvae[0] and "paper: not given" in nvae[1]
    assert len([ln for ln in invoke("params", "--no-nvae").output.splitlines() if " NVAE " in ln]) == 0


def test_real_mnist_resnet_train_evaluate_resume(tmp_path, data_root):
    """The real 28x28 pipeline on 256 static-binary MNIST images, 1 epoch, a 3-beta RD curve."""
    out = tmp_path / "runs"
    common = ["--dataset", "mnist", "--arch", "resnet", "--data-dir", str(data_root), "--out", str(out),
              "--max-train-examples", "256", "--batch-size", "64", "--device", "cpu", "--quiet"]
    r = invoke("train", *common, "--epochs", "1", "--n-betas", "3", "--eval-examples", "200",
               "--eval-batch-size", "100", "--iw-k", "2")
    assert r.exit_code == 0, r.output
    run_dir = out / "mnist_resnet_mr_n256_e1_lr0.001_seed0"
    assert f"run folder: {run_dir}" in r.output and "results: " in r.output
    rd = json.loads((run_dir / "results" / "rd.json").read_text())
    assert rd["beta"] == pytest.approx([0.01, 10 ** -0.5, 10.0])
    assert rd["model"]["kind"] == "MR-VAE" and rd["evaluation"]["n_examples"] == 200
    assert all(math.isfinite(v) for v in rd["rate"] + rd["distortion"] + rd["iw_nll"])
    assert rd["protocol"]["binarization"] == "static" and rd["conventions"]["distortion"] == "bernoulli"
    assert "reduced_protocol" in rd["conventions"]
    assert (run_dir / "results" / "images" / "samples_across_beta.png").exists()
    # evaluate again, asking for a beta outside the trained range: a warning, not a failure
    # (rd.json exists: the new result needs a name of its own, or --overwrite)
    r = invoke("evaluate", str(run_dir), "--betas", "0.001,1", "--max-examples", "50", "--no-images",
               "--quiet")
    assert_clean_error(r, "rd.json already exists", "--output", "--overwrite")
    r = invoke("evaluate", str(run_dir), "--betas", "0.001,1", "--max-examples", "50", "--no-images",
               "--quiet", "--output", "rd_outside.json")
    assert r.exit_code == 0, r.output
    assert "Warning: beta outside the MR-VAE" in r.output
    assert json.loads((run_dir / "results" / "rd.json").read_text())["beta"] == rd["beta"]
    # resuming with other settings is refused with the differing field named
    r = invoke("train", *common, "--epochs", "1", "--beta-range", "0.1", "10", "--resume", "--no-eval")
    assert_clean_error(r, "differing fields", "beta_a: checkpoint=0.01, now=0.1")
    # and without --resume the existing run is protected
    r = invoke("train", *common, "--epochs", "1", "--no-eval")
    assert_clean_error(r, "already has a checkpoint", "--resume")


def test_real_mnist_sweep_two_betas(tmp_path, data_root):
    """``deep sweep`` on real data: one run per beta, an index, one RD point each."""
    r = invoke("sweep", "--dataset", "mnist", "--data-dir", str(data_root), "--out", str(tmp_path),
               "--betas", "0.1,2", "--schedules", "linear", "--epochs", "1", "--max-train-examples", "128",
               "--batch-size", "64", "--eval-examples", "50", "--device", "cpu", "--quiet")
    assert r.exit_code == 0, r.output
    sweep_dir = tmp_path / "mnist_resnet_sweep_n128_e1_lr0.001_seed0"
    index = json.loads((sweep_dir / "index.json").read_text())
    assert [(e["beta"], e["schedule"]) for e in index["runs"]] == [(0.1, "linear"), (2.0, "linear")]
    rd = json.loads((sweep_dir / index["runs"][1]["results"]).read_text())
    assert rd["beta"] == [2.0] and rd["model"]["kind"] == "beta-VAE" and rd["evaluation"]["n_examples"] == 50
    assert rd["conventions"]["kl_schedule"]["name"] == "linear"
    assert "linear       0.1" in r.output and f"sweep folder: {sweep_dir}" in r.output


def test_preset_option_reaches_the_nvae_builder(tmp_path, monkeypatch):
    """--preset is --model-option preset=...: the NVAE builder receives it."""
    import torch

    from deep.models.nvae import model as nvae

    class Tiny:
        protocol, binarization = "synthetic", "static"

        def __len__(self):
            return 8

        def get_batch(self, index, *, train=False, generator=None):
            return torch.zeros(len(index), 1, 28, 28)

        def meta(self):
            return {"name": "tiny"}

    seen = {}

    def spy(config, data):
        seen.update(config.model_options)
        raise nvae.NVAEConfigError("stopped by the test")

    monkeypatch.setattr(nvae, "build", spy)
    with temporary_dataset("mnist", lambda name, split, **kw: Tiny()):
        r = invoke("train", "--dataset", "mnist", "--arch", "nvae", "--preset", "small", "--model-option",
                   "groups=2", "--out", str(tmp_path), "--quiet")
    assert r.exit_code != 0 and "stopped by the test" in r.output
    assert seen == {"preset": "small", "groups": 2}


@pytest.mark.parametrize("fields, monotone", [
    ({}, True),                                                       # the default recipe (mrvae)
    ({"recipe": "paper"}, False),                                     # the paper's free gates
    ({"model_options": {"monotone_decoder": False}}, False),          # the user's word wins
    ({"recipe": "paper", "model_options": {"monotone_decoder": True}}, True),
    ({"model_options": {"shared_hyper": 8}}, False),                  # App. D MLP: not affine, no monotone gates
    ({"mr": False}, False),                                           # a beta-VAE has no gates
])
def test_conv_resnet_decoder_gates_follow_the_recipe_unless_told(fields, monotone):
    """The recipe decides the decoder gates of Conv/ResNet MR-VAEs for the library, the CLI and the experiments
    alike (one place: deep.models.convnets.build_from_config)."""
    from deep.models import convnets as nets
    from deep.train import TrainConfig

    model = nets.build_from_config(TrainConfig(dataset="mnist", arch="conv", **fields))
    directions = {g.direction for g in model.decoder.modules() if g.__class__.__name__ == "Gate"}
    assert (directions == {"decreasing"}) is monotone
    assert not any(g.direction for g in model.encoder.modules() if g.__class__.__name__ == "Gate")


def test_monotone_decoder_with_a_film_decoder_gate_says_how_to_switch_it_off(tmp_path, monkeypatch):
    import types

    from deep.models import convnets as nets

    config = types.SimpleNamespace(dataset="mnist", arch="resnet", mr=True, latent_dim=None, beta_range=(0.01, 10.0),
                                   enc_gate="sigmoid", dec_gate="film", hyper_hidden=(), distortion=None,
                                   model_options={"monotone_decoder": True})
    with pytest.raises(ValueError, match="--model-option monotone_decoder=false"):
        nets.build_from_config(config)
    config.model_options = {"monotone_decoder": False}
    assert nets.build_from_config(config).config["dec_gate"] == "film"
