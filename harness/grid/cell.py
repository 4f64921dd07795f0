"""A grid cell: one run of the grid (its ``RunSpec``), with the id, the spec it is hashed by and its labels in
the tables."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Cell:
    id: str
    spec: dict  # canonical: what the command line is made from (hashed)
    options: dict  # the run's options (``harness run``'s flags by their argparse names): ``run_spec()`` builds it
    labels: dict  # axis -> value as shown in the tables ("" for a set value left out)

    def run_spec(self):
        """The cell's ``RunSpec``: the same spec ``harness run`` with these options makes (no command line in between)."""
        from harness.commands.run import spec_from_options

        return spec_from_options(self.options)

    @property
    def command(self) -> str:
        """The equivalent ``harness run`` command line, for people (dry runs, the cell's record)."""
        flags = []
        for key, value in self.options.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                flags.append(flag)
            for v in (value if isinstance(value, list) else [] if value in (None, False, True) else [value]):
                flags += [flag, str(v)]
        return "harness run " + " ".join(flags)
