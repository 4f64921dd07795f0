"""The plugin catalogue as Markdown, ``harness list --markdown [KIND]``: a table per registry of each plugin's name
and its one-line description (the registry's, from the plugin's docstring or ``register(...)``).  README.md's list
of defenses and attacks is this output for ``defenses`` and ``attacks``, pasted between its markers;
``tests/test_docs.py`` checks that the two are equal.
"""
from __future__ import annotations

README_KINDS = ("defenses", "attacks")


def markdown(kinds=README_KINDS) -> str:
    from harness.core.registry import REGISTRIES

    parts = []
    for kind in kinds:
        reg = REGISTRIES[kind]
        prefixes = sorted(reg.resolvers)
        names = [n for n in reg.list() if not n.startswith(tuple(prefixes))] if prefixes else reg.list()
        lines = [f"**{kind.capitalize()}** (`harness list {kind}`: parameters, defaults, the papers' values)", "",
                 "| name | what it is |", "|---|---|"]
        lines += [f"| `{n}` | {_cell(reg.get(n).description)} |" for n in names]
        if prefixes:
            lines += ["", "and families resolved by name: " + ", ".join(f"`{p}NAME`" for p in prefixes) + "."]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _cell(text: str) -> str:
    """Text safe in a Markdown table cell: ``|`` escaped, ``<`` as an entity (``jsd<T>`` is no HTML tag)."""
    return text.replace("|", "\\|").replace("<", "&lt;")
