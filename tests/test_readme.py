"""The README's "Make your own VAE multi-rate" snippet and docs/examples/own_vae.py run as documented."""
import importlib.util
import math
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def _snippets(marker: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(re.escape(marker) + r"\n```python\n(.*?)```", text, flags=re.S)


def test_readme_own_vae_snippet_trains_a_multi_rate_model():
    (code,) = _snippets("<!-- README snippet, executed by tests/test_readme.py -->")
    torch.manual_seed(0)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    model, low, high = scope["model"], scope["low"], scope["high"]
    assert low.rate.shape == (64,) and torch.isfinite(low.distortion).all()
    # 20 steps move the gates: the posterior depends on beta (more rate at beta = 0.01 than at 10)
    assert float(low.rate.mean().detach()) > float(high.rate.mean().detach())
    # the decoder gate was declared monotone and stayed so after training: non-increasing in beta
    (dec,) = [g for g in model.gates() if g.direction == "decreasing"]
    with torch.no_grad():
        values = dec.factors(model.beta_range.standardize(model.beta_range.grid(50).float()))
    assert bool((values[1:] <= values[:-1] + 1e-7).all())
    # the gate parameters got the multiplied learning rate
    groups = scope["opt"].param_groups
    assert [g["lr"] for g in groups] == [1e-3, 3e-2] and len(groups[1]["params"]) == 4


def _example():
    spec = importlib.util.spec_from_file_location("own_vae", ROOT / "docs" / "examples" / "own_vae.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_own_vae_example_is_short_and_its_model_follows_the_contract():
    assert len((ROOT / "docs" / "examples" / "own_vae.py").read_text().splitlines()) <= 80
    module = _example()
    model = module.ConvVAE()
    x = (torch.rand(5, 1, 28, 28) < 0.3).float()
    out = model(x, torch.full((5,), 0.1))
    assert out.rate.shape == out.distortion.shape == (5,)
    # one beta for the batch folds the gates into the weights: the same numbers as a beta per example
    noise = torch.randn(5, 16)
    torch.testing.assert_close(model(x, 0.1, noise=noise).distortion,
                               model(x, torch.full((5,), 0.1), noise=noise).distortion)
    again = module.ConvVAE(**model.config)
    assert sum(p.numel() for p in again.parameters()) == sum(p.numel() for p in model.parameters())


@pytest.mark.realdata
def test_own_vae_example_trains_and_evaluates_on_binary_mnist(data_root, tmp_path):
    rd = _example().main(["--data-dir", str(data_root), "--epochs", "1", "--max-train-examples", "256",
                          "--eval-examples", "50", "--out", str(tmp_path)])
    assert len(rd["beta"]) == 5 and rd["beta"][0] == pytest.approx(0.01) and rd["beta"][-1] == pytest.approx(10.0)
    assert all(math.isfinite(v) for v in rd["rate"] + rd["distortion"])
    assert rd["model"]["arch"] == "own_conv" and rd["evaluation"]["n_examples"] == 50
    assert (Path(rd["run"]) / "results" / "rd.json").exists()


def test_readme_using_a_trained_model_snippet_runs(tmp_path):
    """The README's "Using a trained model" section, run as written on a freshly trained (tiny) MR-VAE."""
    import warnings

    import _tiny_family as F
    from deep.train import TrainConfig, train

    (code,) = _snippets("<!-- README snippet: using a trained model, executed by tests/test_readme.py -->")
    with F.registered_all():
        run_dir = train(TrainConfig(dataset=F.DATASET, arch=F.ARCH, epochs=6, batch_size=32, lr=1e-2, device="cpu",
                                    num_threads=1, out_dir=str(tmp_path), run_name="mr", eval_examples=20,
                                    eval_batch_size=10), progress=False)
        scope: dict = {"run_dir": str(run_dir)}
        with warnings.catch_warnings():
            warnings.simplefilter("error")                 # every beta of the snippet is in the trained range
            exec(compile(code, "README.md", "exec"), scope)
    assert scope["mu"].shape == (8, 3) and scope["recon"].shape == scope["images"].shape == (8, 1, 6, 6)
    torch.testing.assert_close(scope["recon"], scope["images"])
    assert scope["samples"].shape == (16, 1, 6, 6) and scope["rate"].shape == (8,)
    assert len(scope["curve"]["beta"]) == 10 and scope["curve"]["n_examples"] == 20
    assert abs(scope["found"].rate - scope["target"]) <= 0.01 and 0.01 < scope["found"].beta < 10
