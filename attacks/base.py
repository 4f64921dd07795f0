"""Where third-party attacks imported the contract from before it moved to the floor: the same objects, re-exported.
New code imports ``harness.core.attack`` and ``harness.core.geometry``."""
from harness.core.attack import Attack
from harness.core.geometry import NORMS, ascent_direction, flat_norm, project, random_in_ball

__all__ = ["NORMS", "Attack", "ascent_direction", "flat_norm", "project", "random_in_ball"]
