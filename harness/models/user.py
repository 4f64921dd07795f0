"""Your own model: a factory in your file or an installed package, named ``SOURCE:CALLABLE``.

* ``path/to/file.py:factory`` imports ``file.py`` (its folder is on ``sys.path`` while it is imported and while
  the factory runs, so ``from sibling import Net`` works) and calls ``factory(**kwargs)``;
* ``package.module:factory`` imports an installed module (or one under the current directory) the same way.

The callable must return a ``torch.nn.Module`` mapping images in [0, 1] to logits; give any input normalisation
with ``--normalize`` (``harness.models.normalize``) and weights with ``--weights`` (``load_weights``).  Keyword
arguments come from ``--model-arg key=value`` (:func:`parse_model_args`: numbers, ``8/255``, ``true``/``false``,
``none``, sequences ``a,b`` / ``(a,b)`` / ``[a,b]``, else text).

**This runs your code**: a factory reference is imported only when it is given, never discovered.

The same route takes model libraries that are installed (none of them is a dependency of the harness), e.g.
timm::

    harness run --model timm:create_model --model-arg model_name=resnet18 --model-arg pretrained=false ...

or a RobustBench architecture with a checkpoint saved as ``{"state_dict": {"module.<key>": ...}}`` (the
wrappings and prefixes are undone by ``load_weights``; a normaliser the training applied outside the network is
given with ``--normalize``)::

    harness run --model robustbench.model_zoo.architectures.wide_resnet:WideResNet \\
        --model-arg depth=28 --model-arg widen_factor=10 --weights model.pt \\
        --normalize mean=0.4914,0.4822,0.4465,std=0.2471,0.2435,0.2616 ...

From Python the same factory reference works (``harness.models.user.load_factory``), or pass the module itself.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
from pathlib import Path
from typing import Any

from torch import nn

from harness.core.errors import UsageError
from harness.core.values import SEQUENCE_FORMS, parse_literal

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = re.compile(rf"{_IDENT}(\.{_IDENT})*")
SHOW = 5  # how many callables an error lists
ARG_FORMS = f"key=value with value 3, 0.5, 8/255, true, false, none, {SEQUENCE_FORMS}, or text"


def is_factory_ref(text: str | None) -> bool:
    """Whether ``text`` names a factory, ``path/to/file.py:factory`` or ``package.module:factory``.

    Not a zoo name (no colon), not a checkpoint path (an existing file, even ``ckpt:v2.pt``, is never a
    reference), not a Windows path: ``C:\\m.pt`` has a drive letter, not a module, before its colon
    (``C:\\src\\net.py:build`` is a file reference).
    """
    text = "" if text is None else str(text)
    if not text or os.path.exists(text):
        return False
    source, sep, attr = text.rpartition(":")
    if not sep or not source or not _DOTTED.fullmatch(attr):
        return False
    if source.endswith(".py"):
        return True
    return len(source) > 1 and _DOTTED.fullmatch(source) is not None


def load_factory(ref: str, kwargs: dict | None = None) -> nn.Module:
    """Import the factory ``ref`` names, call it with ``kwargs`` and return the module it builds, in eval mode.

    Each failure is a one-line ``UsageError``: the file is missing, it fails to import (the exception's type and
    first line), the name is not there (a few callables that are), it is not callable, it raises, or it returns
    something that is not an ``nn.Module``.
    """
    if not is_factory_ref(ref):
        raise UsageError(f"--model {ref!r} is not a factory reference; write path/to/file.py:factory or "
                         "package.module:factory")
    source, _, attr = ref.rpartition(":")
    kwargs = dict(kwargs or {})
    if source.endswith(".py"):
        path = Path(source).expanduser()
        if not path.is_file():
            where = " (it is a directory)" if path.is_dir() else ""
            raise UsageError(f"model file {source} not found{where}")
        folder = path.resolve().parent
    else:
        path, folder = None, Path.cwd()
    with _on_sys_path(folder, forget_siblings=path is not None):
        module = _import_file(path, source) if path is not None else _import_module(source)
        factory = _attribute(module, attr, source)
        if not callable(factory):
            raise UsageError(f"{ref}: {attr} is a {type(factory).__name__}, not a callable that returns an nn.Module")
        try:
            built = factory(**kwargs)
        except BaseException as e:  # noqa: BLE001 - the user's code may raise anything (sys.exit too): one line
            if isinstance(e, KeyboardInterrupt):
                raise
            args = f" with {', '.join(f'{k}={v!r}' for k, v in kwargs.items())}" if kwargs else ""
            raise UsageError(f"model factory {ref} raised {_first_line(e)} when called{args}") from None
    if not isinstance(built, nn.Module):
        raise UsageError(f"model factory {ref} returned a {type(built).__name__}, not a torch.nn.Module")
    return built.eval()


def parse_model_args(pairs: list[str] | None) -> dict[str, Any]:
    """``["depth=28", "eps=8/255", "widths=(16,32)", "name=resnet18"]`` -> keyword arguments for a factory.

    Values are Python-like literals where they parse (see :func:`harness.core.values.parse_literal`), else text.
    A pair without ``=``, with a key that is not a Python name, with an empty item or given twice is a
    one-line ``UsageError`` that shows the accepted forms.
    """
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, text = str(pair).partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UsageError(f"--model-arg expects {ARG_FORMS}; got {pair!r}")
        if key in out:
            raise UsageError(f"--model-arg {key} is given twice")
        try:
            out[key] = parse_literal(text)
        except ValueError as e:
            raise UsageError(f"--model-arg {key}: {e} in {text!r}; expected {ARG_FORMS}") from None
    return out


@contextlib.contextmanager
def _on_sys_path(folder: Path, forget_siblings: bool = False):
    """``folder`` first on ``sys.path`` for the duration (removed again if it was not there before).

    ``forget_siblings``: afterwards drop the modules first imported meanwhile from inside ``folder`` (the user
    file's ``from blocks import Body``), so another project's ``blocks.py`` is not served from the cache."""
    entry = str(folder)
    added = entry not in sys.path
    before = set(sys.modules)
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)
        if forget_siblings:
            for name in set(sys.modules) - before:
                origin = getattr(sys.modules[name], "__file__", None) or ""
                if origin and Path(origin).resolve().is_relative_to(folder) and not name.startswith("harness_user_"):
                    del sys.modules[name]


def _import_file(path: Path, shown: str):
    """Import ``path`` as a fresh module named after its location (two files called ``net.py`` do not clash)."""
    resolved = path.resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:10]
    name = f"harness_user_{re.sub(r'[^0-9A-Za-z_]', '_', resolved.stem)}_{digest}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise UsageError(f"model file {shown} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up while it executes
    try:
        spec.loader.exec_module(module)
    except BaseException as e:  # noqa: BLE001 - SystemExit from a script's argparse included
        sys.modules.pop(name, None)
        if isinstance(e, KeyboardInterrupt):
            raise
        raise UsageError(f"model file {shown} failed to import: {_import_failure(e)}") from None
    return module


def _import_module(name: str):
    try:
        return importlib.import_module(name)
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, KeyboardInterrupt):
            raise
        hint = " (is it installed in this Python environment?)" if isinstance(e, ModuleNotFoundError) else ""
        raise UsageError(f"module {name} failed to import: {_import_failure(e)}{hint}") from None


def _attribute(module, attr: str, source: str):
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{source} has no {attr!r}; {_callables(module)}")
        obj = getattr(obj, part)
    return obj


def _callables(module) -> str:
    """``callables there: build, Net, ...``: public callables, those defined in the module itself first."""
    names = [n for n, v in vars(module).items() if not n.startswith("_") and callable(v)]
    own = [n for n in names if getattr(vars(module)[n], "__module__", None) == module.__name__]
    ordered = own + [n for n in names if n not in own and not inspect.ismodule(vars(module)[n])]
    if not ordered:
        return "it defines no callables"
    more = f" (+{len(ordered) - SHOW} more)" if len(ordered) > SHOW else ""
    return f"callables there: {', '.join(ordered[:SHOW])}{more}"


def _import_failure(e: BaseException) -> str:
    if isinstance(e, SystemExit):
        return (f"it called sys.exit({e.code!r}) on import; put its script code under "
                "if __name__ == '__main__':")
    return _first_line(e)


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return type(e).__name__ + (f": {lines[0][:200]}" if lines else "")


__all__ = ["is_factory_ref", "load_factory", "parse_model_args"]
