"""The one evaluation loop: a model's rate, distortion and metrics at a list of betas on a split.

:func:`rd_sweep` serves every family through the hooks of :class:`deep.models.MultiRateVAE`; nothing is
looked up by name beyond them. Per beta (nats per example, mean over the evaluated examples):

* ``rate`` and ``distortion`` of one forward pass per example; the standard-normal noise of the sample
  comes from :func:`noise_generator` seeded by ``(seed, test batch)``, so it is the SAME for every beta
  (common random numbers: smooth curves, and batched and per-beta passes give the same numbers);
* ``neg_elbo = rate + distortion``, ``loss = distortion + beta * rate`` (or the family's ``loss`` term);
* the family's per-example ``eval_terms`` (e.g. NVAE's per-group KL, beta-TCVAE's MI / TC / dim-KL);
* ``iw_nll`` (importance-weighted NLL, ``iw_k`` samples) when the distortion is a likelihood;
* ``active_units`` and ``mutual_information`` from the posteriors of the first ``mi_examples`` examples
  (single-Gaussian-latent families);
* beta-level metrics (:class:`BetaMetric`: MIG on a factor grid, FID of prior samples, ...), each called
  once per beta with the model;
* the family's derived arrays (``summarize``: bits per dimension, perplexity).

An MR-VAE's betas go through the network in batched passes where the family allows it (the batch repeated
across up to ``max_rows // batch`` betas, one beta per row); a single beta per pass is given to the model
as one number, so its gated layers fold their gates into their weights.
"""
from __future__ import annotations

import math
import time
from typing import Any, Protocol, Sequence

import torch
from torch import nn

from deep.models.base import batch_size_of, repeat_rows

from . import metrics as M

__all__ = ["rd_sweep", "noise_generator", "BetaMetric", "DEFAULT_MAX_ROWS", "AU_THRESHOLD", "LOOP_OPTIONS",
           "model_device"]

AU_THRESHOLD = 0.01
#: Default cap on the rows (images x betas) of one batched evaluation pass, per device type: on a 2-core CPU
#: throughput peaks at 50-200 rows and falls for larger passes.
DEFAULT_MAX_ROWS = {"cpu": 256, "cuda": 8192}
#: Options of :func:`rd_sweep` that an evaluation's ``eval_options`` may set.
LOOP_OPTIONS = ("mi_examples", "iw_examples", "max_rows", "beta_chunk")
_NOISE_STRIDE = 1_000_003


def noise_generator(seed: int, batch_no: int, salt: int = 0, device: torch.device | str = "cpu") -> torch.Generator:
    """THE seeded noise of an evaluation: a generator seeded by ``(seed, test batch, salt)``, so every pass
    draws the same numbers whatever order the passes run in. Salts: 0 the sample of each test batch, 1 the
    prior samples of the image grids, 2 + j the importance samples at beta number j."""
    return torch.Generator(device=device).manual_seed(seed * _NOISE_STRIDE + batch_no * 7919 + salt)


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


class BetaMetric(Protocol):
    """A metric computed once per beta from the model (MIG on a factor grid, FID of prior samples, ...).

    ``name`` keys its arrays in the result; ``__call__(model, beta) -> dict`` returns this beta's values
    (each key becomes an array indexed by beta); ``estimators()`` describes them; ``extras()`` gives values
    that are not per beta (the grid a MIG used, the settings of an AIS run)."""

    name: str

    def __call__(self, model: nn.Module, beta: float) -> dict[str, Any]: ...

    def estimators(self) -> dict[str, str]: ...

    def extras(self) -> dict[str, Any]: ...


def _evaluation_index(data: Any, n: int, seed: int) -> torch.Tensor:
    fn = getattr(data, "evaluation_index", None)
    return torch.as_tensor(fn(n, seed), dtype=torch.long) if callable(fn) else torch.arange(n)


def _evaluation_batches(data: Any, index: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    fn = getattr(data, "evaluation_batches", None)
    return list(fn(index, batch_size)) if callable(fn) else list(index.split(batch_size))


def _get_batch(data: Any, idx: torch.Tensor, device: torch.device) -> Any:
    return data.get_batch(idx, train=False).to(device)


def _rows(t: torch.Tensor, k: int, b: int) -> torch.Tensor:
    """``(k*B, ...)`` -> per-beta sums ``(k, ...)`` in float64 on the CPU."""
    return t.detach().double().reshape(k, b, *t.shape[1:]).sum(1).cpu()


@torch.no_grad()
def rd_sweep(model: nn.Module, data: Any, betas: Sequence[float] | torch.Tensor, *, batch_size: int = 100,
             iw_k: int = 0, batched: bool = True, beta_chunk: int | None = None, seed: int = 0,
             max_examples: int | None = None, mi_examples: int | None = None, iw_examples: int | None = None,
             n_images: int = 8, max_rows: int | None = None, recalibrate: Any = None,
             metrics: Sequence[BetaMetric] = (), progress: bool = False) -> dict:
    """Rate, distortion and the metrics above of ``model`` at each beta on ``data``.

    Parameters
    ----------
    betas: K betas (> 0). batch_size: examples per test batch (the family may ask for more,
        ``model.evaluation_batch_size``). batched: several betas per pass where the family allows it (else
        one pass over the test set per beta). beta_chunk / max_rows: at most that many betas / rows per pass
        (default :data:`DEFAULT_MAX_ROWS` for the device; 0 disables the row cap). seed: seeds the noise.
    max_examples: evaluate N examples (``data.evaluation_index`` chooses which; default the first N).
    mi_examples: active units and I(x; z) over the first N evaluated examples (default: the family's
        ``evaluation_defaults`` or all). iw_examples: IW-NLL over the first N (default all).
    n_images: reconstructions / prior samples kept for image grids (0: none). recalibrate: ``callable(beta)``
        run before each beta's pass (BatchNorm recalibration); forces one beta per pass.
    metrics: :class:`BetaMetric` objects computed once per beta.

    Returns a dict of lists indexed by beta, ``estimators`` (what each array is) and ``images`` (tensors for
    :func:`deep.evaluate.images.save_image_grids`).
    """
    device = model_device(model)
    model.check_data(data)
    betas_t = M.evaluation_betas(betas)
    k_betas = betas_t.numel()
    defaults = dict(getattr(model, "evaluation_defaults", {}) or {})
    n_all = len(data)
    n = n_all if max_examples is None else min(n_all, int(max_examples))
    if n < 2:
        raise ValueError("need at least 2 test examples")
    if mi_examples is None:
        mi_examples = defaults.get("mi_examples")
    n_store = n if mi_examples is None else max(2, min(n, int(mi_examples)))
    iw = bool(iw_k) and model.has_likelihood()
    n_iw = (n if iw_examples is None else max(1, min(n, int(iw_examples)))) if iw else 0
    bsz = int(model.evaluation_batch_size(int(batch_size)))
    index = _evaluation_index(data, n, seed)
    batches = _evaluation_batches(data, index, bsz)
    # position of every evaluated example in evaluation order (the first n_store feed AU / MI)
    position = torch.empty(n_all, dtype=torch.long)
    position[index] = torch.arange(n)

    chunk = k_betas if (batched and model.beta_batching and recalibrate is None) else 1
    if chunk > 1 and beta_chunk:
        chunk = max(1, min(k_betas, int(beta_chunk)))
    if max_rows is None:
        max_rows = DEFAULT_MAX_ROWS.get(device.type, 0)
    if chunk > 1 and max_rows:
        chunk = max(1, min(chunk, int(max_rows) // max(1, min(bsz, n))))

    rate = torch.zeros(k_betas, dtype=torch.float64)
    distortion = torch.zeros(k_betas, dtype=torch.float64)
    iw_sum = torch.zeros(k_betas, dtype=torch.float64)
    terms: dict[str, torch.Tensor] = {}
    store: dict[str, torch.Tensor] | None = None
    betas_dev = betas_t.to(device=device, dtype=torch.float32)
    n_images = min(int(n_images), n)
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(batches) * math.ceil(k_betas / chunk), desc="evaluate", leave=False)
    try:
        for c0 in range(0, k_betas, chunk):
            sel = slice(c0, min(k_betas, c0 + chunk))
            kk = sel.stop - sel.start
            if recalibrate is not None:
                recalibrate(float(betas_t[c0]))
            for bi, idx in enumerate(batches):
                x = _get_batch(data, idx, device)
                b = batch_size_of(x)
                noise = model.sample_noise(b, noise_generator(seed, bi))
                br = betas_dev[sel].repeat_interleave(b) if kk > 1 else betas_dev[c0].reshape(1)
                xr = repeat_rows(x, kk)
                out = model(xr, br, noise=repeat_rows(noise, kk))
                rate[sel] += _rows(out.rate, kk, b)
                distortion[sel] += _rows(out.distortion, kk, b)
                extra = model.eval_terms(out, xr, br, dataset_size=n_all)
                for key, val in extra.items():
                    s = _rows(val, kk, b)
                    if key not in terms:
                        terms[key] = torch.zeros((k_betas, *s.shape[1:]), dtype=torch.float64)
                    terms[key][sel] += s
                post = model.posterior(out)
                pos = position[idx]
                keep = pos < n_store
                if post is not None and bool(keep.any()):
                    if store is None:
                        store = {k: torch.empty(k_betas, n_store, post[0].shape[-1])
                                 for k in ("mu", "log_var", "z")}
                    dev_keep = keep.to(device)
                    for key, t in zip(("mu", "log_var", "z"), post):
                        t = t.reshape(kk, b, -1)
                        store[key][sel, pos[keep]] = t[:, dev_keep].float().cpu()
                if iw:
                    rows = torch.nonzero(position[idx] < n_iw).reshape(-1)
                    if rows.numel():
                        x_iw = x if rows.numel() == b else _select(x, rows.to(device))
                        for j in range(sel.start, sel.stop):
                            g = noise_generator(seed, bi, salt=2 + j, device=device)
                            iw_sum[j] += model.iw_nll(x_iw, betas_dev[j].reshape(1), int(iw_k),
                                                      generator=g).double().sum().cpu()
                if bar is not None:
                    bar.update(1)
        images = _images(model, data, index, betas_t, n_images, seed, device) if n_images else None
        elapsed = time.perf_counter() - t0
        beta_list = betas_t.tolist()
        rate_m, dist_m = (rate / n).tolist(), (distortion / n).tolist()
        out_d: dict[str, Any] = {
            "beta": beta_list,
            "log_beta": [math.log(v) for v in beta_list],
            "rate": rate_m,
            "distortion": dist_m,
            "neg_elbo": [r + d for r, d in zip(rate_m, dist_m)],
            "loss": ((terms.pop("loss") / n).tolist() if "loss" in terms
                     else [d + v * r for v, r, d in zip(beta_list, rate_m, dist_m)]),
            "iw_nll": (iw_sum / n_iw).tolist() if iw else None,
            "iw_k": int(iw_k) if iw else 0,
            "iw_examples": n_iw,
        }
        for key, val in terms.items():
            out_d[key] = (val / n).tolist()
        t1 = time.perf_counter()
        if store is not None:
            au = [M.active_units(store["mu"][j], threshold=AU_THRESHOLD) for j in range(k_betas)]
            out_d["active_units"] = [a.count for a in au]
            out_d["active_unit_variances"] = [a.variances.tolist() for a in au]
            out_d["mutual_information"] = [M.mutual_information(store["mu"][j], store["log_var"][j], store["z"][j])
                                           for j in range(k_betas)]
        metric_estimators: dict[str, str] = {}
        for metric in metrics:
            values = [metric(model, float(v)) for v in beta_list]
            for key in values[0] if values else ():
                column = [v[key] for v in values]
                out_d[key] = None if all(c is None for c in column) else column
            metric_estimators.update(metric.estimators())
            out_d.update(metric.extras())
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    out_d.update({
        "latent_dim": int(model.latent_dim),
        "n_examples": n,
        "mi_examples": n_store if store is not None else 0,
        "time_s": elapsed,
        "metrics_time_s": time.perf_counter() - t1,
        "batched": chunk > 1,
        "rows_per_pass": chunk * min(bsz, n),
        "betas_per_pass": chunk,
        "batch_size": bsz,
    })
    out_d["estimators"] = _estimators(model, out_d, iw_k, n_store if store is not None else 0)
    out_d["estimators"].update(metric_estimators)
    derived = dict(model.summarize(out_d, data))
    out_d["estimators"].update(derived.pop("estimators", {}))
    out_d.update(derived)
    if images is not None:
        out_d["images"] = images
    return out_d


def _select(x: Any, rows: torch.Tensor) -> Any:
    return x.index_select(0, rows) if torch.is_tensor(x) else x.select(rows)


def _images(model: nn.Module, data: Any, index: torch.Tensor, betas_t: torch.Tensor, n_images: int, seed: int,
            device: torch.device) -> dict | None:
    """Reconstructions (posterior mean) and prior samples (the same noise at every beta) of ``n_images`` test
    examples spread over the evaluated set; ``None`` when the family draws no images."""
    if not (hasattr(model, "reconstruct") and hasattr(model, "sample")):
        return None
    pick = index[torch.linspace(0, index.numel() - 1, n_images).round().long()]
    x = _get_batch(data, pick, device)
    prior_noise = model.sample_noise(n_images, noise_generator(seed, 0, salt=1))
    recon, prior = [], []
    for v in betas_t.tolist():
        beta = torch.tensor([v], device=device)
        recon.append(model.reconstruct(x, beta).float().cpu())
        prior.append(model.sample(n_images, beta, noise=prior_noise).float().cpu())
    return {"inputs": x.float().cpu(), "recon": recon, "prior": prior}


def _estimators(model: nn.Module, out: dict, iw_k: int, n_store: int) -> dict[str, str]:
    """What each array of the loop is (the family's ``summarize`` adds its own)."""
    est = {
        "units": "nats per example (sum over latents / pixels, mean over the evaluated examples)",
        "rate": "analytic KL(q(z|x) || N(0, I)) (families with their own rate say so)",
        "distortion": "one sample z ~ q(z|x) per example; the same standard-normal noise for every beta",
        "neg_elbo": "rate + distortion",
        "loss": "distortion + beta * rate (the family's own evaluation loss where it defines one)",
        "iw_nll": (f"importance-weighted NLL, k={out['iw_k']} samples, over the first {out['iw_examples']} "
                   "evaluated examples" if out["iw_nll"] is not None else
                   ("disabled (iw_k=0)" if not iw_k else
                    "skipped: the distortion is not a true negative log-likelihood")),
    }
    if n_store:
        est["active_units"] = f"Var over examples of E_q[z_u] >= {AU_THRESHOLD} (population variance)"
        est["mutual_information"] = (f"I(x;z) against the aggregate posterior of {n_store} examples "
                                     "(deep.evaluate.metrics.mutual_information)")
    return est
