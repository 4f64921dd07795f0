"""A5: Adversarial Augmentation Against Adversarial Attacks (Frosio & Kautz, CVPR 2023, "The Best
Defense is a Good Offense: Adversarial Augmentation Against Adversarial Attacks"; official code NVlabs/A5 ``a5.py``), on the in-house bounds (``harness.bounds``).

Modules:

* ``objective``: margin lower bounds (IBP / CROWN-IBP / CROWN), the worst-case CE (eqs. 2-3), the defensive
  perturbation (eq. 5), the official loss ``f CE + (1 - f) E`` and eps schedule, certification.
* ``models``: the A5 classifier (``a5_cnn``, ``a5_cnn_small`` in MODELS) and the robustifier R.
* ``training``: CROWN-IBP training (``train_crown_ibp``, recipe ``crown-ibp``), A5/R (``train_robustifier``),
  A5/RC (``co_train``), one loop (``train_a5``).
* ``preemptive``: the defenses ``a5_offline`` (A5/O), ``a5_robustifier`` (A5/R), ``a5_co`` (A5/RC).

Importing this package registers all of them.
"""
from __future__ import annotations

from . import physical  # noqa: F401 - A5/P, A5/PC (eqs. 10-11, Table 9)
from .models import A5CNN, Robustifier, a5_cnn, a5_cnn_small
from .objective import BOUNDS, a5_loss, certify, margin_lower, mix_factor, perturb, smoothed_eps, worst_case_ce
from .preemptive import A5CoTrained, A5Offline, A5Robustifier
from .training import CrownIBPTrainer, co_train, crown_ibp, train_a5, train_crown_ibp, train_robustifier

__all__ = ["A5CNN", "BOUNDS", "A5CoTrained", "A5Offline", "A5Robustifier", "CrownIBPTrainer", "Robustifier",
           "a5_cnn", "a5_cnn_small", "a5_loss", "certify", "co_train", "crown_ibp", "margin_lower", "mix_factor",
           "perturb", "smoothed_eps", "train_a5", "train_crown_ibp", "train_robustifier", "worst_case_ce"]
