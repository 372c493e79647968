"""Metrics computed once per beta from a model (:class:`deep.evaluate.loop.BetaMetric`): MIG on a factor grid
and the FID of prior samples. A new metric of this kind is one class here, passed to :func:`rd_sweep`."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import disentangle as D
from . import metrics as M
from .loop import model_device, noise_generator

__all__ = ["MIGMetric", "FIDMetric", "MIG_OPTIONS"]

#: Evaluation options the MIG metric takes (``--eval-option``).
MIG_OPTIONS = ("mig", "mig_grid", "mig_samples", "mig_bins", "mig_reference", "mig_full_grid_sizes")


@torch.no_grad()
def _encode_rows(model: nn.Module, data: Any, rows: torch.Tensor, beta: float, batch_size: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    device = model_device(model)
    mus, lvs = [], []
    for s in range(0, rows.numel(), batch_size):
        x = data.get_batch(rows[s:s + batch_size], train=False).to(device)
        mu, lv = model.encode(x, torch.full((x.shape[0],), beta, device=device))
        mus.append(mu.float().cpu())
        lvs.append(lv.float().cpu())
    return torch.cat(mus), torch.cat(lvs)


class MIGMetric:
    """The MIGs of :mod:`deep.evaluate.disentangle` of the encoder at each beta, as planned for ``data`` by
    :func:`deep.evaluate.disentangle.plan_mig`: ``mig`` (Chen et al. 2018: the full dSprites grid, scale,
    orientation, posX, posY, H(v_k) of the full grid, MI clamped at 0), and our variants ``mig_all_factors``
    (every factor of the evaluated grid, that grid's entropies) and ``mig_discrete`` (discretised means)."""

    name = "mig"

    def __init__(self, data: Any, plan: Any, *, samples: int = 10_000, bins: int = 20, seed: int = 0,
                 batch_size: int = 1000) -> None:
        self.data, self.plan, self.samples, self.bins = data, plan, int(samples), int(bins)
        self.seed, self.batch_size = int(seed), int(batch_size)

    def __call__(self, model: nn.Module, beta: float) -> dict[str, Any]:
        return D.mig_metrics(self.plan, lambda rows: _encode_rows(model, self.data, rows, beta, self.batch_size),
                             n_samples=self.samples, n_bins=self.bins, seed=self.seed + 1)

    def estimators(self) -> dict[str, str]:
        return dict(self.plan.describe(self.samples, self.bins))

    def extras(self) -> dict[str, Any]:
        plan = self.plan
        notes = "; ".join(n for n in (plan.reference_note, plan.grid_note) if n) or None
        return {"mig_grid": plan.grid[3] if plan.grid is not None else None,
                "mig_reference_grid": plan.reference_grid[3] if plan.reference_grid is not None else None,
                "mig_factors": tuple(plan.reference_factor_names) if plan.reference_grid is not None else None,
                "mig_note": notes}

    @staticmethod
    def for_data(data: Any, *, mig: bool = True, mig_grid: str = "auto", mig_samples: int = 10_000,
                 mig_bins: int = 20, mig_reference: bool = True, mig_full_grid_sizes: Any = None, seed: int = 0,
                 batch_size: int = 1000) -> tuple["MIGMetric | None", str | None]:
        """The metric for ``data`` when it is a labelled factor grid (and ``mig``), else ``None`` and the reason."""
        if not mig or not callable(getattr(data, "factor_grid", None)):
            return None, None
        plan = D.plan_mig(data, mig_grid, reference=mig_reference,
                          **({"full_grid_sizes": tuple(mig_full_grid_sizes)} if mig_full_grid_sizes else {}))
        if not plan.computes_any:
            return None, "; ".join(n for n in (plan.reference_note, plan.grid_note) if n)
        return MIGMetric(data, plan, samples=mig_samples, bins=mig_bins, seed=seed, batch_size=batch_size), None


class FIDMetric:
    """FID between ``n_samples`` test images and as many prior samples decoded at each beta (paper Fig. 6).

    The same prior draws are decoded at every beta (common random numbers); samples are the decoder means in
    [0, 1]. ``feature_extractor`` maps ``(B, C, H, W)`` images to features
    (:func:`deep.evaluate.metrics.inception_feature_extractor` for the standard FID)."""

    name = "fid"

    def __init__(self, data: Any, feature_extractor: Any, *, n_samples: int = 1000, batch_size: int = 100,
                 seed: int = 0, standard: bool = True) -> None:
        self.data, self.extract, self.batch_size, self.seed = data, feature_extractor, int(batch_size), int(seed)
        self.n = min(int(n_samples), len(data))
        if self.n < 2:
            raise ValueError("FID needs at least 2 samples")
        self.standard = standard
        self._real = None
        self._noise = None

    def _real_stats(self):
        if self._real is None:
            real = [self.data.get_batch(torch.arange(s, min(self.n, s + self.batch_size)), train=False)
                    for s in range(0, self.n, self.batch_size)]
            self._real = M.gaussian_statistics(M.extract_features(real, self.extract, self.batch_size))
        return self._real

    @torch.no_grad()
    def __call__(self, model: nn.Module, beta: float) -> dict[str, Any]:
        if self._noise is None:
            self._noise = model.sample_noise(self.n, noise_generator(self.seed, 0, salt=3))
        device = model_device(model)
        fake = []
        for s in range(0, self.n, self.batch_size):
            e = min(self.n, s + self.batch_size)
            noise = self._noise[s:e] if torch.is_tensor(self._noise) else [t[s:e] for t in self._noise]
            fake.append(model.sample(e - s, torch.tensor([beta], device=device), noise=noise).clamp(0, 1).cpu())
        fake_stats = M.gaussian_statistics(M.extract_features(fake, self.extract, self.batch_size))
        return {"fid": M.frechet_distance(*self._real_stats(), *fake_stats)}

    def extras(self) -> dict[str, Any]:
        return {}

    def estimators(self) -> dict[str, str]:
        return {"fid": (f"Frechet distance of {self.n} prior samples (decoder means, same z at every beta) to as "
                        "many test images; features: "
                        + ("Inception-v3 pool3 (pytorch-fid, TF-FID weights)" if self.standard
                           else "a caller-supplied feature map (not comparable with published FIDs)"))}


class AISMetric:
    """Annealed importance sampling of each beta's decoder (:mod:`deep.evaluate.ais`; Huang et al. 2020): the
    decoder's whole rate-distortion curve q_lam(z|x) ∝ p(z) exp(-lam d(x, z)) on the first ``n_examples`` test
    examples, its point at lam = 1/beta, the encoder's (R, D) on the same examples and the inference gap
    ``(D_enc + beta R_enc) + beta log Z(1/beta)`` (nats of the beta-VAE loss; >= 0 up to AIS error).
    ``bdmc=True`` adds bidirectional Monte Carlo on data simulated from the decoder (its log Z gap bounds the
    AIS error there): at lam = 1/beta for Gaussian / SSE distortions, at lam = 1 for Bernoulli ones."""

    name = "ais"

    def __init__(self, data: Any, settings: Any, *, n_examples: int = 16, bdmc: bool = False, seed: int = 0) -> None:
        n = min(int(n_examples), len(data))
        self.x = data.get_batch(torch.arange(n), train=False)
        self.settings, self.bdmc, self.seed = settings, bool(bdmc), int(seed)
        self.betas: list[float] = []
        self.curves: list = []
        self.bdmc_results: list = []
        self.encoder: list[tuple[float, float]] = []

    def _bdmc(self, model: nn.Module, beta_t: torch.Tensor, dist, settings):
        from . import ais as A

        name = getattr(getattr(model, "distortion", None), "name", None)
        mean = lambda z: torch.sigmoid(model.decode(z, beta_t).logits)  # noqa: E731
        if name == "bernoulli":
            sampler, lam = A.bernoulli_data_sampler(lambda z: model.decode(z, beta_t).logits), 1.0
        elif name in ("sse", "half_sse", "gaussian_nll"):
            sampler, lam = A.gaussian_data_sampler(mean, {"sse": 0.5}.get(name, 1.0)), 1.0 / float(beta_t)
        else:
            return None
        return A.bdmc(dist, int(model.latent_dim), sampler, self.x.shape[0], settings, lam=lam,
                      dtype=self.x.dtype, device=self.x.device)

    def __call__(self, model: nn.Module, beta: float) -> dict[str, Any]:
        import dataclasses

        from . import ais as A

        device = model_device(model)
        x = self.x.to(device)
        self.x = x
        beta_t = torch.tensor([beta], device=device)
        lam = 1.0 / beta
        settings = dataclasses.replace(self.settings, include=(lam,), lam_max=max(self.settings.lam_max, lam),
                                       seed=self.seed)
        grads = [p.requires_grad for p in model.parameters()]
        model.requires_grad_(False)
        try:
            with torch.enable_grad():
                dist = lambda xx, z: model.decoder_distortion(xx, z, beta_t)  # noqa: E731
                curve = A.ais_rd_curve(dist, int(model.latent_dim), x, settings)
                bd = self._bdmc(model, beta_t, dist, settings) if self.bdmc else None
            with torch.no_grad():
                out = model(x, beta_t, noise=model.sample_noise(x.shape[0], noise_generator(self.seed, 0, salt=4)))
        finally:
            for p, g in zip(model.parameters(), grads):
                p.requires_grad_(g)
        enc_r, enc_d = float(out.rate.double().mean()), float(out.distortion.double().mean())
        point = curve.point(lam)
        gap = float(A.inference_gap([enc_r], [enc_d], [beta], [point["log_partition"]])[0])
        self.betas.append(beta)
        self.curves.append(curve)
        self.bdmc_results.append(bd)
        self.encoder.append((enc_r, enc_d))
        return {"ais_rate_at_beta": point["rate"], "ais_distortion_at_beta": point["distortion"],
                "ais_encoder_rate": enc_r, "ais_encoder_distortion": enc_d, "inference_gap": gap,
                "bdmc_gap": bd.mean_gap if bd is not None else None,
                "bdmc_lam": bd.lam if bd is not None else None}

    def extras(self) -> dict[str, Any]:
        return {"ais_settings": self.settings.to_dict(), "ais_examples": int(self.x.shape[0])}

    def results(self, protocol: str) -> dict:
        """The AIS results file (``paper_figures/fig_ais.py`` reads it): every curve, arrays indexed by beta."""
        from . import ais as A

        rates, dists = zip(*self.encoder) if self.encoder else ((), ())
        return A.ais_results_json(self.betas, rates, dists, self.curves, self.bdmc_results, protocol=protocol)

    def estimators(self) -> dict[str, str]:
        n = int(self.x.shape[0])
        s = self.settings
        return {
            "ais_rate_at_beta": (f"AIS (HMC, {s.n_steps} {s.schedule} steps to lam_max={s.lam_max:g}, {s.n_chains} chains, "
                                 f"step size tuned in a first run and reused) of the decoder at beta, on the first {n} "
                                 "test examples: rate upper estimate R(lam) = -lam D(lam) - log Z(lam) at lam = 1/beta"),
            "ais_distortion_at_beta": "AIS estimate of D(lam) = E_{q_lam}[d(x, z)] at lam = 1/beta, same examples",
            "ais_encoder_rate": f"the encoder's rate on the same {n} examples",
            "ais_encoder_distortion": f"the encoder's distortion on the same {n} examples (one sample)",
            "inference_gap": "(D_enc + beta R_enc) + beta log Z_AIS(1/beta): nats of the beta-VAE loss the encoder "
                             "loses against the decoder's optimal posterior (amortisation + approximation gap)",
            "bdmc_gap": ("bidirectional Monte Carlo gap on log Z (upper - lower bound, nats) on data simulated "
                         "from the decoder at bdmc_lam" if self.bdmc else "not run (bdmc=False)"),
        }
