"""Training-state checkpoints of a run folder: rotated by step, resumed from the newest valid one.

The file format, the atomic writer (``save_atomic``) and the verified reader (``load_checkpoint``)
are those of ``botnet.checkpoint``; import them from there. A run folder
(``CheckpointManager``) holds ``ckpt_<step>.pt`` for the newest ``keep`` saves and ``last.pt``, a
hard link to (or copy of) the newest; ``latest_valid()`` returns the newest file that reads and
verifies, falling back to older ones when the newest is damaged, and ``retire_newer(step)`` sets
aside the files newer than the one a run resumed from. ``best.pt`` and other named files are
written with ``save_atomic`` directly and are not rotated. ``rng_state`` / ``set_rng_state`` save
and restore the random generators a run resumes with.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from ..checkpoint import CheckpointError, fsync_path, load_checkpoint, save_atomic
from .faults import NonFiniteError, nonfinite_tensors

__all__ = ["CheckpointManager", "rng_state", "set_rng_state"]

log = logging.getLogger("botnet")


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
        fsync_path(dst.parent)

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


    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:


    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
