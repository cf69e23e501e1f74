"""The built-in dataset: procedurally drawn shapes, generated once into a local cache.

``builtin_dataset_root()`` writes an ImageFolder tree ``<root>/{train,val}/<class>/*.png`` of
64x64 RGB images (see ``shapes.py``) and returns ``<root>``; later calls reuse it. Needs no
download and is deterministic: image ``i`` of class ``c`` in split ``s`` is drawn from the seed
``(SEED, s, c, i)``, so every machine gets the same pixels.

Generation is atomic. The tree is written into a temporary directory next to the root, a
``COMPLETE`` marker is written last, and the directory is renamed into place; only a root whose
marker matches is trusted, anything else (an interrupted or older generation) is replaced. A file
lock serializes concurrent generations of the same tree on POSIX systems.
``build_cached_tree`` implements this; the COCO-format built-in dataset (``builtin_coco.py``) uses it
too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from .shapes import SHAPE_NAMES, draw_shape_image

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

__all__ = ["BUILTIN_CLASSES", "GENERATOR_VERSION", "build_cached_tree", "builtin_dataset_root", "default_cache_dir"]

log = logging.getLogger("botnet.data")

BUILTIN_CLASSES: tuple[str, ...] = SHAPE_NAMES
GENERATOR_VERSION = 2
SEED = 2101_11605
IMAGE_SIZE = 64
PER_CLASS_TRAIN = 600
PER_CLASS_VAL = 100
MARKER = "COMPLETE"
SPLITS = ("train", "val")


def default_cache_dir() -> Path:
    """``$BOTNET_CACHE`` if set, else ``~/.cache/botnet``."""
    env = os.environ.get("BOTNET_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "botnet"


def _root_name(per_class_train: int, per_class_val: int) -> str:
    name = f"shapes-v{GENERATOR_VERSION}"
    if (per_class_train, per_class_val) != (PER_CLASS_TRAIN, PER_CLASS_VAL):
        name += f"-train{per_class_train}-val{per_class_val}"
    return name


def _marker_text(per_class_train: int, per_class_val: int) -> str:
    return (f"shapes generator v{GENERATOR_VERSION} seed={SEED} size={IMAGE_SIZE} "
            f"classes={len(BUILTIN_CLASSES)} train={per_class_train} val={per_class_val}\n")


def _is_complete(root: Path, marker: str) -> bool:
    try:
        return (root / MARKER).read_text() == marker
    except OSError:
        return False


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``path`` (no-op without ``fcntl``); released on process death."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _readme(per_class_train: int, per_class_val: int) -> str:
    return "\n".join([
        f"Built-in BoTNet shapes dataset, generator version {GENERATOR_VERSION} (botnet.data.shapes).",
        "",
        f"{len(BUILTIN_CLASSES)} classes, one folder each (ImageFolder layout):",
        "  " + ", ".join(BUILTIN_CLASSES),
        f"train/<class>/*.png: {per_class_train} images per class; val/<class>/*.png: {per_class_val}.",
        f"Images are {IMAGE_SIZE}x{IMAGE_SIZE} RGB PNGs: one class shape with random size, position,",
        "rotation, aspect, fill colour/texture and outline, on a random noisy solid, gradient, blotchy",
        "or striped background with small distractor lines, dots and arcs.",
        f"Deterministic: image i of class c in split s is drawn with numpy seed ({SEED}, s, c, i).",
        "",
    ])


def _write_tree(out: Path, per_class_train: int, per_class_val: int) -> None:
    """Draw every image of both splits into ``out/<split>/<class>/<class>_NNNN.png``."""
    for split_index, (split, count) in enumerate(zip(SPLITS, (per_class_train, per_class_val))):
        for class_index, name in enumerate(BUILTIN_CLASSES):
            folder = out / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                rng = np.random.default_rng([SEED, split_index, class_index, i])
                draw_shape_image(name, rng, IMAGE_SIZE).save(folder / f"{name}_{i:04d}.png")
    (out / "README.txt").write_text(_readme(per_class_train, per_class_val))


def _remove(path: Path) -> None:
    """Rename ``path`` out of the way (atomic), then delete it."""
    trash = path.with_name(f".{path.name}.trash-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def build_cached_tree(cache_dir: str | os.PathLike | None, name: str, marker: str,
                      write: Callable[[Path], int], what: str) -> Path:
    """Return ``<cache_dir>/<name>``, first filling it with ``write(tmp_dir)`` unless it is complete.

    The shared cache logic of the built-in datasets: a root is trusted only if its ``COMPLETE``
    file holds exactly ``marker``; otherwise ``write`` fills a fresh temporary directory next to
    it (``write`` returns the number of images it wrote, for the log), the marker is written last
    and the directory is renamed into place, replacing an incomplete or outdated root. A file lock
    ``<cache_dir>/.<name>.lock`` serializes concurrent generations; temporary directories left by
    interrupted runs are removed. If ``write`` raises, nothing is left behind. ``cache_dir``
    defaults to ``default_cache_dir()``; ``what`` names the dataset in log messages.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    root = cache / name
    if _is_complete(root, marker):
        return root

    cache.mkdir(parents=True, exist_ok=True)
    with _lock(cache / f".{name}.lock"):
        if _is_complete(root, marker):  # another process finished it while we waited
            return root
        for stale in cache.glob(f".{name}.tmp-*"):  # left by interrupted runs; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        log.info("generating the %s in %s", what, root)
        start = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=cache))
        try:
            tmp.chmod(0o755)  # mkdtemp makes it private (0o700)
            count = write(tmp)
            (tmp / MARKER).write_text(marker)  # last: only a finished tree has it
            if root.exists():
                _remove(root)  # incomplete or from another generator version
            os.rename(tmp, root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        log.info("generated %d images in %.1f s", count, time.perf_counter() - start)
    return root


def builtin_dataset_root(cache_dir: str | os.PathLike | None = None,
                         per_class_train: int = PER_CLASS_TRAIN,
                         per_class_val: int = PER_CLASS_VAL) -> Path:
    """Return the root of the built-in shapes dataset, generating it first if needed.

    The root is ``<cache_dir>/shapes-v2`` for the default sizes (600 train + 100 val images per
    class, 7000 images, about 15 s on one CPU core) and ``shapes-v2-train{N}-val{M}`` otherwise.
    ``cache_dir`` defaults to ``$BOTNET_CACHE`` or ``~/.cache/botnet``.
    """
    if per_class_train < 1 or per_class_val < 1:
        raise ValueError(f"per_class_train and per_class_val must be >= 1, got {per_class_train}, {per_class_val}")

    def write(out: Path) -> int:
        _write_tree(out, per_class_train, per_class_val)  # looked up at call time (tests patch it)
        return len(BUILTIN_CLASSES) * (per_class_train + per_class_val)

    return build_cached_tree(cache_dir, _root_name(per_class_train, per_class_val),
                             _marker_text(per_class_train, per_class_val), write, "built-in shapes dataset")
