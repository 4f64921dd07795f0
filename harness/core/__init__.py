"""The floor: contracts and mechanisms that every other layer builds on, importing nothing else of the project.

- ``errors``: the exceptions behind the exit codes; ``registry``: plugin registries (register, create, list).
- ``attack``, ``defense``: the contracts (``Attack``; the four defense kinds and ``ABSTAIN``).
- ``geometry``: balls, projections, steepest-ascent steps, uniform samples of a ball.
- ``artifacts``: cache folder, keys, atomic save, safe load, shipped weights, ``load_or_train``.
- ``training``: the one training loop ``fit`` and the budget warm-up ``eps_ramp``.
- ``resume``: per-epoch checkpoints of a training and its resumption (``Epochs``, ``session``, ``Stateful``).
- ``progress``: the one output switch (``--quiet``, ``quiet=``) and the tqdm bars that obey it.
"""
