"""A grid file (TOML) -> its cells: validation, the product of the axes, exclusions, each cell's ``harness run``.

A cell is one run (a ``RunSpec``, ``Cell.run_spec``): one value of each *cell axis* (dataset, model, defense, norm, seed and every
``set.KEY`` axis), with all the grid's attacks (less those an ``[[exclude]]`` with an ``attack`` key takes out of
it) and all its eps in the same run.  Its id is the first 12 hex
digits of the SHA-256 of its canonical spec (sorted JSON of everything its command line is made from), so the
same cell in another grid file, or after the file was re-ordered, is the same folder.

Two rules keep cells meaningful when the axes mix plugins:

- a ``set`` value scoped to a plugin (``preempt.maxiter=30``) reaches only the cells that run that plugin; in
  the others it is left out (its column is empty there).  Cells that become the same run are listed once.
- with a norm axis (or setting), an attack that declares its norms (``pgd_linf``: linf) joins only the cells
  of those norms; ``eps`` may then be a table by norm (``eps = {linf = [0.1], l2 = [0.5]}``).

Every check runs before anything is written; a bad file is a ``UsageError`` (one line, exit 2).
"""
from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.errors import UsageError

from .cell import Cell

CELL_AXES = ("dataset", "model", "defense", "norm", "seed")  # and "set.KEY"
RUN_LISTS = ("attack", "eps")  # shared by every cell: the lists of one run
SETTINGS = {"n": int, "subset": str, "subset_seed": int, "indices": str, "batch_size": int, "passes": int,
            "split": str, "data_dir": str, "device": str, "arch": str, "no_samples": bool, "set": list}
GRID_KEYS = {"out": str, "ci": bool, "caption": str, "label": str, "decimals": int}  # and [labels]: display names
FLAGS = ("n", "subset", "subset_seed", "indices", "batch_size", "passes", "split", "data_dir", "device",
         "arch")  # settings that are run options


@dataclass
class Grid:
    path: Path
    name: str
    out: Path
    ci: bool
    axes: list[str]  # the cell axes in the order of the file
    cells: list[Cell] = field(default_factory=list)
    names: dict = field(default_factory=dict)  # [labels]: plugin id / axis value -> display name in tables, figures
    head: dict = field(default_factory=dict)  # [grid]: caption, label (of results.tex), decimals (fixed, not by CI)

    @property
    def set_axes(self) -> list[str]:
        return [a for a in self.axes if a.startswith("set.")]

    @property
    def varying(self) -> list[str]:
        """The cell axes with more than one value among the cells (always with ``defense``)."""
        return [a for a in self.axes if a == "defense" or len({str(c.labels.get(a, "")) for c in self.cells}) > 1]


def read_toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise UsageError("harness grid needs tomli on Python 3.10 (pip install tomli)") from None
    if not path.is_file():
        raise UsageError(f"{path}: no such grid file")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"{path}: not valid TOML: {err}") from None


def load_grid(path: str | Path, out: str | None = None) -> Grid:
    """Read, validate and expand a grid file; ``out`` overrides its ``[grid] out``."""
    path = Path(path)
    doc = read_toml(path)
    where = str(path)
    if not doc:
        raise UsageError(f"{where}: empty grid file (it needs an [axes] table; docs/GRIDS.md)")
    _known(doc, {"grid", "axes", "settings", "exclude", "labels"}, where)
    if not doc.get("axes"):
        raise UsageError(f"{where}: no [axes] table (a grid needs at least one axis, e.g. defense = [\"none\"]; "
                         "docs/GRIDS.md)")
    head = _table(doc.get("grid", {}), f"{where} [grid]")
    _known(head, GRID_KEYS, f"{where} [grid]")
    for key, kind in GRID_KEYS.items():
        if key in head and not _is(head[key], kind):
            raise UsageError(f"{where} [grid] {key}: expected a {kind.__name__}, got {head[key]!r}")
    if not 0 <= head.get("decimals", 0) <= 6:
        raise UsageError(f"{where} [grid] decimals: expected 0 to 6, got {head['decimals']}")
    names = _table(doc.get("labels", {}), f"{where} [labels]")
    for k, v in names.items():
        if not isinstance(v, str) or not v.strip():
            raise UsageError(f"{where} [labels] {k}: expected a display name (a non-empty string), got {v!r}")
    axes = _flatten_sets(_table(doc.get("axes", {}), f"{where} [axes]"))
    settings = _table(doc.get("settings", {}), f"{where} [settings]")
    values = _axes(axes, settings, where)
    run_kw = {k: settings[k] for k in SETTINGS if k in settings}
    for key, v in run_kw.items():
        if not _is(v, SETTINGS[key]) or (SETTINGS[key] is int and v < (0 if key == "subset_seed" else 1)):
            raise UsageError(f"{where} [settings] {key}: expected a {'positive ' * (SETTINGS[key] is int)}"
                             f"{SETTINGS[key].__name__}, got {v!r}")
    sets = run_kw.pop("set", [])
    for s in sets:
        if not isinstance(s, str) or "=" not in s:
            raise UsageError(f"{where} [settings] set: expected \"key=value\" strings, got {s!r}")
    excludes = _excludes(doc.get("exclude", []), values, where)
    _check_names(values, run_kw.get("arch"), where)
    order = [a for a in values if a not in RUN_LISTS]
    grid = Grid(path, path.stem, Path(out or head.get("out") or Path("runs") / "grids" / path.stem),
                bool(head.get("ci", False)), order, names=dict(names),
                head={k: head[k] for k in ("caption", "label", "decimals") if k in head})
    seen = set()
    for combo in itertools.product(*(values[a] for a in order)):
        point = dict(zip(order, combo))
        if any(all(point[k] in v for k, v in ex.items()) for ex in excludes if "attack" not in ex):
            continue
        dropped = {a for ex in excludes if "attack" in ex
                   and all(point[k] in v for k, v in ex.items() if k != "attack") for a in ex["attack"]}
        cell = make_cell(point, values, run_kw, sets, where, dropped)
        if cell.id not in seen:
            seen.add(cell.id)
            grid.cells.append(cell)
    if not grid.cells:
        raise UsageError(f"{where}: every cell is excluded; nothing to run")
    return grid


def make_cell(point: dict, values: dict, run_kw: dict, sets: list[str], where: str, dropped=()) -> Cell:
    """The cell at one point of the cell axes: its applied ``set`` values, attacks (less ``dropped``, the attacks
    an ``[[exclude]]`` with an ``attack`` key takes out of this cell), eps, options and id."""
    from harness.config import split_label
    from harness.core.registry import ATTACKS

    norm = point.get("norm")
    attacks = [a for a in values["attack"] if a not in dropped
               and (norm is None or norm in (ATTACKS.get(split_label(a)[1]).declared("norms") or (norm,)))]
    if not attacks:
        raise UsageError(f"{where}: no attack of the grid is left for the cell "
                         f"{' '.join(f'{k}={_text(v)}' for k, v in point.items())} "
                         f"(attack = {values['attack']}, norms and [[exclude]] applied)")
    eps = values.get("eps")
    if isinstance(eps, dict):
        if norm not in eps:
            raise UsageError(f"{where} [axes] eps: no budgets for norm {norm}")
        eps = eps[norm]
    instances = [split_label(x) for x in (point.get("defense", "none"), *attacks)]
    plugins = {point.get("dataset", "digits"), run_kw.get("arch"), *(x for inst in instances for x in inst)}
    named = {split_label(x)[0] for x in (*values["defense"], *values["attack"])}  # every label of the grid
    applied = [s for s in sets if _applies(s.split("=", 1)[0], plugins, named)]
    labels = {}
    for axis, value in point.items():
        if axis.startswith("set."):
            key = axis[4:]
            use = _applies(key, plugins, named)
            labels[axis] = _text(value) if use else ""
            if use:
                applied.append(f"{key}={_text(value)}")
        else:
            labels[axis] = split_label(value)[0] if axis == "defense" else _text(value)
    spec = {**{k: v for k, v in point.items() if not k.startswith("set.")}, "attack": attacks, **run_kw,
            "set": applied}
    if eps is not None:
        spec["eps"] = [_text(e) for e in eps]
    options = {"dataset": point.get("dataset"), "model": point.get("model"), "defense": [point["defense"]],
               "attack": attacks, "norm": norm, "eps": [",".join(spec["eps"])] if "eps" in spec else None,
               "seed": point.get("seed", 0), **{k: run_kw.get(k) for k in FLAGS}, "set": applied,
               "no_samples": bool(run_kw.get("no_samples"))}
    options = {k: v for k, v in options.items() if v not in (None, [], False)}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Cell(digest, spec, options, labels)


def _applies(key: str, plugins: set, labels: set) -> bool:
    """A ``--set`` key reaches this cell: unscoped, or scoped to a plugin or label the cell runs (``NAME.param``,
    ``LABEL.param``)."""
    from harness.core.registry import REGISTRIES

    if "." not in key:
        return True
    name = key.split(".", 1)[0]
    return name in plugins or not (name in labels or any(name in reg for reg in REGISTRIES.values()))


def _axes(axes: dict, settings: dict, where: str) -> dict:
    """Every axis as a non-empty list of checked values, in the order of the file (settings: one-value axes)."""
    allowed = set(CELL_AXES) | set(RUN_LISTS)
    values = {}
    for key, v in axes.items():
        if key not in allowed and not (key.startswith("set.") and len(key) > 4):
            raise UsageError(f"{where} [axes] {key}: unknown axis (one of {', '.join(sorted(allowed))}, or set.KEY)")
        if not (isinstance(v, list) or (key == "eps" and isinstance(v, dict))) or not v:
            raise UsageError(f"{where} [axes] {key}: expected a non-empty list, got {v!r}")
        values[key] = v
    for key, v in settings.items():
        if key in SETTINGS:
            continue
        if key not in allowed:
            raise UsageError(f"{where} [settings] {key}: unknown setting (one of "
                             f"{', '.join(sorted(allowed | set(SETTINGS)))})")
        if key in values:
            raise UsageError(f"{where}: {key} is both an axis and a setting; give it once")
        values[key] = v if isinstance(v, (list, dict)) and key in RUN_LISTS else [v]
    values.setdefault("attack", ["pgd_linf"])
    values.setdefault("defense", ["none"])
    for key, vals in values.items():
        if isinstance(vals, dict) and not all(isinstance(x, list) and x for x in vals.values()):
            raise UsageError(f"{where} eps: a table by norm holds non-empty lists, got {vals!r}")
        for v in (itertools.chain(*vals.values()) if isinstance(vals, dict) else vals):
            _check_value(key, v, where)
        flat = [json.dumps(v) for v in (vals if isinstance(vals, list) else [])]
        if len(set(flat)) < len(flat):
            raise UsageError(f"{where} [axes] {key}: a value is given twice")
    return values


def _check_value(key: str, v, where: str) -> None:
    if key == "seed":
        ok = isinstance(v, int) and not isinstance(v, bool) and v >= 0
    elif key == "eps":
        from harness.config import parse_eps

        ok = isinstance(v, (int, float, str)) and not isinstance(v, bool)
        if ok:
            parse_eps(str(v))
    elif key == "norm":
        ok = v in ("linf", "l2")
    elif key.startswith("set."):
        ok = isinstance(v, (str, int, float, bool))
    else:
        ok = isinstance(v, str) and v != ""
    if not ok:
        raise UsageError(f"{where}: bad {key} value {v!r}")


def _excludes(items, values: dict, where: str) -> list[dict]:
    if not isinstance(items, list):
        raise UsageError(f"{where} exclude: write [[exclude]] tables")
    out = []
    for ex in items:
        ex = _flatten_sets(_table(ex, f"{where} [[exclude]]"))
        if not ex:
            raise UsageError(f"{where} [[exclude]]: empty (it would exclude every cell)")
        norm = {}
        if set(ex) == {"attack"}:
            raise UsageError(f"{where} [[exclude]]: an attack alone (drop it from the attack list instead)")
        for key, v in ex.items():
            if key not in values or key == "eps":
                raise UsageError(f"{where} [[exclude]] {key}: not a cell axis (or attack) of this grid")
            vs = v if isinstance(v, list) else [v]
            missing = [x for x in vs if x not in values[key]]
            if missing:
                raise UsageError(f"{where} [[exclude]] {key} = {missing[0]!r}: not a value of that axis")
            norm[key] = vs
        out.append(norm)
    return out


def _check_names(values: dict, arch: str | None, where: str) -> None:
    """Every plugin name exists (the registries' errors name the closest), every model loads by name or path."""
    from harness.assembly import check_model
    from harness.config import parse_instances
    from harness.core.registry import ATTACKS, DATASETS, DEFENSES
    from harness.plugins import load_builtins

    load_builtins()
    for name in values.get("dataset", []):
        DATASETS.get(name)
    for key, reg in (("defense", DEFENSES), ("attack", ATTACKS)):  # NAME or LABEL=NAME
        parse_instances(reg, values.get(key, []), f"{where} [axes] {key}:")
    for name in values.get("model", []):
        check_model(name, arch)
    if isinstance(values.get("eps"), dict):
        bad = [k for k in values["eps"] if k not in ("linf", "l2")]
        if bad or "norm" not in values:
            raise UsageError(f"{where} eps: a table by norm needs linf/l2 keys and a norm axis or setting")


def _table(v, where: str) -> dict:
    if not isinstance(v, dict):
        raise UsageError(f"{where}: expected a table, got {v!r}")
    return v


def _known(d: dict, keys, where: str) -> None:
    for k in d:
        if k not in keys:
            raise UsageError(f"{where}: unknown key {k!r} (one of {', '.join(sorted(keys))})")


def _is(v, kind) -> bool:
    return isinstance(v, kind) and not (kind is int and isinstance(v, bool))


def _text(v) -> str:
    """A TOML value as the command line writes it (``true``, ``0.1``, ``8/255``)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _flatten_sets(d: dict, prefix: str = "") -> dict:
    """``set.preempt.maxiter = [..]`` without quotes is a nested table in TOML: make it ``"set.preempt.maxiter"``."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and (prefix or k == "set"):
            out.update(_flatten_sets(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
