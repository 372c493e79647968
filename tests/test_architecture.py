"""The shape of the code: imports point one way (data -> models -> train -> evaluate -> experiments;
linvae below everything, paper_figures reading result files only), no import circles, and the contract
(deep.models.MultiRateVAE) is all a family needs to be trained and evaluated."""
import ast
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("deep", "linvae", "cli", "paper_figures")
pytestmark = pytest.mark.usefixtures("one_thread")


def _modules() -> dict[str, Path]:
    mods = {}
    for f in ROOT.rglob("*.py"):
        rel = f.relative_to(ROOT)
        if rel.parts[0] in PACKAGES:
            name = ".".join(rel.with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = f
    return mods


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (at module level or inside functions)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        package = m if f.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
                targets = subs + ([base] if len(subs) < len(node.names) else [])
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != m:
                    graph[m].add(t)
    return graph


def test_no_import_circles():
    graph = import_graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(v, path):
        state[v] = 1
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                cycles.append(path[path.index(w):] + [w])
            elif w not in state:
                visit(w, path + [w])
        state[v] = 2

    for v in sorted(graph):
        if v not in state:
            visit(v, [v])
    assert not cycles, f"import circles: {cycles[:3]}"


# layer -> the project packages it may not import (lower layers never import higher ones)
FORBIDDEN = {
    "linvae": ("deep", "cli", "paper_figures"),
    "deep.data": ("deep.models", "deep.train", "deep.evaluate", "deep.experiments", "cli", "paper_figures"),
    "deep.models": ("deep.train", "deep.evaluate", "deep.experiments", "cli", "paper_figures"),
    "deep.train": ("deep.evaluate", "deep.experiments", "cli", "paper_figures"),
    "deep.evaluate": ("deep.experiments", "cli", "paper_figures"),
    "deep.experiments": ("cli", "paper_figures"),
    "paper_figures": ("deep.models", "deep.train", "deep.evaluate", "deep.data", "deep.experiments.runner",
                      "deep.experiments.registry", "deep.experiments.sweep", "linvae", "cli"),
}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_imports_point_one_way(layer):
    bad = [(m, t) for m, targets in import_graph().items() if _within(m, layer)
           for t in sorted(targets) if any(_within(t, f) for f in FORBIDDEN[layer])]
    assert not bad, f"{layer} imports a higher layer: {bad[:5]}"


def test_the_import_graph_sees_a_violation():
    """The checker itself: a module that imports upwards is found."""
    graph = import_graph()
    assert "deep.models.registry" in graph["deep.train.loop"]          # a real edge is seen
    assert "deep.evaluate.loop" in graph["deep.evaluate.run"]


# ----------------------------------------------------------------------------------------------------
# the contract is enough: a family that writes only forward() trains and evaluates
# ----------------------------------------------------------------------------------------------------
class _Split:
    """40 binary 4x4 images."""

    def __init__(self, n=40):
        self.x = (torch.rand(n, 16, generator=torch.Generator().manual_seed(n)) < 0.3).float()

    def __len__(self):
        return self.x.shape[0]

    def get_batch(self, index, *, train=False, generator=None):
        return self.x[torch.as_tensor(index)]

    def meta(self):
        return {"name": "bits", "n": len(self)}


def _minimal_family():
    from deep.models import MultiRateVAE, VAEOutput, gaussian_kl
    from linvae.conditioning import BetaRange, GatedLinear

    class Minimal(MultiRateVAE):
        """Only __init__ and forward: every hook keeps its default."""

        def __init__(self, mr=True):
            super().__init__()
            self.is_mr, self.latent_dim, self.beta_range = mr, 2, BetaRange(0.01, 10.0)
            self._config = {"mr": mr}
            self.enc = GatedLinear(16, 4, gate="sigmoid" if mr else None)
            self.dec = GatedLinear(2, 16, gate="sqrt" if mr else None)

        def forward(self, x, beta, *, noise=None):
            u = self.hyper_input(beta, x.shape[0], x)
            mu, log_var = self.enc(x, u).chunk(2, dim=1)
            noise = torch.randn_like(mu) if noise is None else noise
            z = mu + torch.exp(0.5 * log_var) * noise
            logits = self.dec(z, u)
            distortion = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
            return VAEOutput(mu, log_var, z, logits, gaussian_kl(mu, log_var), distortion)

    return Minimal


def test_a_family_with_only_forward_is_trained_and_evaluated(tmp_path):
    from _tiny_family import registered

    from deep.evaluate import evaluate_run
    from deep.train import TrainConfig, train

    Minimal = _minimal_family()
    with registered("bits", lambda name, split, **kw: _Split(40 if split == "train" else 20), "minimal",
                    build=lambda config, data: Minimal(config.mr), rebuild=lambda mc: Minimal(**mc)):
        run = train(TrainConfig(dataset="bits", arch="minimal", epochs=2, batch_size=8, device="cpu", n_betas=3,
                                out_dir=str(tmp_path)), progress=False)
        rd = evaluate_run(run, images=False)
    assert len(rd["rate"]) == 3 and rd["model"]["arch"] == "minimal"
    assert len(rd["active_units"]) == 3           # AU / MI come from the default posterior hook
    assert rd["iw_nll"] is None                    # no log_likelihood: IW-NLL is skipped, not faked


def test_an_objective_the_family_cannot_train_is_refused_before_training(tmp_path):
    from _tiny_family import registered

    from deep.train import ConfigError, TrainConfig, train

    Minimal = _minimal_family()
    with registered("bits", lambda name, split, **kw: _Split(), "minimal",
                    build=lambda config, data: Minimal(config.mr), rebuild=lambda mc: Minimal(**mc)):
        with pytest.raises(ConfigError, match="objective 'tcvae' cannot be trained by the minimal family"):
            train(TrainConfig(dataset="bits", arch="minimal", objective="tcvae", epochs=1, batch_size=8,
                              device="cpu", out_dir=str(tmp_path)), progress=False)
    assert not any(tmp_path.iterdir())             # nothing was written: no run folder with objective=tcvae
