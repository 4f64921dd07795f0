"""The resolved run configuration (run.json's ``config``), ``--set`` overrides, labels and budgets; the config hash
is ``harness.build.config_hash`` (over the run spec and the content it names)."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from harness.core.errors import UsageError
from harness.core.registry import REGISTRIES, Registry, parse_number


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
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def parse_sets(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UsageError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_-]*\Z")


def split_label(text: str) -> tuple[str, str]:
    """``NAME`` or ``LABEL=NAME`` -> (label, name); the label is the name when none is given."""
    label, sep, name = str(text).partition("=")
    return (label.strip(), name.strip()) if sep else (label.strip(), label.strip())


def parse_instances(registry: Registry, texts: list[str], flag: str) -> list[tuple[str, str]]:
    """``--attack pgd --attack dlr=pgd``: each plugin of a run as (label, registered name).

    A label names one instance of a plugin: it is the plugin's name in results.csv, in its seed and in the config,
    and ``--set LABEL.param=value`` reaches that instance only (so one run holds one plugin with two parameter
    sets: ``--attack pgd --attack dlr=pgd --set dlr.loss=dlr``).  A label is a word (letters, digits, ``_``,
    ``-``), not the name of another plugin of the same kind, and each label is used once per run.
    """
    out = []
    for text in texts:
        label, name = split_label(text)
        registry.get(name)  # an unknown name fails with the closest names
        if label != name and (not LABEL.match(label) or label in registry):
            why = "is another plugin's name" if label in registry else "must be a word (letters, digits, _ or -)"
            raise UsageError(f"{flag} {text}: the label {label!r} {why}")
        if label in [lab for lab, _ in out]:
            raise UsageError(f"{flag} {label} is given twice; give the second a label of its own ({flag} LABEL={name})")
        out.append((label, name))
    return out


class Overrides:
    """``--set key=value`` (every plugin of the run with that parameter) or ``--set name.key=value`` (one); the
    parameter of a part is reached by its path, ``--set preempt_smooth.smoothing.sigma=0.25``."""

    def __init__(self, pairs: list[str]):
        self.raw = parse_sets(pairs)
        self.used: set[str] = set()
        self._kinds: dict[str, str] = {}  # unscoped key -> the plugin kind it was applied to

    def for_plugin(self, registry: Registry, name: str, label: str | None = None) -> dict:
        """The overrides for one plugin (an instance ``label`` of it: keys scoped to the label reach it, keys scoped
        to the plugin's name reach only its unlabelled instances).  An unscoped key that reaches plugins of two
        kinds (say a defense's ``alpha`` and an attack's ``alpha``) is ambiguous, since the same name means
        different things there."""
        entry = registry.get(name)
        scope = label or name
        chosen, parts = {}, {}
        # Two passes: a part named on the command line (--set bpda.inner=ta.CW) decides where the paths under it go.
        for pass_parts in (True, False):
            for key, text in self.raw.items():
                scoped = key.startswith(scope + ".")
                path = key[len(scope) + 1:] if scoped else key if "." not in key else None
                param = entry.param(path, parts) if path else None
                if param is None or bool(param.part) != pass_parts:
                    continue
                if not scoped and self._kinds.setdefault(key, registry.kind) != registry.kind:
                    raise UsageError(f"--set {key} applies to {self._kinds[key]} and {registry.kind} alike; "
                                     f"scope it, e.g. --set {scope}.{path}={text}")
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
    items = str(text).split(",")
    if not text or any(not t.strip() for t in items):
        raise UsageError(f"--eps expects one or more numbers separated by commas (0.05,0.1 or 8/255), got {text!r}")
    values = [parse_eps(t) for t in items]
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
