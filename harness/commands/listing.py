"""``harness list``: each registry's plugins with their parameter trees, types, defaults and the papers' values."""
from __future__ import annotations

import inspect

from harness.core.errors import UsageError


def cmd_list(args) -> int:
    from harness.core.registry import REGISTRIES

    if args.markdown:
        from .catalog import README_KINDS, markdown

        if args.kind is not None and args.kind not in REGISTRIES:
            raise UsageError(f"unknown kind {args.kind!r}; one of {', '.join(REGISTRIES)}")
        print(markdown([args.kind] if args.kind else README_KINDS), end="")
        return 0
    kinds = [args.kind] if args.kind else list(REGISTRIES)
    for kind in kinds:
        if kind not in REGISTRIES:
            raise UsageError(f"unknown kind {kind!r}; one of {', '.join(REGISTRIES)}")
        reg = REGISTRIES[kind]
        print(f"{kind}:")
        for name in reg.list(args.pattern):
            entry = reg.get(name)
            params = ", ".join(f"{path}: {_type_name(p)} = {p.part.name if p.part else repr(p.default)}"
                               for path, p in entry.tree())
            print(f"  {name:24s} {entry.description}")
            if params and kind != "zoo":
                print(f"  {'':24s}   params: {params}")
            if entry.paper:
                print(f"  {'':24s}   paper:  {', '.join(f'{k}={v}' for k, v in entry.paper.items())}")
    return 0


def _type_name(param) -> str:
    """A parameter's type as ``harness list`` shows it (``float``, ``int | None``, ``Literal['linf', 'l2']``)."""
    kind = param.type
    if kind is inspect.Parameter.empty:
        return type(param.default).__name__ if param.default is not None else "any"
    return kind.__name__ if isinstance(kind, type) else str(kind).replace("typing.", "")
