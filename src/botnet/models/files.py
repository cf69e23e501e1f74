"""Files written whole or not at all, and their checksums (weight files and their cards)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

__all__ = ["file_sha256", "write_atomic", "require_file"]


def require_file(path: str | os.PathLike, what: str = "checkpoint") -> Path:
    """``path`` as a ``Path``; ``FileNotFoundError`` when nothing is there, ``ValueError`` when it is a
    folder (naming the checkpoints inside it, e.g. a run folder's best.pt / last.pt)."""
    p = Path(path)
    if p.is_dir():
        found = [str(p / n) for n in ("best.pt", "last.pt") if (p / n).is_file()]
        hint = f"e.g. {' or '.join(found)}" if found else "a .pt / .pth / .safetensors file"
        raise ValueError(f"{what} {str(p)!r} is a folder; expected a {what} file: {hint}")
    if not p.is_file():
        raise FileNotFoundError(f"{what} {str(p)!r} not found")
    return p


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_atomic(path: Path, write) -> None:
    """Run ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path`` (the old
    file stays whole if ``write`` fails)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
