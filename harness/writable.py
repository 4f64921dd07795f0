"""Is an output folder writable?  Asked by trying a write (``os.access`` says yes under /proc, on a read-only
bind mount or a full disk), before any work, so that a bad ``--out`` ends in one line and exit 2."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from harness.core.errors import UsageError


def probe_writable(out: Path, option: str = "--out") -> None:
    """Create and remove a temporary file in ``out`` (or, where it does not exist yet, its nearest existing
    ancestor, creating nothing else); a ``UsageError`` naming ``option`` when that fails."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{option} {out} exists and is not a folder")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{option} {out}: {probe} is not a folder")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".harness-write-probe.", suffix=".tmp")
        try:
            os.write(fd, b"probe")
        finally:
            os.close(fd)
            os.unlink(tmp)
    except OSError as err:
        raise UsageError(f"{option} {out}: folder is not writable ({err.strerror or err})") from None
