"""dSprites (Matthey et al. 2017) for the beta-TCVAE experiment (paper section 5.4, Fig. 8 right).

737,280 binary 64x64 images of one sprite on a regular grid of five factors, in C order
(``index = ravel_multi_index(classes, FACTOR_SIZES)``):

=============  ====  ==========================================================
factor         size  values
=============  ====  ==========================================================
shape          3     1 square, 2 ellipse, 3 heart
scale          6     ``linspace(0.5, 1, 6)``
orientation    40    ``linspace(0, 2 pi, 40)`` radians (0 and 2 pi both present)
posX, posY     32    ``linspace(0, 1, 32)``
=============  ====  ==========================================================

``load_split("dsprites", split, source=...)`` returns a :class:`DSpritesData` (the data
contract of the deep trainer: ``len``, ``get_batch``, ``meta``, ``protocol``, plus the factor
labels).  Sources, under ``<data root>/dsprites/`` (:func:`linvae.dataroot.resolve_data_root`):

* ``"full"``: the official ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` (downloaded
  from :data:`FULL_URL` only with ``download=True``) -- the paper's protocol;
* ``"subgrid"``: ``dsprites_downsampled.npz``, 46,080 real images on the regular sub-grid
  3 x 6 x 10 x 16 x 16 (every 4th orientation, every 2nd position) -- a labelled substitute
  on which MIG is computable;
* ``"subset"``: ``dsprites_subset.npz``, 20,000 random real images (no complete grid);
* ``"generated"``: the whole grid (or the sub-grid, ``grid="subgrid"``) rendered by
  :func:`render`, cached once under ``~/.cache/mrvae/processed``;
* ``"auto"`` (default): the full file if present, else the sub-grid (labelled substitute).

dSprites has no test split in the paper: every split name returns the same images (the model
is trained and evaluated on the same set), and ``meta()`` says so.

The renderer
------------
Pixel ``(row r, column c)`` is on iff its centre ``(c + 0.5, r + 0.5)`` lies in the closed
sprite.  The sprite is centred at ``(16 + 32 posX, 16 + 32 posY)`` pixels (rows grow
downwards, so posY = 0 is the top), scaled by ``scale`` and rotated counter-clockwise as
displayed by ``orientation``.  At scale 1: a square of half-side 9.6 px, an ellipse with
semi-axes 12.7625 x 7.2155 px (major axis horizontal at orientation 0) and a heart (lobes up)
whose outline is a table of 720 polar radii about the rotation centre.  These conventions
and numbers were measured on the two real subsets (the heart table by
:func:`fit_heart_outline`); :func:`score_generator` compares the rendering with them image by
image (about 99.998% pixel agreement, see its docstring).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from linvae.dataroot import (DataIntegrityError, DatasetMissingError, require_file, verify_file,
                             resolve_data_root)

from . import _readers as rd

__all__ = [
    "FULL_FILE", "FULL_URL", "SUBGRID_FILE", "SUBSET_FILE", "N_FULL", "FACTOR_NAMES",
    "FACTOR_SIZES", "SUBGRID_STEPS", "SUBGRID_SIZES", "SOURCES", "RENDERER_VERSION",
    "DSpritesData", "load_split", "factor_values", "grid_classes", "grid_index",
    "subgrid_full_classes", "values_of", "stream_packed_images", "render", "generate",
    "fit_heart_outline", "score_images", "score_generator", "DatasetMissingError",
    "DataIntegrityError",
]

FULL_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
FULL_URL = "https://github.com/deepmind/dsprites-dataset/raw/master/" + FULL_FILE
SUBGRID_FILE = "dsprites_downsampled.npz"
SUBSET_FILE = "dsprites_subset.npz"
FACTOR_NAMES: tuple[str, ...] = ("shape", "scale", "orientation", "posX", "posY")
FACTOR_SIZES: tuple[int, ...] = (3, 6, 40, 32, 32)
N_FULL = int(np.prod(FACTOR_SIZES))                       # 737,280
SUBGRID_STEPS: tuple[int, ...] = (1, 1, 4, 2, 2)          # the downsampled file's strides
SUBGRID_SIZES: tuple[int, ...] = (3, 6, 10, 16, 16)       # 46,080 images
SOURCES = ("auto", "full", "subgrid", "subset", "generated")
SPLITS = ("train", "valid", "test")
IMAGE_SIZE = 64
ROW_BYTES = IMAGE_SIZE * IMAGE_SIZE // 8                  # one bit-packed image

# --------------------------------------------------------------------------- renderer constants
RENDERER_VERSION = 1
POSITION_OFFSET = 16.0        # pixel coordinate of the sprite centre at pos = 0
POSITION_SPAN = 32.0          # pixels from pos = 0 to pos = 1
SQUARE_HALF_SIDE = 9.6        # pixels at scale 1
ELLIPSE_SEMI_AXES = (12.7625, 7.2155)   # pixels at scale 1 (along, across the orientation)
SPRITE_RADIUS = 13.6          # bound on every sprite's extent from its centre at scale 1
_WINDOW = 31                  # rendering window (pixels) around the sprite centre

#: Heart outline at scale 1: radius (pixels) from the rotation centre at polar angle
#: ``phi_k = -pi + (k + 0.5) * pi / 360`` (k = 0..719; phi = pi/2 is "up", the notch between
#: the lobes; -pi/2 is the tip), linearly interpolated in phi.  Measured with
#: :func:`fit_heart_outline` on both real subsets (the threshold that misclassifies the fewest
#: back-projected pixel centres in each half-degree sector).
HEART_RADII = np.array([
    8.1030, 8.0521, 8.0156, 7.9524, 7.9221, 7.8690, 7.8030, 7.7623, 7.7180, 7.6793,
    7.6393, 7.5893, 7.5427, 7.4966, 7.4563, 7.4050, 7.3698, 7.3318, 7.2975, 7.2565,
    7.2127, 7.1791, 7.1378, 7.1078, 7.0638, 7.0298, 6.9902, 6.9550, 6.9214, 6.8909,
    6.8640, 6.8325, 6.7933, 6.7676, 6.7343, 6.7111, 6.6750, 6.6497, 6.6247, 6.5955,
    6.5768, 6.5518, 6.5211, 6.4889, 6.4639, 6.4423, 6.4219, 6.4016, 6.3754, 6.3537,
    6.3428, 6.3129, 6.2924, 6.2769, 6.2617, 6.2387, 6.2211, 6.2050, 6.1842, 6.1672,
    6.1520, 6.1330, 6.1210, 6.1098, 6.0947, 6.0813, 6.0724, 6.0533, 6.0446, 6.0336,
    6.0250, 6.0113, 6.0028, 5.9955, 5.9833, 5.9735, 5.9664, 5.9582, 5.9522, 5.9499,
    5.9414, 5.9353, 5.9287, 5.9235, 5.9219, 5.9168, 5.9100, 5.9085, 5.9068, 5.9065,
    5.9004, 5.8978, 5.9032, 5.9032, 5.9012, 5.9023, 5.9080, 5.9047, 5.9099, 5.9127,
    5.9163, 5.9177, 5.9221, 5.9270, 5.9337, 5.9413, 5.9439, 5.9491, 5.9548, 5.9694,
    5.9772, 5.9865, 5.9943, 6.0027, 6.0131, 6.0257, 6.0359, 6.0505, 6.0664, 6.0791,
    6.0956, 6.1059, 6.1190, 6.1339, 6.1499, 6.1728, 6.1842, 6.1996, 6.2262, 6.2472,
    6.2689, 6.2916, 6.3207, 6.3458, 6.3628, 6.3768, 6.4172, 6.4377, 6.4725, 6.4898,
    6.5300, 6.5497, 6.5878, 6.6172, 6.6462, 6.6909, 6.7114, 6.7570, 6.7836, 6.8414,
    6.8741, 6.9209, 6.9642, 7.0086, 7.0550, 7.1062, 7.1615, 7.2043, 7.2635, 7.3257,
    7.3826, 7.4520, 7.5120, 7.5877, 7.6534, 7.7335, 7.7923, 7.8610, 7.9557, 8.0436,
    8.1334, 8.2407, 8.3546, 8.4980, 8.6127, 8.7435, 8.8746, 9.0882, 9.2618, 9.5835,
    9.5317, 9.2746, 9.0469, 8.8850, 8.7317, 8.5886, 8.4814, 8.3468, 8.2440, 8.1225,
    8.0558, 7.9496, 7.8685, 7.7813, 7.7042, 7.6501, 7.5743, 7.5014, 7.4298, 7.3702,
    7.3049, 7.2625, 7.2064, 7.1599, 7.1085, 7.0643, 7.0125, 6.9683, 6.9211, 6.8762,
    6.8481, 6.8011, 6.7613, 6.7167, 6.6836, 6.6525, 6.6109, 6.5739, 6.5611, 6.5215,
    6.4948, 6.4650, 6.4306, 6.4058, 6.3774, 6.3608, 6.3382, 6.3124, 6.2917, 6.2685,
    6.2408, 6.2274, 6.2081, 6.1872, 6.1658, 6.1610, 6.1344, 6.1237, 6.1091, 6.0912,
    6.0795, 6.0644, 6.0470, 6.0427, 6.0276, 6.0175, 6.0065, 5.9915, 5.9824, 5.9764,
    5.9641, 5.9613, 5.9510, 5.9445, 5.9431, 5.9306, 5.9276, 5.9237, 5.9172, 5.9176,
    5.9135, 5.9092, 5.9067, 5.9059, 5.9048, 5.9006, 5.9025, 5.9035, 5.9014, 5.9033,
    5.9043, 5.9092, 5.9074, 5.9108, 5.9131, 5.9177, 5.9239, 5.9295, 5.9386, 5.9396,
    5.9470, 5.9511, 5.9599, 5.9674, 5.9757, 5.9824, 5.9924, 6.0044, 6.0102, 6.0227,
    6.0316, 6.0442, 6.0519, 6.0710, 6.0815, 6.0960, 6.1123, 6.1185, 6.1390, 6.1488,
    6.1685, 6.1814, 6.2064, 6.2142, 6.2419, 6.2516, 6.2755, 6.2927, 6.3173, 6.3363,
    6.3579, 6.3781, 6.4031, 6.4250, 6.4391, 6.4642, 6.4961, 6.5247, 6.5414, 6.5684,
    6.5907, 6.6250, 6.6531, 6.6777, 6.7000, 6.7479, 6.7678, 6.7938, 6.8211, 6.8668,
    6.8881, 6.9220, 6.9547, 6.9992, 7.0247, 7.0624, 7.0933, 7.1298, 7.1880, 7.2214,
    7.2609, 7.2989, 7.3315, 7.3796, 7.4106, 7.4520, 7.5082, 7.5432, 7.5866, 7.6304,
    7.6782, 7.7087, 7.7670, 7.8071, 7.8593, 7.9118, 7.9686, 8.0135, 8.0473, 8.0993,
    8.1457, 8.1945, 8.2639, 8.3072, 8.3680, 8.4149, 8.4594, 8.5203, 8.5596, 8.6246,
    8.6694, 8.7177, 8.7736, 8.8399, 8.8861, 8.9496, 8.9944, 9.0556, 9.1090, 9.1694,
    9.2159, 9.2744, 9.3173, 9.3716, 9.4215, 9.4624, 9.5282, 9.5720, 9.6244, 9.6708,
    9.7268, 9.7850, 9.8311, 9.8790, 9.9280, 9.9710, 10.0214, 10.0570, 10.1182, 10.1496,
    10.2007, 10.2294, 10.2929, 10.3262, 10.3575, 10.4100, 10.4384, 10.4795, 10.5223, 10.5539,
    10.5865, 10.6245, 10.6649, 10.6879, 10.7261, 10.7509, 10.7867, 10.8054, 10.8373, 10.8772,
    10.8908, 10.9215, 10.9369, 10.9621, 10.9998, 11.0174, 11.0314, 11.0507, 11.0709, 11.0920,
    11.1056, 11.1199, 11.1359, 11.1519, 11.1672, 11.1795, 11.1862, 11.1951, 11.2070, 11.2203,
    11.2281, 11.2317, 11.2340, 11.2407, 11.2454, 11.2513, 11.2521, 11.2507, 11.2492, 11.2516,
    11.2528, 11.2463, 11.2416, 11.2378, 11.2313, 11.2265, 11.2193, 11.2098, 11.1984, 11.1877,
    11.1802, 11.1668, 11.1471, 11.1306, 11.1226, 11.1076, 11.0876, 11.0618, 11.0462, 11.0265,
    11.0029, 10.9758, 10.9383, 10.9191, 10.8940, 10.8710, 10.8427, 10.7975, 10.7701, 10.7310,
    10.6999, 10.6648, 10.6127, 10.5842, 10.5315, 10.4942, 10.4420, 10.3941, 10.3461, 10.3025,
    10.2460, 10.1947, 10.1501, 10.0869, 10.0272, 9.9595, 9.8976, 9.8474, 9.7743, 9.7100,
    9.6363, 9.5706, 9.4871, 9.4115, 9.3353, 9.2736, 9.1952, 9.1009, 9.0032, 8.9190,
    8.8485, 8.7554, 8.6318, 8.5559, 8.4460, 8.3823, 8.2721, 8.1636, 8.0510, 7.9167,
    7.8149, 7.7182, 7.6005, 7.4725, 7.3553, 7.2264, 7.1437, 6.9608, 6.8473, 6.7355,
    6.5744, 6.4240, 6.2726, 6.1162, 5.9949, 5.7907, 5.6067, 5.4731, 5.2059, 4.9646,
    4.9712, 5.2474, 5.4595, 5.6055, 5.8217, 5.9591, 6.1236, 6.2705, 6.4556, 6.5793,
    6.7244, 6.8337, 6.9635, 7.1323, 7.2157, 7.3733, 7.4920, 7.5810, 7.7240, 7.8425,
    7.9443, 8.0419, 8.1611, 8.2480, 8.3662, 8.4616, 8.5589, 8.6602, 8.7338, 8.8282,
    8.9198, 9.0172, 9.1190, 9.1957, 9.2737, 9.3363, 9.4247, 9.4902, 9.5846, 9.6375,
    9.7117, 9.7758, 9.8468, 9.9088, 9.9603, 10.0334, 10.0926, 10.1574, 10.2001, 10.2446,
    10.2975, 10.3481, 10.4064, 10.4396, 10.4936, 10.5394, 10.5827, 10.6100, 10.6551, 10.7084,
    10.7293, 10.7712, 10.7942, 10.8339, 10.8674, 10.9001, 10.9207, 10.9467, 10.9770, 11.0028,
    11.0288, 11.0466, 11.0630, 11.0843, 11.1021, 11.1158, 11.1337, 11.1501, 11.1653, 11.1789,
    11.1876, 11.1994, 11.2091, 11.2183, 11.2287, 11.2335, 11.2354, 11.2426, 11.2466, 11.2525,
    11.2499, 11.2497, 11.2501, 11.2507, 11.2486, 11.2447, 11.2400, 11.2349, 11.2305, 11.2258,
    11.2152, 11.2065, 11.1943, 11.1898, 11.1818, 11.1650, 11.1495, 11.1348, 11.1193, 11.1057,
    11.0875, 11.0713, 11.0487, 11.0361, 11.0115, 10.9922, 10.9679, 10.9437, 10.9175, 10.8880,
    10.8691, 10.8408, 10.8075, 10.7894, 10.7506, 10.7244, 10.6846, 10.6504, 10.6259, 10.5977,
    10.5497, 10.5272, 10.4817, 10.4426, 10.4018, 10.3608, 10.3342, 10.2779, 10.2424, 10.1976,
    10.1508, 10.1174, 10.0742, 10.0273, 9.9666, 9.9265, 9.8738, 9.8313, 9.7841, 9.7168,
    9.6689, 9.6234, 9.5890, 9.5305, 9.4885, 9.4209, 9.3619, 9.3237, 9.2718, 9.2221,
    9.1644, 9.1087, 9.0485, 8.9867, 8.9519, 8.8985, 8.8278, 8.7753, 8.7300, 8.6858,
    8.6361, 8.5544, 8.5222, 8.4688, 8.4085, 8.3624, 8.3095, 8.2658, 8.2146, 8.1415,
], dtype=np.float64)


# =========================================================================== the factor grid

def factor_values() -> tuple[np.ndarray, ...]:
    """Latent values of every factor, float64: shape (1, 2, 3), scale ``linspace(0.5, 1, 6)``,
    orientation ``linspace(0, 2 pi, 40)`` (radians), posX and posY ``linspace(0, 1, 32)``.
    They equal the ``latents_values`` of the official file at every index."""
    return (np.array([1.0, 2.0, 3.0]), np.linspace(0.5, 1.0, 6), np.linspace(0.0, 2 * np.pi, 40),
            np.linspace(0.0, 1.0, 32), np.linspace(0.0, 1.0, 32))


def grid_classes(sizes: Sequence[int] = FACTOR_SIZES) -> np.ndarray:
    """Every class combination of a grid of ``sizes`` in C order, int64 ``(prod(sizes), 5)``."""
    n = int(np.prod(sizes))
    return np.stack(np.unravel_index(np.arange(n), tuple(sizes)), axis=1).astype(np.int64)


def grid_index(classes: np.ndarray | torch.Tensor, sizes: Sequence[int] = FACTOR_SIZES) -> np.ndarray:
    """Row of each class combination ``(N, 5)`` in the C-ordered grid of ``sizes``: ``(N,)`` int64."""
    c = np.asarray(classes, dtype=np.int64).reshape(-1, len(sizes))
    return np.ravel_multi_index(tuple(c.T), tuple(sizes)).astype(np.int64)


def subgrid_full_classes() -> np.ndarray:
    """Full-grid classes ``(46080, 5)`` of the regular sub-grid of ``dsprites_downsampled.npz``
    (every 4th orientation and every 2nd position), in the sub-grid's C order."""
    return grid_classes(SUBGRID_SIZES) * np.asarray(SUBGRID_STEPS, dtype=np.int64)


def values_of(classes: np.ndarray) -> np.ndarray:
    """Latent values ``(N, 5)`` float64 of full-grid classes ``(N, 5)``."""
    vals = factor_values()
    c = np.asarray(classes, dtype=np.int64)
    return np.stack([vals[k][c[:, k]] for k in range(5)], axis=1)


# =========================================================================== renderer

def _heart_radius(phi: np.ndarray) -> np.ndarray:
    """:data:`HEART_RADII` linearly interpolated at polar angles ``phi`` in [-pi, pi]."""
    nb = HEART_RADII.shape[0]
    t = (phi + np.pi) * (nb / (2 * np.pi)) - 0.5
    k0 = np.floor(t)
    w = t - k0
    k0 = k0.astype(np.int64) % nb
    return (1.0 - w) * HEART_RADII[k0] + w * HEART_RADII[(k0 + 1) % nb]


def _sprite_mask(shape_code: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test in sprite coordinates at scale 1 (pixels, v up) for shape class 0/1/2."""
    if shape_code == 0:
        return (np.abs(u) <= SQUARE_HALF_SIDE) & (np.abs(v) <= SQUARE_HALF_SIDE)
    if shape_code == 1:
        a, b = ELLIPSE_SEMI_AXES
        return (u * u) * (1.0 / (a * a)) + (v * v) * (1.0 / (b * b)) <= 1.0
    return u * u + v * v <= _heart_radius(np.arctan2(v, u)) ** 2


def _render_chunk(classes: np.ndarray) -> np.ndarray:
    """Binary images ``(B, 64, 64)`` bool for full-grid classes ``(B, 5)``."""
    b = classes.shape[0]
    vals = factor_values()
    scale = vals[1][classes[:, 1]]
    theta = vals[2][classes[:, 2]]
    cx = POSITION_OFFSET + POSITION_SPAN * vals[3][classes[:, 3]]
    cy = POSITION_OFFSET + POSITION_SPAN * vals[4][classes[:, 4]]
    half = _WINDOW // 2
    ox = np.floor(cx).astype(np.int64) - half          # window origin (columns), inside 0..64-W
    oy = np.floor(cy).astype(np.int64) - half
    ar = np.arange(_WINDOW)
    dx = (ox[:, None] + ar + 0.5) - cx[:, None]         # (B, W) pixel centre - sprite centre
    dy = cy[:, None] - (oy[:, None] + ar + 0.5)         # (B, W) y up
    cos = (np.cos(theta) / scale)[:, None, None]
    sin = (np.sin(theta) / scale)[:, None, None]
    mask = np.zeros((b, _WINDOW, _WINDOW), dtype=bool)
    for code in range(3):
        sel = np.flatnonzero(classes[:, 0] == code)
        if sel.size == 0:
            continue
        ddx, ddy = dx[sel][:, None, :], dy[sel][:, :, None]
        u = cos[sel] * ddx + sin[sel] * ddy             # rotate by -theta, divide by scale
        v = cos[sel] * ddy - sin[sel] * ddx
        mask[sel] = _sprite_mask(code, u, v)
    out = np.zeros((b, IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    rows = (oy[:, None] + ar)[:, :, None]
    cols = (ox[:, None] + ar)[:, None, :]
    out[np.arange(b)[:, None, None], rows, cols] = mask
    return out


def render(classes: np.ndarray | torch.Tensor, *, chunk: int = 2048, packed: bool = False,
           progress: Any = None) -> np.ndarray:
    """Render dSprites images for full-grid classes ``(N, 5)`` (shape, scale, orientation, posX,
    posY indices into :data:`FACTOR_SIZES`).

    Returns uint8 0/1 images ``(N, 64, 64)``, or bit-packed rows ``(N, 512)`` with
    ``packed=True`` (``np.unpackbits(..., axis=1)`` restores ``(N, 4096)``).  Vectorised over
    ``chunk`` images at a time, deterministic (no randomness).  ``progress(done, total)`` is
    called after each chunk when given.
    """
    c = np.asarray(classes, dtype=np.int64).reshape(-1, 5)
    if c.size and (c.min() < 0 or np.any(c.max(axis=0) >= np.asarray(FACTOR_SIZES))):
        raise ValueError(f"dsprites classes must lie in [0, size) for sizes {FACTOR_SIZES}; got "
                         f"per-factor maxima {c.max(axis=0).tolist()}")
    n = c.shape[0]
    out = np.empty((n, ROW_BYTES) if packed else (n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for s in range(0, n, chunk):
        img = _render_chunk(c[s:s + chunk])
        if packed:
            out[s:s + chunk] = np.packbits(img.reshape(img.shape[0], -1), axis=1)
        else:
            out[s:s + chunk] = img
        if progress is not None:
            progress(min(n, s + chunk), n)
    return out


def fit_heart_outline(images: np.ndarray, classes: np.ndarray, n_bins: int = 720,
                      chunk: int = 1024) -> np.ndarray:
    """Measure the heart outline from real images: ``(n_bins,)`` radii (pixels, scale 1).

    Every pixel centre of every heart image (``classes[:, 0] == 2``; full-grid classes) is
    mapped back to sprite coordinates (undoing position, rotation and scale with the renderer's
    conventions), giving labelled points (on/off) around the rotation centre.  In each polar
    sector ``[-pi + k d, -pi + (k + 1) d)`` (``d = 2 pi / n_bins``) the radius that misclassifies
    the fewest points is kept (the middle of the best interval).  This is how
    :data:`HEART_RADII` was obtained (``n_bins=720`` on both real subsets).
    """
    classes = np.asarray(classes, dtype=np.int64)
    sel = np.flatnonzero(classes[:, 0] == 2)
    if sel.size == 0:
        raise ValueError("fit_heart_outline needs heart images (shape class 2)")
    vals = factor_values()
    g = np.arange(IMAGE_SIZE) + 0.5
    rhos, phis, labels = [], [], []
    for s in range(0, sel.size, chunk):
        rows = sel[s:s + chunk]
        c = classes[rows]
        scale = vals[1][c[:, 1]][:, None, None]
        theta = vals[2][c[:, 2]][:, None, None]
        dx = (g[None, None, :] - (POSITION_OFFSET + POSITION_SPAN * vals[3][c[:, 3]])[:, None, None])
        dy = -(g[None, :, None] - (POSITION_OFFSET + POSITION_SPAN * vals[4][c[:, 4]])[:, None, None])
        u = (np.cos(theta) * dx + np.sin(theta) * dy) / scale
        v = (np.cos(theta) * dy - np.sin(theta) * dx) / scale
        rho = np.hypot(u, v)
        band = (rho > 0.25 * SPRITE_RADIUS) & (rho < SPRITE_RADIUS)
        rhos.append(rho[band])
        phis.append(np.arctan2(v, u)[band])
        labels.append(np.asarray(images[rows]).reshape(rho.shape).astype(bool)[band])
    rho, phi, lab = np.concatenate(rhos), np.concatenate(phis), np.concatenate(labels)
    k = np.floor((phi + np.pi) * (n_bins / (2 * np.pi))).astype(np.int64) % n_bins
    order = np.lexsort((rho, k))
    rho, lab, k = rho[order], lab[order], k[order]
    starts = np.searchsorted(k, np.arange(n_bins + 1))
    radii = np.zeros(n_bins)
    for b in range(n_bins):
        r, on = rho[starts[b]:starts[b + 1]], lab[starts[b]:starts[b + 1]]
        if r.size == 0:
            raise ValueError(f"no data in polar sector {b}; use more images or fewer bins")
        errors = np.concatenate([[0], np.cumsum(~on)]) + (on.sum() - np.concatenate([[0], np.cumsum(on)]))
        best = np.flatnonzero(errors == errors.min())
        i = int(best[best.size // 2])
        radii[b] = 0.5 * (r[i - 1] + r[i]) if 0 < i < r.size else r[min(i, r.size - 1)]
    return radii


def score_images(generated: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """Per-image pixel agreement of two stacks of binary images ``(N, 64, 64)`` (or bit-packed
    ``(N, 512)`` rows): mean, min, fraction of images with at least 99% of pixels equal, fraction
    identical, and the number of differing pixels."""
    g = np.asarray(generated)
    r = np.asarray(real)
    if g.ndim == 2 and g.shape[1] == ROW_BYTES:
        g = np.unpackbits(g, axis=1)
    if r.ndim == 2 and r.shape[1] == ROW_BYTES:
        r = np.unpackbits(r, axis=1)
    g = g.reshape(g.shape[0], -1).astype(bool)
    r = r.reshape(r.shape[0], -1).astype(bool)
    if g.shape != r.shape:
        raise ValueError(f"shapes differ: {g.shape} vs {r.shape}")
    diff = (g != r).sum(axis=1)
    agree = 1.0 - diff / g.shape[1]
    return {"n": int(g.shape[0]), "mean": float(agree.mean()), "min": float(agree.min()),
            "frac_ge_99": float((agree >= 0.99).mean()), "frac_identical": float((diff == 0).mean()),
            "pixels_differing": int(diff.sum())}


# =========================================================================== the data object

_SAME_SET_NOTE = ("dSprites has no held-out split (paper section 5.4): the model is trained and "
                  "evaluated on the same images, and every split name returns them")


class DSpritesData:
    """dSprites images with their factor labels, served as float32 ``(B, 1, 64, 64)`` in {0, 1}.

    Images are kept bit-packed in memory (512 bytes each; 377 MB for the full grid).
    ``latents_classes`` ``(N, 5)`` long are class indices in this set's own grid
    (``factor_sizes``: ``(3, 6, 40, 32, 32)``, or ``(3, 6, 10, 16, 16)`` for the sub-grid);
    ``latents_values`` ``(N, 5)`` float64 the latent values; ``original_indices`` ``(N,)`` long the
    rows of the official 737,280-image file.  ``is_complete_grid``: every combination of
    ``factor_sizes`` occurs exactly once, in C order (so sampling-based MIG is computable).
    """

    name = "dsprites"
    shape = (1, IMAGE_SIZE, IMAGE_SIZE)
    binarization = "none"           # the images are binary already
    likelihood = "bernoulli"
    factor_names = FACTOR_NAMES

    def __init__(self, packed: np.ndarray, classes: np.ndarray, values: np.ndarray,
                 original_indices: np.ndarray, factor_sizes: Sequence[int], *, split: str,
                 source: str, protocol: str, grid: str, source_files: Sequence[str | os.PathLike] = (),
                 notes: Sequence[str] = (), extra: dict[str, Any] | None = None) -> None:
        n = packed.shape[0]
        if packed.ndim != 2 or packed.shape[1] != ROW_BYTES:
            raise ValueError(f"packed images must be (N, {ROW_BYTES}) uint8, got {packed.shape}")
        for what, arr, shp in (("latents_classes", classes, (n, 5)), ("latents_values", values, (n, 5)),
                               ("original_indices", original_indices, (n,))):
            if tuple(arr.shape) != shp:
                raise DataIntegrityError(f"dsprites: {what} has shape {tuple(arr.shape)}, expected {shp}")
        self.split = split
        self.source = source
        self.protocol = protocol
        self.grid = grid
        self.factor_sizes: tuple[int, ...] = tuple(int(s) for s in factor_sizes)
        self.latents_classes = torch.as_tensor(np.ascontiguousarray(classes, dtype=np.int64))
        self.latents_values = torch.as_tensor(np.ascontiguousarray(values, dtype=np.float64))
        self.original_indices = torch.as_tensor(np.ascontiguousarray(original_indices, dtype=np.int64))
        self.source_files = [str(p) for p in source_files]
        self.notes = list(notes)
        self.extra = dict(extra or {})
        self._packed = packed
        self.is_complete_grid = (n == int(np.prod(self.factor_sizes)) and bool(np.array_equal(
            grid_index(classes, self.factor_sizes), np.arange(n))))

    def __len__(self) -> int:
        return int(self._packed.shape[0])

    def __repr__(self) -> str:
        return (f"DSpritesData(split={self.split!r}, source={self.source!r}, n={len(self)}, "
                f"factor_sizes={self.factor_sizes}, protocol={self.protocol!r})")

    def _rows(self, index: torch.Tensor | Sequence[int] | np.ndarray) -> np.ndarray:
        idx = torch.as_tensor(index, dtype=torch.long).reshape(-1).cpu()
        n = len(self)
        if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
            raise IndexError(f"dsprites/{self.split}: index out of range for {n} images "
                             f"(got {int(idx.min())}..{int(idx.max())})")
        return idx.numpy()

    def images(self, index: torch.Tensor | Sequence[int] | np.ndarray) -> np.ndarray:
        """uint8 0/1 images ``(B, 64, 64)`` at ``index``."""
        rows = self._rows(index)
        return np.unpackbits(np.asarray(self._packed[rows]), axis=1).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)

    def get_batch(self, index: torch.Tensor | Sequence[int] | np.ndarray, *, train: bool = False,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        """Images at ``index`` ``(B,)`` as float32 ``(B, 1, 64, 64)`` in {0, 1}.  The images are
        binary, so ``train`` and ``generator`` change nothing (no binarisation, no flips)."""
        x = torch.from_numpy(self.images(index).astype(np.float32))
        return x.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)

    def regular_subgrid(self) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...], str] | None:
        """``(rows, classes, factor_sizes, description)`` of the largest regular grid this set
        holds for MIG: the 3x6x10x16x16 sub-grid (46,080 images) of a full grid, all of a
        sub-grid set; ``None`` when the set is not a complete grid (the random subset)."""
        if not self.is_complete_grid:
            return None
        if self.factor_sizes == SUBGRID_SIZES:
            return (torch.arange(len(self)), self.latents_classes, self.factor_sizes, self.grid)
        if self.factor_sizes == FACTOR_SIZES:
            rows = torch.as_tensor(grid_index(subgrid_full_classes()))
            return (rows, torch.as_tensor(grid_classes(SUBGRID_SIZES)), SUBGRID_SIZES,
                    f"regular sub-grid 3x6x10x16x16 (every 4th orientation, every 2nd position; "
                    f"46,080 images) of: {self.grid}")
        return None

    def evaluation_index(self, n: int, seed: int) -> torch.Tensor:
        """The ``n`` examples an evaluation uses: the first ``n`` of a seed-``seed`` random permutation (the
        set is ordered by factor, so its first rows would all be squares, and the TC estimators need uniformly
        drawn minibatches)."""
        return torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]

    def factor_grid(self, which: str = "auto") -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...], str] | None:
        """The labelled grid MIG is computed on: ``which="full"`` (the whole set, if it is a
        complete grid), ``"subgrid"`` (:meth:`regular_subgrid`) or ``"auto"`` (the whole set if it
        is a complete grid of at most 50,000 images, else the sub-grid).  ``None`` if unavailable."""
        if which not in ("auto", "full", "subgrid"):
            raise ValueError(f"unknown grid {which!r}; choose 'auto', 'full' or 'subgrid'")
        whole = (torch.arange(len(self)), self.latents_classes, self.factor_sizes, self.grid)
        if which == "full" or (which == "auto" and self.is_complete_grid and len(self) <= 50_000):
            return whole if self.is_complete_grid else None
        return self.regular_subgrid()

    def meta(self) -> dict[str, Any]:
        """JSON-able description: name, split, n, protocol, source files, factor grid, notes."""
        return {"name": self.name, "split": self.split, "n": len(self), "shape": list(self.shape),
                "protocol": self.protocol, "source": self.source, "binarization": self.binarization,
                "likelihood": self.likelihood, "source_files": list(self.source_files),
                "factor_names": list(FACTOR_NAMES), "factor_sizes": list(self.factor_sizes),
                "grid": self.grid, "is_complete_grid": self.is_complete_grid,
                "split_note": _SAME_SET_NOTE, "notes": list(self.notes), **self.extra}


# =========================================================================== file readers

def _read_npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    return np.lib.format.read_array_header_2_0(f)


def _read_exact(f, nbytes: int) -> bytes:
    parts, got = [], 0
    while got < nbytes:
        block = f.read(nbytes - got)
        if not block:
            break
        parts.append(block)
        got += len(block)
    return b"".join(parts)


def stream_packed_images(path: Path, key: str = "imgs", chunk: int = 8192) -> np.ndarray:
    """Bit-packed rows ``(N, 512)`` of the 0/1 uint8 images ``key`` ``(N, 64, 64)`` of an ``.npz``,
    decompressed ``chunk`` images at a time (the official file's images are 3 GB unpacked)."""
    try:
        with zipfile.ZipFile(path) as zf:
            member = f"{key}.npy"
            if member not in zf.namelist():
                raise DataIntegrityError(f"dsprites: {path} has no array {key!r} (members: "
                                         f"{', '.join(zf.namelist())})")
            with zf.open(member) as f:
                shape, fortran, dtype = _read_npy_header(f)
                if len(shape) != 3 or tuple(shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE) or fortran \
                        or np.dtype(dtype).itemsize != 1:
                    raise DataIntegrityError(f"dsprites: {path}:{key} is {shape} {dtype} "
                                             f"(fortran={fortran}); expected (N, 64, 64) uint8")
                n = int(shape[0])
                out = np.empty((n, ROW_BYTES), dtype=np.uint8)
                per = IMAGE_SIZE * IMAGE_SIZE
                for s in range(0, n, chunk):
                    m = min(chunk, n - s)
                    raw = _read_exact(f, m * per)
                    if len(raw) != m * per:
                        raise DataIntegrityError(f"dsprites: {path}:{key} is truncated at image {s}")
                    block = np.frombuffer(raw, dtype=np.uint8).reshape(m, per)
                    if block.max(initial=0) > 1:
                        raise DataIntegrityError(f"dsprites: {path}:{key} holds values > 1; "
                                                 f"expected binary 0/1 images")
                    out[s:s + m] = np.packbits(block, axis=1)
                return out
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        if isinstance(err, DataIntegrityError):
            raise
        raise DataIntegrityError(f"dsprites: cannot read {path} ({err}); the file is corrupt: "
                                 f"delete it and download it again") from err


def _read_labels(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: np.asarray(z[k]) for k in ("latents_classes", "latents_values") if k in z.files}
            if "original_dataset_indices" in z.files:
                out["original_dataset_indices"] = np.asarray(z["original_dataset_indices"])
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DataIntegrityError(f"dsprites: cannot read {path} ({err})") from err
    for k in ("latents_classes", "latents_values"):
        if k not in out:
            raise DataIntegrityError(f"dsprites: {path} has no {k!r} array")
        if out[k].ndim != 2 or out[k].shape[1] not in (5, 6):
            raise DataIntegrityError(f"dsprites: {path}:{k} has shape {out[k].shape}, expected (N, 5|6)")
        if out[k].shape[1] == 6:          # the official file has a constant 'color' factor first
            out[k] = out[k][:, 1:]
    return out


def _check_values(values: np.ndarray, full_classes: np.ndarray, path: Path) -> None:
    if not np.allclose(values, values_of(full_classes), rtol=0, atol=1e-9):
        raise DataIntegrityError(f"dsprites: {path}: latents_values do not equal the factor grid "
                                 f"at their classes; the file is not an official dSprites file")


# =========================================================================== sources

def _folder(root: Path) -> Path:
    return root / "dsprites"


def _missing_message(root: Path, what: str) -> str:
    folder = _folder(root)
    return (f"or use the real subsets in {folder} ({SUBGRID_FILE}: 46,080-image regular "
            f"sub-grid, {SUBSET_FILE}: 20,000 random images) with --data-option "
            f"source=subgrid|subset, or the faithful regeneration with --data-option "
            f"source=generated (no file needed); {what}")


def _load_full(root: Path, split: str, download: bool, cache: bool) -> DSpritesData:
    path = _folder(root) / FULL_FILE
    if not path.exists() and download:
        rd.download_url(FULL_URL, path, dataset="dsprites")
    require_file(path, "dsprites", FULL_URL,
                 "load_split('dsprites', ..., download=True) / --download fetches it; "
                 + _missing_message(root, "the full file is what the paper used"))
    labels = _read_labels(path)
    classes, values = labels["latents_classes"].astype(np.int64), labels["latents_values"]
    if classes.shape[0] != N_FULL or not np.array_equal(grid_index(classes), np.arange(N_FULL)):
        raise DataIntegrityError(f"dsprites: {path} does not hold the {N_FULL:,}-image factor grid "
                                 f"in C order ({classes.shape[0]} rows); delete it and download it again")
    _check_values(values, classes, path)
    packed, cinfo = rd.cached_array("dsprites-full-packed", {"files": rd.file_signature([path])},
                                    lambda: stream_packed_images(path), enabled=cache)
    if packed.shape != (N_FULL, ROW_BYTES):
        raise DataIntegrityError(f"dsprites: {path} holds {packed.shape[0]} images, expected {N_FULL}")
    return DSpritesData(packed, classes, values, np.arange(N_FULL), FACTOR_SIZES, split=split,
                        source="full", protocol=(
                            "dSprites official file (737,280 images); trained and evaluated on "
                            "the same images (paper section 5.4)"),
                        grid="full 3x6x40x32x32 factor grid (737,280 images, official file)",
                        source_files=[path], extra={"cache": cinfo})


def _read_real_subset(path: Path, cache: bool) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    labels = _read_labels(path)
    if "original_dataset_indices" not in labels:
        raise DataIntegrityError(f"dsprites: {path} has no original_dataset_indices array")
    packed, cinfo = rd.cached_array(f"dsprites-{path.stem}-packed", {"files": rd.file_signature([path])},
                                    lambda: stream_packed_images(path), enabled=cache)
    n = labels["latents_classes"].shape[0]
    if packed.shape[0] != n or labels["original_dataset_indices"].shape != (n,):
        raise DataIntegrityError(f"dsprites: {path}: {packed.shape[0]} images but {n} label rows")
    return packed, labels, cinfo


def _load_subgrid(root: Path, split: str, cache: bool) -> DSpritesData:
    path = _folder(root) / SUBGRID_FILE
    require_file(path, "dsprites", "the shared data folder (a genuine 46,080-image regular "
                 "sub-grid cut from the official file)",
                 f"or the full file {FULL_FILE} from {FULL_URL} (source=full, --download), or "
                 f"source=generated")
    packed, labels, cinfo = _read_real_subset(path, cache)
    classes = labels["latents_classes"].astype(np.int64)
    orig = labels["original_dataset_indices"].astype(np.int64)
    n_sub = int(np.prod(SUBGRID_SIZES))
    full_classes = np.stack(np.unravel_index(orig, FACTOR_SIZES), axis=1).astype(np.int64)
    if (classes.shape[0] != n_sub or not np.array_equal(grid_index(classes, SUBGRID_SIZES), np.arange(n_sub))
            or not np.array_equal(full_classes, subgrid_full_classes())):
        raise DataIntegrityError(f"dsprites: {path} is not the regular 3x6x10x16x16 sub-grid in C "
                                 f"order with matching original_dataset_indices")
    _check_values(labels["latents_values"], full_classes, path)
    return DSpritesData(packed, classes, labels["latents_values"], orig, SUBGRID_SIZES, split=split,
                        source="subgrid", protocol=(
                            f"substitute: real dSprites regular sub-grid {SUBGRID_FILE} (46,080 "
                            "images, 3x6x10x16x16: every 4th orientation, every 2nd position) instead "
                            "of the full 737,280-image file; trained and evaluated on the same images"),
                        grid="regular sub-grid 3x6x10x16x16 (46,080 real images, every 4th "
                             "orientation, every 2nd position)",
                        source_files=[path], extra={"cache": cinfo})


def _load_subset(root: Path, split: str, cache: bool) -> DSpritesData:
    path = _folder(root) / SUBSET_FILE
    require_file(path, "dsprites", "the shared data folder (20,000 random images of the official file)",
                 f"or the full file {FULL_FILE} from {FULL_URL} (source=full, --download), or "
                 f"source=generated")
    packed, labels, cinfo = _read_real_subset(path, cache)
    classes = labels["latents_classes"].astype(np.int64)
    orig = labels["original_dataset_indices"].astype(np.int64)
    if not np.array_equal(grid_index(classes), orig):
        raise DataIntegrityError(f"dsprites: {path}: latents_classes do not match "
                                 f"original_dataset_indices")
    _check_values(labels["latents_values"], classes, path)
    return DSpritesData(packed, classes, labels["latents_values"], orig, FACTOR_SIZES, split=split,
                        source="subset", protocol=(
                            f"substitute: {classes.shape[0]:,} random real dSprites images "
                            f"({SUBSET_FILE}) instead of the full 737,280-image file; not a complete "
                            "factor grid (sampling-based MIG unavailable); trained and evaluated on "
                            "the same images"),
                        grid=f"random subset of {classes.shape[0]:,} images of the 3x6x40x32x32 grid "
                             f"(not a complete grid)",
                        source_files=[path], extra={"cache": cinfo})


def _renderer_key() -> dict[str, Any]:
    return {"renderer": RENDERER_VERSION, "offset": POSITION_OFFSET, "span": POSITION_SPAN,
            "square": SQUARE_HALF_SIDE, "ellipse": list(ELLIPSE_SEMI_AXES),
            "heart": hashlib.sha256(HEART_RADII.tobytes()).hexdigest()[:16]}


def generate(grid: str = "full", *, cache: bool = True, progress: Any = None
             ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Render the whole factor grid (``grid="full"``, 737,280 images) or the 46,080-image
    sub-grid (``"subgrid"``), once: the bit-packed images ``(N, 512)`` are cached under
    ``~/.cache/mrvae/processed`` (``$XDG_CACHE_HOME`` honoured) and reloaded afterwards.

    Returns ``(packed, full_classes (N, 5), info)`` with ``info`` = cache file, cache hit and the
    seconds spent.
    """
    if grid not in ("full", "subgrid"):
        raise ValueError(f"unknown grid {grid!r}; choose 'full' or 'subgrid'")
    classes = grid_classes() if grid == "full" else subgrid_full_classes()
    t0 = time.perf_counter()
    packed, cinfo = rd.cached_array(f"dsprites-generated-{grid}", _renderer_key(),
                                    lambda: render(classes, packed=True, progress=progress),
                                    enabled=cache)
    return packed, classes, {**cinfo, "seconds": time.perf_counter() - t0}


def _load_generated(root: Path, split: str, cache: bool, grid: str, score: bool) -> DSpritesData:
    packed, full_classes, info = generate(grid, cache=cache)
    sizes = FACTOR_SIZES if grid == "full" else SUBGRID_SIZES
    own = full_classes if grid == "full" else grid_classes(SUBGRID_SIZES)
    extra: dict[str, Any] = {"cache": info, "renderer": {"version": RENDERER_VERSION,
                                                         **{k: v for k, v in _renderer_key().items()
                                                            if k != "renderer"}}}
    if score:
        extra["generator_agreement"] = _cached_agreement(root, cache)
    what = "737,280 images, the full 3x6x40x32x32 grid" if grid == "full" else \
        "46,080 images, the regular 3x6x10x16x16 sub-grid"
    return DSpritesData(packed, own, values_of(full_classes), grid_index(full_classes), sizes,
                        split=split, source="generated", protocol=(
                            f"substitute: dSprites regenerated from the factor grid by "
                            f"deep.data.dsprites.render v{RENDERER_VERSION} ({what}) instead of the "
                            f"official file; trained and evaluated on the same images"),
                        grid=f"generated {what}", source_files=[],
                        notes=["pixel agreement with the real subsets: see generator_agreement "
                               "(deep.data.dsprites.score_generator)"], extra=extra)


# =========================================================================== scoring the renderer

def score_generator(data_dir: str | os.PathLike | None = None, *, chunk: int = 4096) -> dict[str, Any]:
    """Compare :func:`render` with the real subsets under ``<root>/dsprites`` image by image
    (matched by ``original_dataset_indices``): per file and per shape, the mean and minimum
    per-image pixel agreement, the fraction of images with at least 99% agreement and the
    fraction rendered identically (:func:`score_images`).

    Measured with renderer v1: mean per-image agreement 0.999982 on both files (sub-grid:
    min 0.9971, 93.3% of the 46,080 images identical; subset: min 0.9944, 93.4% of 20,000
    identical); every image agrees on at least 99% of its pixels.  The differing pixels have
    centres within ~0.003 px of the outline (rounding in the original renderer; axis-aligned
    squares at some positions lose one edge row/column to such ties).  Raises :class:`DatasetMissingError` when neither file is present.
    """
    root = resolve_data_root(data_dir)
    folder = _folder(root)
    out: dict[str, Any] = {"renderer_version": RENDERER_VERSION, "folder": str(folder)}
    found = False
    for label, fname in (("subgrid", SUBGRID_FILE), ("subset", SUBSET_FILE)):
        path = folder / fname
        if not path.exists():
            out[label] = None
            continue
        found = True
        labels = _read_labels(path)
        orig = labels["original_dataset_indices"].astype(np.int64)
        real = stream_packed_images(path)
        full_classes = np.stack(np.unravel_index(orig, FACTOR_SIZES), axis=1).astype(np.int64)
        gen = render(full_classes, packed=True, chunk=chunk)
        entry = {"file": str(path), **score_images(gen, real), "by_shape": {}}
        for code, shape_name in enumerate(("square", "ellipse", "heart")):
            sel = full_classes[:, 0] == code
            if sel.any():
                entry["by_shape"][shape_name] = score_images(gen[sel], real[sel])
        out[label] = entry
    if not found:
        raise DatasetMissingError(f"dsprites: neither {SUBGRID_FILE} nor {SUBSET_FILE} is in {folder}; "
                                  f"the generator can only be scored against real images (point "
                                  f"--data-dir / $MRVAE_DATA at the shared data folder)")
    return out


def _cached_agreement(root: Path, cache: bool) -> dict[str, Any] | None:
    """:func:`score_generator` for this root, memoised in the processed cache (a small JSON);
    ``None`` when the real subsets are absent."""
    folder = _folder(root)
    files = [folder / f for f in (SUBGRID_FILE, SUBSET_FILE) if (folder / f).exists()]
    if not files:
        return None
    key = json.dumps({"r": _renderer_key(), "files": rd.file_signature(files)}, sort_keys=True, default=str)
    path = rd.processed_cache_dir() / f"dsprites-agreement-{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"
    if cache and path.exists():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass
    score = score_generator(root)
    summary = {k: ({kk: vv for kk, vv in v.items() if kk != "by_shape"} if isinstance(v, dict) else v)
               for k, v in score.items()}
    if cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(summary, indent=1))
        except OSError:
            pass
    return summary


# =========================================================================== public entry point

_OPTIONS = {"grid", "cache", "score", "verify"}


def load_split(name: str = "dsprites", split: str = "train", data_dir: str | os.PathLike | None = None,
               download: bool = False, source: str = "auto", **options: Any) -> DSpritesData:
    """Load dSprites (``name="dsprites"``); every ``split`` (train/valid/test) holds the same images.

    ``source``: ``"auto"`` (the official file if present -- or downloaded with ``download=True``
    -- else the real sub-grid, labelled as a substitute), ``"full"``, ``"subgrid"``, ``"subset"``
    or ``"generated"``.  Options: ``grid="full"|"subgrid"`` (generated source only),
    ``cache=True`` (processed-array cache), ``score=True`` (generated source: record the pixel
    agreement with the real subsets in ``meta()``), ``verify`` (default True: check the file
    against a ``SHA256SUMS`` manifest at the data root, when it lists the file; the files are always
    checked against the factor grid).

    Raises ``ValueError`` (unknown name, split, source or option), :class:`DatasetMissingError`
    (the file of the source is absent; the message names the alternatives) or
    :class:`DataIntegrityError`.
    """
    if name != "dsprites":
        raise ValueError(f"deep.data.dsprites.load_split loads 'dsprites', not {name!r}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for dsprites; choose one of {', '.join(SPLITS)} "
                         f"(all hold the same images)")
    if source not in SOURCES:
        raise ValueError(f"unknown dsprites source {source!r}; choose one of {', '.join(SOURCES)}")
    unknown = set(options) - _OPTIONS
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for dsprites; accepted: "
                         f"{sorted(_OPTIONS | {'source'})}")
    grid = options.get("grid", "full")
    if grid not in ("full", "subgrid"):
        raise ValueError(f"dsprites: grid must be 'full' or 'subgrid', got {grid!r}")
    if "grid" in options and source != "generated":
        raise ValueError("dsprites: the grid option applies to source='generated' only")
    cache = bool(options.get("cache", True))
    root = resolve_data_root(data_dir)
    folder = _folder(root)
    if source == "auto":
        if (folder / FULL_FILE).exists() or download:
            source = "full"
        elif (folder / SUBGRID_FILE).exists():
            source = "subgrid"
        else:
            raise DatasetMissingError(
                f"dsprites: missing file '{FULL_FILE}'; expected at {folder / FULL_FILE}. Get it from "
                f"{FULL_URL} (load_split(..., download=True) / --download), or put the real subsets "
                f"{SUBGRID_FILE} / {SUBSET_FILE} in {folder} (source=subgrid|subset), or use the "
                f"faithful regeneration with --data-option source=generated (no file needed); or "
                f"point --data-dir / $MRVAE_DATA at a folder that has them.")
    source_file = {"full": FULL_FILE, "subgrid": SUBGRID_FILE, "subset": SUBSET_FILE}.get(source)
    if options.get("verify", True) and source_file and (folder / source_file).exists():
        verify_file(folder / source_file, dataset="dsprites", root=root)   # the data root's SHA256SUMS
    if source == "full":
        data = _load_full(root, split, bool(download), cache)
    elif source == "subgrid":
        data = _load_subgrid(root, split, cache)
    elif source == "subset":
        data = _load_subset(root, split, cache)
    else:
        data = _load_generated(root, split, cache, grid, bool(options.get("score", True)))
    if split != "train":
        data.notes.append(f"split {split!r} holds the training images ({_SAME_SET_NOTE})")
    return data
