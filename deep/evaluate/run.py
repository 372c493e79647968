"""Evaluation of deep beta-VAE and MR-VAE runs: rate-distortion curves and their metrics.

:func:`rd_sweep` evaluates one model at a list of betas on a test split; :func:`evaluate_run` loads a run
folder's checkpoint, calls it and writes ``results/rd.json`` (JSON arrays indexed by beta, CompressAI
style) plus image grids.

Per beta (all in nats per example, mean over the evaluated examples):

* ``rate``: analytic ``KL(q(z|x) || N(0, I))``;
* ``distortion``: one reparameterised sample ``z = mu + sigma * eps`` per example; ``eps`` is the SAME for
  every beta (common random numbers, seeded per test batch), so curves are smooth and the batched and
  per-beta paths give identical numbers;
* ``neg_elbo = rate + distortion``; ``loss = distortion + beta * rate``;
* ``iw_nll``: importance-weighted NLL with ``iw_k`` samples (:func:`deep.evaluate.metrics.iw_nll`; only when the
  distortion is a true NLL, ``bernoulli`` or ``gaussian_nll``);
* ``active_units``: units with ``Var_x E_q[z_u] >= 0.01`` (:func:`deep.evaluate.metrics.active_units`);
* ``mutual_information``: ``I(x; z)`` against the aggregate posterior of all evaluated examples
  (:func:`deep.evaluate.metrics.mutual_information`).

For an MR-VAE the betas go through the network in ONE batched pass per test batch: the batch is repeated
across the betas with one beta per row.  ``batched=False`` runs one pass over the test set per beta (the
reference code's loop; used by the benchmark and required with BatchNorm recalibration).
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from linvae.conditioning import BetaRange

from . import metrics as M
from deep.models.objectives import gaussian_kl
from deep.train.runs import RunError, RunPaths, load_checkpoint, read_json, write_json
from deep.models import registry as families
from deep.train.runtime import tune_cpu_allocator
from deep.train.loop import TrainConfig, load_data, load_model_state, load_train_data, resolve_device

__all__ = ["rd_sweep", "evaluate_run", "fid_curve", "load_run_model", "load_eval_data", "AU_THRESHOLD",
           "DEFAULT_MAX_ROWS", "save_image_grids"]

AU_THRESHOLD = 0.01
#: Default cap on the rows (images x betas) of one batched evaluation pass, per device type.
DEFAULT_MAX_ROWS = {"cpu": 256, "cuda": 8192}
_NOISE_STRIDE = 1_000_003


def _batch_generator(seed: int, batch_no: int, salt: int = 0,
                     device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded by (seed, test batch, salt): the same noise whatever order passes run in."""
    return torch.Generator(device=device).manual_seed(seed * _NOISE_STRIDE + batch_no * 7919 + salt)


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _mean_image(model: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """Mean of p(x|z) in [0, 1]: every decoder here outputs logits (mean = sigmoid(logits))."""
    to_mean = getattr(model, "mean_image", None)
    return to_mean(logits) if callable(to_mean) else torch.sigmoid(logits)


class _Acc:
    """Per-beta accumulators over test batches."""

    def __init__(self, k: int, n_store: int, latent: int, iw: bool) -> None:
        self.rate = torch.zeros(k, dtype=torch.float64)
        self.distortion = torch.zeros(k, dtype=torch.float64)
        self.iw = torch.zeros(k, dtype=torch.float64) if iw else None
        self.n = 0
        self.mu = torch.empty(k, n_store, latent)
        self.log_var = torch.empty(k, n_store, latent)
        self.z = torch.empty(k, n_store, latent)
        self.n_store = n_store


@torch.no_grad()
def _pass(model: nn.Module, x: torch.Tensor, betas: torch.Tensor, eps: torch.Tensor):
    """Encode/decode ``x`` (B) at every beta of ``betas`` (K) in one batch of K*B rows (beta-major).

    Returns rate, distortion ``(K, B)`` and mu, log_var, z ``(K, B, d)``; ``eps`` ``(B, d)`` is shared by all
    betas.
    """
    k, b = betas.shape[0], x.shape[0]
    xr = x.repeat(k, *([1] * (x.dim() - 1))) if k > 1 else x
    br = betas.repeat_interleave(b) if k > 1 else betas.reshape(1)  # one beta: the model may fold its gates
    mu, log_var = model.encode(xr, br)
    rate = gaussian_kl(mu, log_var)
    z = mu + torch.exp(0.5 * log_var) * (eps.repeat(k, 1) if k > 1 else eps)
    logits = model.decode(z, br).logits
    distortion = model.distortion(logits, xr)
    d = mu.shape[-1]
    return (rate.reshape(k, b), distortion.reshape(k, b), mu.reshape(k, b, d),
            log_var.reshape(k, b, d), z.reshape(k, b, d))


def _iw_nll(model: nn.Module, x: torch.Tensor, beta: torch.Tensor, k: int, gen: torch.Generator,
            rows: int = 4096) -> torch.Tensor:
    """IW-NLL ``(B,)`` at one beta (scalar tensor) via :func:`deep.evaluate.metrics.iw_nll`."""
    b = x.shape[0]
    one = beta.reshape(1)  # one beta for every row (a float-like 1-element tensor)
    chunk = max(1, min(k, rows // max(1, b)))
    return M.iw_nll(x, lambda xx: model.encode(xx, one),
                    lambda xr, z: model.log_likelihood(xr, z, one),
                    k=k, chunk=chunk, generator=gen)


@torch.no_grad()
def rd_sweep(model: nn.Module, data: Any, betas: Sequence[float] | torch.Tensor, *, batch_size: int = 100,
             iw_k: int = 0, batched: bool = True, beta_chunk: int | None = None, seed: int = 0,
             max_examples: int | None = None, mi_examples: int | None = None, n_images: int = 8,
             max_rows: int | None = None, recalibrate: Any = None, progress: bool = False) -> dict:
    """Rate, distortion, IW-NLL, AU and MI of ``model`` at each beta on ``data`` (an ImageSplit).

    Parameters
    ----------
    betas: K betas (> 0). batch_size: test images per pass (a batched pass has ``K * batch_size`` rows,
        or ``beta_chunk * batch_size``). batched: all betas in one pass per test batch (else one pass
        over the test set per beta). max_rows: cap on the rows of a batched pass (betas are split into
        chunks to respect it; default :data:`DEFAULT_MAX_ROWS` for the device: on a 2-core CPU, throughput peaks
        at 50-200 rows and falls for larger passes; 0 disables the cap).
        seed: seeds the shared reparameterisation noise and the prior samples.
    max_examples: evaluate the first N test examples only. mi_examples: aggregate posterior for MI over
        the first N examples (default: all evaluated). n_images: reconstructions / prior samples kept for
        image grids (0: none). recalibrate: ``callable(beta)`` run before each beta's pass (BatchNorm
        recalibration); forces ``batched=False``.

    Returns a dict of lists indexed by beta (and ``images``: tensors for :func:`save_image_grids`).
    """
    device = _model_device(model)
    betas_t = M.evaluation_betas(betas)
    k_betas = betas_t.numel()
    n = len(data) if max_examples is None else min(len(data), int(max_examples))
    if n < 2:
        raise ValueError("need at least 2 test examples")
    n_store = n if mi_examples is None else max(2, min(n, int(mi_examples)))
    latent = int(model.latent_dim)
    dist = model.distortion
    iw = bool(iw_k) and bool(getattr(dist, "is_nll", False))
    if recalibrate is not None:
        batched = False
    chunk = k_betas if batched else 1
    if batched and beta_chunk:
        chunk = max(1, min(k_betas, int(beta_chunk)))
    if max_rows is None:
        max_rows = DEFAULT_MAX_ROWS.get(device.type, 0)
    if batched and max_rows:
        chunk = max(1, min(chunk, int(max_rows) // max(1, min(batch_size, n))))
    acc = _Acc(k_betas, n_store, latent, iw)
    was_training = model.training
    model.eval()
    betas_dev = betas_t.to(device=device, dtype=torch.float32)
    starts = list(range(0, n, batch_size))
    n_images = min(n_images, n)
    img_idx = torch.linspace(0, n - 1, n_images).round().long()  # spread over the split (some are sorted)
    img_x = data.get_batch(img_idx, train=False).to(device) if n_images else None
    prior_z = (torch.randn((n_images, latent), generator=_batch_generator(seed, 0, salt=1)).to(device)
               if n_images else None)
    recon_images, prior_images = [None] * k_betas, [None] * k_betas
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(starts) * math.ceil(k_betas / chunk), desc="evaluate", leave=False)
    try:
        for c0 in range(0, k_betas, chunk):
            sel = slice(c0, min(k_betas, c0 + chunk))
            bchunk = betas_dev[sel]
            if recalibrate is not None:
                recalibrate(float(betas_t[c0]))
            for bi, s in enumerate(starts):
                idx = torch.arange(s, min(n, s + batch_size))
                x = data.get_batch(idx, train=False).to(device)
                eps = torch.randn((x.shape[0], latent), generator=_batch_generator(seed, bi)).to(device)
                rate, distortion, mu, log_var, z = _pass(model, x, bchunk, eps)
                acc.rate[sel] += rate.double().sum(1).cpu()
                acc.distortion[sel] += distortion.double().sum(1).cpu()
                if s < n_store:
                    m = min(n_store, s + x.shape[0]) - s
                    acc.mu[sel, s:s + m] = mu[:, :m].float().cpu()
                    acc.log_var[sel, s:s + m] = log_var[:, :m].float().cpu()
                    acc.z[sel, s:s + m] = z[:, :m].float().cpu()
                if iw:
                    for j in range(sel.start, sel.stop):
                        g = _batch_generator(seed, bi, salt=2 + j, device=device)
                        acc.iw[j] += _iw_nll(model, x, betas_dev[j], iw_k, g).double().sum().cpu()
                if bar is not None:
                    bar.update(1)
            if n_images:
                kk = bchunk.shape[0]
                br = bchunk.repeat_interleave(n_images)
                mu_img = model.encode(img_x.repeat(kk, 1, 1, 1), br).mu
                rec = _mean_image(model, model.decode(mu_img, br).logits).reshape(kk, n_images, *img_x.shape[1:])
                smp = _mean_image(model, model.decode(prior_z.repeat(kk, 1), br).logits)
                smp = smp.reshape(kk, n_images, *img_x.shape[1:])
                for j in range(kk):
                    recon_images[sel.start + j] = rec[j].cpu()
                    prior_images[sel.start + j] = smp[j].cpu()
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    elapsed = time.perf_counter() - t0

    rate = (acc.rate / n).tolist()
    distortion = (acc.distortion / n).tolist()
    au, mi, au_var = [], [], []
    for j in range(k_betas):
        a = M.active_units(acc.mu[j], threshold=AU_THRESHOLD)
        au.append(a.count)
        au_var.append(a.variances.tolist())
        mi.append(M.mutual_information(acc.mu[j], acc.log_var[j], acc.z[j]))
    metrics_time = time.perf_counter() - t0 - elapsed
    beta_list = betas_t.tolist()
    out = {
        "beta": beta_list,
        "log_beta": [math.log(b) for b in beta_list],
        "rate": rate,
        "distortion": distortion,
        "neg_elbo": [r + d for r, d in zip(rate, distortion)],
        "loss": [d + b * r for b, r, d in zip(beta_list, rate, distortion)],
        "iw_nll": (acc.iw / n).tolist() if iw else None,
        "iw_k": int(iw_k) if iw else 0,
        "active_units": au,
        "active_unit_variances": au_var,
        "mutual_information": mi,
        "latent_dim": latent,
        "n_examples": n,
        "mi_examples": n_store,
        "time_s": elapsed,
        "metrics_time_s": metrics_time,
        "batched": bool(batched),
        "rows_per_pass": chunk * min(batch_size, n),
        "betas_per_pass": chunk,
        "images": {"inputs": img_x.cpu() if img_x is not None else None,
                   "recon": recon_images, "prior": prior_images},
    }
    if iw_k and not iw:
        out["iw_nll_note"] = (f"IW-NLL skipped: the distortion {getattr(dist, 'name', dist)!r} is not a true "
                              "negative log-likelihood")
    return out


# ------------------------------------------------------------------------------------------
# FID of prior samples across beta (paper Fig. 6)
# ------------------------------------------------------------------------------------------
@torch.no_grad()
def fid_curve(model: nn.Module, data: Any, betas: Sequence[float], feature_extractor, *, n_samples: int = 1000,
              batch_size: int = 100, seed: int = 0) -> list[float]:
    """FID between ``n_samples`` test images and ``n_samples`` prior samples decoded at each beta.

    The same prior draws ``z ~ N(0, I)`` are decoded at every beta (common random numbers); samples are
    the decoder means (Bernoulli probabilities or pixel means) in [0, 1]. ``feature_extractor`` maps
    ``(B, C, H, W)`` images to features (:func:`deep.evaluate.metrics.inception_feature_extractor` for the standard FID).
    """
    device = _model_device(model)
    n = min(int(n_samples), len(data))
    if n < 2:
        raise ValueError("FID needs at least 2 samples")
    was = model.training
    model.eval()
    try:
        real = [data.get_batch(torch.arange(s, min(n, s + batch_size)), train=False) for s in range(0, n, batch_size)]
        real_stats = M.gaussian_statistics(M.extract_features(real, feature_extractor, batch_size))
        z_all = torch.randn((n, int(model.latent_dim)), generator=_batch_generator(seed, 0, salt=3)).to(device)
        out = []
        for beta in betas:
            fake = []
            for s in range(0, n, batch_size):
                z = z_all[s:s + batch_size]
                b = torch.full((z.shape[0],), float(beta), device=device)
                fake.append(_mean_image(model, model.decode(z, b).logits).clamp(0, 1).cpu())
            fake_stats = M.gaussian_statistics(M.extract_features(fake, feature_extractor, batch_size))
            out.append(M.frechet_distance(*real_stats, *fake_stats))
    finally:
        model.train(was)
    return out


# ------------------------------------------------------------------------------------------
# image grids
# ------------------------------------------------------------------------------------------
def save_image_grids(images: dict, betas: Sequence[float], out_dir: str | os.PathLike) -> dict:
    """Write reconstructions and prior samples per beta, and the across-beta grids (paper Fig. 7).

    The prior samples use the SAME z for every beta (one column per z); rows of the across-beta grids
    go from the largest beta (top) to the smallest. Returns the written paths relative to ``out_dir``'s
    parent.
    """
    from torchvision.utils import save_image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    recon, prior, inputs = images.get("recon"), images.get("prior"), images.get("inputs")
    if inputs is None or not recon or recon[0] is None:
        return {}
    n_img = inputs.shape[0]
    written: dict[str, Any] = {"per_beta": []}
    for j, beta in enumerate(betas):
        tag = f"{j:02d}_beta{beta:.3g}"
        rp = out_dir / f"recon_{tag}.png"
        sp = out_dir / f"samples_{tag}.png"
        save_image(torch.cat([inputs, recon[j]]), rp, nrow=n_img, padding=2, pad_value=0.5)
        save_image(prior[j], sp, nrow=n_img, padding=2, pad_value=0.5)
        written["per_beta"].append({"beta": beta, "recon": rp.name, "samples": sp.name})
    order = sorted(range(len(betas)), key=lambda j: -betas[j])
    across_s = out_dir / "samples_across_beta.png"
    across_r = out_dir / "recon_across_beta.png"
    save_image(torch.cat([prior[j] for j in order]), across_s, nrow=n_img, padding=2, pad_value=0.5)
    save_image(torch.cat([inputs] + [recon[j] for j in order]), across_r, nrow=n_img, padding=2, pad_value=0.5)
    written["samples_across_beta"] = across_s.name
    written["recon_across_beta"] = across_r.name
    written["rows_beta_order"] = [betas[j] for j in order]
    written["folder"] = out_dir.name
    return written


# ------------------------------------------------------------------------------------------
# run folders
# ------------------------------------------------------------------------------------------
def load_run_model(run_dir: str | os.PathLike, device: str | torch.device = "cpu",
                   model: nn.Module | None = None) -> tuple[TrainConfig, nn.Module, dict]:
    """Config, model (weights loaded, eval mode) and checkpoint of a run folder.

    ``model`` overrides rebuilding through the architecture's ``rebuild`` (:mod:`deep.models.registry`).
    """
    paths = RunPaths(run_dir)
    if not paths.root.is_dir():
        raise RunError(f"run folder {paths.root} does not exist; pass the folder that "
                       "`mrvae-cli deep train` printed")
    ckpt = load_checkpoint(paths.checkpoint)
    try:
        config = TrainConfig.from_dict(ckpt["config"])
    except (TypeError, ValueError) as exc:
        from deep.train.runs import CheckpointMismatchError
        raise CheckpointMismatchError(f"checkpoint {paths.checkpoint} has a config this code cannot read "
                                      f"({exc})") from None
    if model is None:
        rebuild = families.resolve(families.arch_spec(config.arch).rebuild)
        try:
            model = rebuild(dict(ckpt["model_config"]))
        except (TypeError, ValueError) as exc:
            from deep.train.runs import CheckpointMismatchError
            raise CheckpointMismatchError(
                f"checkpoint {paths.checkpoint} describes a model this code cannot build "
                f"({ckpt['model_config']}): {exc}") from None
    load_model_state(model, ckpt["model"], str(paths.checkpoint))
    model = model.to(device).eval()
    return config, model, ckpt


def load_eval_data(config: TrainConfig, split: str = "test", data_dir: str | None = None):
    """The evaluation split of the run's dataset (its loader in :mod:`deep.models.registry`)."""
    return load_data(config, split, data_dir)


def _recalibrator(model: nn.Module, config: TrainConfig, n_examples: int, batch_size: int,
                  data_dir: str | None):
    try:
        from deep.models.convnets import recalibrate_batchnorm
    except ImportError:  # pragma: no cover - nets without it
        return None
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return None
    train_data = load_train_data(config.replace(data_dir=data_dir or config.data_dir))
    idx = torch.arange(min(n_examples, len(train_data)))
    device = _model_device(model)

    def recal(beta: float) -> None:
        batches = (train_data.get_batch(idx[s:s + batch_size], train=False).to(device)
                   for s in range(0, idx.numel(), batch_size))
        recalibrate_batchnorm(model, batches, beta)

    return recal


def _monotonicity(betas: Sequence[float], rate: Sequence[float], distortion: Sequence[float]) -> dict:
    """Whether, ordered by beta, the rate never increases and the distortion never decreases (the shape of
    an optimal RD curve), with the largest violations (nats)."""
    order = sorted(range(len(betas)), key=lambda j: betas[j])
    r = [rate[j] for j in order]
    d = [distortion[j] for j in order]
    rate_up = max([b - a for a, b in zip(r, r[1:])] + [0.0])
    dist_down = max([a - b for a, b in zip(d, d[1:])] + [0.0])
    return {"rate_nonincreasing": rate_up <= 0.0, "distortion_nondecreasing": dist_down <= 0.0,
            "max_rate_increase": rate_up, "max_distortion_decrease": dist_down}


def evaluate_run(run_dir: str | os.PathLike, n_betas: int | None = None, iw_k: int | None = None,
                 split: str = "test", batch_size: int | None = None, *,
                 betas: Sequence[float] | None = None, batched: bool = True, beta_chunk: int | None = None,
                 max_rows: int | None = None, device: str | None = None,
                 seed: int = 0, max_examples: int | None = None, mi_examples: int | None = None,
                 images: bool = True, n_images: int = 8, recalibrate_bn: bool = False,
                 recalibrate_examples: int = 2000, data_dir: str | None = None,
                 model: nn.Module | None = None, data: Any = None, progress: bool = False,
                 out_name: str | None = None, fid_samples: int = 0, fid_weights: str | None = None,
                 fid_extractor: Any = None, download: bool = False, sweep_options: dict | None = None) -> dict:
    """Evaluate a run folder; write and return ``results/rd.json`` (``rd_<split>.json`` for other splits).

    MR-VAE: ``n_betas`` (default: the run's ``n_betas``, 20) log-spaced betas over its trained range, or
    the given ``betas`` (a warning for any outside the trained range). beta-VAE: one point at its beta.
    ``iw_k`` (default: the run's ``iw_k``; 0 disables) importance samples for the IW-NLL. Other arguments
    as in :func:`rd_sweep` (``beta_chunk`` bounds the betas per batched pass, for memory);
    ``recalibrate_bn`` recomputes BatchNorm statistics at each beta from ``recalibrate_examples``
    training images (MR CNNs). ``sweep_options`` (merged over the run's ``eval_options``) go to a family's
    own sweep (e.g. ``{"mig_samples": 1000}`` for beta-TCVAE). ``fid_samples`` > 0 adds the FID of that many prior samples per beta
    against as many test images (:func:`fid_curve`; the standard Inception features via pytorch-fid, or
    ``fid_extractor``); when the FID network is unavailable the results say why instead of failing.
    """
    paths = RunPaths(run_dir)
    run_config = None
    if paths.config.exists():
        run_config = read_json(paths.config)
    cfg0 = TrainConfig.from_dict(run_config["config"]) if run_config else None
    dev = resolve_device(device or (cfg0.device if cfg0 else "auto"))
    if dev.type == "cpu":
        tune_cpu_allocator()
    model_supplied = model
    config, model, ckpt = load_run_model(run_dir, dev, model=model)
    if data is None:
        data = load_eval_data(config, split, data_dir)
    n_betas = int(n_betas or config.n_betas)
    iw_k = config.iw_k if iw_k is None else int(iw_k)
    batch_size = int(batch_size or config.eval_batch_size)
    is_mr = bool(getattr(model, "is_mr", config.mr))
    notes = []
    if is_mr:
        rng = getattr(model, "beta_range", None) or config.beta_range
        grid = rng.grid(n_betas).tolist() if betas is None else [float(b) for b in betas]
        outside = [b for b in grid if not rng.contains(b)] if betas is not None else []
        if outside:
            rng.check(torch.tensor(outside, dtype=torch.float64), what=f"MR-VAE (betas {outside})")
            notes.append(f"betas {outside} lie outside the trained range [{rng.a:g}, {rng.b:g}]: extrapolated")
    else:
        grid = [float(config.beta)]
        if betas is not None and any(abs(float(b) - config.beta) > 1e-12 * config.beta for b in betas):
            notes.append(f"beta-VAE evaluated at its own beta {config.beta:g}; the requested betas were ignored")
    recal = None
    if recalibrate_bn and is_mr:
        recal = _recalibrator(model, config, recalibrate_examples, batch_size, data_dir)
        if recal is None:
            notes.append("recalibrate_bn requested but the model has no BatchNorm layers: nothing to do")
        else:
            notes.append(f"BatchNorm statistics recomputed at each beta from {recalibrate_examples} training "
                         "images (one pass per beta)")
    # a family's own sweep, unless the caller supplied the model (then the generic image sweep)
    custom = (families.arch_spec(config.arch).evaluate
              if model_supplied is None and config.arch in families.ARCHS else None)
    if custom is not None:
        sweep_fn = families.resolve(custom)
        options = {**config.eval_options, **(sweep_options or {})}
        sweep_out = dict(sweep_fn(model, data, grid, batch_size=batch_size, iw_k=iw_k, seed=seed,
                                  max_examples=max_examples, mi_examples=mi_examples, progress=progress,
                                  n_images=n_images if images else 0, **options))
        if options:
            notes.append(f"family evaluation options: {options}")
        estimators = dict(sweep_out.pop("estimators", {}) or {})
    else:
        sweep_out = rd_sweep(model, data, grid, batch_size=batch_size, iw_k=iw_k, batched=batched,
                             beta_chunk=beta_chunk, max_rows=max_rows, seed=seed,
                             max_examples=max_examples, mi_examples=mi_examples,
                             n_images=n_images if images else 0, recalibrate=recal, progress=progress)
        estimators = {
            "units": "nats per example (sum over latents / pixels, mean over the evaluated examples)",
            "rate": "analytic KL(q(z|x) || N(0, I))",
            "distortion": "one sample z ~ q(z|x) per example; the same standard-normal noise for every beta",
            "neg_elbo": "rate + distortion",
            "loss": "distortion + beta * rate",
            "iw_nll": (f"importance-weighted NLL, k={sweep_out['iw_k']} samples (deep.evaluate.metrics.iw_nll)"
                       if sweep_out["iw_nll"] is not None else sweep_out.get("iw_nll_note", "disabled (iw_k=0)")),
            "active_units": f"Var over examples of E_q[z_u] >= {AU_THRESHOLD} (population variance)",
            "mutual_information": f"I(x;z) against the aggregate posterior of {sweep_out['mi_examples']} examples "
                                  "(deep.evaluate.metrics.mutual_information)",
        }
    if fid_samples:
        try:
            extractor = fid_extractor or M.inception_feature_extractor(dev, download=download, weights=fid_weights)
            sweep_out["fid"] = fid_curve(model, data, grid, extractor, n_samples=fid_samples,
                                         batch_size=batch_size, seed=seed)
            estimators["fid"] = (f"Frechet distance of {min(fid_samples, len(data))} prior samples (decoder means, "
                                 f"same z at every beta) to as many test images; features: "
                                 + ("Inception-v3 pool3 (pytorch-fid, TF-FID weights)" if fid_extractor is None
                                    else "a caller-supplied feature map (not comparable with published FIDs)"))
        except (M.FIDUnavailableError, OSError) as exc:
            notes.append(f"FID not computed: {exc}")
            estimators["fid"] = f"unavailable: {exc}"
    for key in ("beta", "rate", "distortion"):
        if key not in sweep_out:
            raise RunError(f"the {config.arch} evaluator returned no {key!r} array")
    sweep_out.setdefault("log_beta", [math.log(b) for b in sweep_out["beta"]])
    sweep_out.setdefault("neg_elbo", [r + d for r, d in zip(sweep_out["rate"], sweep_out["distortion"])])
    sweep_out.setdefault("loss", [d + b * r for b, r, d in zip(sweep_out["beta"], sweep_out["rate"],
                                                                sweep_out["distortion"])])
    imgs = sweep_out.pop("images", None)
    results_dir = paths.results
    name = out_name or ("rd.json" if split == "test" else f"rd_{split}.json")
    written = {}
    if images and imgs:
        folder = "images" if name == "rd.json" else "images_" + Path(name).stem.removeprefix("rd_")
        written = save_image_grids(imgs, grid, results_dir / folder)
    beta_range = getattr(model, "beta_range", None)
    first = ("beta", "log_beta", "rate", "distortion", "neg_elbo", "loss", "iw_nll", "active_units",
             "mutual_information")
    arrays = {k: sweep_out[k] for k in first if k in sweep_out}
    arrays.update({k: v for k, v in sweep_out.items()
                   if k not in arrays and isinstance(v, list) and len(v) == len(grid)})
    results = {
        "kind": "rate-distortion curve",
        "run": str(paths.root),
        "split": split,
        "model": {"kind": "MR-VAE" if is_mr else "beta-VAE", "dataset": config.dataset, "arch": config.arch,
                  "objective": config.objective,
                  "latent_dim": sweep_out.get("latent_dim", getattr(model, "latent_dim", None)),
                  "n_params": sum(p.numel() for p in model.parameters()),
                  "beta_range": beta_range.to_dict() if (is_mr and isinstance(beta_range, BetaRange)) else None,
                  "epochs_trained": int(ckpt["epoch"]), "epochs_planned": config.epochs,
                  "complete": int(ckpt["epoch"]) >= config.epochs},
        **arrays,
        "in_trained_range": ([bool(beta_range.contains(b)) for b in grid] if is_mr and beta_range else
                             [True] * len(grid)),
        "iw_k": sweep_out.get("iw_k", iw_k),
        "checks": _monotonicity(grid, sweep_out["rate"], sweep_out["distortion"]),
        "estimators": estimators,
        "evaluation": {"n_examples": sweep_out.get("n_examples"), "batch_size": batch_size,
                       "batched": sweep_out.get("batched"), "rows_per_pass": sweep_out.get("rows_per_pass"),
                       "betas_per_pass": sweep_out.get("betas_per_pass"),
                       "seed": seed, "time_s": sweep_out.get("time_s"),
                       "au_mi_time_s": sweep_out.get("metrics_time_s"), "device": str(dev),
                       "recalibrate_bn": recal is not None, "notes": notes},
        "extras": {k: v for k, v in sweep_out.items()
                   if k not in arrays and not isinstance(v, (list, dict)) or k in ("data_protocol",)},
        "protocol": data.meta() if hasattr(data, "meta") else None,
        "config": config.to_dict(),
        "conventions": (run_config or {}).get("conventions"),
        "images": written,
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    path = write_json(results_dir / name, results)
    results["path"] = str(path)
    return results
