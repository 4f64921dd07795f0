"""The entry points of one registry's group (``harness.attacks``, ...): the names of the plugins installed, read from
the packages' metadata without importing any plugin, and the import that registers each.

Every plugin, built-in or third-party, is declared the same way (the built-ins in this project's ``pyproject.toml``)::

    [project.entry-points."harness.attacks"]
    pgd_linf = "attacks.pgd:PGDLinf"          # by name: the class or function (registered as pgd_linf unless
                                              # importing its module registered it already)
    "ta.*" = "attacks.adapters.factory"       # a family: every name that starts with "ta." (importing the module
                                              # installs the registry's resolver for the prefix)
    my_attacks = "my_package.attacks"         # a module that registers on import, under any names

A name declared by name or by family is checked without importing anything, so a misspelt name is refused with the
closest names before any plugin (or torch) is imported; only when a module entry point is not imported yet is it
imported first (it may register the name).
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable
from importlib import metadata
from typing import Any

from .errors import UsageError


class EntryPoints:
    """The declared plugins of ``group``; the metadata is read on first use, and each entry point loaded once."""

    def __init__(self, group: str):
        self.group = group
        self._declared: dict[str, metadata.EntryPoint] | None = None
        self._loaded: dict[str, Any] = {}

    @property
    def declared(self) -> dict[str, metadata.EntryPoint]:
        """Entry point name -> entry point (families end in ``*``)."""
        if self._declared is None:
            self._declared = {ep.name: ep for ep in metadata.entry_points(group=self.group)}
        return self._declared

    def names(self) -> list[str]:
        """The plugin names declared one by one (not the families)."""
        return sorted(n for n in self.declared if not n.endswith("*"))

    def prefixes(self) -> list[str]:
        """The name prefixes of the declared families (``ta.``)."""
        return sorted(n[:-1] for n in self.declared if n.endswith("*"))

    def find(self, name: str) -> metadata.EntryPoint | None:
        """The entry point that declares ``name``: its own, else its family's (the longest prefix); None if none."""
        if name in self.declared:
            return self.declared[name]
        families = [p for p in self.prefixes() if name.startswith(p)]
        return self.declared[max(families, key=len) + "*"] if families else None

    def modules(self) -> list[metadata.EntryPoint]:
        """The entry points that name a module, not a family: importing one may register names besides its own."""
        return [ep for name, ep in self.declared.items() if not name.endswith("*") and ep.attr is None]

    def load(self, ep: metadata.EntryPoint) -> Any:
        """Import what ``ep`` names (once).  A plugin that fails to import is an ImportError that names it (the
        command line's one line, exit 1; ``--debug`` shows the plugin's own traceback)."""
        if ep.name not in self._loaded:
            try:
                self._loaded[ep.name] = ep.load()
            except Exception as err:
                raise ImportError(f"the plugin {ep.name!r} ({self.group}: {ep.value}) failed to import: "
                                  f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from err
        return self._loaded[ep.name]

    def unknown(self, kind: str, name: str, also: Iterable[str] = ()) -> UsageError:
        """The error for a name nothing declares: the closest declared names (``also``: names registered otherwise)."""
        known = sorted(set(self.names()) | set(also))
        if not known:
            return UsageError(f"unknown {kind} {name!r}: no {kind} is installed (the entry points of {self.group} are "
                              f"missing: install the harness with pip install -e . or pip install .)")
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        families = ", ".join(p + "<Class>" for p in self.prefixes())
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(known)}"
        return UsageError(f"unknown {kind} {name!r}{hint}" + (f" (or {families})" if families and not close else ""))
