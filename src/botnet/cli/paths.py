"""Output paths of the commands, checked before any work: a file where a folder is expected, or the
other way round, is a one-line ``ValueError`` (exit code 2), not a traceback after the work."""

from __future__ import annotations

from pathlib import Path

__all__ = ["check_output_file", "check_output_folder"]


def _blocking_ancestor(path: Path) -> Path | None:
    """The first existing ancestor of ``path`` that is not a folder (nothing can be created under it)."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def check_output_file(path: str, option: str, example: str) -> Path:
    """``path`` as a file to write: not an existing folder, not under a file. ``example``: a file
    name the option takes (e.g. "model.onnx")."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ValueError(f"{option} {path} is a folder; expected a file path such as {p / example}")
    blocker = _blocking_ancestor(p)
    if blocker is not None:
        raise ValueError(f"{option} {path}: {blocker} is a file, so nothing can be written under it; expected a "
                         f"file path such as {example}")
    return p


def check_output_folder(path: str, option: str) -> Path:
    """``path`` as a folder to write into: an existing folder or a path that can become one."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ValueError(f"{option} {path} is a file; expected a folder (it is created if missing)")
    blocker = _blocking_ancestor(p)
    if blocker is not None:
        raise ValueError(f"{option} {path}: {blocker} is a file, so the folder cannot be created under it")
    return p
