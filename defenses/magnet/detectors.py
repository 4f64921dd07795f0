"""MagNet's detectors (``defenses.magnet``): the reconstruction error ||x - ae(x)||_p, the Jensen-Shannon
divergence of the classifier's softened outputs on x and ae(x), and the ``detectors`` list."""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F

from harness.core.errors import UsageError


def reconstruction_error(x: torch.Tensor, recon: torch.Tensor, p: int) -> torch.Tensor:
    """D(x) = ||x - ae(x)||_p per image (slide "MagNet: detector"; p = 1 or 2)."""
    return torch.linalg.vector_norm((x - recon).flatten(1), ord=p, dim=1)


def jsd(z_p: torch.Tensor, z_q: torch.Tensor, T: float) -> torch.Tensor:
    """JSD(p || q) per row, p = softmax(z_p / T), q = softmax(z_q / T), natural log (slide "MagNet: detector").

    Computed in float64: at T = 40 the divergence of a clean image is about 1e-5, a difference of logarithms of
    order 1 that float32 would resolve to a few percent only."""
    lp, lq = F.log_softmax(z_p.double() / T, 1), F.log_softmax(z_q.double() / T, 1)
    lm = torch.logsumexp(torch.stack([lp, lq]), 0) - math.log(2.0)
    return (0.5 * ((lp.exp() * (lp - lm)).sum(1) + (lq.exp() * (lq - lm)).sum(1))).to(z_p.dtype)


def parse_detectors(text: str) -> list[tuple[str, str, float]]:
    """``"l1,jsd10"`` -> [("l1", "recon", 1), ("jsd10", "jsd", 10.0)]; ``"none"`` or "" -> []."""
    out = []
    for tok in str(text).replace(" ", "").lower().split(","):
        if tok in ("", "none"):
            continue
        m = re.fullmatch(r"jsd(\d+(?:\.\d+)?)", tok)
        if tok in ("l1", "l2"):
            out.append((tok, "recon", int(tok[1])))
        elif m and float(m.group(1)) > 0:
            out.append((tok, "jsd", float(m.group(1))))
        else:
            raise UsageError(f"magnet: detectors are l1, l2, jsd<T> (e.g. jsd10) or none, got {tok!r}")
        if [d[0] for d in out].count(out[-1][0]) > 1:
            raise UsageError(f"magnet: detector {tok!r} is listed twice")
    return out
