"""The value syntax of ``--set key=value``, ``--model-arg key=value`` and friends: numbers, fractions, sequences.

* a number: ``3``, ``0.5``, ``1e-3`` or a fraction ``8/255``;
* a sequence: ``a,b,c``, ``(a,b,c)`` or ``[a,b,c]`` (one trailing comma is allowed, as in Python's ``(a,)``);
  an empty item (``0.1,,0.2``) is an error, never silently dropped.

Every parser raises ``ValueError`` with a short reason; callers turn it into a one-line ``UsageError`` that shows
:data:`SEQUENCE_FORMS`.
"""
from __future__ import annotations

import inspect
import typing
from collections import abc
from typing import Any

SEQUENCE_FORMS = "a,b or (a,b) or [a,b]"
BRACKETS = {"(": ")", "[": "]"}


def parse_number(text: str) -> float:
    """A float, also written as a fraction such as ``8/255``."""
    text = str(text).strip()
    if "/" in text:
        num, den = text.split("/", 1)
        return float(num) / float(den)
    return float(text)


def is_sequence_text(text: str) -> bool:
    """Whether ``text`` is written as a sequence: it holds a comma or is wrapped in ``()`` / ``[]``."""
    text = text.strip()
    return "," in text or (len(text) >= 2 and BRACKETS.get(text[0]) == text[-1])


def split_sequence(text: str) -> tuple[list[str], str]:
    """The items of ``a,b,c`` / ``(a,b,c)`` / ``[a,b,c]`` (stripped) and the bracket used (``""``, ``"("``, ``"["``).

    ``()``, ``[]`` and the empty string are the empty sequence.  Raises ``ValueError`` for an unbalanced or
    nested bracket and for an empty item.
    """
    text = text.strip()
    bracket = ""
    if text[:1] in BRACKETS:
        if text[-1:] != BRACKETS[text[0]]:
            raise ValueError(f"{text[0]!r} is not closed by {BRACKETS[text[0]]!r}")
        bracket, text = text[0], text[1:-1].strip()
    if any(c in text for c in "()[]"):
        raise ValueError("brackets inside a sequence are not accepted")
    if not text:
        return [], bracket
    items = [t.strip() for t in text.split(",")]
    if items[-1] == "" and len(items) > 1:  # (a,) is a one-item sequence, as in Python
        items.pop()
    for i, item in enumerate(items, 1):
        if not item:
            raise ValueError(f"item {i} is empty")
    return items, bracket


def parse_scalar(text: str) -> Any:
    """A Python-like literal: ``none``/``null`` -> None, ``true``/``false`` -> bool, an int, a float (``8/255``
    too), a quoted string without its quotes; anything else is the text itself."""
    text = text.strip()
    low = text.lower()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return parse_number(text)
    except (ValueError, ZeroDivisionError):
        return text


def parse_literal(text: str) -> Any:
    """:func:`parse_scalar`, or a sequence of scalars: ``a,b`` and ``(a,b)`` give a tuple, ``[a,b]`` a list."""
    if not is_sequence_text(text) or _quoted(text.strip()):
        return parse_scalar(text)
    items, bracket = split_sequence(text)
    values = [parse_scalar(t) for t in items]
    return values if bracket == "[" else tuple(values)


def _quoted(text: str) -> bool:
    return len(text) >= 2 and text[0] == text[-1] and text[0] in "'\""


class SequenceError(ValueError):
    """A sequence value that does not parse; the message reads on after "NAME expects "."""


def parse_as(kind: Any, text: str) -> Any:
    """``text`` as a ``kind``: bool (true/false, yes/no, on/off, 1/0), int, float (also ``8/255``); any other
    type is called on the text, and no type (``inspect.Parameter.empty``, ``Any``) keeps the text."""
    if kind is bool:
        low = text.strip().lower()
        if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ValueError(text)
        return low in ("1", "true", "yes", "on")
    if kind is float:
        return parse_number(text)
    if kind is int:
        return int(text)
    if kind is inspect.Parameter.empty or kind is Any:
        return text
    return kind(text)


def is_sequence_type(kind: Any) -> bool:
    """``tuple``, ``list``, ``tuple[float, ...]``, ``list[int]``, ``Sequence[float]``: what takes sequence syntax."""
    return kind in (tuple, list, abc.Sequence) or typing.get_origin(kind) in (tuple, list, abc.Sequence)


def parse_sequence_as(kind: Any, text: str, default: Any = None) -> tuple | list:
    """``a,b``, ``(a,b)`` or ``[a,b]`` as the tuple or list ``kind`` (``tuple``, ``tuple[float, ...]``,
    ``tuple[int, int]``, ``list[str]``, ...).  The items' type comes from the annotation, else from ``default``'s
    items (``milestones: tuple = (30,)`` holds ints, so ``30,40`` gives ``(30, 40)``).  Raises
    :class:`SequenceError` saying which forms are accepted and what is wrong."""
    origin = typing.get_origin(kind) or kind
    container = tuple if origin is abc.Sequence else origin
    args = [a for a in typing.get_args(kind) if a is not Ellipsis]
    fixed = origin is tuple and bool(args) and Ellipsis not in typing.get_args(kind)  # tuple[int, int]
    if not args:
        args = [item_type(list(default) if isinstance(default, (tuple, list)) else [])]
    try:
        items, _ = split_sequence(text)
        if fixed and len(items) != len(args):
            raise ValueError(f"{len(items)} items where {len(args)} are needed")
        values = []
        for i, item in enumerate(items):
            kind_i = args[i] if fixed else args[0]
            try:
                values.append(parse_as(kind_i, item))
            except (TypeError, ValueError, ZeroDivisionError):
                raise ValueError(f"item {i + 1} {item!r} is not {describe(kind_i)}") from None
    except ValueError as e:
        raise SequenceError(f"a sequence of {_describe_items(args)}: {SEQUENCE_FORMS}; got {text!r} ({e})") from None
    return container(values)


def item_type(items: list) -> type:
    """The item type a sequence default implies: int if all its items are ints, str if all are strings, else float."""
    if items and all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        return int
    if items and all(isinstance(v, str) for v in items):
        return str
    return float


def describe(kind: Any) -> str:
    """How an error names a type: ``an integer``, ``a number such as 0.5 or 8/255``, ..."""
    return {bool: "true or false", int: "an integer", float: "a number such as 0.5 or 8/255"}.get(
        kind, getattr(kind, "__name__", str(kind)))


def _describe_items(args: list) -> str:
    names = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}
    kinds = {names.get(a, getattr(a, "__name__", str(a))) for a in args}
    return kinds.pop() if len(kinds) == 1 else "values"
