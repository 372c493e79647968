"""Image grids of an evaluation: reconstructions and prior samples per beta, and across-beta grids."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

__all__ = ["save_image_grids"]


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


