"""After training: resume, re-evaluate and keep results without surprises (issue 18, problems 1-4 and 7).

Each test reproduces one numbered problem of the issue on the tiny registered family (tests/_tiny_family.py)
through the CLI a user types; the last one is the acceptance sequence: kill -9 during training, a corrupt
latest checkpoint, and a resume from another working directory lose at most one epoch and never the run.
"""
from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import _tiny_family as F
from cli.main import cli
from deep.train import TrainConfig, train
from deep.train.runs import CheckpointError, RunPaths, load_checkpoint, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")

#: The options every tiny run here shares (fast: 160 examples of 1x6x6, 5 steps per epoch).
COMMON = ("--arch", F.ARCH, "--device", "cpu", "--batch-size", "32", "--lr", "0.01", "--threads", "1", "--quiet")


def invoke(*args: str, catch: bool = False):
    return CliRunner().invoke(cli, ["deep", *args], catch_exceptions=catch)


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def clean_error(result, *fragments: str) -> str:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    for f in fragments:
        assert f in result.output, (f, result.output)
    return result.output


def rd(run: Path, name: str = "rd.json") -> dict:
    return json.loads((run / "results" / name).read_text())


@pytest.fixture
def tiny():
    with F.registered_all():
        yield


def tiny_config(tmp_path: Path, **kw) -> TrainConfig:
    base = dict(dataset=F.DATASET, arch=F.ARCH, epochs=4, batch_size=32, lr=1e-2, device="cpu", num_threads=1,
                out_dir=str(tmp_path), run_name="run", n_betas=3, eval_batch_size=20)
    base.update(kw)
    return TrainConfig(**base)


# ------------------------------------------------------------------------------------------
# 1. resume drops the run's evaluation settings
# ------------------------------------------------------------------------------------------
def test_p1_resume_evaluates_with_the_runs_own_settings_unless_told_otherwise(tmp_path, tiny):
    ok(invoke("train", "--dataset", F.DATASET, *COMMON, "--epochs", "1", "--out", str(tmp_path), "--run-name", "r",
              "--n-betas", "3", "--eval-examples", "8", "--eval-batch-size", "4"))
    run = tmp_path / "r"
    first = rd(run)
    assert first["evaluation"]["n_examples"] == 8 and len(first["beta"]) == 3
    ok(invoke("resume", str(run), "--quiet"))
    again = rd(run)
    assert again["evaluation"]["n_examples"] == 8 and len(again["beta"]) == 3
    assert again["evaluation"]["batch_size"] == 4
    # told otherwise, resume evaluates as told, and the run keeps the new settings
    ok(invoke("resume", str(run), "--quiet", "--eval-examples", "6", "--n-betas", "2", "--eval-batch-size", "3"))
    third = rd(run)
    assert third["evaluation"]["n_examples"] == 6 and len(third["beta"]) == 2
    assert json.loads((run / "config.json").read_text())["config"]["eval_examples"] == 6
    # the earlier results were kept, not replaced
    kept = sorted((run / "results" / "previous").glob("*/rd.json"))
    assert [json.loads(p.read_text())["evaluation"]["n_examples"] for p in kept] == [8, 8]


# ------------------------------------------------------------------------------------------
# 2. a relative data root breaks every command run from another working directory
# ------------------------------------------------------------------------------------------
def test_p2_runs_record_an_absolute_data_root_and_fall_back_when_it_is_gone(tmp_path, tiny, monkeypatch):
    proj = tmp_path / "proj"
    (proj / "data" / "tiny").mkdir(parents=True)
    (proj / "data" / "tiny" / "READY").touch()
    monkeypatch.delenv("MRVAE_DATA", raising=False)
    monkeypatch.chdir(proj)
    ok(invoke("train", "--dataset", F.ROOTED, *COMMON, "--data-dir", "data", "--epochs", "1", "--out", "runs",
              "--run-name", "r", "--eval-examples", "8", "--n-betas", "2"))
    recorded = json.loads((proj / "runs" / "r" / "config.json").read_text())["config"]["data_dir"]
    assert recorded == str((proj / "data").resolve())
    monkeypatch.chdir(tmp_path)                                  # another working directory
    ok(invoke("evaluate", "proj/runs/r", "--output", "rd_elsewhere.json", "--quiet"))
    ok(invoke("resume", "proj/runs/r", "--quiet"))
    # the recorded root is gone: $MRVAE_DATA is used, and the command says so
    moved = tmp_path / "moved"
    (proj / "data").rename(moved)
    monkeypatch.setenv("MRVAE_DATA", str(moved))
    out = ok(invoke("evaluate", "proj/runs/r", "--output", "rd_moved.json", "--quiet"))
    assert str(proj / "data") in out and "no longer exists" in out and str(moved) in out
    assert rd(proj / "runs" / "r", "rd_moved.json")["evaluation"]["n_examples"] == 8
    # --data-dir is accepted by every command that reads data, and wins
    monkeypatch.delenv("MRVAE_DATA")
    ok(invoke("resume", "proj/runs/r", "--data-dir", str(moved), "--no-eval", "--quiet"))
    ok(invoke("evaluate", "proj/runs/r", "--data-dir", str(moved), "--output", "rd_dd.json", "--quiet"))
    ok(invoke("sample", "proj/runs/r", "--data-dir", str(moved), "--beta", "0.1", "--n", "4",
              "--out", str(tmp_path / "grid.png")))
    # the root the resume recorded is gone too and nothing else has the data: the message says where it
    # looked and how to point at the data
    moved.rename(tmp_path / "gone")
    clean_error(invoke("evaluate", "proj/runs/r", "--output", "rd_none.json", "--quiet"), "READY", "--data-dir",
                "no longer exists")


# ------------------------------------------------------------------------------------------
# 3. evaluate overwrites results and leaves stale images
# ------------------------------------------------------------------------------------------
def test_p3_evaluate_refuses_to_replace_a_result_and_keeps_images_per_evaluation(tmp_path, tiny):
    ok(invoke("train", "--dataset", F.DATASET, *COMMON, "--epochs", "1", "--out", str(tmp_path), "--run-name", "r",
              "--no-eval"))
    run = tmp_path / "r"
    ok(invoke("evaluate", str(run), "--betas", "0.01,0.1,1", "--max-examples", "8", "--quiet"))
    images = run / "results" / "images"
    assert len(list(images.glob("recon_[0-9]*.png"))) == 3
    # a second evaluation to the same result name is refused; the first result is untouched
    clean_error(invoke("evaluate", str(run), "--betas", "0.05,5", "--max-examples", "8", "--quiet"),
                "already exists", "--output", "--overwrite")
    assert rd(run)["beta"] == pytest.approx([0.01, 0.1, 1.0])
    # --overwrite replaces it, images included: no image of an earlier beta is left behind
    ok(invoke("evaluate", str(run), "--betas", "0.05,5", "--max-examples", "8", "--overwrite", "--quiet"))
    assert rd(run)["beta"] == pytest.approx([0.05, 5.0])
    assert sorted(p.name for p in images.glob("recon_[0-9]*.png")) == ["recon_00_beta0.05.png", "recon_01_beta5.png"]
    # --output writes a new named result with its own image folder
    ok(invoke("evaluate", str(run), "--betas", "0.3", "--max-examples", "8", "--output", "rd_b.json", "--quiet"))
    assert rd(run, "rd_b.json")["images"]["folder"] == "images_b"
    assert rd(run)["beta"] == pytest.approx([0.05, 5.0])


def test_evaluate_runs_on_the_threads_asked_for_else_the_runs_own(tmp_path, tiny):
    """``deep evaluate --threads N`` sets torch's CPU threads (two jobs on a 2-core machine need 1 each);
    without it the run's recorded ``num_threads`` applies, not torch's default of every core."""
    import torch

    before = torch.get_num_threads()
    try:
        ok(invoke("train", "--dataset", F.DATASET, *COMMON, "--epochs", "1", "--out", str(tmp_path), "--run-name",
                  "r", "--no-eval"))   # COMMON records --threads 1
        run = str(tmp_path / "r")
        torch.set_num_threads(2)
        ok(invoke("evaluate", run, "--betas", "0.1", "--max-examples", "8", "--no-images", "--output", "a.json",
                  "--quiet"))
        assert torch.get_num_threads() == 1
        ok(invoke("evaluate", run, "--betas", "0.1", "--max-examples", "8", "--no-images", "--output", "b.json",
                  "--threads", "2", "--quiet"))
        assert torch.get_num_threads() == 2
        clean_error(invoke("evaluate", run, "--threads", "0"), "--threads")
    finally:
        torch.set_num_threads(before)


def test_image_grids_are_labelled_with_beta():
    from deep.evaluate.images import grid_figure, save_image_grids

    imgs = torch.rand(3, 4, 1, 6, 6)
    fig = grid_figure([imgs[0], imgs[1], imgs[2]], row_labels=["β = 10", "β = 1", "β = 0.1"], title="samples")
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels == ["β = 10", "β = 1", "β = 0.1"] and fig._suptitle.get_text() == "samples"
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_saved_grids_carry_the_betas(tmp_path):
    from PIL import Image

    from deep.evaluate.images import save_image_grids

    betas = [0.01, 1.0, 10.0]
    images = {"inputs": torch.rand(4, 1, 6, 6), "recon": [torch.rand(4, 1, 6, 6) for _ in betas],
              "prior": [torch.rand(4, 1, 6, 6) for _ in betas]}
    written = save_image_grids(images, betas, tmp_path / "images")
    assert written["rows_beta_order"] == [10.0, 1.0, 0.01]
    assert written["row_labels"] == ["β = 10", "β = 1", "β = 0.01"]
    with Image.open(tmp_path / "images" / written["samples_across_beta"]) as im:
        assert im.size[0] >= 300                       # readable, not a 4 x 8 px raw grid
    assert (tmp_path / "images" / written["per_beta"][0]["recon"]).exists()


# ------------------------------------------------------------------------------------------
# 4. one checkpoint: a corrupt file loses the run; misleading advice; config.json needed
# ------------------------------------------------------------------------------------------
def test_p4_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, tiny):
    cfg = tiny_config(tmp_path, epochs=4)
    run = train(cfg, stop_after_epochs=3, progress=False)
    ck = RunPaths(run).checkpoint
    ck.write_bytes(ck.read_bytes()[:200])                    # truncated in place
    with pytest.warns(UserWarning, match=r"checkpoint\.pt.*unreadable.*epoch 2"):
        train(cfg, resume=True, progress=False)
    assert load_checkpoint(ck)["epoch"] == 4
    assert [r["epoch"] for r in read_jsonl(RunPaths(run).metrics)] == [1, 2, 3, 4]


def test_p4_bytes_changed_inside_a_checkpoint_are_detected(tmp_path, tiny):
    run = train(tiny_config(tmp_path, epochs=1), progress=False)
    ck = RunPaths(run).checkpoint
    raw = bytearray(ck.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 64] = b"\xff" * 64    # same size: torch.load alone would accept it
    ck.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="integrity"):
        load_checkpoint(ck)


def test_p4_keep_n_checkpoints(tmp_path, tiny):
    run = train(tiny_config(tmp_path, epochs=5, keep_checkpoints=3), progress=False)
    kept = sorted(p.name for p in run.glob("checkpoint*.pt"))
    assert kept == ["checkpoint-e0003.pt", "checkpoint-e0004.pt", "checkpoint-e0005.pt", "checkpoint.pt"]
    assert [load_checkpoint(run / n)["epoch"] for n in kept] == [3, 4, 5, 5]
    run1 = train(tiny_config(tmp_path, epochs=2, keep_checkpoints=1, run_name="one"), progress=False)
    assert sorted(p.name for p in run1.glob("checkpoint*.pt")) == ["checkpoint.pt"]


def test_p4_unreadable_checkpoints_get_advice_that_works(tmp_path, tiny):
    args = ("--dataset", F.DATASET, *COMMON, "--out", str(tmp_path), "--run-name", "r", "--no-eval")
    ok(invoke("train", *args, "--epochs", "2", "--keep", "1"))
    ck = tmp_path / "r" / "checkpoint.pt"
    ck.write_bytes(b"garbage")
    # nothing readable: train does not advise --resume, and --resume says the run cannot continue
    out = clean_error(invoke("train", *args, "--epochs", "2", "--keep", "1"), "no readable checkpoint")
    assert "pass --resume" not in out and "--run-name" in out
    clean_error(invoke("train", *args, "--epochs", "2", "--keep", "1", "--resume"), "no readable checkpoint",
                "--run-name")
    # with an earlier checkpoint kept, train advises --resume, and --resume works
    ok(invoke("train", *args, "--epochs", "3", "--run-name", "r2"))
    ck2 = tmp_path / "r2" / "checkpoint.pt"
    ck2.write_bytes(b"garbage")
    clean_error(invoke("train", *args, "--epochs", "3", "--run-name", "r2"), "epoch 2", "--resume")
    out = ok(invoke("train", *args, "--epochs", "3", "--run-name", "r2", "--resume"))
    assert "unreadable" in out and load_checkpoint(ck2)["epoch"] == 3


def test_p4_resume_without_config_json_uses_the_checkpoints_config(tmp_path, tiny):
    run = train(tiny_config(tmp_path, epochs=2), stop_after_epochs=1, progress=False)
    (run / "config.json").unlink()
    out = ok(invoke("resume", str(run), "--no-eval", "--quiet"))
    assert "config.json" in out
    assert load_checkpoint(RunPaths(run).checkpoint)["epoch"] == 2
    assert (run / "config.json").exists()


# ------------------------------------------------------------------------------------------
# 7. disk full during a save
# ------------------------------------------------------------------------------------------
def test_p7_disk_full_during_a_checkpoint_save_is_one_clear_message(tmp_path, tiny, monkeypatch):
    real, calls = torch.save, []

    def full(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full)
    args = ("--dataset", F.DATASET, *COMMON, "--out", str(tmp_path), "--run-name", "r", "--no-eval",
            "--epochs", "3")
    result = invoke("train", *args, catch=True)
    out = clean_error(result, "No space left on device", "epoch 1", "deep resume")
    assert len(out.strip().splitlines()) <= 3
    monkeypatch.setattr(torch, "save", real)
    ok(invoke("resume", str(tmp_path / "r"), "--no-eval", "--quiet"))
    assert load_checkpoint(tmp_path / "r" / "checkpoint.pt")["epoch"] == 3


def test_a_torn_last_metrics_line_does_not_stop_a_resume(tmp_path, tiny):
    cfg = tiny_config(tmp_path, epochs=3)
    run = train(cfg, stop_after_epochs=2, progress=False)
    with open(RunPaths(run).metrics, "a") as f:
        f.write('{"epoch": 3, "loss": 1.2')                    # killed in the middle of a write
    train(cfg, resume=True, progress=False)
    assert [r["epoch"] for r in read_jsonl(RunPaths(run).metrics)] == [1, 2, 3]


# ------------------------------------------------------------------------------------------
# acceptance: kill -9, a corrupt latest checkpoint, a resume from another directory
# ------------------------------------------------------------------------------------------
def test_kill_corrupt_and_resume_from_another_directory_loses_at_most_one_epoch(tmp_path, tiny, monkeypatch):
    proj = tmp_path / "proj"
    (proj / "data" / "tiny").mkdir(parents=True)
    (proj / "data" / "tiny" / "READY").touch()
    env = {k: v for k, v in os.environ.items() if k not in ("MRVAE_DATA", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}", OMP_NUM_THREADS="1")
    epochs = 12
    cmd = [sys.executable, str(ROOT / "tests" / "_tiny_family.py"), str(tmp_path / "report"), "cli", "deep", "train",
           "--dataset", F.ROOTED, *COMMON, "--data-dir", "data", "--out", "runs", "--run-name", "r",
           "--epochs", str(epochs), "--data-option", "sleep=0.05", "--eval-examples", "8", "--n-betas", "3"]
    proc = subprocess.Popen(cmd, cwd=proj, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run = proj / "runs" / "r"
    deadline = time.monotonic() + 180
    try:
        while len(read_jsonl_safe(run / "metrics.jsonl")) < 3:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "training did not reach 3 epochs"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    done = load_checkpoint(run / "checkpoint.pt")["epoch"]
    assert 2 <= done < epochs                # the kill may fall between a metrics line and its checkpoint
    ck = run / "checkpoint.pt"
    raw = bytearray(ck.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 256] = bytes(256)        # the latest checkpoint is corrupt
    ck.write_bytes(bytes(raw))
    monkeypatch.delenv("MRVAE_DATA", raising=False)
    monkeypatch.chdir(tmp_path)                                   # and we are somewhere else
    out = ok(invoke("resume", "proj/runs/r", "--quiet"))
    resumed_at = int(re.search(r"resuming \S+ at epoch (\d+)/", out).group(1))
    assert resumed_at >= done - 1 and "unreadable" in out
    assert load_checkpoint(ck)["epoch"] == epochs
    assert [r["epoch"] for r in read_jsonl(run / "metrics.jsonl")] == list(range(1, epochs + 1))
    assert rd(run)["evaluation"]["n_examples"] == 8 and len(rd(run)["beta"]) == 3


def read_jsonl_safe(path: Path) -> list:
    try:
        return [ln for ln in path.read_text().splitlines() if ln.endswith("}")]
    except FileNotFoundError:
        return []


# ------------------------------------------------------------------------------------------
# optional experiment-tracker logging
# ------------------------------------------------------------------------------------------
class FakeWriter:
    """Records what a SummaryWriter would be given."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir, self.scalars, self.texts, self.figures, self.closed = log_dir, [], [], [], False

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def add_text(self, tag, text):
        self.texts.append((tag, text))

    def add_figure(self, tag, figure, close=True):
        self.figures.append(tag)

    def flush(self):
        pass

    def close(self):
        self.closed = True


def test_log_tensorboard_copies_epoch_metrics_and_the_rd_curve(tmp_path, tiny, monkeypatch):
    from deep.train import trackers

    writers = []
    monkeypatch.setitem(trackers.WRITER_FACTORIES, "tensorboard", lambda d: writers.append(FakeWriter(d)) or writers[-1])
    ok(invoke("train", "--dataset", F.DATASET, *COMMON, "--epochs", "2", "--out", str(tmp_path), "--run-name", "r",
              "--n-betas", "3", "--eval-examples", "8", "--log", "tensorboard"))
    run = tmp_path / "r"
    training, evaluation = writers
    assert training.log_dir == str(run / "tensorboard") and training.closed and evaluation.closed
    history = read_jsonl(run / "metrics.jsonl")
    logged = {(tag, step): v for tag, v, step in training.scalars}
    for record in history:                                   # the same numbers as metrics.jsonl
        assert logged[("train/loss", record["epoch"])] == pytest.approx(record["loss"])
        assert logged[("train/rate", record["epoch"])] == pytest.approx(record["rate"])
    curve = rd(run)
    assert [v for tag, v, _ in evaluation.scalars if tag == "rd/rate"] == pytest.approx(curve["rate"])
    assert evaluation.figures == ["rd/curve"] and "beta" in evaluation.texts[0][1]


def test_log_tensorboard_without_the_package_stops_before_training(tmp_path, tiny, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard") or name == "tensorboard":
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    r = invoke("train", "--dataset", F.DATASET, *COMMON, "--epochs", "1", "--out", str(tmp_path), "--run-name", "r",
               "--log", "tensorboard")
    clean_error(r, "tensorboard", "pip install")
    assert not (tmp_path / "r" / "checkpoint.pt").exists()
