"""Injected bugs and the tests that must catch them (issue 17: tests that can fail).

Each mutant names one plausible bug: an exact text replacement in a project file.  Running a mutant
copies the working tree to a temporary folder, applies the replacement there (the tree itself is never
touched), runs the mutant's tests in the copy and reports ``caught`` when they fail, ``SURVIVED`` when
they pass.  A replacement that no longer matches the code is reported as ``stale``.

Usage::

    python tests/mutants.py --list          # names and the bug each injects
    python tests/mutants.py                 # every mutant (a few minutes)
    python tests/mutants.py NAME [NAME..]   # some of them; -v prints the failing tests

Exit status 1 when a mutant survives or is stale.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    bug: str
    edits: tuple[tuple[str, str, str], ...]      # (file, exact old text, new text)
    tests: tuple[str, ...]                      # pytest node ids or files (with -k expressions as "-k", "expr")


_MSS_OK = """    w = torch.full((b, b), 1.0 / m, dtype=torch.float64)
    rows = torch.arange(b)
    w[rows, (rows + 1) % b] = (n - m) / (n * m)
    w[rows, rows] = 1.0 / n
"""
_MSS_COLUMN0 = """    w = torch.full((b, b), 1.0 / m, dtype=torch.float64)
    w.view(-1)[::m + 1] = 1.0 / n
    w.view(-1)[1::m + 1] = (n - m) / (n * m)
    w[m - 1, 0] = (n - m) / (n * m)
"""
_TC = "deep/models/tcvae.py"
_TC_TESTS = ("tests/test_tcvae.py", "-k", "closed_form or separated")
_MIG = "deep/evaluate/disentangle.py"
_MIG_TESTS = ("tests/test_mig.py",)

MUTANTS: dict[str, Mutant] = {
    # -- beta-TCVAE decomposition (tests/test_tcvae.py) -------------------------------------------------
    "tc_mss_column0": Mutant(
        "MSS weights with 1/N in column 0 instead of on the diagonal (the widely copied matrix)",
        ((_TC, _MSS_OK, _MSS_COLUMN0),), _TC_TESTS),
    "tc_mws_1_over_NB": Mutant(
        "MWS weights 1/(N B) as printed by Chen et al. (shifts log q(z) by -log N)",
        ((_TC, "torch.full((batch_size, batch_size), -math.log(batch_size),",
          "torch.full((batch_size, batch_size), -math.log(batch_size * dataset_size),"),), _TC_TESTS),
    "tc_tc_dimkl_swapped": Mutant(
        "TC and dimension-wise KL swapped in the returned decomposition",
        ((_TC, "return TCDecomposition(log_qz_x - log_qz, log_qz - log_prod, log_prod - log_pz,",
          "return TCDecomposition(log_qz_x - log_qz, log_prod - log_pz, log_qz - log_prod,"),), _TC_TESTS),
    "tc_marginals_as_joint": Mutant(
        "the product of marginals estimated as the joint (TC = 0)",
        ((_TC, "log_prod = torch.logsumexp(log_w.unsqueeze(2) + pair, dim=1).sum(dim=1)", "log_prod = log_qz"),),
        _TC_TESTS),
    "tc_sweep_n_is_batch": Mutant(
        "the evaluation sweep passes the minibatch size as the data-set size N",
        ((_TC, "terms = _with_terms(out, max(int(dataset_size), out.z.shape[0]), est)",
          "terms = _with_terms(out, out.z.shape[0], est)"),),
        ("tests/test_tcvae.py", "-k", "sweep_reports_the_exact_terms")),
    # -- MIG (tests/test_mig.py) ----------------------------------------------------------------------
    "mig_shape_included": Mutant(
        "the reference MIG averages every factor of the grid (dSprites: shape included)",
        ((_MIG, "    sel = _factor_indices(factors, names, len(sizes))\n    mi, det",
          "    sel = list(range(len(sizes)))\n    mi, det"),), _MIG_TESTS),
    "mig_reference_on_subgrid": Mutant(
        "the reference MIG computed on the evaluation grid (full dSprites: the sub-grid, its own entropies)",
        ((_MIG, "whole = get_grid(\"full\") if callable(get_grid) else None",
          "whole = get_grid(grid) if callable(get_grid) else None"),), _MIG_TESTS),
    "mig_unclamped": Mutant(
        "the reference MIG does not clamp negative MI estimates",
        ((_MIG, "mig, gaps, top = mig_from_mi(mi, h_v, clamp=True)", "mig, gaps, top = mig_from_mi(mi, h_v)"),),
        _MIG_TESTS),
    # -- NVAE KL balancing (tests/test_nvae.py) --------------------------------------------------------
    "nvae_kl_balance_alpha_times_kl": Mutant(
        "KL balancing coefficients alpha * mean|KL| + 0.01 (the old formula) instead of (mean|KL| + 0.01) / alpha",
        (("deep/models/nvae/model.py",
          "g = (kl_groups.detach().abs().mean(dim=0) + 0.01) / self.kl_alpha.to(kl_groups.dtype)",
          "g = self.kl_alpha.to(kl_groups.dtype) * kl_groups.detach().abs().mean(dim=0) + 0.01"),),
        ("tests/test_nvae.py", "-k", "kl_balancing")),
    "nvae_kl_balance_not_normalised": Mutant(
        "KL balancing coefficients not normalised to mean 1",
        (("deep/models/nvae/model.py", "        return g * (g.numel() / g.sum())", "        return g"),),
        ("tests/test_nvae.py", "-k", "kl_balancing")),
    "nvae_log_p_under_posterior": Mutant(
        "log p(z_l | z_<l) of a group evaluated under the posterior's parameters (log weight = log p(x|z))",
        (("deep/models/nvae/model.py", "                                          log_q, normal_log_density(z, p_mu, p_ls)))",
          "                                          log_q, normal_log_density(z, q_mu, q_ls)))"),),
        ("tests/test_nvae.py", "-k", "iw_nll")),
    "nvae_log_q_without_log_2pi": Mutant(
        "log q(z|x) of a group without the -log(2 pi)/2 term (importance weights off by a constant)",
        (("deep/models/nvae/model.py",
          "log_q = (-0.5 * e.pow(2) - q_ls - 0.5 * math.log(2 * math.pi)).reshape(batch, -1).sum(1)",
          "log_q = (-0.5 * e.pow(2) - q_ls).reshape(batch, -1).sum(1)"),),
        ("tests/test_nvae.py", "-k", "iw_nll")),
    "nvae_iw_nll_mean_over_chunk": Mutant(
        "IW-NLL averaging over the last chunk's samples instead of all k",
        (("deep/models/nvae/model.py", "    return -(lse - math.log(k))\n\n\n_NOISE_STRIDE",
          "    return -(lse - math.log(c))\n\n\n_NOISE_STRIDE"),),
        ("tests/test_nvae.py", "-k", "iw_nll")),
    # -- linear VAE (tests/test_linear_cli.py) --------------------------------------------------------
    "linear_mr_lr_at_beta10": Mutant(
        "the MR-VAE's learning rate chosen by its training loss at beta = 10 instead of 1",
        (("linvae/experiment.py", "    r1, d1 = rate_distortion(\"mr\", 1.0)\n    mr_loss = (d1 + r1).mean(0)",
          "    r1, d1 = rate_distortion(\"mr\", 10.0)\n    mr_loss = (d1 + 10.0 * r1).mean(0)"),),
        ("tests/test_linear_cli.py", "-k", "selected")),
    "linear_baseline_lr_at_beta1": Mutant(
        "each beta-VAE's learning rate chosen by its loss at beta = 1 instead of its own beta",
        (("linvae/experiment.py", "base_loss.append((d + float(beta) * r)[", "base_loss.append((d + r)["),),
        ("tests/test_linear_cli.py", "-k", "selected")),
    "linear_lr_seed0_only": Mutant(
        "learning rates chosen by the first seed's loss instead of the mean over seeds",
        (("linvae/experiment.py", "[:, j * n_lr:(j + 1) * n_lr].mean(0))", "[:, j * n_lr:(j + 1) * n_lr][0])"),
         ("linvae/experiment.py", "    mr_loss = (d1 + r1).mean(0)", "    mr_loss = (d1 + r1)[0]")),
        ("tests/test_linear_cli.py", "-k", "selected")),
    "linear_rate_counts_collapsed_latents": Mutant(
        "closed-form optimum: rate and distortion summed over all k latents, collapsed ones included",
        (("linvae/closed_form.py", "    active = lam[lam > bs]\n", "    active = lam\n"),),
        ("tests/test_linear_cli.py", "-k", "closed_form or smoke_compare")),
    "linear_exact_rate_without_log_variances": Mutant(
        "exact rate of a linear VAE without -sum log c (trained models then beat the optimum)",
        (("linvae/closed_form.py", "    rate = 0.5 * (-np.sum(np.log(c), axis=-1) + quad + c.sum(-1) - k)",
          "    rate = 0.5 * (quad + c.sum(-1) - k)"),),
        ("tests/test_linear_cli.py", "-k", "smoke_compare")),
    "linear_exact_distortion_without_noise": Mutant(
        "exact distortion of a linear VAE without the tr(D C D^T) term (the optimum scored on test data changes)",
        (("linvae/closed_form.py", "    distortion = 0.5 * (np.trace(moment) - 2.0 * cross + recon + noise) / sigma2",
          "    distortion = 0.5 * (np.trace(moment) - 2.0 * cross + recon) / sigma2"),),
        ("tests/test_linear_cli.py", "-k", "closed_form or smoke_compare")),
    # -- deep metrics (tests/test_deep_metrics.py) -----------------------------------------------------
    "metrics_mi_aggregate_over_samples": Mutant(
        "MI estimate: the aggregate posterior normalised by the number of samples (S N) instead of posteriors (N)",
        (("deep/evaluate/metrics.py", "total = total + (torch.logsumexp(block, dim=1) - math.log(n)).sum().cpu()",
          "total = total + (torch.logsumexp(block, dim=1) - math.log(samples.shape[0])).sum().cpu()"),),
        ("tests/test_deep_metrics.py", "-k", "mutual_information")),
    "metrics_mi_own_posterior_only": Mutant(
        "MI estimate: each sample scored only against its own posterior (MI = log N)",
        (("deep/evaluate/metrics.py", "total = total + (torch.logsumexp(block, dim=1) - math.log(n)).sum().cpu()",
          "total = total + (torch.diagonal(block, offset=start) - math.log(n)).sum().cpu()"),),
        ("tests/test_deep_metrics.py", "-k", "mutual_information")),
    # -- closed form and its slope (tests/test_symbolic.py) ---------------------------------------------
    "closed_form_rate_without_half": Mutant(
        "optimal rate sum log(lam / beta) without the factor 1/2 (slope dD/dR = -beta / 2)",
        (("linvae/closed_form.py", "rate = 0.5 * float(np.sum(np.log(active / bs)))",
          "rate = float(np.sum(np.log(active / bs)))"),),
        ("tests/test_symbolic.py", "-k", "slope")),
    "closed_form_decoder_sqrt_lam": Mutant(
        "joint optimum decoder scale sqrt(lam) instead of sqrt(lam - beta)",
        (("linvae/closed_form.py", "d_scale = np.sqrt(np.where(active, lam - beta, 0.0))",
          "d_scale = np.sqrt(np.where(active, lam, 0.0))"),),
        ("tests/test_symbolic.py", "-k", "slope")),
    # -- figures (tests/test_paper_figures.py) ---------------------------------------------------------
    "fig8_area_in_beta_order": Mutant(
        "RD area integrated over the points in beta order instead of sorted by rate (negative areas)",
        (("paper_figures/fig8.py", "    order = np.argsort(r, kind=\"stable\")\n", "    order = np.arange(r.size)\n"),),
        ("tests/test_paper_figures.py", "-k", "fig8_writes_areas")),
    "fig8_shared_span_without_end_segments": Mutant(
        "area over the shared rate span without the interpolated segments at its ends",
        (("paper_figures/fig8.py", "    xs = np.concatenate([[a], r[inside], [b]])",
          "    xs = r[(r >= a) & (r <= b)]"),),
        ("tests/test_paper_figures.py", "-k", "fig8_writes_areas")),
    # -- conv / ResNet VAEs (tests/test_deep_nets.py) -------------------------------------------------
    "nets_kl_without_minus_one": Mutant(
        "Gaussian KL rate without the -1 per latent (still >= 0, so a shape-and-sign test passes)",
        (("deep/models/objectives.py", "    kl = 0.5 * (mu.pow(2) + torch.exp(log_var) - 1.0 - log_var)",
          "    kl = 0.5 * (mu.pow(2) + torch.exp(log_var) - log_var)"),),
        ("tests/test_deep_nets.py", "-k", "forward_values")),
    "nets_reparameterised_with_variance": Mutant(
        "z = mu + var * eps instead of mu + sd * eps",
        (("deep/models/convnets.py", "        z = mu + torch.exp(0.5 * log_var) * eps\n        logits = self.decoder(z, u).logits",
          "        z = mu + torch.exp(log_var) * eps\n        logits = self.decoder(z, u).logits"),),
        ("tests/test_deep_nets.py", "-k", "forward_values")),
    "nets_sse_halved": Mutant(
        "colour distortion 1/2 sum of squared errors instead of the paper's sum",
        (("deep/models/objectives.py",
          "    return _per_example_sum((torch.sigmoid(_at_least_float32(logits)) - x).pow(2))",
          "    return 0.5 * _per_example_sum((torch.sigmoid(_at_least_float32(logits)) - x).pow(2))"),),
        ("tests/test_deep_nets.py", "-k", "forward_values")),
    # -- text family through the trainer (tests/test_text.py) -----------------------------------------
    "text_trainer_without_model_options": Mutant(
        "TrainConfig's model_options field renamed (the old test skipped: 'no model-family contract yet')",
        (("deep/train/config.py", "    model_options: dict = field(default_factory=dict)\n",
          "    family_options: dict = field(default_factory=dict)\n"),),
        ("tests/test_text.py", "-k", "trains_and_evaluates_the_lstm_family")),
}


def run(name: str, verbose: bool = False) -> str:
    m = MUTANTS[name]
    with tempfile.TemporaryDirectory(prefix=f"mutant_{name}_") as tmp:
        tree = Path(tmp) / "tree"
        shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(".git", "__pycache__", ".pytest_cache",
                                                                  "runs", "results", "*.egg-info"))
        for rel, old, new in m.edits:
            path = tree / rel
            text = path.read_text()
            if text.count(old) != 1:
                return f"stale ({rel}: the text to replace occurs {text.count(old)} times)"
            path.write_text(text.replace(old, new))
        env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
        cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *m.tests]
        res = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
        failed = [line for line in res.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
        if verbose and failed:
            print("\n".join("    " + f for f in failed))
        if res.returncode == 1:
            return "caught"
        if res.returncode == 0:
            return "SURVIVED"
        return f"error (pytest exit {res.returncode}): {res.stdout.strip().splitlines()[-1:]}"


def main(argv: list[str]) -> int:
    verbose = "-v" in argv
    names = [a for a in argv if not a.startswith("-")]
    if "--list" in argv:
        for k, m in MUTANTS.items():
            print(f"{k:34s} {m.bug}")
        return 0
    unknown = [n for n in names if n not in MUTANTS]
    if unknown:
        print(f"unknown mutant(s) {unknown}; --list shows them", file=sys.stderr)
        return 2
    bad = 0
    for name in names or list(MUTANTS):
        outcome = run(name, verbose)
        bad += outcome != "caught"
        print(f"{name:34s} {outcome:9s} {MUTANTS[name].bug}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
