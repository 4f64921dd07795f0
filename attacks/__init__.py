"""Attacks.  Each module registers its attacks in ``harness.core.registry.ATTACKS`` on import; the contract they
implement is ``harness.core.attack.Attack``.  The package imports none of them: each attack is declared by name in
``pyproject.toml`` (entry points ``harness.attacks``), and the registry imports its module the first time the attack
is asked for."""
