"""The README's "Make your own VAE multi-rate" snippet and docs/examples/own_vae.py run as documented, and
every relative link and image of README.md and docs/ points to a file that exists."""
import importlib.util
import math
import re
import urllib.parse
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


# -- links and images of README.md and docs/ ---------------------------------------------------------------
#: ``[text](target)`` and ``![alt](target "title")``; ``<img src="target">``; reference definitions ``[x]: target``
_LINK_PATTERNS = (re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)"),
                  re.compile(r"<img\b[^>]*\bsrc=[\"']([^\"']+)[\"']", re.I),
                  re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M))


def _markdown_targets(text: str) -> list[str]:
    """Link and image targets of a Markdown text, outside fenced code blocks and inline code spans."""
    text = re.sub(r"^\s*(```|~~~).*?^\s*\1", "", text, flags=re.S | re.M)
    text = re.sub(r"`[^`\n]*`", "", text)
    return [t for pattern in _LINK_PATTERNS for t in pattern.findall(text)]


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a Markdown text's headings: lower case, punctuation other than ``-`` and
    ``_`` dropped, spaces to ``-``, ``-1``, ``-2``... for repeats (fenced code is not a heading)."""
    text = re.sub(r"^\s*(```|~~~).*?^\s*\1", "", text, flags=re.S | re.M)
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for title in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def broken_links(files: list[Path]) -> list[str]:
    """``file: target`` for every relative link or image whose file does not exist, and for every link to a
    heading (``page.md#anchor``, ``#anchor``) that the Markdown page does not have; URLs with a scheme are
    skipped."""
    broken = []
    for md in files:
        for target in _markdown_targets(md.read_text()):
            if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", target):
                continue
            file_part, _, anchor = target.partition("#")
            path = md.parent / urllib.parse.unquote(file_part.split("?", 1)[0]) if file_part else md
            name = md.relative_to(ROOT) if md.is_relative_to(ROOT) else md
            if not path.exists():
                broken.append(f"{name}: {target}")
            elif anchor and path.suffix == ".md" and urllib.parse.unquote(anchor) not in heading_anchors(
                    path.read_text()):
                broken.append(f"{name}: {target}")
    return broken


def _documentation() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_every_relative_link_and_image_of_readme_and_docs_exists():
    files = _documentation()
    assert {"README.md", "linear.md", "deep.md", "families.md", "paper-figures.md"} <= {f.name for f in files}
    # the README links its detail pages and shows the Fig. 4 image: the check sees them
    readme_targets = _markdown_targets((ROOT / "README.md").read_text())
    assert "docs/linear.md" in readme_targets and "docs/img/fig4_linear_default.png" in readme_targets
    assert broken_links(files) == []


def test_link_check_reports_missing_files_and_anchors_and_ignores_urls_and_code(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(b"")
    (tmp_path / "other.md").write_text("## Some anchor\n\n### The `cpu` preset at lr 2e-3 (β, 11th)\n\n## Notes\n"
                                       "## Notes\n```\n# not a heading\n```\n")
    page = tmp_path / "page.md"
    page.write_text("# Top\n[ok](other.md#some-anchor) ![ok](img/a.png) [web](https://example.org/x.md#y) "
                    "[here](#top)\n[ok](other.md#the-cpu-preset-at-lr-2e-3-β-11th) [ok](other.md#notes-1)\n"
                    "[gone](missing.md) ![gone](img/b.png) <img src=\"img/c.png\">\n[ref]: ref-missing.md\n"
                    "[bad](other.md#nope) [bad](#bottom) [bad](other.md#not-a-heading)\n"
                    "`[code](not-a-link.md)`\n```\n[fenced](not-a-link-either.md)\n```\n")
    assert broken_links([page]) == [f"{page}: missing.md", f"{page}: img/b.png", f"{page}: other.md#nope",
                                    f"{page}: #bottom", f"{page}: other.md#not-a-heading", f"{page}: img/c.png",
                                    f"{page}: ref-missing.md"]
