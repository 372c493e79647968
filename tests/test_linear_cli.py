"""mrvae-cli linear: clear errors, the symbolic report and a smoke run producing the figure."""
import json

import pytest
from click.testing import CliRunner

from cli.main import cli


def test_verify_proves_every_identity():
    result = CliRunner().invoke(cli, ["linear", "verify"])
    assert result.exit_code == 0, result.output
    assert "NOT PROVED" not in result.output
    assert "16/16 identities proved" in result.output


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
    assert len(res["excess"]["mr_vae"]) == 20 and len(res["beta_vae"]["rate"]) == 10
    assert res["data"]["covariance_rank"] < 784
    for key in ("units", "distortion", "beta_range"):
        assert key in res["conventions"]
    # nothing beats the optimum fit to the training data on the training data
    assert min(res["excess"]["closed_form_train_loss"]) > 0
    assert (out / "fig4.png").stat().st_size > 10_000 and (out / "fig4.pdf").exists()
