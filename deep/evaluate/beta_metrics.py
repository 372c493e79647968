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
MIG_OPTIONS = ("mig", "mig_grid", "mig_samples", "mig_bins")


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
    """MIG (:mod:`deep.evaluate.disentangle`) of the encoder at each beta on ``grid`` =
    ``data.factor_grid(...)``: ``(rows, classes, factor_sizes, description)``. Both variants: the sampling
    estimator of Chen et al. (``mig_sampling``) and discretised means (``mig_discrete``)."""

    name = "mig"

    def __init__(self, data: Any, grid: tuple, *, samples: int = 10_000, bins: int = 20, seed: int = 0,
                 batch_size: int = 1000) -> None:
        self.data, self.grid, self.samples, self.bins = data, grid, int(samples), int(bins)
        self.seed, self.batch_size = int(seed), int(batch_size)
        self.factor_names = list(getattr(data, "factor_names", ()))

    def __call__(self, model: nn.Module, beta: float) -> dict[str, Any]:
        rows, classes, sizes, desc = self.grid
        mu, lv = _encode_rows(model, self.data, rows, beta, self.batch_size)
        ms = D.mig_sampling(mu, lv, classes, sizes, n_samples=self.samples,
                            generator=torch.Generator().manual_seed(self.seed + 1), grid=desc,
                            factor_names=self.factor_names)
        md = D.mig_discrete(mu, classes, sizes, n_bins=self.bins, grid=desc, factor_names=self.factor_names)
        return {"mig_sampling": ms.mig, "mig_discrete": md.mig, "mig_sampling_per_factor": ms.gaps,
                "mig_discrete_per_factor": md.gaps, "mig_top_latents": ms.top_latents}

    def estimators(self) -> dict[str, str]:
        desc = self.grid[3]
        return {
            "mig_sampling": (f"MIG, Chen et al. 2018 sampling estimator: H(z_j) and H(z_j|v_k) from {self.samples} "
                             f"samples of q(z|x) over the grid, MI normalised by H(v_k) = log |v_k|; grid: {desc}"),
            "mig_discrete": (f"MIG, discretised posterior means ({self.bins} equal-width bins per latent), "
                             f"discrete MI with the factors normalised by H(v_k); grid: {desc}"),
            "mig_grid": desc,
        }

    @staticmethod
    def for_data(data: Any, *, mig: bool = True, mig_grid: str = "auto", mig_samples: int = 10_000,
                 mig_bins: int = 20, seed: int = 0, batch_size: int = 1000) -> tuple["MIGMetric | None", str | None]:
        """The metric for ``data`` when it has a factor grid (and ``mig``), else ``None`` and the reason."""
        if not mig:
            return None, None
        get_grid = getattr(data, "factor_grid", None)
        if not callable(get_grid):
            return None, None
        grid = get_grid(mig_grid)
        if grid is None:
            return None, (f"MIG not computed: {getattr(data, 'grid', 'this data set')} is not a complete factor "
                          "grid (use source=subgrid, full or generated)")
        return MIGMetric(data, grid, samples=mig_samples, bins=mig_bins, seed=seed, batch_size=batch_size), None


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

    def estimators(self) -> dict[str, str]:
        return {"fid": (f"Frechet distance of {self.n} prior samples (decoder means, same z at every beta) to as "
                        "many test images; features: "
                        + ("Inception-v3 pool3 (pytorch-fid, TF-FID weights)" if self.standard
                           else "a caller-supplied feature map (not comparable with published FIDs)"))}
