"""The ``fonts`` dataset of A5's physical robustification (Frosio & Kautz, CVPR 2023, sec. 3 "Offline physical
robustification", eqs. 10-11, Table 9): an alphabet of 62 characters (0-9, A-Z, a-z) and its random acquisitions.

* Prototypes w (``alphabet``): each character rendered at run time (no image file in the repo) with DejaVu Sans,
  the TrueType font matplotlib ships (``matplotlib.font_manager.findfont("DejaVu Sans")``), by PIL at 8x the
  target size and box-downsampled (anti-aliased grayscale).  **White glyph (1) on a black background (0)**, like
  MNIST, so that the zero padding of the warp below is background.  One font size for all characters (the
  font's line height fills 95% of the image), centred horizontally on the glyph's ink and vertically on the font's
  line box (a common baseline: 'o' stays smaller and lower than 'O').  Label = index in ``ALPHABET``.
* The acquisition model A (``Acquisition``, the paper's "random perspective transformations, contrast and
  brightness changes, noise addition and blurring" of an OCR scan; the supplementary's exact values are not in
  our copy, ours are small documented defaults): per image a rotation, a shift, a perspective warp (one homography
  on ``F.grid_sample``), a Gaussian blur, a contrast / brightness change and additive Gaussian noise, clamped to
  [0, 1].  Pure torch, differentiable in w (A5/P optimises w + dw_D through it), all randomness from a
  ``torch.Generator`` drawn in a fixed order (``draw``), so the same seed gives the same transforms whatever w is.
* Splits: "train" = 40, "test" = 20 acquisitions of each prototype (2,480 / 1,240 images, 28x28 by default as
  the official ``fonts`` setup; ``size`` changes it), seeds 1 and 2
  (``SPLITS``); "prototypes" = the 62 w.  Deterministic.  Normalisation (official ``fonts``: mean 0.5, std 1)
  belongs to the model; the images here are in [0, 1].
"""
from __future__ import annotations

import math
import string
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from harness.core.errors import DataError
from harness.core.registry import DATASETS

from .base import ImageSet

ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase  # 62 classes, label = index
SIZE = 28
SUPERSAMPLE = 8
SPLITS = {"train": (40, 1), "test": (20, 2)}  # split -> (acquisitions per prototype, generator seed)
NOTE = ("62 characters 0-9A-Za-z, DejaVu Sans (matplotlib), 28x28, white on black; train/test = 40/20 random "
        "acquisitions A(w) per character (seeds 1/2)")


def font_path() -> str:
    """The DejaVu Sans .ttf that matplotlib ships (no system font needed)."""
    from matplotlib import font_manager

    return font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans"), fallback_to_default=False)


@lru_cache(maxsize=4)
def _alphabet(size: int) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    big = size * SUPERSAMPLE
    font = ImageFont.truetype(font_path(), 10)
    ascent, descent = font.getmetrics()
    font = ImageFont.truetype(font_path(), max(1, round(0.95 * big * 10 / (ascent + descent))))
    ascent, descent = font.getmetrics()
    out = np.zeros((len(ALPHABET), size, size), np.float32)
    for i, ch in enumerate(ALPHABET):
        img = Image.new("L", (big, big), 0)
        left, _, right, _ = font.getbbox(ch)
        x0 = (big - (right - left)) / 2 - left
        y0 = (big - (ascent + descent)) / 2
        ImageDraw.Draw(img).text((x0, y0), ch, fill=255, font=font)
        out[i] = np.asarray(img.resize((size, size), Image.Resampling.BOX), np.float32) / 255.0
    return out


def alphabet(size: int = SIZE) -> torch.Tensor:
    """The 62 prototypes w, (62, 1, size, size) in [0, 1], in ``ALPHABET`` order."""
    return torch.from_numpy(_alphabet(size).copy())[:, None]


@dataclass(frozen=True)
class Acquisition:
    """x = A(w) (A5 eq. 10): warp (rotation, shift, perspective) -> Gaussian blur -> contrast / brightness ->
    additive noise -> clamp to [0, 1].  Defaults (uniform draws per image unless said):

    * ``rotation``: angle in [-10, 10] degrees; ``shift``: translation in [-2, 2] pixels per axis;
    * ``perspective``: the homography's projective row (p1, p2) in [-0.05, 0.05] each (normalised coordinates
      in [-1, 1], so a corner moves by up to about 10% of the half-width);
    * ``blur``: sigma in [0, 1] pixels (5x5 kernel; sigma -> 0 is the identity);
    * ``contrast`` in [0.8, 1.2] around the level 0.5, ``brightness`` in [-0.1, 0.1];
    * ``noise``: std of the additive Gaussian noise, 0.02.
    """

    rotation: float = 10.0
    shift: float = 2.0
    perspective: float = 0.05
    blur: tuple[float, float] = (0.0, 1.0)
    contrast: tuple[float, float] = (0.8, 1.2)
    brightness: float = 0.1
    noise: float = 0.02

    def draw(self, n: int, size: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """The random parameters of ``n`` acquisitions of ``size`` x ``size`` images, in a fixed order."""
        def u(lo, hi, *shape):
            return lo + (hi - lo) * torch.rand(n, *shape, generator=gen)

        return {"angle": u(-self.rotation, self.rotation) * math.pi / 180, "shift": u(-self.shift, self.shift, 2),
                "persp": u(-self.perspective, self.perspective, 2), "sigma": u(*self.blur),
                "contrast": u(*self.contrast), "brightness": u(-self.brightness, self.brightness),
                "noise": self.noise * torch.randn(n, 1, size, size, generator=gen)}

    def apply(self, w: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """A(w) with the drawn parameters ``p`` (one set per image of w): differentiable in w."""
        n, c, h, wd = w.shape
        p = {k: v.to(w.device, w.dtype) for k, v in p.items()}
        cos, sin = torch.cos(p["angle"]), torch.sin(p["angle"])
        M = torch.zeros(n, 3, 3, dtype=w.dtype, device=w.device)  # output (u, v, 1) -> source, normalised coords
        M[:, 0, 0], M[:, 0, 1], M[:, 1, 0], M[:, 1, 1] = cos, -sin, sin, cos
        M[:, 0, 2], M[:, 1, 2] = 2 * p["shift"][:, 0] / wd, 2 * p["shift"][:, 1] / h
        M[:, 2, :2], M[:, 2, 2] = p["persp"], 1.0
        ys, xs = torch.meshgrid(torch.linspace(-1 + 1 / h, 1 - 1 / h, h, dtype=w.dtype, device=w.device),
                                torch.linspace(-1 + 1 / wd, 1 - 1 / wd, wd, dtype=w.dtype, device=w.device),
                                indexing="ij")
        pts = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(1, -1, 3)  # (1, hw, 3)
        src = pts @ M.transpose(1, 2)
        grid = (src[..., :2] / src[..., 2:]).reshape(n, h, wd, 2)
        x = F.grid_sample(w, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        r = torch.arange(-2, 3, dtype=w.dtype, device=w.device)
        g = torch.exp(-r[None] ** 2 / (2 * p["sigma"].clamp_min(1e-3)[:, None] ** 2))
        g = g / g.sum(1, keepdim=True)
        k = (g[:, :, None] * g[:, None, :]).repeat_interleave(c, 0)[:, None]  # (n c, 1, 5, 5)
        x = F.conv2d(F.pad(x.reshape(1, n * c, h, wd), (2, 2, 2, 2), mode="replicate"), k, groups=n * c)
        x = x.reshape(n, c, h, wd)
        x = (x - 0.5) * p["contrast"][:, None, None, None] + 0.5 + p["brightness"][:, None, None, None]
        return (x + p["noise"]).clamp(0, 1)

    def __call__(self, w: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """One random acquisition of each image of w (draws from ``gen``)."""
        return self.apply(w, self.draw(len(w), w.shape[-1], gen))


def acquisitions(w: torch.Tensor, k: int, seed: int,
                 model: Acquisition = Acquisition()) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` acquisitions of each of the prototypes w (the repeated set ``w.repeat(k)``: image i is of prototype
    i mod len(w)) with ``torch.Generator().manual_seed(seed)``, and their labels.  The same seed gives the same
    transforms for any w (A5/P's test set: A(w + dw_D) with the test split's draws)."""
    gen = torch.Generator().manual_seed(seed)
    ww = w.repeat(k, 1, 1, 1)
    return model(ww, gen), torch.arange(len(w)).repeat(k)


@DATASETS.register("fonts", "62 characters 0-9A-Za-z (DejaVu Sans, 28x28) under random acquisitions (A5 Table 9)")
def fonts(split: str = "test", data_dir: str | None = None, download: bool = False, size: int = SIZE) -> ImageSet:
    """``size``: the image side (28 by default; the shift of A is in pixels whatever the size)."""
    w = alphabet(size)
    if split == "prototypes":
        x, y = w, torch.arange(len(w))
    elif split in SPLITS:
        k, seed = SPLITS[split]
        with torch.no_grad():
            x, y = acquisitions(w, k, seed)
    else:
        raise DataError(f"fonts: split must be 'train', 'test' or 'prototypes', got {split!r}")
    note = NOTE if size == SIZE else NOTE.replace(f"{SIZE}x{SIZE}", f"{size}x{size}")
    return ImageSet(x, y, tuple(ALPHABET), "fonts", default_eps={"linf": 0.1, "l2": 0.5}, note=note)
