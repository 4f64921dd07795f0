"""Where third-party defenses imported the four kinds from before they moved to the floor: the same objects,
re-exported.  New code imports ``harness.core.defense``."""
from harness.core.defense import ABSTAIN, Defense, Detector, Preemptive, Preprocessor, Wrapper

__all__ = ["ABSTAIN", "Defense", "Detector", "Preemptive", "Preprocessor", "Wrapper"]
