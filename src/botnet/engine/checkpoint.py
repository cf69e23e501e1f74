"""Checkpoints that are never half-written, verified when read, and rotated by step.

Writing (``save_atomic``): ``torch.save`` into a temporary file in the same folder, a sha256 of
the file stored at its end (as the zip archive's comment, so ``torch.load`` still reads the file
as it is), fsync, then an atomic rename over the old file and an fsync of the folder. A reader
therefore sees the previous complete file or the new complete file, never a half-written one. A
full disk (ENOSPC / EDQUOT) raises ``DiskFullError`` naming the mount point and the file, after
removing the partial temporary file.

Reading (``load_checkpoint``): the sha256 is checked before ``torch.load``; a damaged or truncated
file raises ``CheckpointError`` (a ``ValueError``) that names the file and the problem. Files
written before checksums existed load without the check.

A run folder (``CheckpointManager``) holds ``ckpt_<step>.pt`` for the newest ``keep`` saves and
``last.pt``, a hard link to (or copy of) the newest; ``latest_valid()`` returns the newest file
that reads and verifies, falling back to older ones when the newest is damaged, and
``retire_newer(step)`` sets aside the files newer than the one a run resumed from. ``best.pt`` and
other named files are written with ``save_atomic`` directly and are not rotated.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Iterable

import torch

from ..models.files import require_file
from .faults import NonFiniteError, nonfinite_tensors

__all__ = [
    "CheckpointError", "CheckpointManager", "DiskFullError", "disk_full_error", "is_disk_full", "mount_point", "save_atomic",
    "load_checkpoint", "verify_checkpoint", "rng_state", "set_rng_state",
]

log = logging.getLogger("botnet")

_MAGIC = b"botnet-ckpt sha256="
_TRAILER_LEN = len(_MAGIC) + 64 + 1  # magic, hex digest, newline
_EOCD = b"PK\x05\x06"  # zip end-of-central-directory record: 22 bytes + comment
_CHUNK = 1 << 20


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, truncated, or failing its checksum."""


class DiskFullError(OSError):
    """No space left (or over quota) while writing: the file being replaced is untouched and the
    partial temporary file removed. ``str(e)`` is the one-line message."""

    def __init__(self, message: str):
        super().__init__(message)
        self.errno = errno.ENOSPC


def is_disk_full(e: BaseException) -> bool:
    """True when ``e`` or an exception it was raised from is ENOSPC / EDQUOT (``torch.save`` wraps
    the OSError of a full disk in a RuntimeError, "[enforce fail at inline_container.cc] unexpected pos")."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def mount_point(path: str | os.PathLike) -> Path:
    """The mount point of the file system ``path`` (or its nearest existing parent) is on."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def disk_full_error(path: str | os.PathLike, action: str = "saving") -> DiskFullError:
    """'no space left on MOUNT while saving PATH' (the device named by where it is mounted)."""
    return DiskFullError(f"no space left on {mount_point(path)} while {action} {path}")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sha256(f, length: int) -> str:
    h = hashlib.sha256()
    f.seek(0)
    left = length
    while left > 0:
        chunk = f.read(min(_CHUNK, left))
        if not chunk:
            break
        h.update(chunk)
        left -= len(chunk)
    return h.hexdigest()


def _seal(f) -> str:
    """Append the checksum trailer to the torch file open in ``f`` ("r+b"); returns the digest.

    When the file ends in a zip end-of-central-directory record without a comment (what
    ``torch.save`` writes), the record's comment length is set to the trailer's, so the trailer
    becomes the archive comment and the file stays a well-formed zip. The digest covers every
    byte before the trailer (comment length included)."""
    f.seek(0, os.SEEK_END)
    size = f.tell()
    if size >= 22:
        f.seek(size - 22)
        eocd = f.read(22)
        if eocd[:4] == _EOCD and eocd[-2:] == b"\x00\x00":
            f.seek(size - 2)
            f.write(struct.pack("<H", _TRAILER_LEN))
    f.flush()
    digest = _sha256(f, size)
    f.seek(size)
    f.write(_MAGIC + digest.encode() + b"\n")
    return digest


def save_atomic(obj, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically, with a sha256 of the file stored in it.

    Creates the parent folder. On any error (or a kill) the old ``path``, if any, is untouched; a
    stray ``.<name>.*.tmp`` file may remain after a kill (``CheckpointManager`` removes those).
    Returns ``path`` as a ``Path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w+b") as f:
            torch.save(obj, f)
            _seal(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if is_disk_full(e):
            raise disk_full_error(path) from None
        raise
    _fsync_dir(path.parent)
    return path


def verify_checkpoint(path: str | os.PathLike) -> bool:
    """Check the sha256 stored in a checkpoint written by ``save_atomic``.

    Returns True when it matches, False when the file carries no checksum (written by other code
    or before checksums existed). Raises ``FileNotFoundError`` if the file is missing and
    ``CheckpointError`` if it is damaged (checksum mismatch) or too short to be a checkpoint."""
    path = require_file(path, "checkpoint")
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size < 22:
            raise CheckpointError(f"checkpoint {str(path)!r} cannot be read: {size} bytes, too short for a torch file "
                                  "(truncated?)")
        if size < _TRAILER_LEN:
            return False
        f.seek(size - _TRAILER_LEN)
        trailer = f.read(_TRAILER_LEN)
        if not trailer.startswith(_MAGIC) or not trailer.endswith(b"\n"):
            return False
        expected = trailer[len(_MAGIC):-1].decode("ascii", "replace")
        actual = _sha256(f, size - _TRAILER_LEN)
    if actual != expected:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt: its contents hash to sha256 {actual[:16]}..., "
                              f"the file records {expected[:16]}... (damaged on disk or in a copy)")
    return True


def load_checkpoint(path: str | os.PathLike, map_location="cpu", *, verify: bool = True):
    """Read a checkpoint written by ``save_atomic`` (or any ``torch.save`` file).

    With ``verify`` the stored sha256 is checked first. Raises ``FileNotFoundError`` when the file
    is missing and ``CheckpointError`` (a ``ValueError``) when it is damaged, truncated or not a
    torch file; the message names the file."""
    path = require_file(path, "checkpoint")
    if verify:
        verify_checkpoint(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # truncated or not a torch file
        why = " ".join("".join(c if c.isprintable() else " " for c in str(e)).split())[:200]  # one printable line
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read ({type(e).__name__}: {why})") from None


class CheckpointManager:
    """Step checkpoints of one run folder: ``<prefix>_<step>.pt`` (8+ digits), the newest ``keep``
    of them kept, and ``last.pt`` pointing at the newest.

    Args:
        folder: the run folder (created on the first save).
        keep: how many step files to keep (>= 1); older ones are deleted after each save.
        prefix: file name prefix of the step files.
        last_name: the "newest" alias, rewritten at every save (None: no alias).

    Only one process (rank 0) should save; every rank may call ``latest_valid``.
    """

    def __init__(self, folder: str | os.PathLike, keep: int = 3, prefix: str = "ckpt", last_name: str | None = "last.pt"):
        if keep < 1:
            raise ValueError(f"keep must be >= 1 (the newest checkpoint is always kept), got {keep}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", prefix):
            raise ValueError(f"prefix must be a plain file name part, got {prefix!r}")
        self.folder, self.keep, self.prefix, self.last_name = Path(folder), keep, prefix, last_name
        self._pattern = re.compile(rf"{re.escape(prefix)}_(\d+)\.pt")

    def path_for(self, step: int) -> Path:
        return self.folder / f"{self.prefix}_{step:08d}.pt"

    @property
    def last_path(self) -> Path | None:
        return self.folder / self.last_name if self.last_name else None

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Step files in the folder as (step, path), newest first."""
        if not self.folder.is_dir():
            return []
        found = []
        for p in self.folder.iterdir():
            m = self._pattern.fullmatch(p.name)
            if m and p.is_file():
                found.append((int(m.group(1)), p))
        return sorted(found, reverse=True)

    def has_checkpoint(self) -> bool:
        """True when the folder holds a step file or ``last.pt`` (valid or not)."""
        last = self.last_path
        return bool(self.checkpoints()) or (last is not None and last.exists())

    def remove_stale_tmp(self) -> list[Path]:
        """Delete temporary files that a killed ``save_atomic`` left behind in the folder."""
        removed = []
        if self.folder.is_dir():
            for p in self.folder.glob(".*.tmp"):
                if p.is_file():
                    p.unlink(missing_ok=True)
                    removed.append(p)
        return removed

    def save(self, obj, step: int, *, check_finite: Iterable[str] = ("model", "ema")) -> Path:
        """Write ``obj`` as the step-``step`` checkpoint, point ``last.pt`` at it, delete old ones.

        ``check_finite`` names entries of ``obj`` (state dicts) whose floating tensors must all be
        finite; if one is not, ``NonFiniteError`` is raised and nothing is written, so a diverged
        model never replaces a good checkpoint. Returns the step file's path."""
        if isinstance(obj, dict):
            bad = [f"{key}.{name}" for key in check_finite if obj.get(key) is not None
                   for name in nonfinite_tensors(obj[key])]
            if bad:
                raise NonFiniteError(f"refusing to checkpoint step {step}: non-finite values in {', '.join(bad[:5])}"
                                     + (f" and {len(bad) - 5} more tensors" if len(bad) > 5 else "")
                                     + "; the previous checkpoint is kept", step=step)
        path = save_atomic(obj, self.path_for(step))
        if self.last_name:
            self._alias(path, self.folder / self.last_name)
        for _, old in self.checkpoints()[self.keep:]:
            old.unlink(missing_ok=True)
        return path

    def _alias(self, src: Path, dst: Path) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
        os.close(fd)
        os.unlink(tmp)
        try:
            try:
                os.link(src, tmp)
            except OSError:  # no hard links on this file system: copy
                shutil.copyfile(src, tmp)
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
            os.replace(tmp, dst)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        _fsync_dir(dst.parent)

    def retire_newer(self, step: int) -> list[Path]:
        """Rename step files newer than ``step`` to ``<name>.retired`` (and point ``last.pt`` at the
        newest remaining one). Call it (on rank 0) after resuming from ``step``: the newer files are
        damaged or belong to an abandoned continuation, and must neither be resumed from later nor
        push the new run's checkpoints out of the rotation. Returns the new paths."""
        retired = []
        for s, p in self.checkpoints():
            if s > step:
                target = p.with_name(p.name + ".retired")
                os.replace(p, target)
                retired.append(target)
        last, remaining = self.last_path, self.checkpoints()
        if retired and last is not None and last.exists():
            if remaining:
                self._alias(remaining[0][1], last)
            elif any(_same_file(last, r) for r in retired):
                last.unlink()
        return retired

    def candidates(self) -> list[Path]:
        """Files ``latest_valid`` tries, in order: step files newest first, then ``last.pt`` when it
        is not one of them (runs written before step files existed)."""
        paths = [p for _, p in self.checkpoints()]
        last = self.last_path
        if last is not None and last.is_file() and not any(_same_file(last, p) for p in paths):
            paths.append(last)
        return paths

    def latest_valid(self, map_location="cpu") -> tuple[Path, dict] | None:
        """The newest checkpoint that reads and verifies, as (path, loaded object); None when the
        folder holds none at all. Damaged files are skipped with a warning; if every file is
        damaged, ``CheckpointError`` lists them."""
        errors = []
        for p in self.candidates():
            try:
                obj = load_checkpoint(p, map_location)
            except (CheckpointError, FileNotFoundError) as e:
                log.warning("skipping checkpoint %s: %s", p, e)
                errors.append(str(e))
                continue
            if errors:
                log.warning("resuming from the older checkpoint %s (%d newer file(s) damaged)", p, len(errors))
            return p, obj
        if errors:
            raise CheckpointError(f"no valid checkpoint in {self.folder}: " + "; ".join(errors))
        return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def rng_state() -> dict:
    import random

    import numpy as np

    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
