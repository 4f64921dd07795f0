"""The OOD scores, higher = in-distribution (``defenses.ood``): MSP (Hendrycks & Gimpel 2017) and the safe-spot
score D(x_o) = mu * max_y C(x_o)_y + (1 - mu) * max_y C(x_a*)_y (safe-spot paper, section 3.6)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from attacks.pgd import PGD
from harness.core.budget import Budget

from ..safe_spot import SafeSpot

BATCH = 500


def _chunks(x: torch.Tensor, batch: int):
    for i in range(0, len(x), batch):
        yield x[i:i + batch]


@torch.no_grad()
def msp(model, x: torch.Tensor, batch: int = BATCH) -> torch.Tensor:
    """Maximum softmax probability max_y C(x)_y (Hendrycks & Gimpel 2017)."""
    return torch.cat([F.softmax(model(xb), 1).amax(1) for xb in _chunks(x, batch)]) if len(x) else x.new_zeros(0)


def safe_spot_parts(model, x: torch.Tensor, spot: SafeSpot, adv: PGD) -> dict:
    """For a batch: c(x_o), C(x_o), the safe spot x_s* (``spot``, towards c(x_o)), the adversarial example x_a* of
    x_s* (``adv`` UP CE(., c(x_o)) within B_eps(x_s*), the spot's norm and eps) and C(x_a*)."""
    x = x.detach()
    with torch.no_grad():
        p0 = F.softmax(model(x), 1)
    c = p0.argmax(1)
    with torch.enable_grad():  # the searches differentiate even when called under no_grad (classify)
        x_s = spot.robustify(model, x, c)
        x_a = adv.iterate(model, x_s, c, Budget(spot.norm, spot.eps), None)
    with torch.no_grad():
        pa = F.softmax(model(x_a), 1)
    return {"c": c, "p0": p0, "x_s": x_s, "x_a": x_a, "pa": pa}


def combine(p0: torch.Tensor, pa: torch.Tensor, c: torch.Tensor, mu: float, adv_term: str = "msp") -> torch.Tensor:
    """D = mu * max_y C(x_o)_y + (1 - mu) * max_y C(x_a*)_y (section 3.6); ``adv_term="pred"``: C(x_a*)_{c(x_o)}."""
    term = pa.amax(1) if adv_term == "msp" else pa.gather(1, c[:, None])[:, 0]
    return mu * p0.amax(1) + (1 - mu) * term


def safe_spot_score(model, x: torch.Tensor, spot: SafeSpot, adv: PGD, mu: float = 0.5, adv_term: str = "msp",
                    batch: int = BATCH, parts: bool = False):
    """D(x) of section 3.6 for every image of ``x`` (in chunks of ``batch``).  ``parts=True`` also returns the
    per-image MSP(x) and MSP(x_a*) (so several mu can be evaluated from one search)."""
    p0s, pas, cs = [], [], []
    for xb in _chunks(x, batch):
        r = safe_spot_parts(model, xb, spot, adv)
        p0s.append(r["p0"])
        pas.append(r["pa"])
        cs.append(r["c"])
    p0, pa, c = torch.cat(p0s), torch.cat(pas), torch.cat(cs)
    score = combine(p0, pa, c, mu, adv_term)
    if parts:
        return score, {"msp": p0.amax(1), "msp_adv": pa.amax(1), "pred_adv": pa.gather(1, c[:, None])[:, 0]}
    return score
