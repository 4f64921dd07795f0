"""Plugin registries: a decorator registers, ``create(name, **kw)`` builds, ``list(pattern)`` lists.

Modelled on timm's registry.  Each entry is a factory (a class or a function) with a one-line description;
its typed keyword parameters are read from the signature, so ``harness list`` can show them and
``--set key=value`` can convert strings to the right type.  Every plugin, the built-ins included, is declared by
name in an entry point of the group ``harness.<kind>`` (``harness.datasets``, ``harness.models``, ``harness.zoo``,
``harness.attacks``, ``harness.defenses``, ``harness.recipes``, ``harness.purifiers``; ``harness.core.entry_points``): a registry
imports a plugin's module the first time the plugin is asked for, and ``list`` imports them all.

Composition: a parameter whose default is a ``Part`` holds another plugin (preempt_smooth holds a ``smoothing``).
``create`` builds the part from the keys under its name (``smoothing.sigma=0.25``, any depth) and hands the
factory the built object, or, where the parameter is annotated ``Part``, the resolved part (its registered name and
keywords: ``Part.build(**changes)`` builds it, and variants of it, as the factory needs: BPDA's inner attack
without early stop); on the command line the path starts with the plugin's name
(``--set preempt_smooth.smoothing.sigma=0.25``).  ``Entry.tree()`` lists every parameter path of a plugin.
"""
from __future__ import annotations

import fnmatch
import inspect
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

from .capabilities import declares
from .entry_points import EntryPoints
from .errors import UsageError
# parse_number is imported from here by plugins: re-exported
from .values import SequenceError, describe, is_sequence_type, parse_as, parse_number, parse_sequence_as  # noqa: F401


class Part:
    """The default of a parameter that holds a plugin of registry ``kind``: the one registered as ``name``, with
    ``defaults`` for those of its parameters that it takes (BPDA's inner PGD: 40 steps, where PGD's own are 20)."""

    def __init__(self, kind: str, name: str, **defaults):
        self.kind, self.name, self.defaults = kind, name, defaults

    def __repr__(self) -> str:
        return f"Part({self.kind!r}, {self.name!r}{''.join(f', {k}={v!r}' for k, v in self.defaults.items())})"

    def takes(self, param: str) -> bool:
        """Whether the plugin this part names takes ``param`` (BPDA: whether its inner attack has ``early_stop``)."""
        return param in REGISTRIES[self.kind].get(self.name).params

    def build(self, name: str | None = None, **kwargs) -> Any:
        """The part ``name`` (default: this one's) with ``kwargs`` over the defaults that it takes."""
        registry = REGISTRIES[self.kind]
        entry = registry.get(name or self.name)
        defaults = {k: v for k, v in self.defaults.items() if k.partition(".")[0] in entry.params}
        return registry.create(entry.name, **{**defaults, **kwargs})


@dataclass(frozen=True)
class Param:
    name: str
    type: Any
    default: Any

    @property
    def part(self) -> Part | None:
        return self.default if isinstance(self.default, Part) else None

    def parse(self, text: str) -> Any:
        """Convert a ``--set`` string to this parameter's type; a clear UsageError otherwise."""
        if self.part:  # a part named by its registered name
            return text
        kind = self.type
        if kind is inspect.Parameter.empty or kind is Any:
            kind = type(self.default) if self.default is not None else str
        origin = typing.get_origin(kind)
        if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
            args = [a for a in typing.get_args(kind) if a is not type(None)]
            if text.lower() in ("none", "null") and len(args) < len(typing.get_args(kind)):
                return None
            kind = args[0]
            origin = typing.get_origin(kind)
        if origin is typing.Literal:
            if text not in typing.get_args(kind):
                raise UsageError(f"{self.name} must be one of {', '.join(map(str, typing.get_args(kind)))}, got {text!r}")
            return text
        try:
            if is_sequence_type(kind):
                return parse_sequence_as(kind, text, self.default)
            return parse_as(kind, text)
        except SequenceError as e:
            raise UsageError(f"{self.name} expects {e}") from None
        except (TypeError, ValueError, ZeroDivisionError):
            raise UsageError(f"{self.name} expects {describe(kind)}, got {text!r}") from None


@dataclass
class Entry:
    name: str
    factory: Callable[..., Any]
    description: str
    params: dict[str, Param] = field(default_factory=dict)
    paper: dict[str, str] = field(default_factory=dict)  # parameter -> the paper's value, where a default differs or is tuned

    @property
    def builds(self) -> type | None:
        """What the factory builds: the class itself, or a function's return annotation (None if it has none); the
        built type's declared capabilities (``declares``) are then known without building one."""
        if inspect.isclass(self.factory):
            return self.factory
        try:
            kind = typing.get_type_hints(self.factory).get("return")
        except Exception:
            return None
        return kind if inspect.isclass(kind) else None

    def declared(self, setting: str, default: Any = None) -> Any:
        """What the built type declares as ``setting`` (a class attribute such as ``Defense.certifier`` or
        ``Defense.receives``); ``default`` when the entry builds no known type or declares nothing."""
        return getattr(self.builds, setting, default)

    def declares(self, capability: type) -> bool:
        """Whether the built type names ``capability`` (``harness.core.capabilities``) among its bases."""
        return self.builds is not None and declares(self.builds, capability)

    def param(self, path: str, parts: dict[str, str] | None = None) -> Param | None:
        """The parameter at a dotted ``path`` (``smoothing.sigma``: a part's parameter), None if there is none.
        ``parts``: part path -> the registered name chosen for it (``{"inner": "ta.CW"}``), else its default."""
        head, _, rest = path.partition(".")
        p = self.params.get(head)
        if not rest or p is None:
            return p
        if not p.part:
            return None
        parts = parts or {}
        name = parts.get(head, p.part.name)
        inner = REGISTRIES[p.part.kind].get(name).param(
            rest, {k[len(head) + 1:]: v for k, v in parts.items() if k.startswith(head + ".")})
        if inner is not None and "." not in rest and rest in p.part.defaults:
            inner = Param(inner.name, inner.type, p.part.defaults[rest])
        return inner

    def tree(self, prefix: str = "") -> list[tuple[str, Param]]:
        """Every parameter path with its Param, a part's parameters under its name (``harness list`` shows them)."""
        out = []
        for p in self.params.values():
            out.append((prefix + p.name, p))
            if p.part:
                out += [(path, self.param(path[len(prefix):]) or q)
                        for path, q in REGISTRIES[p.part.kind].get(p.part.name).tree(f"{prefix}{p.name}.")]
        return out


class Registry:
    """A named collection of factories of one kind (datasets, models, attacks, defenses, recipes)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self.entry_points = EntryPoints(f"harness.{kind}")
        # Name prefix -> resolver(name) -> factory, for families too large to register one by one (the
        # "ta." torchattacks and "fb." Foolbox adapters): ``get`` registers a resolved name on first use.
        # A resolver raises UsageError for a name it does not know.
        self.resolvers: dict[str, Callable[[str], Any]] = {}
        # Called by ``list`` before it lists: they register the names of such a family worth showing (their
        # introspection would slow every start if it ran on import).
        self.listers: list[Callable[[], None]] = []

    def register(self, name: str, description: str | None = None, paper: dict[str, str] | None = None):
        """Decorator: register ``factory`` under ``name``; the description defaults to its docstring's first line.
        ``paper``: the paper's setting of parameters (``harness list`` shows them beside the defaults)."""

        def deco(factory):
            if name in self._entries and self._entries[name].factory is not factory:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            doc = description or (inspect.getdoc(factory) or "").split("\n")[0]
            self._entries[name] = Entry(name, factory, doc, _signature_params(factory), dict(paper or {}))
            return factory

        return deco

    def check(self, name: str) -> None:
        """A UsageError with the closest names unless ``name`` is registered or declared by an entry point (its own
        or its family's): nothing is imported but the modules of module entry points, which may register any name,
        so the command line refuses a misspelt name at once."""
        if name in self._entries or self.entry_points.find(name) is not None or self._resolver(name) is not None:
            return
        for ep in self.entry_points.modules():
            self._load(ep)
        if name not in self._entries:
            raise self.entry_points.unknown(self.kind.removesuffix("s"), name, list(self._entries))

    def get(self, name: str) -> Entry:
        if name not in self._entries:
            self.check(name)
        if name not in self._entries:
            ep = self.entry_points.find(name)
            if ep is not None:
                self._load(ep)
            if name not in self._entries and self._resolver(name):  # a family's name: its module added the resolver
                self.register(name)(self._resolver(name)(name))
            if name not in self._entries:
                raise UsageError(f"the entry point {ep.name} = {ep.value} ({self.entry_points.group}) registered no "
                                 f"{self.kind.removesuffix('s')} {name!r}: stale metadata? reinstall its package")
        return self._entries[name]

    def _resolver(self, name: str) -> Callable[[str], Any] | None:
        return next((r for prefix, r in self.resolvers.items() if name.startswith(prefix)), None)

    def _load(self, ep) -> None:
        """Import what an entry point names: a module registers on import; a class or function is registered under
        the entry point's name."""
        loaded = self.entry_points.load(ep)
        if callable(loaded) and not ep.name.endswith("*") and ep.name not in self._entries:
            self.register(ep.name)(loaded)

    def load_all(self) -> None:
        """Import every declared plugin of this kind (``list`` does; cheap after the first call)."""
        for ep in self.entry_points.declared.values():
            self._load(ep)

    def create(self, name: str, **kwargs) -> Any:
        """Build the plugin ``name``; keyword arguments override its defaults."""
        entry = self.get(name)
        kwargs = _build_parts(entry, kwargs)
        unknown = [k for k in kwargs if k not in entry.params and not _accepts_var_kw(entry.factory)]
        if unknown:
            raise UsageError(f"{name} has no parameter {unknown[0]!r}; it takes: {', '.join(entry.params) or 'none'}")
        return entry.factory(**kwargs)

    def name_of(self, obj: Any) -> str | None:
        """The name the class of ``obj`` is registered under (None: not registered here, or under several names).
        A run keeps the (label, name, keyword arguments) of what it builds itself; this is for describing parts."""
        names = [n for n, e in self._entries.items() if e.factory is type(obj)]
        return names[0] if len(names) == 1 else None

    def list(self, pattern: str = "*") -> list[str]:
        self.load_all()
        listers, self.listers = self.listers, []
        for register_family in listers:
            register_family()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: str) -> bool:
        """Whether ``name`` is registered: its own entry point's module, else the module entry points' modules are
        imported first; a name of a family (``ta.PGD``) counts once it was resolved."""
        for ep in [self.entry_points.declared[name]] if name in self.entry_points.declared else \
                self.entry_points.modules():
            if name not in self._entries:
                self._load(ep)
        return name in self._entries


def _build_parts(entry: Entry, kwargs: dict) -> dict:
    """Build each part of ``entry`` from the keys under its name; a part given as an object is kept as it is.
    A part may also be given as another registered name of its kind (``smoothing="smoothing"``)."""
    for key in kwargs:
        head = key.partition(".")[0]
        if "." in key and not (head in entry.params and entry.params[head].part):
            raise UsageError(f"{entry.name} has no part {head!r}; its parameters: "
                             f"{', '.join(path for path, _ in entry.tree())}")
    out = {k: v for k, v in kwargs.items() if "." not in k}
    for p in entry.params.values():
        if not p.part:
            continue
        sub = {k[len(p.name) + 1:]: v for k, v in kwargs.items() if k.startswith(p.name + ".")}
        given = out.get(p.name)
        if given is not None and not isinstance(given, (str, Part)):
            if sub:
                raise UsageError(f"{entry.name}.{p.name} is given built; it takes no {next(iter(sub))!r}")
            continue
        name = given.name if isinstance(given, Part) else given
        if p.type is Part:  # the factory asks for the resolved part (a name and its keywords) and builds it itself
            entry_kind = REGISTRIES[p.part.kind].get(name or p.part.name)
            defaults = {k: v for k, v in p.part.defaults.items() if k.partition(".")[0] in entry_kind.params}
            out[p.name] = Part(p.part.kind, entry_kind.name, **{**defaults, **sub})
        else:
            out[p.name] = p.part.build(name, **sub)
    return out


def _signature_params(factory) -> dict[str, Param]:
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        hints = typing.get_type_hints(target)
    except Exception:
        hints = {}
    params = {}
    for p in inspect.signature(target).parameters.values():
        if p.name == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        default = None if p.default is inspect.Parameter.empty else p.default
        params[p.name] = Param(p.name, hints.get(p.name, p.annotation), default)
    return params


def _accepts_var_kw(factory) -> bool:
    target = factory.__init__ if inspect.isclass(factory) else factory
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(target).parameters.values())


DATASETS = Registry("datasets")
MODELS = Registry("models")
ATTACKS = Registry("attacks")
DEFENSES = Registry("defenses")
RECIPES = Registry("recipes")
PURIFIERS = Registry("purifiers")  # the training methods of the purifier defenses (defenses.purifiers.methods)
ZOO = Registry("zoo")
REGISTRIES = {"datasets": DATASETS, "models": MODELS, "zoo": ZOO, "attacks": ATTACKS, "defenses": DEFENSES,
              "recipes": RECIPES, "purifiers": PURIFIERS}
