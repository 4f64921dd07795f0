"""Display names for tables and figures: plugin id -> the name a paper uses, and numbers rounded to their interval.

``NAMES`` is the default label map (defenses, attacks, datasets, norms, the grid's axes); a grid file's
``[labels]`` table overrides or extends it (``quantize = "Bit depth (3 bits)"``).  An id the map does not hold is
shown as it is.  ``decimals`` gives the precision a number deserves: one digit beyond the first significant digit
of its 95% interval's half-width, at most two (n = 50, +-14 points: no decimals; n = 1,000, +-3: one).
"""
from __future__ import annotations

import math

NAMES = {
    # defenses
    "none": "No defense", "quantize": "Bit-depth reduction", "smoothing": "Randomized smoothing",
    "preempt": "Preemptive robustification", "preempt_smooth": "Preemptive + smoothing", "defense_gan": "Defense-GAN",
    "magnet": "MagNet", "hgd": "HGD", "nrp": "NRP", "jatp": "JATP", "safe_spot": "Safe spot",
    "safe_spot_ood": "Safe spot (OOD)", "msp_detector": "MSP detector", "a5_co": "A5 (co-training)",
    "a5_offline": "A5 (offline)", "a5_robustifier": "A5 (robustifier)",
    # attacks
    "fgsm": "FGSM", "pgd": "PGD", "pgd_linf": "PGD-Linf", "pgd_l2": "PGD-L2", "square": "Square",
    "autoattack": "AutoAttack", "apgd-ce": "APGD-CE", "apgd-dlr": "APGD-DLR", "apgd-t": "APGD-T", "fab-t": "FAB-T",
    "bpda": "BPDA", "eot": "EOT", "adaptive_linf": "Adaptive-Linf", "adaptive_l2": "Adaptive-L2",
    "magnet_cw": "C&W (MagNet)", "pgd_smooth": "PGD (smoothed)", "pgd_detector": "PGD (detector)",
    "certify_ibp": "IBP", "certify_crown": "CROWN", "certify_crown_ibp": "CROWN-IBP", "worst-case": "Worst case",
    # datasets, norms, axes
    "digits": "Digits", "mnist": "MNIST", "cifar10": "CIFAR-10", "svhn": "SVHN", "linf": "Linf", "l2": "L2",
    "dataset": "Dataset", "model": "Model", "defense": "Defense", "norm": "Norm", "seed": "Seed",
}


def display(text: str, names: dict | None = None) -> str:
    """The display name of ``text``: the grid's ``names`` first, then ``NAMES``, else ``text`` itself."""
    text = str(text)
    if names and text in names:
        return names[text]
    return NAMES.get(text, text)


def decimals(half_width: float, most: int = 2) -> int:
    """Decimals of a percentage whose 95% interval has ``half_width`` points: one digit beyond the half-width's
    first significant digit, between 0 and ``most``; ``most`` when the width is unknown or zero."""
    if not (isinstance(half_width, (int, float)) and math.isfinite(half_width)) or half_width <= 0:
        return most
    return max(0, min(most, 1 - math.floor(math.log10(half_width))))
