"""The resolved run configuration: ``--set`` overrides, budgets, and the config hash."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from harness.core.errors import UsageError
from harness.core.registry import REGISTRIES, Registry, parse_number

# Keys of the config that do not change the numbers and so stay out of the hash.
UNHASHED = ("out", "quiet", "debug", "device", "data_dir")


@dataclass
class RunConfig:
    dataset: str
    model: str
    arch: str | None
    defenses: list[dict]
    attacks: list[dict]
    norm: str
    eps: float
    n: int | None
    batch_size: int
    seed: int
    passes: int
    split: str = "test"
    data_dir: str | None = None
    device: str = "auto"
    out: str | None = None
    quiet: bool = False
    debug: bool = False
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def hash(self) -> str:
        """First 12 hex digits of SHA-256 over the canonical JSON of every setting that can change a number."""
        d = {k: v for k, v in self.as_dict().items() if k not in UNHASHED}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def parse_sets(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UsageError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


class Overrides:
    """``--set key=value`` (every plugin of the run with that parameter) or ``--set name.key=value`` (one); the
    parameter of a part is reached by its path, ``--set preempt_smooth.smoothing.sigma=0.25``."""

    def __init__(self, pairs: list[str]):
        self.raw = parse_sets(pairs)
        self.used: set[str] = set()
        self._kinds: dict[str, str] = {}  # unscoped key -> the plugin kind it was applied to

    def for_plugin(self, registry: Registry, name: str) -> dict:
        """The overrides for one plugin.  An unscoped key that reaches plugins of two kinds (say a defense's
        ``alpha`` and an attack's ``alpha``) is ambiguous, since the same name means different things there."""
        entry = registry.get(name)
        chosen, parts = {}, {}
        # Two passes: a part named on the command line (--set bpda.inner=ta.CW) decides where the paths under it go.
        for pass_parts in (True, False):
            for key, text in self.raw.items():
                scoped = key.startswith(name + ".")
                path = key[len(name) + 1:] if scoped else key if "." not in key else None
                param = entry.param(path, parts) if path else None
                if param is None or bool(param.part) != pass_parts:
                    continue
                if not scoped and self._kinds.setdefault(key, registry.kind) != registry.kind:
                    raise UsageError(f"--set {key} applies to {self._kinds[key]} and {registry.kind} alike; "
                                     f"scope it, e.g. --set {name}.{path}={text}")
                chosen[path] = param.parse(text)
                if param.part:
                    REGISTRIES[param.part.kind].get(chosen[path])  # an unknown name fails with the closest names
                    parts[path] = chosen[path]
                self.used.add(key)
        return chosen

    def check_all_used(self) -> None:
        unused = [k for k in self.raw if k not in self.used]
        if unused:
            raise UsageError(f"--set {unused[0]}: no plugin of this run has that parameter")


def parse_eps_list(text: str) -> list[float]:
    """``--eps 0.05,0.1,8/255``: the budgets of one run, in the order given, each once."""
    values = [parse_eps(t) for t in str(text).split(",") if t.strip()]
    if not values:
        raise UsageError(f"--eps expects one or more numbers separated by commas, got {text!r}")
    if len(set(values)) < len(values):
        raise UsageError(f"--eps {text}: a budget is given twice")
    return values


def parse_eps(text: str) -> float:
    try:
        eps = parse_number(text)
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"--eps expects a number such as 0.1 or 8/255, got {text!r}") from None
    if not eps >= 0 or eps == float("inf"):
        raise UsageError(f"--eps must be a finite number >= 0, got {text}")
    return eps
