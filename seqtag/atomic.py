"""Atomic file writes: readers see the old file or the new one, never a part of one (a killed run loses nothing).

The file gets the permissions ``open()`` would give it: those of the file it replaces, or ``0o666`` less the umask for
a new one (``0o644`` under the usual umask 022), not the ``0o600`` of a temporary file.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    # Elsewhere the only way to read the umask is to set it. Meanwhile a file created by another thread gets the
    # strictest mode rather than a looser one.
    umask = os.umask(0o077)
    os.umask(umask)
    return umask


def _mode_for(path: Path) -> int:
    """The permission bits a plain ``open(path, "w")`` leaves ``path`` with."""
    try:
        return stat.S_IMODE(path.stat().st_mode)  # an existing file keeps its mode
    except FileNotFoundError:
        return 0o666 & ~current_umask()


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Opens a temporary file beside ``path``; on a clean exit it is flushed, synced and renamed over ``path``.

    Args:
        path: the file to write.
        mode: ``"w"`` (UTF-8 text) or ``"wb"``. Default: ``"w"``
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            os.chmod(tmp, _mode_for(path))  # mkstemp creates the file 0o600
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Writes ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_open(path) as f:
        f.write(text)
