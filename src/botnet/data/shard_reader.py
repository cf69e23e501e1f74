"""Reading the tar shards of one split (written by ``botnet.data.shards.write_shards``): the index,
random access to sample i, and the classification dataset over them.

``load_index`` checks a ``{split}.wids.json`` before it is used (a JSON object of kind
``wids-shard-index-v1`` with a list of shards, each a url and a sample count); ``ShardReader``
checks that every shard it lists is there at the recorded size (a truncated or replaced shard is
one ``ValueError`` naming it, before any training) and reads sample i by seeking (wids'
``IndexedTarSamples``, one per shard, opened lazily in each process). A sample that cannot be
read (a damaged tar, a ``.cls`` that is not a class index, an image that does not decode) is
skipped like an unreadable image file: ``None``, counted in ``num_skipped``, logged once with the
shard member (``train-000001.tar:000000042.jpg``) and what was expected.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from .folder import DECODE_ERRORS, SkipsUnreadable, load_rgb

__all__ = ["KIND", "require_shard_libraries", "load_index", "ShardError", "ShardReader", "ShardImageDataset",
           "sample_members"]

KIND = "wids-shard-index-v1"
OPEN_SHARDS = 16  # shards kept open per process


class ShardError(ValueError):
    """A shard, or a sample in it, that cannot be read; the message names it."""


def require_shard_libraries() -> None:
    try:
        import webdataset  # noqa: F401
        import wids  # noqa: F401
    except ImportError as e:
        raise ValueError(f"sharded data needs webdataset and wids ({e}); pip install 'botnet[shards]'") from None


def sample_members(sample: dict) -> dict:
    """A wids sample with its extensions as written ("cls", not ".cls") and bytes values."""
    return {(k if k.startswith("__") else k.lstrip(".")): (v.getvalue() if isinstance(v, io.BytesIO) else v)
            for k, v in sample.items()}


def load_index(path: str | os.PathLike) -> dict:
    """The wids index at ``path``, checked: ``FileNotFoundError`` when missing, ``ValueError`` naming
    the file and what was expected when it is not a shard index."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"shard index {path} not found (write it with `botnet shards`)")
    try:
        index = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"shard index {path} is not valid JSON ({e})") from None
    expected = (f"expected a JSON object with \"__kind__\": {KIND!r} and a \"shardlist\" of "
                "{\"url\", \"nsamples\"} entries (written by `botnet shards`)")
    if not isinstance(index, dict) or index.get("__kind__") != KIND:
        found = type(index).__name__ if not isinstance(index, dict) else f"__kind__ {index.get('__kind__')!r}"
        raise ValueError(f"shard index {path} is not a wids shard index (found a JSON {found}); {expected}")
    shards = index.get("shardlist")
    if not isinstance(shards, list) or not shards:
        raise ValueError(f"shard index {path} lists no shards; {expected}")
    for k, s in enumerate(shards):
        ok = (isinstance(s, dict) and isinstance(s.get("url"), str) and isinstance(s.get("nsamples"), int)
              and not isinstance(s.get("nsamples"), bool) and s["nsamples"] >= 0)
        if not ok:
            raise ValueError(f"shard index {path}: shardlist entry {k} is {json.dumps(s)[:80]}; {expected}")
    if not isinstance(index.get("botnet", {}), dict):
        raise ValueError(f"shard index {path}: its \"botnet\" entry is not an object; {expected}")
    return index


class ShardReader(SkipsUnreadable):
    """Random access to the samples of one split's shards (see the module docstring). ``kind``:
    the "botnet" kind the index must record ("classification", "coco")."""

    skipped_kind = "sample"

    def __init__(self, index_file: str | os.PathLike, kind: str):
        require_shard_libraries()
        self.index_file = Path(index_file).expanduser()
        self.index = load_index(self.index_file)
        self.meta = self.index.get("botnet") or {}
        if self.meta.get("kind") != kind:
            raise ValueError(f"{self.index_file} holds {self.meta.get('kind', 'unknown')!r} shards, not {kind}")
        self.urls = [s["url"] for s in self.index["shardlist"]]
        self.starts = list(itertools.accumulate((s["nsamples"] for s in self.index["shardlist"]), initial=0))
        self._check_files()
        self.num_skipped = 0
        self._open: OrderedDict = OrderedDict()

    def _check_files(self) -> None:
        for s in self.index["shardlist"]:
            path = self.index_file.parent / s["url"]
            if not path.is_file():
                raise ValueError(f"shard {path} listed in {self.index_file} is missing")
            size = path.stat().st_size
            if isinstance(s.get("filesize"), int) and size != s["filesize"]:
                raise ValueError(f"shard {path} is {size} bytes but {self.index_file} records {s['filesize']}: "
                                 "truncated or replaced; write the shards again (`botnet shards`) or check them "
                                 "with `botnet shards --verify-only`")

    def __len__(self) -> int:
        return self.starts[-1]

    def locate(self, i: int) -> tuple[int, int]:
        """(shard number, sample number in that shard) of sample ``i``."""
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} out of range for {len(self)} samples")
        k = bisect_right(self.starts, i) - 1
        return k, i - self.starts[k]

    def _shard(self, k: int):
        from wids.wids import IndexedTarSamples

        if k in self._open:
            self._open.move_to_end(k)
            return self._open[k]
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # wids prints a header it cannot parse
                tar = IndexedTarSamples(path=str(self.index_file.parent / self.urls[k]))
        except Exception as e:  # a damaged header: wids raises whatever its parser meets
            raise ShardError(f"shard {self.urls[k]} cannot be read as a tar file ({type(e).__name__}: {e})") from None
        self._open[k] = tar
        if len(self._open) > OPEN_SHARDS:
            self._open.popitem(last=False)[1].close()
        return tar

    def read(self, i: int, only: str | None = None) -> dict:
        """Sample ``i`` as stored ({"__key__", ext: bytes, ...}; ``only``: just that member and the
        key). Raises ``ShardError`` naming the shard and the sample when it cannot be read."""
        k, j = self.locate(i)
        tar = self._shard(k)
        try:
            by_index = getattr(tar.reader, "by_index", None)  # wids' mmap reader: (name, offset, size) per member
            if only is None or by_index is None:
                return sample_members(tar[j])
            m = next(m for m in tar.samples[j] if by_index[m][0].rsplit(".", 1)[-1] == only)
            name, data = tar.reader.get_at_index(m)
            return {"__key__": name.rsplit(".", 1)[0], only: bytes(data)}
        except Exception as e:
            raise ShardError(f"sample {j} of shard {self.urls[k]} cannot be read ({type(e).__name__}: {e})") from None

    def where(self, i: int, sample: dict | None = None, ext: str = "") -> str:
        """'train-000001.tar:000000042.jpg': the shard member of sample ``i`` for messages."""
        k, j = self.locate(i)
        key = (sample or {}).get("__key__") or f"sample {j}"
        return f"{self.urls[k]}:{key}" + (f".{ext}" if ext else "")

    def __getstate__(self):  # DataLoader workers open their own shards
        state = dict(self.__dict__)
        state["_open"] = OrderedDict()
        return state


class ShardImageDataset(ShardReader):
    """A map-style dataset over the classification shards of one split: ``dataset[i]`` is
    ``(image, target)`` as from ``ImageFolderSafe`` (an RGB PIL image, or what ``transform`` makes
    of it, and the class index), or ``None`` when the sample cannot be used (skipped and counted,
    see the module docstring). ``classes`` and ``num_skipped`` as in ImageFolder."""

    def __init__(self, index_file: str | os.PathLike, transform: Callable | None = None):
        super().__init__(index_file, "classification")
        self.classes = list(self.meta.get("classes") or [])
        if not self.classes:
            raise ValueError(f"{self.index_file} names no classes (its \"botnet\" entry lacks \"classes\")")
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.transform = transform

    def raw(self, i: int) -> dict:
        """Sample ``i`` as stored: {"__key__", ext: bytes, "cls": bytes, ...}."""
        return self.read(i)

    def target(self, i: int, sample: dict) -> int:
        """The class index of a sample; ``ValueError`` saying what was expected."""
        raw = sample.get("cls")
        try:
            target = int(raw.decode() if isinstance(raw, bytes) else raw)
        except (TypeError, ValueError, UnicodeDecodeError):
            target = None
        if target is None or not 0 <= target < len(self.classes):
            raise ValueError(f"its .cls is {raw!r}; expected a class index 0..{len(self.classes) - 1}")
        return target

    def __getitem__(self, i: int):
        from PIL import Image


        try:
            sample = self.read(i)
        except ShardError as e:
            return self.skip(self.where(i), str(e))
        ext = next((k for k in sample if not k.startswith("__") and k != "cls"), None)
        try:
            target = self.target(i, sample)
        except ValueError as e:
            return self.skip(self.where(i, sample, "cls"), str(e))
        if ext is None:
            return self.skip(self.where(i, sample), "no image member")
        try:
            image = load_rgb(io.BytesIO(sample[ext]))
        except (*DECODE_ERRORS, Image.UnidentifiedImageError) as e:
            return self.skip(self.where(i, sample, ext), f"{type(e).__name__}: {e}")
        if self.transform is not None:
            image = self.transform(image)
        return image, target
