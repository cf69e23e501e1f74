"""The checkpoint file: what it holds, the one atomic writer, and the one reader.

Format (``FORMAT_VERSION``). A ``botnet train`` checkpoint is a ``torch.save``d dict:

- ``format_version`` (absent: 1); a reader refuses a newer format than its own;
- ``kind``: the task that wrote it ("classification", "detection", ...);
- ``model_name``, ``config`` (the recipe as a dict), ``model`` (the state dict), ``img_size``;
- the task's data info: ``classes`` (and ``cat_ids`` for detection);
- ``epoch``, ``step``, ``step_in_epoch``, ``metrics`` and the task's best metric;
- what a run resumes from: ``optimizer``, ``scheduler``, ``scaler``, ``ema``, ``nonfinite``, ``rng``.

A weight file (``.safetensors``, or a ``.pt`` / ``.pth`` state dict) holds only the state dict; its
model card ``<stem>.json`` beside it says the rest (``kind``, ``model_name``, ``classes``, ...).

Writing (``write_atomic``, ``save_atomic``): into a temporary file in the same folder, fsync, then
an atomic rename over the old file and an fsync of the folder, so a reader sees the previous
complete file or the new complete one. ``save_atomic`` stores a sha256 of the torch file at its end
(as the zip archive's comment, so ``torch.load`` still reads the file as it is). A full disk
(ENOSPC / EDQUOT) raises ``DiskFullError`` naming the mount point and the file, after removing the
temporary file.

Reading (``load_checkpoint``, ``open_checkpoint``), the safe-load policy: a torch file's sha256, when
it has one, is checked before anything is unpickled; a damaged or truncated file raises
``CheckpointError`` (a ``ValueError``) naming the file. Torch files are read with
``torch.load(weights_only=False)`` (training checkpoints hold RNG states): read only files you
trust, or use safetensors, which hold tensors only. ``open_checkpoint`` reads a file once and says
what it is (a ``Checkpoint``); every command and library reader goes through it.

This module imports only torch and the standard library: models, detection, engine, inference and
the CLI all import it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = [
    "FORMAT_VERSION", "Checkpoint", "CheckpointError", "DiskFullError", "card_path", "disk_full_error",
    "checkpoint_of", "file_sha256", "fsync_path", "is_disk_full", "is_state_dict", "load_checkpoint", "mount_point", "open_checkpoint", "read_card",
    "require_file", "save_atomic", "verify_checkpoint", "write_atomic",
]

log = logging.getLogger("botnet.checkpoint")

FORMAT_VERSION = 1  # the layout above; files that record no "format_version" are version 1
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


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a whole file (read in 1 MiB chunks)."""
    with open(path, "rb") as f:
        return _sha256(f, os.fstat(f.fileno()).st_size)


# writing -----------------------------------------------------------------------------------------
def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a folder (a no-op where folders cannot be opened, or fsync fails)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, write: Callable[[str], Any]) -> Path:
    """The one atomic writer: ``write(tmp)`` fills a temporary file beside ``path``, which is then
    fsynced and renamed over ``path`` (and the folder fsynced). Creates the parent folder. On any
    error (or a kill) the old ``path``, if any, is untouched; a stray ``.<name>.*.tmp`` may remain
    after a kill (``CheckpointManager`` removes those). Returns ``path`` as a ``Path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if is_disk_full(e):
            raise disk_full_error(path) from None
        raise
    fsync_path(path.parent)
    return path


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


def _save_sealed(obj, tmp: str) -> None:
    with open(tmp, "w+b") as f:
        torch.save(obj, f)
        _seal(f)


def save_atomic(obj, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` with ``write_atomic``, a sha256 of the file stored in it."""
    return write_atomic(path, lambda tmp: _save_sealed(obj, tmp))


# reading -----------------------------------------------------------------------------------------
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


def load_checkpoint(path: str | os.PathLike, map_location="cpu", *, verify: bool = True, what: str = "checkpoint",
                    mmap: bool = False):
    """The object in a torch file (written by ``save_atomic`` or any ``torch.save``) or the tensors of
    a .safetensors file: the one place files are unpickled.

    With ``verify`` a torch file's stored sha256 is checked first; ``mmap`` maps a torch file's
    tensors instead of reading them (for a glance at a few entries). Raises ``FileNotFoundError`` when
    the file is missing and ``CheckpointError`` (a ``ValueError``) when it is damaged, truncated or
    not a torch / safetensors file; the message names the file (as ``what``)."""
    path = require_file(path, what)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path, device=str(map_location))
        if verify:
            verify_checkpoint(path)
        return torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)
    except CheckpointError:
        raise
    except Exception as e:  # truncated or not a torch file
        why = " ".join("".join(c if c.isprintable() else " " for c in str(e)).split())[:200]  # one printable line
        raise CheckpointError(f"{what} {str(path)!r} cannot be read ({type(e).__name__}: {why})") from None


def card_path(weights_path: str | os.PathLike) -> Path:
    """The model card beside a weight file: ``dir/name.safetensors`` -> ``dir/name.json``."""
    return Path(weights_path).with_suffix(".json")


def read_card(weights_path: str | os.PathLike, check_hash: bool = True) -> dict:
    """The card beside ``weights_path``; warns when the weight file's sha256 differs from it."""
    path = card_path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"{Path(weights_path).name} has no model card {path.name} beside it "
                                f"(save_weights writes one); without it the architecture is unknown")
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"model card {path} is not valid JSON ({e})") from None
    if check_hash and card.get("sha256") and Path(weights_path).is_file():
        digest = file_sha256(Path(weights_path))
        if digest != card["sha256"]:
            log.warning("%s: sha256 %s... differs from its card's %s...: the weights were changed after the card was written",
                        weights_path, digest[:12], card["sha256"][:12])
    return card


def is_state_dict(obj) -> bool:
    """A non-empty dict of tensors (a model's weights)."""
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """What one file holds, read once.

    ``kind``: "train" (a ``botnet train`` checkpoint), "weights" (a weight file with its model card)
    or "other" (any other torch object: a bare state dict, a tensor, ...). ``task``: the model's task
    ("classification", "detection", ...; None for "other"). ``config``: the recipe as a dict (a
    detection card carries it too). ``state``: the model's state dict (name -> tensor). ``content``:
    the object as loaded (the whole training dict, which a resume reads). ``card``: the model card
    of a weight file."""

    path: Path | None
    kind: str
    task: str | None
    model_name: str | None
    config: dict | None
    state: dict | None
    classes: list | None
    content: Any
    card: dict | None = None

    @property
    def where(self) -> str:
        """The file's path for messages ("the checkpoint" for an object that came from no file)."""
        return str(self.path) if self.path is not None else "the checkpoint"

    @property
    def epoch(self) -> int | None:
        return self.get("epoch")

    @property
    def step(self) -> int | None:
        return self.get("step")

    @property
    def metrics(self) -> dict:
        return self.get("metrics") or {}

    def get(self, key: str, default=None):
        """Another entry of the training dict (``step``, ``epoch``, ``cat_ids``, ``metrics``, ...), or
        of the card of a weight file."""
        source = self.content if self.kind == "train" else (self.card or {})
        return source.get(key, default)

    def require(self, task: str, *, train: bool = False) -> Checkpoint:
        """This checkpoint when it holds a ``task`` model (written by ``botnet train`` with ``train``);
        a one-line ValueError otherwise."""
        if self.task != task or (train and self.kind != "train"):
            found = self.task if self.task is not None or isinstance(self.content, dict) else type(self.content).__name__
            found = f"{found} weights" if self.kind == "weights" else found
            raise ValueError(f"{self.where} is not a {task} checkpoint of botnet train (kind: {found!r})")
        return self

    def model_state(self, use_ema: bool = False) -> dict:
        """The model's state dict, or with ``use_ema`` the EMA weights of a training checkpoint
        (``AveragedModel``'s "module." names, its ``n_averaged`` counter dropped)."""
        if not use_ema:
            return self.state or {}
        ema = self.get("ema") if self.kind == "train" else None
        if not ema:
            raise ValueError(f"{self.where} has no EMA weights (botnet train writes them with run.ema=true)")
        return {k[len("module."):]: v for k, v in ema.items() if k.startswith("module.")}

    def as_dict(self) -> dict:
        """The training dict, or for a weight file its card plus "model" (the state dict)."""
        if self.kind == "train":
            return self.content
        return {**(self.card or {}), "model": self.state}


def checkpoint_of(content, path: str | os.PathLike | None = None, card: dict | None = None) -> Checkpoint:
    """The ``Checkpoint`` of an object already loaded (``card``: the model card beside its file)."""
    path = Path(path) if path is not None else None
    kind = content.get("kind") if isinstance(content, dict) and isinstance(content.get("kind"), str) else None
    if isinstance(content, dict) and "model_name" in content and (kind or isinstance(content.get("model"), dict)):
        version = content.get("format_version", 1)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise CheckpointError(f"{path or 'the checkpoint'} has checkpoint format {version!r}; this botnet reads "
                                  f"formats up to {FORMAT_VERSION} (a newer botnet wrote it)")
        return Checkpoint(path, "train", kind or "classification", content["model_name"], content.get("config"),
                          content.get("model"), content.get("classes"), content)
    if card is not None and isinstance(content, dict):
        return Checkpoint(path, "weights", card.get("kind", "classification"), card.get("model_name"),
                          card.get("config"), content, card.get("classes"), content, card)
    return Checkpoint(path, "other", kind, None, None, None, None, content)


def open_checkpoint(path: str | os.PathLike, *, strict: bool = True) -> Checkpoint:
    """Read ``path`` once: a ``botnet train`` checkpoint, or a weight file (.safetensors / .pt / .pth)
    with its model card beside it. Raises ``FileNotFoundError`` (the file, or a .safetensors file's
    card, is missing), ``CheckpointError`` (unreadable, damaged) and, with ``strict``, a ValueError
    for a file that is neither (without it, such a file is a ``Checkpoint`` of kind "other")."""
    path = require_file(path, "checkpoint")
    card = read_card(path) if path.suffix.lower() == ".safetensors" else None  # its card first: it says what it is
    content = load_checkpoint(path)
    if card is None and is_state_dict(content) and card_path(path).is_file():
        card = read_card(path)
    ckpt = checkpoint_of(content, path, card)
    if strict and ckpt.task is None:
        raise ValueError(f"{path} is not a botnet checkpoint: expected a `botnet train` / `det-train` checkpoint "
                         "or a weight file with its model card beside it")
    return ckpt
