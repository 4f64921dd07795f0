"""Any torchattacks or Foolbox attack, by name: ``ta.<Class>`` (e.g. ta.PGD, ta.CW) and ``fb.<Class>`` (fb.LinfPGD).

A few common names are registered up front (so ``harness list attacks`` shows them with their parameters);
every other class of either library resolves on first use through ``ATTACKS.resolvers``.  The parameters
of a ``ta.``/``fb.`` entry are the library class's own constructor parameters with the library's own
defaults (e.g. torchattacks' PGD: 10 steps of 2/255), settable with ``--set ta.PGD.steps=20``, plus
``norm``/``eps`` (the harness budget, passed as the library's eps), ``targeted``/``target`` and ``project``.

- torchattacks: ``cls(model, eps=eps, **params)``; ``norm`` goes to classes that take one ('Linf'/'L2'),
  ``n_classes`` is read from the model, and a ``seed`` parameter (APGD, FAB, Square, AutoAttack) that is
  not set is drawn from torch's global generator, which the engine seeds per cell (as are the
  library's own random starts).  Both libraries run on the model's device (that of its first parameter or
  buffer; the input's when it has none) and the images come back on the input's.
- Foolbox: ``attack(fb.PyTorchModel(model, bounds=(0, 1), device=x.device), x, y, epsilons=[eps])``, and
  the clipped images are returned: for minimization attacks (CW, DeepFool, Boundary, ...) Foolbox projects
  the found perturbation onto the eps-ball.  Attacks that take a distance get the budget's norm.
  A few Foolbox attacks draw from numpy's generator: for the call it is seeded from torch's generator
  (peeked without advancing it, so Foolbox's torch draws are those of a direct call) and then restored.
- ``project`` (default on): images a torchattacks attack returns outside B_eps(x) (minimization attacks
  such as CW or DeepFool have no budget) are projected onto it, as Foolbox does; with ``project=false``
  they are returned as they are and the engine counts them invalid (defended).

Our models take [0, 1] images and normalise inside, so no library-side normalisation is set.

Layout: ``library`` (the shared part: finding the library class, its parameters, the budget and the final
projection), ``torchattacks_adapter`` and ``foolbox_adapter`` (the two adapters), ``factory`` (the registry
factories of ``ta.<Class>`` / ``fb.<Class>``; importing it installs the resolvers and the lister).
"""
from __future__ import annotations

from .factory import COMMON, make_factory, register_common
from .foolbox_adapter import FoolboxAttack
from .library import OWN, PREFIXES, TA_EPS_NAMES, TA_L2, TA_LINF, LibraryAttack, Value, parse_value
from .torchattacks_adapter import TorchattacksAttack

__all__ = ["COMMON", "OWN", "PREFIXES", "TA_EPS_NAMES", "TA_L2", "TA_LINF", "FoolboxAttack", "LibraryAttack",
           "TorchattacksAttack", "Value", "make_factory", "parse_value", "register_common"]
