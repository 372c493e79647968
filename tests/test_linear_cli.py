"""mrvae-cli linear: clear errors, the symbolic report and a smoke run producing the figure."""
import json
from dataclasses import replace

import pytest
from click.testing import CliRunner

from cli.main import cli


def test_verify_proves_every_identity():
    result = CliRunner().invoke(cli, ["linear", "verify"])
    assert result.exit_code == 0, result.output
    assert "NOT PROVED" not in result.output
    assert "17/17 identities proved" in result.output


@pytest.mark.parametrize("args,message", [
    (["--beta-range", "10", "0.01"], "a < b"),
    (["--beta-range", "0", "1"], "a > 0"),
    (["--beta-range", "-1", "1"], "a > 0"),
])
def test_bad_beta_range_is_a_clear_error(args, message, tmp_path):
    result = CliRunner().invoke(cli, ["linear", "compare", "--out", str(tmp_path), *args])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


def test_unknown_option_value_is_rejected():
    result = CliRunner().invoke(cli, ["linear", "compare", "--preset", "huge"])
    assert result.exit_code == 2 and "huge" in result.output


def test_missing_dataset_names_file_and_place(tmp_path):
    empty = tmp_path / "nodata"
    empty.mkdir()
    result = CliRunner().invoke(cli, ["linear", "compare", "--preset", "smoke", "--data-dir", str(empty),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "train-images-idx3-ubyte" in result.output and str(empty) in result.output
    assert "download" in result.output and "Traceback" not in result.output


def test_exact_curve_command(tmp_path, data_root):
    out = tmp_path / "curve.json"
    result = CliRunner().invoke(cli, ["linear", "curve", "--n-betas", "5", "--out", str(out),
                                      "--data-dir", str(data_root)])
    assert result.exit_code == 0, result.output
    curve = json.loads(out.read_text())
    assert len(curve["rate"]) == 5 and curve["rate"][0] > curve["rate"][-1] == 0.0


def test_smoke_compare_writes_results_and_figure(tmp_path, data_root):
    out = tmp_path / "lin"
    result = CliRunner().invoke(cli, ["linear", "compare", "--preset", "smoke", "--max-train-examples", "2000",
                                      "--data-dir", str(data_root), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "REDUCED protocol" in result.output
    res = json.loads((out / "results.json").read_text())
    assert res["protocol"]["reduced"] is True and "REDUCED" in res["protocol"]["label"]
    # the default's gates (smoke shares them) are recorded and labelled as a departure from the paper
    assert res["conventions"]["gates"] == {**res["conventions"]["gates"], "encoder": "sigmoid",
                                           "covariance": "exp_min", "decoder": "sqrt"}
    assert "exp_min covariance gates (paper: sigmoid)" in res["protocol"]["label"]
    assert len(res["excess"]["mr_vae"]) == 20 and len(res["beta_vae"]["rate"]) == 10
    assert res["data"]["covariance_rank"] < 784
    for key in ("units", "distortion", "beta_range"):
        assert key in res["conventions"]
    # nothing beats the optimum fit to the training data on the training data
    assert min(res["excess"]["closed_form_train_loss"]) > 0
    assert (out / "fig4.png").stat().st_size > 10_000 and (out / "fig4.pdf").exists()


def test_default_preset_uses_exp_min_covariance_gates_and_the_paper_preset_the_papers():
    from linvae.experiment import PRESETS

    default, paper, smoke = PRESETS["default"], PRESETS["paper"], PRESETS["smoke"]
    assert (default.covariance_gate, default.encoder_gate, default.epochs) == ("exp_min", "sigmoid", 30)
    assert smoke.covariance_gate == default.covariance_gate and smoke.encoder_gate == default.encoder_gate
    assert not default.is_paper_protocol() and "exp_min covariance gates" in default.protocol_label()
    assert paper.is_paper_protocol() and (paper.covariance_gate, paper.encoder_gate) == ("sigmoid", "sigmoid")
    assert "REDUCED" not in paper.protocol_label()
    for change in ({"covariance_gate": "exp_min"}, {"encoder_gate": "sqrt"}):
        changed = replace(paper, **change)
        assert not changed.is_paper_protocol() and "(paper: sigmoid)" in changed.protocol_label()


def test_compare_options_reach_the_config(monkeypatch, tmp_path):
    """--covariance-gate / --encoder-gate / --beta-sampling override the preset (checked without training)."""
    import linvae.experiment as experiment

    seen = {}

    def fake_run(cfg, out_dir, **kwargs):
        seen["cfg"] = cfg
        raise SystemExit(0)

    monkeypatch.setattr(experiment, "run_linear_compare", fake_run)
    result = CliRunner().invoke(cli, ["linear", "compare", "--covariance-gate", "sigmoid", "--encoder-gate", "sqrt",
                                      "--beta-sampling", "stratified", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert (cfg.covariance_gate, cfg.encoder_gate, cfg.beta_sampling) == ("sigmoid", "sqrt", "stratified")
    assert cfg.epochs == 30 and "sqrt encoder gates (paper: sigmoid)" in result.output
    result = CliRunner().invoke(cli, ["linear", "compare", "--out", str(tmp_path)])
    assert seen["cfg"].covariance_gate == "exp_min" and "exp_min covariance gates" in result.output
