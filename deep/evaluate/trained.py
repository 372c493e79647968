"""Use a trained MR-VAE: load a run folder in one call, then query the model at any beta of its trained range.

::

    from deep.evaluate import load_run

    model = load_run("runs/mnist_resnet_mr_e10_lr0.001_seed0")
    x = model.data("test").get_batch(torch.arange(8))
    rate, distortion = model.rate_distortion(x, beta=0.1)      # (8,) nats per example
    found = model.beta_for_rate(20.0)                           # the beta whose rate is 20 nats

Every call goes through the hooks of the model contract (:class:`deep.models.MultiRateVAE`): ``encode`` /
``decode`` where the family has them (a clear ``NotImplementedError`` otherwise), ``reconstruct`` /
``sample`` for images, ``forward`` for the rate and distortion of a batch, and the one evaluation loop
(:func:`deep.evaluate.loop.rd_sweep`) for RD curves and the beta searches, so the numbers are the
evaluator's. A beta outside the trained range gives a ``UserWarning`` (the network extrapolates there), or a
:class:`linvae.conditioning.BetaRangeError` with ``strict=True``.
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import torch

from linvae.conditioning import BetaRange, BetaRangeError

from deep.train.config import RUNTIME_FIELDS, TrainConfig, resolve_device
from deep.train.runs import RunPaths, read_json

from .loop import noise_generator, rd_sweep
from .run import apply_evaluation_options, load_eval_data, load_run_model

__all__ = ["load_run", "TrainedModel", "BetaSearch", "TargetOutOfRangeError"]

#: The beta search stops when the log-beta bracket is narrower than this.
LOG_BETA_RESOLUTION = 1e-6


class TargetOutOfRangeError(ValueError):
    """A target rate or distortion the trained beta range does not reach (the message gives the range)."""


class BetaSearch(NamedTuple):
    """The beta found for a target, with the rate and distortion measured there (nats per example) and the
    number of evaluations (passes over the examples) the bisection took."""

    beta: float
    rate: float
    distortion: float
    evaluations: int


def load_run(run_dir: str | os.PathLike, *, device: str | torch.device = "cpu", data_dir: str | None = None,
             strict: bool = False) -> "TrainedModel":
    """The trained model of a run folder (its newest readable checkpoint), ready to query.

    ``device``: where the model runs (``"auto"``: CUDA when available). ``data_dir``: the data root for
    :meth:`TrainedModel.data` and the curves (default: the run's, else ``$MRVAE_DATA``). ``strict``: raise
    instead of warning for betas outside the trained range."""
    dev = resolve_device(str(device))
    config, model, ckpt = load_run_model(run_dir, dev)
    paths = RunPaths(run_dir)
    if paths.config.exists():      # the run's current runtime settings (evaluation sizes, data root)
        try:
            current = TrainConfig.from_dict(read_json(paths.config)["config"])
            config = config.replace(**{k: getattr(current, k) for k in RUNTIME_FIELDS})
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return TrainedModel(paths.root, config, model, int(ckpt["epoch"]), strict=strict, data_dir=data_dir)


class TrainedModel:
    """A trained beta-VAE or MR-VAE and its run (see the module docstring). Betas are numbers (or ``(B,)``
    tensors, one per example); images are ``(B, C, H, W)`` in [0, 1]; rate and distortion are nats per
    example. All calls run without gradients, in eval mode."""

    def __init__(self, run_dir: Path, config: TrainConfig, model: torch.nn.Module, epochs_trained: int, *,
                 strict: bool = False, data_dir: str | None = None) -> None:
        self.run_dir, self.config, self.model = Path(run_dir), config, model
        self.epochs_trained, self.strict, self.data_dir = epochs_trained, strict, data_dir
        self._data: dict[str, Any] = {}
        self._loop_options: dict | None = None

    def __repr__(self) -> str:
        what = (f"MR-VAE, beta in [{self.beta_range.a:g}, {self.beta_range.b:g}]" if self.is_mr
                else f"beta-VAE at beta={self.config.beta:g}")
        return (f"TrainedModel({self.config.dataset}/{self.config.arch}, {what}, {self.epochs_trained} of "
                f"{self.config.epochs} epochs, {str(self.run_dir)!r})")

    # -- what it is ----------------------------------------------------------------------------------
    @property
    def is_mr(self) -> bool:
        return bool(getattr(self.model, "is_mr", self.config.mr))

    @property
    def beta_range(self) -> BetaRange | None:
        """The trained range of an MR-VAE (``None`` for a beta-VAE)."""
        return (getattr(self.model, "beta_range", None) or self.config.beta_range) if self.is_mr else None

    @property
    def device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    # -- beta checks ---------------------------------------------------------------------------------
    def _betas(self, beta: float | Sequence[float] | torch.Tensor) -> torch.Tensor:
        """``beta`` as a 1-D float32 tensor on the model's device, checked against what was trained."""
        values = torch.as_tensor(beta, dtype=torch.float64).reshape(-1)
        if values.numel() == 0 or not bool(torch.isfinite(values).all()) or bool((values <= 0).any()):
            raise BetaRangeError(f"beta must be finite and > 0, got {beta!r}")
        if self.is_mr:
            rng = self.beta_range
            if not rng.contains(values):
                outside = sorted({float(v) for v in values if not rng.contains(float(v))})
                self._out_of_range(f"beta outside the MR-VAE's trained range [{rng.a:g}, {rng.b:g}]: "
                                   f"{', '.join(f'{v:g}' for v in outside[:5])} "
                                   "(the network extrapolates there; its outputs were never trained)")
        else:
            own = float(self.config.beta)
            if bool((torch.abs(values - own) > 1e-9 * own).any()):
                self._out_of_range(f"this is a beta-VAE trained at beta={own:g}: it has no beta input, so every "
                                   f"beta gives the outputs of beta={own:g}")
        return values.to(device=self.device, dtype=torch.float32)

    def _out_of_range(self, message: str) -> None:
        if self.strict:
            raise BetaRangeError(message + " (strict=True)")
        warnings.warn(message, stacklevel=4)

    def _hook(self, name: str) -> Any:
        fn = getattr(self.model, name, None)
        if fn is None:
            have = [h for h in ("encode", "decode", "reconstruct", "sample") if hasattr(self.model, h)]
            raise NotImplementedError(
                f"the {self.config.arch} family has no {name}() hook ({type(self.model).__name__} provides "
                f"{', '.join(have) or 'none of encode/decode/reconstruct/sample'}); rate_distortion and rd_curve "
                "work for every family")
        return fn

    # -- the model at a beta -------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: Any, beta: float | torch.Tensor) -> Any:
        """The posterior ``q(z|x)`` at ``beta``: ``(mu, log_var)``, each ``(B, latent_dim)``."""
        fn = self._hook("encode")
        return fn(self._to_device(x), self._betas(beta))

    @torch.no_grad()
    def decode(self, z: torch.Tensor, beta: float | torch.Tensor) -> Any:
        """The decoder output at ``beta`` for latents ``z`` ``(B, latent_dim)``; ``.mean`` is the mean image."""
        fn = self._hook("decode")
        return fn(z.to(self.device), self._betas(beta))

    @torch.no_grad()
    def reconstruct(self, x: Any, beta: float | torch.Tensor) -> torch.Tensor:
        """Mean reconstructions of ``x`` at ``beta`` (the decoder at the posterior mean), in [0, 1]."""
        fn = self._hook("reconstruct")
        return fn(self._to_device(x), self._betas(beta))

    @torch.no_grad()
    def sample(self, n: int, beta: float | torch.Tensor, *, seed: int = 0) -> torch.Tensor:
        """Mean images of ``n`` prior samples at ``beta``. One ``seed`` gives the same prior draws at every
        beta (so rows at different betas are comparable)."""
        fn = self._hook("sample")
        betas = self._betas(beta)
        noise = self.model.sample_noise(int(n), torch.Generator().manual_seed(int(seed)))
        return fn(int(n), betas, noise=noise)

    @torch.no_grad()
    def rate_distortion(self, x: Any, beta: float | torch.Tensor, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example ``(rate, distortion)`` ``(B,)`` in nats of one forward pass at ``beta``, with the
        evaluator's noise for seed ``seed`` (the same numbers :meth:`rd_curve` averages when ``x`` is the
        first batch of the split)."""
        x = self._to_device(x)
        betas = self._betas(beta)
        b = int(x.shape[0]) if hasattr(x, "shape") else len(x)
        out = self.model(x, betas, noise=self.model.sample_noise(b, noise_generator(seed, 0)))
        return out.rate.float(), out.distortion.float()

    # -- data and curves -----------------------------------------------------------------------------
    def data(self, split: str = "test") -> Any:
        """Split ``split`` of the run's dataset (loaded once; ``get_batch(index)`` gives a batch)."""
        if split not in self._data:
            self._data[split] = load_eval_data(self.config, split, self.data_dir)
        return self._data[split]

    def _loop_opts(self) -> dict:
        if self._loop_options is None:
            self._loop_options, _, _ = apply_evaluation_options(self.model, self.config.eval_options)
        return self._loop_options

    def _sweep_args(self, max_examples: int | None, batch_size: int | None) -> dict:
        n = self.config.eval_examples if max_examples is None else (int(max_examples) or None)
        return {"batch_size": int(batch_size or self.config.eval_batch_size), "max_examples": n}

    def rd_curve(self, betas: Sequence[float] | None = None, *, n_betas: int | None = None, split: str = "test",
                 max_examples: int | None = None, batch_size: int | None = None, seed: int = 0, iw_k: int = 0,
                 progress: bool = False) -> dict:
        """The RD curve from the one evaluation loop (:func:`deep.evaluate.loop.rd_sweep`): a dict of lists by
        beta (``beta``, ``rate``, ``distortion``, ``neg_elbo``, ... and the family's arrays). Defaults are the
        run's own: ``n_betas`` betas log-spaced over the trained range (a beta-VAE: its beta), its
        ``eval_examples`` (0: all) and ``eval_batch_size``; nothing is written to the run folder."""
        if betas is None:
            grid = (self.beta_range.grid(int(n_betas or self.config.n_betas)).tolist() if self.is_mr
                    else [float(self.config.beta)])
        else:
            grid = [float(b) for b in betas]
        self._betas(grid)
        out = rd_sweep(self.model, self.data(split), grid, seed=seed, iw_k=iw_k, n_images=0, progress=progress,
                       **self._sweep_args(max_examples, batch_size), **self._loop_opts())
        out.pop("images", None)
        return out

    def beta_for_rate(self, target: float, *, tol: float = 0.01, **kwargs: Any) -> BetaSearch:
        """The beta whose rate (nats per example, on the :meth:`rd_curve` examples and noise) is ``target``,
        by bisection on log beta over the trained range (the rate does not increase with beta).

        Stops when the rate is within ``tol`` nats of the target, or when the log-beta bracket is narrower
        than 1e-6 (then the closest beta evaluated, with a warning: the curve jumps over the target there).
        A target outside the rates at the two ends of the range raises :class:`TargetOutOfRangeError` with
        the reachable range. Keyword arguments: ``split``, ``max_examples``, ``batch_size``, ``seed``,
        ``max_evaluations`` (default 40)."""
        return self._search("rate", float(target), tol, **kwargs)

    def beta_for_distortion(self, target: float, *, tol: float = 0.01, **kwargs: Any) -> BetaSearch:
        """The beta whose distortion is ``target`` (nats per example); as :meth:`beta_for_rate` (the distortion
        does not decrease with beta)."""
        return self._search("distortion", float(target), tol, **kwargs)

    def _search(self, quantity: str, target: float, tol: float, *, split: str = "test",
                max_examples: int | None = None, batch_size: int | None = None, seed: int = 0,
                max_evaluations: int = 40) -> BetaSearch:
        if not self.is_mr:
            raise ValueError(f"a beta-VAE has one beta ({self.config.beta:g}): a target {quantity} needs an MR-VAE "
                             "(or a sweep of beta-VAEs)")
        if not (math.isfinite(target) and tol > 0):
            raise ValueError(f"target must be finite and tol > 0, got target={target}, tol={tol}")
        data = self.data(split)
        args = self._sweep_args(max_examples, batch_size)
        points: list[tuple[float, float, float]] = []      # (log beta, rate, distortion)

        def at(log_beta: float) -> float:
            out = rd_sweep(self.model, data, [math.exp(log_beta)], seed=seed, iw_k=0, n_images=0, mi_examples=2,
                           **args, **self._loop_opts())
            points.append((log_beta, out["rate"][0], out["distortion"][0]))
            return out[quantity][0]

        def found(point: tuple[float, float, float]) -> BetaSearch:
            return BetaSearch(math.exp(point[0]), point[1], point[2], len(points))

        lo, hi = self.beta_range.log_a, self.beta_range.log_b
        v_lo, v_hi = at(lo), at(hi)
        low, high = min(v_lo, v_hi), max(v_lo, v_hi)
        if not low - tol <= target <= high + tol:
            n = min(len(data), args["max_examples"] or len(data))
            raise TargetOutOfRangeError(
                f"{quantity} {target:g} nats is not reachable in the trained range [{math.exp(lo):g}, "
                f"{math.exp(hi):g}]: on these {n} {split} examples the {quantity} lies between {low:.4g} and "
                f"{high:.4g} nats")
        for point, v in ((points[0], v_lo), (points[1], v_hi)):
            if abs(v - target) <= tol:
                return found(point)
        increasing = v_hi > v_lo
        while len(points) < max_evaluations and hi - lo > LOG_BETA_RESOLUTION:
            mid = 0.5 * (lo + hi)
            v = at(mid)
            if abs(v - target) <= tol:
                return found(points[-1])
            if (v < target) == increasing:
                lo = mid
            else:
                hi = mid
        best = min(points, key=lambda p: abs((p[1] if quantity == "rate" else p[2]) - target))
        warnings.warn(f"no beta gives {quantity} {target:g} within {tol:g} nats (the curve jumps over it, or is "
                      f"not monotone on these examples); the closest is beta={math.exp(best[0]):.6g}", stacklevel=3)
        return found(best)

    def _to_device(self, x: Any) -> Any:
        return x.to(self.device) if hasattr(x, "to") else x
