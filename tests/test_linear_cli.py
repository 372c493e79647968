"""mrvae-cli linear: clear errors, the symbolic report, the exact curve against an independent closed form,
App. C.1's learning-rate selection, and a smoke run producing the figure."""
import json
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import cli
from linvae.experiment import select_learning_rates
from linvae.mnist import load_mnist


def _top_eigen(x: np.ndarray, k: int):
    """Top-k eigenvalues / vectors of the biased covariance of x (numpy, independent of linvae)."""
    xc = x.astype(np.float64) - x.mean(0)
    lam, u = np.linalg.eigh(xc.T @ xc / x.shape[0])
    order = np.argsort(lam)[::-1][:k]
    return lam[order], u[:, order], x.astype(np.float64).mean(0)


def _optimum_on_train(lam: np.ndarray, total_variance: float, beta: float) -> tuple[float, float]:
    """Paper-notes 2.4, sigma^2 = 1: R = 1/2 sum_{lam_i > beta} log(lam_i / beta),
    D = 1/2 (tr S - sum_{lam_i > beta} (lam_i - beta))."""
    act = lam[lam > beta]
    return 0.5 * float(np.log(act / beta).sum()), 0.5 * (total_variance - float((act - beta).sum()))


def _optimum_on_other_data(lam, u, beta, moment):
    """The same optimum (D = U sqrt(lam - beta)+, E = diag(d / lam) U^T, C = min(1, beta / lam)) scored on
    data of second moment `moment` about the training mean, by the matrix objective of paper-notes 2.2."""
    act = lam > beta
    d = np.sqrt(np.where(act, lam - beta, 0.0))
    dec, enc = u * d, (np.where(act, d / lam, 0.0)[:, None] * u.T)
    c = np.where(act, beta / lam, 1.0)
    de = dec @ enc
    dist = 0.5 * (np.trace(moment) - 2 * np.trace(de @ moment) + np.trace(de @ moment @ de.T)
                  + np.sum((dec ** 2).sum(0) * c))
    rate = 0.5 * (-np.log(c).sum() + np.trace(enc @ moment @ enc.T) + c.sum() - len(c))
    return rate, dist


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


@pytest.mark.parametrize("split", ["train", "test"])
def test_exact_curve_command_matches_an_independent_closed_form(tmp_path, data_root, split):
    """`linear curve` against the optimum computed here from numpy's eigendecomposition of the MNIST
    training covariance: per-dimension closed forms on the training data, the matrix objective on the test
    data (rel 1e-6)."""
    out = tmp_path / "curve.json"
    result = CliRunner().invoke(cli, ["linear", "curve", "--n-betas", "5", "--split", split, "--out", str(out),
                                      "--data-dir", str(data_root)])
    assert result.exit_code == 0, result.output
    curve = json.loads(out.read_text())
    assert curve["beta"] == pytest.approx(np.logspace(-2, 1, 5), rel=1e-6) and curve["latent_dim"] == 32
    train = load_mnist("train", data_root).reshape(60_000, -1)
    lam, u, mean = _top_eigen(train, 32)
    if split == "train":
        total = float(((train - mean) ** 2).sum(1).mean())
        want = [_optimum_on_train(lam, total, b) for b in curve["beta"]]
    else:
        xt = load_mnist("test", data_root).reshape(10_000, -1).astype(np.float64) - mean
        want = [_optimum_on_other_data(lam, u, b, xt.T @ xt / xt.shape[0]) for b in curve["beta"]]
    assert curve["rate"] == pytest.approx([r for r, _ in want], rel=1e-6, abs=1e-9)
    assert curve["distortion"] == pytest.approx([d for _, d in want], rel=1e-6)
    assert curve["rate"][-1] == 0.0                                  # beta = 10 > every eigenvalue: collapsed


def _designed_rate_distortion(which: str, beta: float):
    """(rate, distortion), each (2 seeds, models), designed so that every wrong selection rule picks another LR.

    MR-VAE (3 LRs, the same R, D at every beta): R = [4, 1, 6], D = [10.6, 15, 8.5] (seed 0), [9.4, 15, 8.5]
    (seed 1).  Loss at beta = 1, mean over seeds: [14, 16, 14.5] -> LR 0; seed 0 alone: [14.6, 16, 14.5] -> 2;
    at beta = 10: [50, 25, 68.5] -> 1; at beta = 0.1: [10.4, 15.1, 9.1] -> 2.
    beta-VAEs at betas 0.1, 1, 10 (model j * 3 + l; their R, D do not depend on the beta they are scored at):
      j = 0: R = [10, 2, 8], D = [5, 9, 6]:  L(0.1) = [6, 9.2, 6.8] -> 0;  L(1) = [15, 11, 14] -> 1
      j = 1: R = [2, 1, 3], D = [10, 10.5, 9] (seed 0) / [9, 11.5, 9] (seed 1): mean L(1) = [11.5, 12, 12] -> 0;
             seed 0 alone [12, 11.5, 12] -> 1
      j = 2: R = [1, 0.5, 3], D = [20, 24, 15]: L(10) = [30, 29, 45] -> 1;  L(1) = [21, 24.5, 18] -> 2
    Own-beta rule: [0, 0, 1]; shared average over the baselines: [15.83, 16.73, 21.27] -> LR 0 for all."""
    if which == "mr":
        return (np.array([[4.0, 1.0, 6.0]] * 2), np.array([[10.6, 15.0, 8.5], [9.4, 15.0, 8.5]]))
    r = np.array([10, 2, 8, 2, 1, 3, 1, 0.5, 3], dtype=float)
    d0 = np.array([5, 9, 6, 10, 10.5, 9, 20, 24, 15], dtype=float)
    d1 = d0.copy()
    d1[3:6] = [9, 11.5, 9]
    return np.stack([r, r]), np.stack([d0, d1])


def test_learning_rates_are_selected_as_app_c1_says():
    sel = select_learning_rates(_designed_rate_distortion, (0.1, 1.0, 10.0), 3)
    assert sel.mr_vae == 0                                   # training loss at beta = 1, mean over seeds
    assert sel.mr_vae_train_loss_at_beta1.tolist() == pytest.approx([14.0, 16.0, 14.5])
    assert sel.beta_vae == [0, 0, 1]                         # each at its own beta, mean over seeds
    np.testing.assert_allclose(sel.beta_vae_train_loss, [[6, 9.2, 6.8], [11.5, 12, 12], [30, 29, 45]])
    shared = select_learning_rates(_designed_rate_distortion, (0.1, 1.0, 10.0), 3, baseline_rule="shared_average")
    assert shared.beta_vae == [0, 0, 0] and shared.mr_vae == 0
    with pytest.raises(ValueError, match="baseline LR rule"):
        select_learning_rates(_designed_rate_distortion, (0.1, 1.0, 10.0), 3, baseline_rule="at_beta_1")


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
    # the optimum's training loss is the closed form of the 2,000 training images ...
    train = load_mnist("train", data_root)[:2000].reshape(2000, -1)
    lam, _, mean = _top_eigen(train, 32)
    total = float(((train - mean) ** 2).sum(1).mean())
    want = []
    for b in res["excess"]["beta"]:
        rate, dist = _optimum_on_train(lam, total, b)
        want.append(dist + b * rate)
    assert res["excess"]["closed_form_train_loss"] == pytest.approx(want, rel=1e-6)
    # ... and no trained model (any learning rate, mean over seeds) beats it on the training data
    opt = {}
    for b in [1.0, *res["beta_vae"]["beta"]]:
        rate, dist = _optimum_on_train(lam, total, b)
        opt[b] = dist + b * rate
    assert min(res["lr_selection"]["mr_vae_train_loss_at_beta1"]) >= opt[1.0] * (1 - 1e-9)
    for b, losses in zip(res["beta_vae"]["beta"], res["lr_selection"]["beta_vae_train_loss_at_own_beta"]):
        assert min(losses) >= opt[b] * (1 - 1e-9), b
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
