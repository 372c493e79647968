"""The ``mrvae-cli deep`` options are TrainConfig's fields (defaults, help, choices), user mistakes stop
before any training, and the help path does not import torch.

Training and evaluation are replaced by spies here: these tests are about what the CLI passes on.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from deep.train.config import TrainConfig, field_help

ROOT = Path(__file__).resolve().parents[1]


def invoke(*args: str):
    return CliRunner().invoke(cli, ["deep", *args], catch_exceptions=False)


@pytest.fixture
def trained(monkeypatch, tmp_path):
    """Replace the trainer by a spy: returns the configs it was given (``deep train`` then stops, --no-eval)."""
    import deep.experiments.sweep  # noqa: F401  (imported unpatched: it binds loop.train at import)
    from deep.train import loop

    seen: list[TrainConfig] = []

    def spy(config, **kw):
        seen.append(config)
        return tmp_path / "run"

    monkeypatch.setattr(loop, "train", spy)
    return seen


@pytest.fixture
def evaluated(monkeypatch):
    """Replace evaluate_run by a spy: records its arguments, returns a one-point curve with a FID note."""
    import deep.evaluate

    calls: list[dict] = []

    def spy(run_dir, **kw):
        calls.append({"run_dir": run_dir, **kw})
        return {"beta": [1.0], "rate": [2.0], "distortion": [3.0], "path": str(Path(run_dir) / "rd.json"),
                "evaluation": {"notes": ["FID not computed: a note from the spy"]}}

    monkeypatch.setattr(deep.evaluate, "evaluate_run", spy)
    return calls


# ------------------------------------------------------------------------------------------
# every field is an option, with the config's default and help
# ------------------------------------------------------------------------------------------
#: A non-default value for every TrainConfig field, as CLI arguments and as the expected config value.
EVERY_FIELD = {
    "dataset": (["--dataset", "mnist"], "mnist"),
    "arch": (["--arch", "conv"], "conv"),
    "mr": (["--beta-vae"], False),
    "beta": (["--beta", "0.5"], 0.5),
    "beta_a": (["--beta-range", "0.02", "5"], 0.02),
    "beta_b": ([], 5.0),
    "beta_sampling": (["--beta-sampling", "stratified"], "stratified"),
    "kl_schedule": (["--kl-schedule", "cyclical"], "cyclical"),
    "kl_schedule_unit": (["--kl-schedule-unit", "epoch"], "epoch"),
    "kl_warmup_fraction": (["--kl-warmup-fraction", "0.2"], 0.2),
    "kl_cycles": (["--kl-cycles", "3"], 3),
    "kl_cycle_ratio": (["--kl-cycle-ratio", "0.25"], 0.25),
    "epochs": (["--epochs", "7"], 7),
    "batch_size": (["--batch-size", "33"], 33),
    "lr": (["--lr", "0.002"], 0.002),
    "hyper_lr_mult": (["--hyper-lr-mult", "3"], 3.0),
    "lr_warmup_epochs": (["--lr-warmup-epochs", "1.5"], 1.5),
    "lr_schedule": (["--lr-schedule", "plateau"], "plateau"),
    "min_lr": (["--min-lr", "0.0001"], 1e-4),
    "plateau_patience": (["--plateau-patience", "5"], 5),
    "plateau_factor": (["--plateau-factor", "0.3"], 0.3),
    "optimizer": (["--optimizer", "adamax"], "adamax"),
    "recipe": (["--recipe", "paper"], "paper"),
    "beta_density_power": (["--beta-density-power", "2"], 2.0),
    "beta_density_shape": (["--beta-density-shape", "arcsine"], "arcsine"),
    "loss_normalization": (["--loss-normalization", "per_beta"], "per_beta"),
    "weight_decay": (["--weight-decay", "0.01"], 0.01),
    "grad_clip": (["--grad-clip", "2.5"], 2.5),
    "latent_dim": (["--latent-dim", "12"], 12),
    "distortion": (["--distortion", "half_sse"], "half_sse"),
    "enc_gate": (["--enc-gate", "film"], "film"),
    "dec_gate": (["--dec-gate", "sigmoid"], "sigmoid"),
    "hyper_hidden": (["--hyper-hidden", "16,8"], (16, 8)),
    "objective": (["--objective", "tcvae"], "tcvae"),
    "model_options": (["--model-option", "monotone_decoder=false", "--model-option", "width=[1,2]"],
                      {"monotone_decoder": False, "width": [1, 2]}),
    "seed": (["--seed", "4"], 4),
    "device": (["--device", "cpu"], "cpu"),
    "data_dir": (["--data-dir", "some/data"], "some/data"),
    "out_dir": (["--out", "some/runs"], "some/runs"),
    "run_name": (["--run-name", "r1"], "r1"),
    "n_betas": (["--n-betas", "6"], 6),
    "iw_k": (["--iw-k", "3"], 3),
    "eval_batch_size": (["--eval-batch-size", "50"], 50),
    "max_train_examples": (["--max-train-examples", "99"], 99),
    "val_split": (["--val-split", "valid"], "valid"),
    "val_max_examples": (["--val-examples", "10"], 10),
    "num_threads": (["--threads", "2"], 2),
    "data_options": (["--data-option", "source=subgrid"], {"source": "subgrid"}),
    "eval_options": (["--eval-option", "mig_samples=20"], {"mig_samples": 20}),
    "download": (["--download"], True),
    "precision": (["--precision", "bf16"], "bf16"),
    "eval_examples": (["--eval-examples", "7"], 7),
    "keep_checkpoints": (["--keep", "3"], 3),
    "log": (["--log", "tensorboard"], "tensorboard"),
}


def test_every_config_field_is_settable_from_deep_train(trained):
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(EVERY_FIELD) == fields, "a TrainConfig field without a CLI test value (or a stale entry)"
    args = [a for argv, _ in EVERY_FIELD.values() for a in argv]
    r = invoke("train", *args, "--no-eval", "--quiet")
    assert r.exit_code == 0, r.output
    (config,) = trained
    got = config.to_dict()
    for name, (_, expected) in EVERY_FIELD.items():
        value = tuple(got[name]) if name == "hyper_hidden" else got[name]
        assert value == expected, (name, value, expected)


def test_cli_defaults_are_the_config_defaults(trained):
    """Nothing given but the dataset/architecture: the config equals TrainConfig's defaults (the recipe's
    values included), so the CLI restates no default of its own."""
    r = invoke("train", "--dataset", "mnist", "--arch", "conv", "--no-eval", "--quiet")
    assert r.exit_code == 0, r.output
    expected = TrainConfig(dataset="mnist", arch="conv")
    assert trained[0].to_dict() == expected.to_dict()
    r = invoke("train", "--dataset", "mnist", "--arch", "conv", "--recipe", "paper", "--no-eval", "--quiet")
    assert trained[1].to_dict() == TrainConfig(dataset="mnist", arch="conv", recipe="paper").to_dict()
    assert trained[1].hyper_lr_mult == 1.0 and trained[0].hyper_lr_mult == 30.0


def test_sweep_options_are_the_beta_vae_fields(trained, monkeypatch):
    """``deep sweep`` offers every field a beta-VAE uses; beta and the KL schedule come from --betas and
    --schedules, the MR-only fields are absent."""
    from cli.deep import sweep

    params = {p.name for p in sweep.params}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    mr_or_sweep = {"mr", "beta", "kl_schedule", "beta_a", "beta_b", "beta_sampling", "enc_gate", "dec_gate",
                   "hyper_hidden"}
    assert fields - mr_or_sweep <= params
    assert not (mr_or_sweep & params)
    assert {"kl_warmup_fraction", "kl_cycles", "kl_cycle_ratio", "kl_schedule_unit"} <= params


def test_help_text_comes_from_the_field_docs():
    r = invoke("train", "--help")
    assert r.exit_code == 0
    flat = "".join(r.output.split())
    for f in dataclasses.fields(TrainConfig):
        assert field_help(f.name), f"TrainConfig.{f.name} has no help text"
        if f.name not in ("beta_a", "beta_b"):    # both behind --beta-range A B
            assert "".join(field_help(f.name).split()) in flat, f.name
    # each option shows the config's default after its help
    assert "".join(field_help("kl_warmup_fraction").split()) + "[default:0.3]" in flat
    assert "".join(field_help("eval_batch_size").split()) + "[default:100]" in flat


def test_recommended_settings_fill_only_the_options_left_at_their_defaults(trained):
    """dSprites recommends batch 2048, beta-TCVAE and beta range [0.1, 10]; an option given on the command
    line wins even when it equals the default."""
    r = invoke("train", "--dataset", "dsprites", "--no-eval", "--quiet")
    assert r.exit_code == 0, r.output
    cfg = trained[-1]
    assert (cfg.batch_size, cfg.objective, cfg.beta_a, cfg.beta_b) == (2048, "tcvae", 0.1, 10.0)
    r = invoke("train", "--dataset", "dsprites", "--batch-size", "128", "--objective", "elbo",
               "--beta-range", "0.01", "10", "--no-eval", "--quiet")
    assert r.exit_code == 0, r.output
    cfg = trained[-1]
    assert (cfg.batch_size, cfg.objective, cfg.beta_a, cfg.beta_b) == (128, "elbo", 0.01, 10.0)


def test_long_spellings_of_the_renamed_fields(trained):
    r = invoke("train", "--dataset", "mnist", "--num-threads", "3", "--out-dir", "o", "--val-max-examples", "5",
               "--mr", "--no-eval", "--quiet")
    assert r.exit_code == 0, r.output
    cfg = trained[-1]
    assert (cfg.num_threads, cfg.out_dir, cfg.val_max_examples, cfg.mr) == (3, "o", 5, True)


# ------------------------------------------------------------------------------------------
# choices, and mistakes caught before training
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("option, value, fragments", [
    ("--enc-gate", "relu", ["unknown gate kind 'relu'", "sigmoid, sqrt, film"]),
    ("--dec-gate", "tanh", ["unknown gate kind 'tanh'"]),
    ("--distortion", "l1", ["unknown distortion 'l1'", "bernoulli, sse, half_sse, gaussian_nll"]),
    ("--dataset", "imagenet", ["unknown dataset 'imagenet'", "yahoo"]),
    ("--optimizer", "sgd", ["unknown optimizer 'sgd'", "adam, adamax"]),
    ("--eval-examples", "1", ["--eval-examples", "x>=2"]),      # an evaluation needs 2 examples (AU, MI)
    ("--keep", "0", ["--keep", "x>=1"]),
    ("--log", "wandb", ["unknown tracker 'wandb'", "none, tensorboard"]),
    ("--hyper-hidden", "16,a", ["comma-separated integers"]),
])
def test_bad_values_stop_before_training(trained, option, value, fragments):
    r = invoke("train", "--dataset", "mnist", option, value, "--quiet")
    assert r.exit_code == 2 and "Traceback" not in r.output
    for fragment in fragments:
        assert fragment in r.output, (fragment, r.output)
    assert trained == []


def test_sweep_eval_examples_zero_stops_before_training(monkeypatch):
    import deep.experiments.sweep as SW

    monkeypatch.setattr(SW, "sweep", lambda *a, **k: pytest.fail("the sweep ran"))
    r = invoke("sweep", "--dataset", "mnist", "--eval-examples", "0")
    assert r.exit_code == 2 and "--eval-examples" in r.output


def test_a_dataset_registered_after_the_cli_was_built_is_a_valid_choice(trained):
    from _tiny_family import temporary_dataset, temporary_family

    with temporary_dataset("mydata", "nowhere:load_split"), temporary_family("mynet", "x:y", "x:y", ("mydata",)):
        r = invoke("train", "--dataset", "mydata", "--arch", "mynet", "--no-eval", "--quiet")
        assert "mydata" in invoke("train", "--help").output
    assert r.exit_code == 0, r.output
    assert (trained[0].dataset, trained[0].arch) == ("mydata", "mynet")


def test_name_tables_match_the_torch_modules():
    """The torch-free name tables the CLI offers are the keys of the tables that implement them."""
    from deep.models.names import DISTORTION_NAMES
    from deep.models.objectives import DISTORTIONS
    from deep.train import distributed as D
    from deep.train.config import PRECISIONS, field_choices
    from linvae import conditioning as C
    from linvae.names import BETA_SAMPLING, GATE_KIND_NAMES

    assert DISTORTION_NAMES == tuple(DISTORTIONS) == field_choices("distortion")
    assert GATE_KIND_NAMES == tuple(C.GATE_KINDS) == field_choices("enc_gate") == field_choices("dec_gate")
    assert BETA_SAMPLING == C.BETA_SAMPLING == field_choices("beta_sampling")
    assert PRECISIONS == D.PRECISIONS == tuple(D.PRECISION_TEXT)


# ------------------------------------------------------------------------------------------
# deep evaluate: counts and FID options
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("option, value", [("--batch-size", "0"), ("--n-betas", "0"), ("--max-examples", "0"),
                                           ("--iw-k", "-1"), ("--beta-chunk", "0"), ("--mi-examples", "1")])
def test_evaluate_rejects_bad_counts(evaluated, tmp_path, option, value):
    r = invoke("evaluate", str(tmp_path), option, value)
    assert r.exit_code == 2 and option in r.output, r.output
    assert evaluated == []


def test_evaluate_passes_the_fid_options_on(evaluated, tmp_path):
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"not read by the spy")
    r = invoke("evaluate", str(tmp_path), "--fid-samples", "16", "--fid-weights", str(weights), "--download",
               "--batch-size", "7", "--quiet")
    assert r.exit_code == 0, r.output
    (call,) = evaluated
    assert (call["fid_samples"], call["fid_weights"], call["download"], call["batch_size"]) == \
        (16, str(weights), True, 7)
    assert "note: FID not computed: a note from the spy" in r.output
    # the FID options need --fid-samples; a weights file that is not there is refused
    assert invoke("evaluate", str(tmp_path), "--fid-weights", str(weights)).exit_code == 2
    r = invoke("evaluate", str(tmp_path), "--fid-samples", "4", "--fid-weights", str(tmp_path / "none.pth"))
    assert r.exit_code == 2 and "does not exist" in r.output
    assert len(evaluated) == 1


def test_the_fid_message_names_options_that_exist():
    """The FID-unavailable message tells the user to pass --fid-weights or --download: both are options of
    ``deep evaluate``."""
    import inspect
    import re

    from cli.deep import evaluate
    from deep.evaluate import metrics

    named = set(re.findall(r"\(--([a-z-]+)\)", inspect.getsource(metrics.inception_feature_extractor)))
    assert named == {"fid-weights", "download"}
    options = {o for p in evaluate.params for o in getattr(p, "opts", ())}
    assert {f"--{n}" for n in named} <= options


# ------------------------------------------------------------------------------------------
# the help path is torch-free
# ------------------------------------------------------------------------------------------
_NO_TORCH = """
import sys
from cli.main import cli
for argv in (["--help"], ["deep", "--help"], ["deep", "train", "--help"], ["deep", "sweep", "--help"],
             ["deep", "evaluate", "--help"], ["linear", "--help"], ["experiment", "--help"]):
    try:
        cli.main(argv, prog_name="mrvae-cli", standalone_mode=False)
    except SystemExit:
        pass
import deep, deep.train, deep.train.config, deep.models.registry, deep.models.names, linvae, linvae.names
from deep.train import TrainConfig, ConfigError, BASELINE_BETAS
from deep.train.config import field_choices
field_choices("dataset"), field_choices("distortion"), field_choices("enc_gate")
heavy = sorted(m for m in ("torch", "numpy", "scipy", "matplotlib", "torchvision") if m in sys.modules)
print(",".join(heavy) or "none")
"""


def test_help_and_config_import_do_not_import_torch():
    out = subprocess.run([sys.executable, "-c", _NO_TORCH], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, check=True)
    assert "Usage: mrvae-cli deep train" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "none", out.stdout[-300:]


def test_lazy_reexports_still_resolve():
    import deep.train as T
    import linvae

    from deep.train.loop import resume_run, train
    from linvae.conditioning import BetaRange

    assert (T.train, T.resume_run, linvae.BetaRange) == (train, resume_run, BetaRange)
    with pytest.raises(AttributeError):
        T.no_such_name  # noqa: B018
    assert json.dumps(list(T.BASELINE_BETAS))
