"""Scale-out of the deep trainer: torchrun/DDP (deep/distributed.py), mixed precision, parallel sweeps.

Multi-process runs use PyTorch's own launcher (``python -m torch.distributed.run``, i.e. ``torchrun``) on
the tiny importable family of tests/_tiny_family.py (a monkeypatched registry cannot reach other
processes), with gloo on CPU. Two launches of ~10 s each; everything else runs in-process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import _tiny_family as F
from cli.main import cli
from deep.train import distributed as D
from deep.models import registry as families
from deep import train as T
from deep.experiments import sweep as SW
from deep.train import loop as L, schedules as S
from deep.train.config import VAL_BETAS
from deep.train.runs import RunPaths, load_checkpoint, read_jsonl

pytestmark = pytest.mark.usefixtures("one_thread")
HELPER = Path(F.__file__).resolve()


@pytest.fixture
def tiny(monkeypatch):
    """Register the tiny family (module-level functions, so spawned sweep workers can unpickle them)."""
    with F.registered():
        yield


def torchrun(tmp_path: Path, nproc: int, *args: str) -> list[dict]:
    """Run tests/_tiny_family.py under torchrun with ``nproc`` gloo processes; return each rank's report."""
    out = tmp_path / f"ranks_{len(list(tmp_path.glob('ranks_*')))}"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           str(HELPER), str(out), *args]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)]
    reports[0]["stdout"] = res.stdout
    return reports


def base_config(tmp_path, **kw) -> T.TrainConfig:
    fields = dict(dataset=F.DATASET, arch=F.ARCH, epochs=3, batch_size=32, lr=1e-2, device="cpu",
                  out_dir=str(tmp_path), run_name="run", n_betas=3, eval_batch_size=20)
    fields.update(kw)
    return T.TrainConfig(**fields)


# ------------------------------------------------------------------------------------------
# helpers of deep/distributed.py (in-process)
# ------------------------------------------------------------------------------------------
def test_shards_cover_each_batch_once_and_rank_streams_differ():
    for n in (1, 2, 7, 25, 32):
        for world in (1, 2, 3, 4):
            bounds = [D.shard_bounds(n, D.DistContext(rank=r, world_size=world)) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))         # contiguous, no overlap
            sizes = [b - a for a, b in bounds]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    x = torch.arange(10.0).reshape(5, 2)
    assert torch.equal(D.local_batch(x, 1, 3), x[1:3])

    class Selectable:
        def __init__(self, rows):
            self.rows = rows

        def select(self, index):
            return Selectable([self.rows[i] for i in index.tolist()])

    assert D.local_batch(Selectable(list("abcde")), 3, 5).rows == ["d", "e"]
    with pytest.raises(D.DistributedSetupError, match="select"):
        D.local_batch([1, 2, 3], 0, 1)
    seeds = {D.rank_seed(0, r, e, s) for r in range(3) for e in range(3) for s in ("beta", "torch")}
    assert len(seeds) == 18 and D.rank_seed(5, 1, 2, "beta") == D.rank_seed(5, 1, 2, "beta")
    assert all(0 <= s < 2 ** 63 for s in seeds)


def test_torchrun_environment_is_validated(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert D.torchrun_env() is None and D.is_main_process()
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(D.DistributedSetupError, match="torchrun"):
        D.torchrun_env()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert D.torchrun_env() == (1, 2, 1) and not D.is_main_process()
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(D.DistributedSetupError, match="inconsistent"):
        D.torchrun_env()


# ------------------------------------------------------------------------------------------
# torchrun: 2 processes vs 1, resume across process counts, the CLI unchanged
# ------------------------------------------------------------------------------------------
def test_two_processes_follow_the_one_process_trajectory_and_resume_in_one(tmp_path, tiny):
    """A beta-VAE with a deterministic encoder (no per-process randomness), 151 examples and an odd global
    batch (25: shards of 13 + 12; the last batch has 1 example, so process 1 joins that step with a
    zero-weight copy): 2 gloo processes must reproduce the 1-process run.

    The data (permutation and dynamic binarisation) and the gradient (loss weighted by shard size before
    DDP's average) are the same by construction, so the only difference is the order of float32
    additions: measured relative differences are ~1e-8 in the logged losses and < 1e-7 absolute in the
    weights. The tolerance (1e-6 relative) leaves 100x room for other CPUs' kernels, yet the subtlest
    wrong convention fails it: averaging the per-process mean losses of the unequal shards (what plain
    DDP does) already moves the first epoch's loss by 3.4e-5 relative; dropping or duplicating examples
    moves it far more.
    """
    common = dict(mr=False, beta=0.5, batch_size=25, model_options={"sample": False}, val_split="valid",
                  eval_batch_size=16,   # validation: 3 batches, 2 on process 0 and 1 on process 1
                  data_options={"n": 151})
    one = base_config(tmp_path, run_name="one", **common)
    T.train(one, progress=False)
    two = one.replace(run_name="two")
    reports = torchrun(tmp_path, 2, "lib", json.dumps({"config": two.to_dict(), "stop_after_epochs": 2}))
    # every step splits the global batch 13 + 12 (last batch 1 + a zero-weight 1): 7 steps per epoch
    assert reports[0]["batch_sizes"] == ([13] * 6 + [1]) * 2
    assert reports[1]["batch_sizes"] == ([12] * 6 + [1]) * 2
    ck = load_checkpoint(RunPaths(tmp_path / "two").checkpoint)
    assert ck["epoch"] == 2 and ck["world_size"] == 2 and ck["step"] == 14
    assert not any(k.startswith("module.") for k in ck["model"])      # the unwrapped model
    conf = json.loads(RunPaths(tmp_path / "two").config.read_text())
    assert conf["distributed"]["world_size"] == 2 and conf["distributed"]["backend"] == "gloo"
    assert "2 contiguous per-process shards" in conf["conventions"]["batch"]
    # resume the 2-process checkpoint in this (single) process
    T.resume_run(tmp_path / "two", progress=False)
    h1, h2 = read_jsonl(RunPaths(tmp_path / "one").metrics), read_jsonl(RunPaths(tmp_path / "two").metrics)
    assert [r["world_size"] for r in h2] == [2, 2, 1] and [r["epoch"] for r in h2] == [1, 2, 3]
    for r1, r2 in zip(h1, h2):
        for key in ("loss", "rate", "distortion", "val_loss"):
            assert r2[key] == pytest.approx(r1[key], rel=1e-6), (r1["epoch"], key)
    assert h1[-1]["loss"] < h1[0]["loss"] - 1.0                         # it did train
    w1 = load_checkpoint(RunPaths(tmp_path / "one").checkpoint)["model"]
    w2 = load_checkpoint(RunPaths(tmp_path / "two").checkpoint)["model"]
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-5, atol=1e-6)


def test_cli_train_under_torchrun_resumes_a_one_process_mr_run(tmp_path, tiny):
    """The unchanged `mrvae-cli deep train` command in 2 processes continues a 1-process MR-VAE
    checkpoint; per-process betas come from distinct streams; only process 0 prints and evaluates."""
    cfg = base_config(tmp_path, epochs=2, run_name="cli")
    T.train(cfg, progress=False, stop_after_epochs=1)
    reports = torchrun(tmp_path, 2, "cli", "deep", "train", "--dataset", F.DATASET, "--arch", F.ARCH,
                       "--epochs", "2", "--batch-size", "32", "--lr", "0.01", "--device", "cpu",
                       "--out", str(tmp_path), "--run-name", "cli", "--resume", "--n-betas", "3",
                       "--eval-batch-size", "20", "--quiet")
    out = reports[0]["stdout"]
    assert out.count("run folder:") == 1 and out.count("results:") == 1      # rank 0 only
    assert "(1 -> 2 processes)" in out
    paths = RunPaths(tmp_path / "cli")
    hist = read_jsonl(paths.metrics)
    assert [(r["epoch"], r["world_size"]) for r in hist] == [(1, 1), (2, 2)]
    assert all(np.isfinite(r["loss"]) for r in hist) and load_checkpoint(paths.checkpoint)["epoch"] == 2
    rd = json.loads((paths.results / "rd.json").read_text())
    assert len(rd["rate"]) == 3 and rd["model"]["epochs_trained"] == 2
    b0, b1 = (np.concatenate(r["betas"]) for r in reports)
    assert [len(b) for b in reports[0]["betas"]] == [16] * 5 == [len(b) for b in reports[1]["betas"]]
    assert len(np.unique(b0)) == b0.size and len(np.intersect1d(b0, b1)) == 0   # distinct streams
    assert b0.min() >= 0.01 and b1.max() <= 10.0


# ------------------------------------------------------------------------------------------
# mixed precision
# ------------------------------------------------------------------------------------------
def test_bf16_autocast_trains_with_float32_rate_and_distortion(tmp_path, tiny):
    model = F.TinyVAE(mr=True)
    x = F.TinySplit(8).get_batch(torch.arange(8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, torch.full((8,), 0.5))
    assert out.logits.dtype == torch.bfloat16 and out.mu.dtype == torch.bfloat16     # autocast is on
    assert out.rate.dtype == torch.float32 and out.distortion.dtype == torch.float32
    # the KL of the bf16 posterior equals the float32 KL of the same (upcast) values
    from deep.models.objectives import gaussian_kl
    torch.testing.assert_close(out.rate, gaussian_kl(out.mu.float(), out.log_var.float()))

    cfg = base_config(tmp_path, epochs=5, precision="bf16")
    run_dir = T.train(cfg, progress=False, stop_after_epochs=4)
    hist = read_jsonl(RunPaths(run_dir).metrics)
    losses = [r["loss"] for r in hist]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0] - 1.0
    assert all(r["precision"] == "bf16" for r in hist)
    conv = json.loads(RunPaths(run_dir).config.read_text())["conventions"]
    assert conv["precision"]["name"] == "bf16" and "float32" in conv["precision"]["description"]
    # precision is a runtime setting: the run may continue in float32 (each epoch logs its precision)
    T.train(cfg.replace(precision="fp32"), resume=True, progress=False)
    assert [r["precision"] for r in read_jsonl(RunPaths(run_dir).metrics)] == ["bf16"] * 4 + ["fp32"]


def test_fp16_on_cpu_is_a_clear_error(tmp_path, tiny):
    with pytest.raises(T.ConfigError, match="fp16' needs a CUDA GPU.*bf16"):
        base_config(tmp_path, precision="fp16")
    with pytest.raises(T.ConfigError, match="choose from"):
        base_config(tmp_path, precision="fp8")
    if not torch.cuda.is_available():
        with pytest.raises(T.ConfigError, match="needs a CUDA GPU"):
            T.train(base_config(tmp_path, precision="fp16", device="auto"), progress=False)
        assert not (tmp_path / "run").exists()
    r = CliRunner().invoke(cli, ["deep", "train", "--dataset", F.DATASET, "--arch", F.ARCH, "--device", "cpu",
                                 "--precision", "fp16", "--out", str(tmp_path), "--quiet"])
    assert r.exit_code != 0 and "Traceback" not in r.output and "needs a CUDA GPU" in r.output


# ------------------------------------------------------------------------------------------
# parallel sweep
# ------------------------------------------------------------------------------------------
def test_sweep_jobs_equals_the_sequential_sweep(tmp_path, tiny):
    betas = [0.1, 2.0]
    seq = base_config(tmp_path, epochs=2, num_threads=1, run_name="seq")
    SW.sweep(seq, betas=betas, schedules=("constant",), progress=False)
    r = CliRunner().invoke(cli, ["deep", "sweep", "--dataset", F.DATASET, "--arch", F.ARCH, "--epochs", "2",
                                 "--batch-size", "32", "--lr", "0.01", "--device", "cpu", "--threads", "1",
                                 "--out", str(tmp_path), "--run-name", "par", "--betas", "0.1,2",
                                 "--schedules", "constant", "--eval-batch-size", "20", "--jobs", "2", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "2 at a time" in r.output and r.output.count("[sweep] done") == 2
    assert r.output.count("[sweep] queued") == 2   # submitted to the pool; a worker starts it when one is free
    ia = json.loads((tmp_path / "seq" / "index.json").read_text())
    ib = json.loads((tmp_path / "par" / "index.json").read_text())
    assert [(e["beta"], e["run_dir"]) for e in ia["runs"]] == [(e["beta"], e["run_dir"]) for e in ib["runs"]]
    for e in ia["runs"]:
        a, b = RunPaths(tmp_path / "seq" / e["run_dir"]), RunPaths(tmp_path / "par" / e["run_dir"])
        wa, wb = load_checkpoint(a.checkpoint)["model"], load_checkpoint(b.checkpoint)["model"]
        assert all(torch.equal(wa[k], wb[k]) for k in wa), e["beta"]               # bit-identical
        assert [m["loss"] for m in read_jsonl(a.metrics)] == [m["loss"] for m in read_jsonl(b.metrics)]
        ra, rb = (json.loads((p.results / "rd.json").read_text()) for p in (a, b))
        assert ra["rate"] == rb["rate"] and ra["distortion"] == rb["distortion"] and ra["beta"] == [e["beta"]]
    # betas train different models (the comparison is not vacuous)
    w = [load_checkpoint(RunPaths(tmp_path / "seq" / e["run_dir"]).checkpoint)["model"] for e in ia["runs"]]
    assert not torch.equal(w[0]["enc_mu.weight"], w[1]["enc_mu.weight"])
    with pytest.raises(T.ConfigError, match="jobs"):
        SW.sweep(seq, betas=betas, schedules=("constant",), jobs=0)


def test_parallel_sweep_reports_a_failed_run_when_it_fails(tmp_path, tiny):
    """A run that fails in a worker is named in the output (with its error) at once, the other run finishes,
    and the sweep exits non-zero: the failure is not held back until every started run has ended."""
    bad = tmp_path / "par" / "beta0.1_constant"
    bad.mkdir(parents=True)
    (bad / "checkpoint.pt").write_bytes(b"not a checkpoint")    # an interrupted run that cannot be resumed
    r = CliRunner().invoke(cli, ["deep", "sweep", "--dataset", F.DATASET, "--arch", F.ARCH, "--epochs", "1",
                                 "--batch-size", "32", "--device", "cpu", "--threads", "1", "--out", str(tmp_path),
                                 "--run-name", "par", "--betas", "0.1,2", "--schedules", "constant",
                                 "--eval-batch-size", "20", "--jobs", "2", "--quiet"])
    assert r.exit_code != 0
    assert "[sweep] FAILED beta=0.1 schedule=constant" in r.output and "cannot be resumed" in r.output, r.output
    assert "[sweep] done  beta=2 schedule=constant" in r.output
    assert (tmp_path / "par" / "beta2_constant" / "summary.json").exists()


# ------------------------------------------------------------------------------------------
# longer multi-process checks (--runslow)
# ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_process_mr_resume_is_bit_identical(tmp_path, tiny):
    """Per-process beta and noise streams (process 0 from the checkpoint, process 1 reseeded from
    (seed, rank, epoch)) make an interrupted 2-process MR run resume bit-for-bit."""
    cfg = base_config(tmp_path, epochs=3, run_name="straight")
    torchrun(tmp_path, 2, "lib", json.dumps({"config": cfg.to_dict()}))
    cut = cfg.replace(run_name="cut")
    torchrun(tmp_path, 2, "lib", json.dumps({"config": cut.to_dict(), "stop_after_epochs": 1}))
    torchrun(tmp_path, 2, "lib", json.dumps({"config": cut.to_dict(), "resume": True}))
    wa = load_checkpoint(RunPaths(tmp_path / "straight").checkpoint)["model"]
    wb = load_checkpoint(RunPaths(tmp_path / "cut").checkpoint)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    la = [r["loss"] for r in read_jsonl(RunPaths(tmp_path / "straight").metrics)]
    assert la == [r["loss"] for r in read_jsonl(RunPaths(tmp_path / "cut").metrics)] and len(la) == 3


@pytest.mark.slow
def test_nan_on_one_process_stops_every_process(tmp_path, tiny):
    """A NaN loss on process 1 only stops both processes at the same step; process 0 writes failure.json
    naming process 1 and keeps the last good checkpoint. One beta per global batch is shared by both."""
    cfg = base_config(tmp_path, beta_sampling="batch", model_options={"nan_after": 7, "nan_rank": 1})
    reports = torchrun(tmp_path, 2, "lib", json.dumps({"config": cfg.to_dict()}))
    assert all("NonFiniteLossError" in r["error"] and "epoch 2" in r["error"] for r in reports)
    failure = json.loads(RunPaths(tmp_path / "run").failure.read_text())
    assert failure["processes_with_non_finite_loss"] == [1] and failure["epoch"] == 2
    assert load_checkpoint(RunPaths(tmp_path / "run").checkpoint)["epoch"] == 1
    assert reports[0]["betas"] == reports[1]["betas"]                       # shared per-batch beta
    assert all(len(set(b)) == 1 for b in reports[0]["betas"]) and len(reports[0]["betas"]) == 8


@pytest.mark.slow
def test_sweep_under_torchrun_trains_each_run_with_both_processes(tmp_path, tiny):
    cfg = base_config(tmp_path, epochs=1, run_name="sw")
    reports = torchrun(tmp_path, 2, "lib", json.dumps({"config": cfg.to_dict(),
                                                       "sweep": {"betas": [0.1, 1.0], "schedules": ["constant"]}}))
    index = json.loads((tmp_path / "sw" / "index.json").read_text())
    assert [e["beta"] for e in index["runs"]] == [0.1, 1.0]
    for e in index["runs"]:
        run = RunPaths(tmp_path / "sw" / e["run_dir"])
        assert read_jsonl(run.metrics)[0]["world_size"] == 2
        assert json.loads((run.results / "rd.json").read_text())["beta"] == [e["beta"]]
    assert reports[1]["batch_sizes"] == [16] * 5                            # the last run, process 1
