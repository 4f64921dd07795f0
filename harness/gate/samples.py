"""Per-sample verdicts for the paired test: the ``samples.csv`` a run writes beside its results.csv.

Where the samples of a results file are: ``<dir>/samples.csv`` beside a ``results.csv``; ``<dir>/<stem>.samples.csv``
beside any other name (a committed baseline ``reports/baselines/NAME.csv`` keeps ``NAME.samples.csv``); for a grid's
combined results.csv (a ``cell`` column), each row's own ``cells/<cell>/samples.csv``.

samples.csv holds one line per (sample, defense, attack, eps) with ``index``, ``label``, ``clean`` and ``robust``
(``harness.report.sample_rows``).  An attack row's verdicts are its lines; a ``worst-case`` row's are the AND over
the attacks of its (defense, eps), certifiers left out (their lines carry a ``certified`` value) as in the report;
``clean_acc``'s are the ``clean`` column.  A vector is used only when it has the row's n entries and its count
gives the row's accuracy; otherwise the gate falls back to the unpaired test.
"""
from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from harness.core.errors import UsageError
from harness.significance import count


class Samples:
    """The per-sample verdicts behind the rows of one results file, loaded on first use."""

    def __init__(self, results: Path):
        self.results = Path(results)
        self._cache: dict[Path, dict | None] = {}

    def file_for(self, row: dict) -> Path:
        d = self.results.parent
        if row.get("cell"):
            return d / "cells" / row["cell"] / "samples.csv"
        return d / ("samples.csv" if self.results.name == "results.csv" else f"{self.results.stem}.samples.csv")

    def _load(self, path: Path) -> dict | None:
        if path not in self._cache:
            self._cache[path] = read_samples(path) if path.is_file() else None
        return self._cache[path]

    def vector(self, row: dict, metric: str) -> tuple[list[int], list[int]] | None:
        """(labels, verdicts) of the row's samples in index order, or None when not known exactly."""
        data = self._load(self.file_for(row))
        if data is None:
            return None
        cells, labels, certifiers = data
        d, a, e = row["defense"], row["attack"], row["eps"]
        if metric == "clean_acc":
            got = next((v for (dd, _, _), v in cells.items() if dd == d), None)
            vec = None if got is None else {i: c for i, (c, _) in got.items()}
        elif a == "worst-case":
            parts = [v for (dd, aa, ee), v in cells.items() if dd == d and ee == e and (dd, aa, ee) not in certifiers]
            vec = {i: int(all(p.get(i, (0, 0))[1] for p in parts)) for i in parts[0]} if parts else None
        else:
            got = cells.get((d, a, e))
            vec = None if got is None else {i: r for i, (_, r) in got.items()}
        if vec is None:
            return None
        order = sorted(vec)
        n, acc = int(row["n"]), float(row[metric])
        verdicts = [vec[i] for i in order]
        if len(verdicts) != n or sum(verdicts) != count(acc, n):
            return None
        return [labels.get(i, -1) for i in order], verdicts


def read_samples(path: Path):
    """{(defense, attack, eps): {index: (clean, robust)}}, {index: label}, {certifier cells}."""
    cells: dict = defaultdict(dict)
    labels, certifiers = {}, set()
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            need = {"index", "label", "defense", "attack", "eps", "clean", "robust"}
            if not need <= set(reader.fieldnames or []):
                raise UsageError(f"{path}: not a samples.csv (columns {', '.join(sorted(need))} expected)")
            for row in reader:
                i = int(row["index"])
                k = (row["defense"], row["attack"], row["eps"])
                cells[k][i] = (int(row["clean"]), int(row["robust"]))
                labels[i] = int(row["label"])
                if row.get("certified", ""):
                    certifiers.add(k)
    except (ValueError, TypeError, csv.Error, UnicodeDecodeError) as err:
        raise UsageError(f"{path}: bad samples.csv ({err})") from None
    return dict(cells), labels, certifiers
