"""``Results``: what a run returns in Python, and exactly what it writes.

``Results.rows`` are the rows of results.csv (strings, as written), ``table()`` is results.md's paper table,
``samples`` the per-sample verdicts of samples.csv, ``worst_case(defense, eps)`` the per-sample worst case over the
attacks, ``flags`` the gradient-masking checks that fired, and ``save(dir)`` writes the same files the command line
writes (``harness run``).  ``load_results(dir)`` reads a run folder back into the same object.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from harness.core.errors import UsageError

FILES = ("results.csv", "results.md", "timings.csv", "run.json", "samples.csv")


class Results:
    def __init__(self, rows: list[dict], meta: dict, run_info: dict, *, samples: list[dict] | None = None,
                 files: dict[str, str] | None = None, _run=None):
        self.rows, self.meta, self.run_info = rows, meta, run_info
        self._samples, self._files, self._run = samples, files or {}, _run

    @classmethod
    def from_run(cls, results, labels, meta: dict, run_info: dict, *, gradients: dict, samples: bool = True,
                 indices=None) -> "Results":
        from .report import csv_columns, final_rows

        rows, flagged_meta = final_rows(results, meta, gradients)
        columns = csv_columns(results, rows)
        rows = [{c: str(r.get(c, "")) for c in columns} for r in rows]  # as results.csv holds them
        return cls(rows, flagged_meta, run_info, _run=(results, labels, gradients, samples, indices, meta))

    # -- reading -----------------------------------------------------------------------------------------------
    @property
    def config_hash(self) -> str:
        return self.run_info["config_hash"]

    @property
    def spec(self):
        from .spec import RunSpec

        return RunSpec.from_dict(self.run_info["spec"])

    @property
    def flags(self) -> list[dict]:
        """One entry per row on which a gradient-masking check fired: the row's cell and the flags' names."""
        return [{"defense": r["defense"], "attack": r["attack"], "eps": r["eps"], "flags": r["flags"].split("; ")}
                for r in self.rows if r.get("flags")]

    def robust_accuracy(self, defense: str | None = None, eps: str | float | None = None) -> float:
        """The worst-case robust accuracy (percent) of ``defense`` (default: the only or first one) at ``eps``."""
        rows = [r for r in self.rows if r["attack"] == "worst-case" and (defense is None or r["defense"] == defense)
                and (eps is None or float(r["eps"]) == float(eps))]
        if not rows:
            raise KeyError(f"no worst-case row for defense={defense!r}, eps={eps!r}")
        return float(rows[0]["robust_acc"])

    @property
    def samples(self) -> list[dict]:
        """Per sample, attack and eps: clean, robust, attacked, valid, dist (samples.csv's rows, as strings)."""
        if self._samples is None:
            if self._run is None:
                return []
            from .report import sample_rows

            results, labels = self._run[:2]
            self._samples = [{k: str(v) for k, v in r.items()} for r in sample_rows(results, labels)]
        return self._samples

    def worst_case(self, defense: str | None = None, eps: str | float | None = None) -> list[bool]:
        """Per sample: robust against every attack run at ``eps`` (AND over the attacks' verdicts)."""
        out: dict[int, bool] = {}
        for r in self.samples:
            if (defense is None or r["defense"] == defense) and (eps is None or float(r["eps"]) == float(eps)):
                i = int(r["index"])
                out[i] = out.get(i, True) and r["robust"] == "1"
        if not out:
            raise KeyError(f"no per-sample verdicts for defense={defense!r}, eps={eps!r}")
        return [out[i] for i in sorted(out)]

    def table(self) -> str:
        """results.md's paper table (defense x attack, robust accuracy)."""
        from .report import to_markdown

        md = self._files.get("results.md") or to_markdown(self.rows, self.meta)
        return md.split("## All cells")[0].rstrip()

    def to_pandas(self):
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Results.to_pandas() needs pandas (pip install pandas); Results.rows holds the same "
                              "rows as dicts") from None
        return pd.DataFrame(self.rows)

    def __repr__(self) -> str:
        return f"Results({self.meta.get('dataset')}/{self.meta.get('model')}, {len(self.rows)} rows, config {self.config_hash})"

    # -- writing -----------------------------------------------------------------------------------------------
    def save(self, out: str | Path) -> Path:
        """Write results.csv, results.md, timings.csv, run.json (and samples.csv, indices.txt, figures/), atomically:
        the files ``harness run`` writes."""
        from .report import write_atomic, write_report

        out = Path(out)
        if self._run is None:  # read back from a folder: write the same bytes again
            write_atomic(out, self._files)
            return out
        results, labels, gradients, samples, indices, meta = self._run
        extra = {"indices.txt": "".join(f"{i}\n" for i in indices.tolist())} if indices is not None else {}
        write_report(out, results, labels, meta, self.run_info, samples=samples, gradients=gradients,
                     extra_files=extra)
        return out


def load_results(folder: str | Path) -> Results:
    """A run folder (``harness run --out DIR``, ``Results.save(DIR)``) read back."""
    folder = Path(folder)
    if not (folder / "results.csv").is_file() or not (folder / "run.json").is_file():
        raise UsageError(f"{folder}: not a run folder (needs results.csv and run.json)")
    files = {name: (folder / name).read_text() for name in (*FILES, "indices.txt") if (folder / name).is_file()}
    rows = list(csv.DictReader(files["results.csv"].splitlines()))
    samples = list(csv.DictReader(files["samples.csv"].splitlines())) if "samples.csv" in files else None
    run_info = json.loads(files["run.json"])
    first = rows[0] if rows else {}
    meta = {"dataset": first.get("dataset"), "model": first.get("model"), "seed": run_info.get("seed"),
            "config_hash": run_info.get("config_hash"), "note": run_info.get("data_note") or first.get("dataset")}
    return Results(rows, meta, run_info, samples=samples, files=files)
