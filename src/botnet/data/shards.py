"""Random-access tar shards for ImageNet- and COCO-scale data: WebDataset tars with a wids index.

A shard folder holds, per split, ``{split}-000000.tar``, ``{split}-000001.tar``, ... written with
webdataset's ``ShardWriter`` (WebDataset conventions: the members of one sample share a key,
``000000042.jpg`` + ``000000042.cls``), and ``{split}.wids.json``, a wids shard index
(``"__kind__": "wids-shard-index-v1"``: every shard's url relative to the index, sample count,
size and MD5), plus a ``"botnet"`` entry (kind, classes, the source). ``wids.ShardListDataset``
reads sample i from whichever shard holds it by seeking, so shards are a map-style dataset: the
global-batch sampler, seeded augmentation and exact mid-epoch resume work on them unchanged.

- Classification: ``{key}.{ext}`` is the image file's bytes as they were (no re-encoding) and
  ``{key}.cls`` the class index; samples are written in ImageFolder order, so index i of the
  shards is index i of the folder (same image, same label, same batches).
- COCO: ``{key}.{ext}`` the image bytes and ``{key}.json`` {"image": the image entry,
  "annotations": its annotations}; the index keeps the categories.

``build_dataset`` (botnet.data.folder) opens ``ROOT/{split}.wids.json`` when there is one, so a
run takes ``--data SHARDS`` as it takes an image folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image

__all__ = ["INDEX_SUFFIX", "build_dataset", "index_path", "has_shards", "write_shards", "imagefolder_samples", "coco_samples",
           "ShardImageDataset", "verify_shards"]

log = logging.getLogger("botnet")
INDEX_SUFFIX = ".wids.json"
KIND = "wids-shard-index-v1"


def _require():
    try:
        import webdataset  # noqa: F401
        import wids  # noqa: F401
    except ImportError as e:
        raise ValueError(f"sharded data needs webdataset and wids ({e}); pip install 'botnet[shards]'") from None


def index_path(root: str | os.PathLike, split: str) -> Path:
    """``ROOT/{split}.wids.json``."""
    return Path(root).expanduser() / f"{split}{INDEX_SUFFIX}"


def has_shards(root: str | os.PathLike, split: str) -> bool:
    return index_path(root, split).is_file()


def imagefolder_samples(folder: str | os.PathLike) -> tuple[list[str], Iterator[tuple[dict, None]]]:
    """The classes of ``folder`` (``<class>/*``, ImageFolder order) and its samples as
    ({ext: bytes, "cls": bytes}, None), in ImageFolder's order."""
    from .folder import ImageFolderSafe

    ds = ImageFolderSafe(folder)

    def gen():
        for path, target in ds.samples:
            ext = Path(path).suffix.lower().lstrip(".") or "img"
            yield {ext: Path(path).read_bytes(), "cls": str(target).encode()}, None

    return list(ds.classes), gen()


def coco_samples(images_dir: str | os.PathLike, ann_file: str | os.PathLike) -> tuple[dict, Iterator[tuple[dict, None]]]:
    """The COCO metadata without images/annotations ({"categories", "info", ...}) and the samples
    ({ext: image bytes, "json": {"image", "annotations"}}, None) in image-id order."""
    data = json.loads(Path(ann_file).read_text())
    by_image: dict[int, list] = {}
    for a in data.get("annotations", []):
        by_image.setdefault(a["image_id"], []).append(a)
    images = sorted(data["images"], key=lambda im: im["id"])

    def gen():
        for im in images:
            path = Path(images_dir) / im["file_name"]
            ext = path.suffix.lower().lstrip(".") or "img"
            record = {"image": im, "annotations": by_image.get(im["id"], [])}
            yield {ext: path.read_bytes(), "json": json.dumps(record).encode()}, None

    meta = {k: v for k, v in data.items() if k not in ("images", "annotations")}
    return meta, gen()


def write_shards(samples: Iterable[tuple[dict, Any]], out: str | os.PathLike, split: str, meta: dict,
                 max_count: int = 10000, max_bytes: float = 1e9) -> Path:
    """Write ``samples`` ({ext: bytes} each) as ``OUT/{split}-%06d.tar`` shards of at most
    ``max_count`` samples / ``max_bytes`` bytes, then the wids index ``OUT/{split}.wids.json``
    (``meta`` goes into its "botnet" entry). Returns the index path."""
    _require()
    import webdataset as wds
    from wids.wids import compute_file_md5sum

    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    count = 0
    with wds.ShardWriter(str(out / f"{split}-%06d.tar"), maxcount=max_count, maxsize=max_bytes, verbose=0,
                         encoder=False, post=written.append) as sink:
        for i, (members, _) in enumerate(samples):
            sink.write({"__key__": f"{i:09d}", **members})
            count += 1
    if not count:
        raise ValueError(f"no samples to write for split {split!r}")
    counts = _count_samples([Path(p) for p in written])
    shardlist = [{"url": Path(p).name, "nsamples": n, "filesize": Path(p).stat().st_size,
                  "md5sum": compute_file_md5sum(str(p))} for p, n in zip(written, counts)]
    index = {"__kind__": KIND, "wids_version": 1, "name": split, "shardlist": shardlist,
             "botnet": {**meta, "split": split, "samples": count}}
    path = index_path(out, split)
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(index, f, indent=1)
    os.replace(tmp, path)
    return path


def _count_samples(paths: list[Path]) -> list[int]:
    from wids.wids import IndexedTarSamples

    counts = []
    for p in paths:
        tar = IndexedTarSamples(path=str(p))
        counts.append(len(tar))
        tar.close()
    return counts


def _members(sample: dict) -> dict:
    """A wids sample with its extensions as written ("cls", not ".cls") and bytes values."""
    return {(k if k.startswith("__") else k.lstrip(".")): (v.getvalue() if isinstance(v, io.BytesIO) else v)
            for k, v in sample.items()}


def _load_index(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"shard index {path} not found (write it with `botnet shards`)")
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"shard index {path} is not valid JSON ({e})") from None
    if index.get("__kind__") != KIND or not index.get("shardlist"):
        raise ValueError(f"{path} is not a wids shard index with shards (__kind__ {KIND!r})")
    return index


class ShardImageDataset:
    """A map-style dataset over the shards of one split: ``dataset[i]`` is ``(image, target)`` as
    from ``ImageFolderSafe`` (an RGB PIL image, or what ``transform`` makes of it, and the class
    index), or ``None`` when the image cannot be decoded. ``classes``, ``targets`` and
    ``num_skipped`` as in ImageFolder; the shards are opened lazily (in each DataLoader worker)."""

    def __init__(self, index_file: str | os.PathLike, transform: Callable | None = None):
        _require()
        self.index_file = Path(index_file).expanduser()
        self.index = _load_index(self.index_file)
        meta = self.index.get("botnet", {})
        if meta.get("kind") != "classification":
            raise ValueError(f"{self.index_file} holds {meta.get('kind', 'unknown')!r} shards, not classification")
        self.classes = list(meta["classes"])
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.transform = transform
        self.num_skipped = 0
        self._length = sum(int(s["nsamples"]) for s in self.index["shardlist"])
        self._ds = None

    def __len__(self) -> int:
        return self._length

    def _dataset(self):
        if self._ds is None:
            import wids

            base = self.index_file.parent
            shards = [{**s, "url": str(base / s["url"])} for s in self.index["shardlist"]]
            with contextlib.redirect_stderr(io.StringIO()):  # wids prints a summary line on every open
                self._ds = wids.ShardListDataset(shards, localname=str, transformations=[], lru_size=16)
        return self._ds

    def raw(self, i: int) -> dict:
        """Sample ``i`` as stored: {"__key__", ext: bytes, "cls": bytes, ...}."""
        if not 0 <= i < self._length:
            raise IndexError(f"sample {i} out of range for {self._length} samples")
        return _members(self._dataset()[i])

    def __getitem__(self, i: int):
        from .folder import DECODE_ERRORS, load_rgb

        sample = self.raw(i)
        target = int(sample["cls"])
        ext = next(k for k in sample if not k.startswith("__") and k != "cls")
        try:
            image = load_rgb(io.BytesIO(sample[ext]))
        except DECODE_ERRORS as e:
            self.num_skipped += 1
            log.warning("skipping unreadable image %s in %s: %s: %s", sample["__key__"], sample.get("__shard__"),
                        type(e).__name__, e)
            return None
        if self.transform is not None:
            image = self.transform(image)
        return image, target

    def __getstate__(self):  # DataLoader workers open their own shards
        state = dict(self.__dict__)
        state["_ds"] = None
        return state

    @property
    def targets(self) -> list[int]:
        return [int(self.raw(i)["cls"]) for i in range(len(self))]


def verify_shards(index_file: str | os.PathLike, decode: bool = True) -> dict:
    """Check a split's shards against its index: every shard present, its MD5 and sample count as
    recorded, and (``decode``) every image decodable. Returns {"shards", "samples", "bad_images"};
    raises ValueError naming the first shard that does not match."""
    _require()
    from wids.wids import IndexedTarSamples, compute_file_md5sum

    path = Path(index_file).expanduser()
    index = _load_index(path)
    total, bad = 0, []
    for s in index["shardlist"]:
        shard = path.parent / s["url"]
        if not shard.is_file():
            raise ValueError(f"shard {shard} listed in {path} is missing")
        if s.get("md5sum") and compute_file_md5sum(str(shard)) != s["md5sum"]:
            raise ValueError(f"shard {shard} is damaged: its MD5 differs from the one in {path}")
        tar = IndexedTarSamples(path=str(shard))
        try:
            if len(tar) != int(s["nsamples"]):
                raise ValueError(f"shard {shard} holds {len(tar)} samples, {path} says {s['nsamples']}")
            for j in range(len(tar)) if decode else ():
                sample = _members(tar[j])
                ext = next(k for k in sample if not k.startswith("__") and k not in ("cls", "json"))
                try:
                    with Image.open(io.BytesIO(sample[ext])) as im:
                        im.load()
                except Exception as e:  # any decoder error is a finding here
                    bad.append(f"{s['url']}:{sample['__key__']}.{ext} ({type(e).__name__})")
        finally:
            tar.close()
        total += int(s["nsamples"])
    return {"shards": len(index["shardlist"]), "samples": total, "bad_images": bad}


def build_dataset(root: str | os.PathLike | None, split: str, transform: Callable | None):
    """``botnet.data.folder.build_dataset`` that also opens shards: ``ROOT/{split}.wids.json``
    when it exists (a ``ShardImageDataset``), else the image folder ``ROOT/{split}/<class>/*``."""
    from .folder import build_dataset as build_folder

    if root is not None and has_shards(root, split):
        return ShardImageDataset(index_path(root, split), transform=transform)
    return build_folder(root, split, transform)
