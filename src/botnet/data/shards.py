"""Random-access tar shards for ImageNet- and COCO-scale data: WebDataset tars with a wids index.

A shard folder holds, per split, ``{split}-000000.tar``, ``{split}-000001.tar``, ... written with
webdataset's ``ShardWriter`` (WebDataset conventions: the members of one sample share a key,
``000000042.jpg`` + ``000000042.cls``), and ``{split}.wids.json``, a wids shard index
(``"__kind__": "wids-shard-index-v1"``: every shard's url relative to the index, sample count,
size and MD5), plus a ``"botnet"`` entry (kind, classes, the source); it is readable by all (0644
under the usual umask), as the shards are. ``botnet.data.shard_reader`` reads sample i from
whichever shard holds it by seeking (wids' ``IndexedTarSamples``), so shards are a map-style
dataset: the global-batch sampler, seeded augmentation and exact mid-epoch resume work on them
unchanged; it checks the index and the shard sizes first, and skips and counts samples it cannot
use (a damaged tar, a bad ``.cls``, an undecodable image) as image folders skip unreadable files.

- Classification: ``{key}.{ext}`` is the image file's bytes as they were (no re-encoding) and
  ``{key}.cls`` the class index; samples are written in ImageFolder order, so index i of the
  shards is index i of the folder (same image, same label, same batches).
- COCO: ``{key}.{ext}`` the image bytes and ``{key}.json`` {"image": the image entry,
  "annotations": its annotations}, in image-id order; the index keeps the categories. The split
  is named as the COCO folder (``train2017.wids.json``), so a detection recipe's
  ``data.train_split`` names it; ``botnet.data.coco_shards`` reads it.

``build_dataset`` (botnet.data.folder) opens ``ROOT/{split}.wids.json`` when there is one, so a
run takes ``--data SHARDS`` as it takes an image folder (detection: ``build_coco_dataset``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from .shard_reader import KIND, ShardError, ShardImageDataset, load_index, require_shard_libraries, sample_members
from .folder import ImageFolderSafe
from .folder import build_dataset as build_folder

__all__ = ["INDEX_SUFFIX", "build_dataset", "index_path", "has_shards", "write_shards", "imagefolder_samples", "coco_samples",
           "ShardImageDataset", "verify_shards", "check_split", "shard_files"]

INDEX_SUFFIX = ".wids.json"


def index_path(root: str | os.PathLike, split: str) -> Path:
    """``ROOT/{split}.wids.json``."""
    return Path(root).expanduser() / f"{split}{INDEX_SUFFIX}"


def has_shards(root: str | os.PathLike, split: str) -> bool:
    return index_path(root, split).is_file()


def shard_files(root: str | os.PathLike, split: str) -> list[Path]:
    """The files ``write_shards`` writes for ``split`` under ``root`` that exist: its index and tars."""
    root = Path(root).expanduser()
    found = [index_path(root, split)] if has_shards(root, split) else []
    return found + sorted(root.glob(f"{split}-[0-9][0-9][0-9][0-9][0-9][0-9].tar"))


def imagefolder_samples(folder: str | os.PathLike) -> tuple[list[str], Iterator[tuple[dict, str]]]:
    """The classes of ``folder`` (``<class>/*``, ImageFolder order) and its samples as
    ({ext: bytes, "cls": bytes}, source file), in ImageFolder's order."""

    ds = ImageFolderSafe(folder)

    def gen():
        for path, target in ds.samples:
            ext = Path(path).suffix.lower().lstrip(".") or "img"
            yield {ext: Path(path).read_bytes(), "cls": str(target).encode()}, str(path)

    return list(ds.classes), gen()


def coco_samples(images_dir: str | os.PathLike, ann_file: str | os.PathLike) -> tuple[dict, Iterator[tuple[dict, str]]]:
    """The COCO metadata without images/annotations ({"categories", "info", ...}) and the samples
    ({ext: image bytes, "json": {"image", "annotations"}}, source file) in image-id order (the
    order of ``CocoDetection``'s ids)."""
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
            yield {ext: path.read_bytes(), "json": json.dumps(record).encode()}, str(path)

    meta = {k: v for k, v in data.items() if k not in ("images", "annotations")}
    return meta, gen()


def write_shards(samples: Iterable[tuple[dict, Any]], out: str | os.PathLike, split: str, meta: dict,
                 max_count: int = 10000, max_bytes: float = 1e9) -> Path:
    """Write ``samples`` ({ext: bytes} each) as ``OUT/{split}-%06d.tar`` shards of at most
    ``max_count`` samples / ``max_bytes`` bytes, then the wids index ``OUT/{split}.wids.json``
    (``meta`` goes into its "botnet" entry). Returns the index path."""
    require_shard_libraries()
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
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # as the shards (mkstemp makes 0600 files)
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


def _sample_problem(sample: dict, meta: dict, decode: bool) -> tuple[str, str] | None:
    """(member extension, what is wrong) for a sample that training would skip, else None."""
    image_ext = next((k for k in sample if not k.startswith("__") and k not in ("cls", "json")), None)
    if meta.get("kind") == "classification":
        n = len(meta.get("classes") or [])
        raw = sample.get("cls", b"")
        text = raw.decode(errors="replace").strip() if isinstance(raw, bytes) else str(raw)
        if not (text.isdigit() and int(text) < n):
            return "cls", f"its .cls is {raw!r}; expected a class index 0..{n - 1}"
    if meta.get("kind") == "coco":
        try:
            record = json.loads(sample.get("json", b""))
            record["image"]["id"]
        except (ValueError, TypeError, KeyError) as e:
            return "json", f"its .json is not a COCO record {{\"image\", \"annotations\"}} ({type(e).__name__})"
    if image_ext is None:
        return "", "no image member"
    if decode:
        try:
            with Image.open(io.BytesIO(sample[image_ext])) as im:
                im.load()
        except Exception as e:  # any decoder error is a finding here
            return image_ext, f"does not decode ({type(e).__name__})"
    return None


def check_split(index_file: str | os.PathLike, decode: bool = True) -> tuple[dict, list[tuple[str, str, str]]]:
    """``verify_shards`` with the bad samples as (key, shard member, what is wrong)."""
    require_shard_libraries()
    from wids.wids import IndexedTarSamples, compute_file_md5sum

    path = Path(index_file).expanduser()
    index = load_index(path)
    meta, total, bad = index.get("botnet") or {}, 0, []
    for s in index["shardlist"]:
        shard = path.parent / s["url"]
        if not shard.is_file():
            raise ValueError(f"shard {shard} listed in {path} is missing")
        if s.get("md5sum") and compute_file_md5sum(str(shard)) != s["md5sum"]:
            raise ValueError(f"shard {shard} is damaged: its MD5 differs from the one in {path}")
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # wids prints a header it cannot parse
                tar = IndexedTarSamples(path=str(shard))
        except Exception as e:  # wids raises whatever its tar parser meets
            raise ShardError(f"shard {shard} cannot be read as a tar file ({type(e).__name__}: {e})") from None
        try:
            if len(tar) != s["nsamples"]:
                raise ValueError(f"shard {shard} holds {len(tar)} samples, {path} says {s['nsamples']}")
            for j in range(len(tar)):
                sample = sample_members(tar[j])
                problem = _sample_problem(sample, meta, decode)
                if problem:
                    member = f"{s['url']}:{sample['__key__']}" + (f".{problem[0]}" if problem[0] else "")
                    bad.append((sample["__key__"], member, problem[1]))
        finally:
            tar.close()
        total += s["nsamples"]
    return {"shards": len(index["shardlist"]), "samples": total, "bad_images": [f"{m} ({w})" for _, m, w in bad]}, bad


def verify_shards(index_file: str | os.PathLike, decode: bool = True) -> dict:
    """Check a split's shards against its index: every shard present, its MD5 and sample count as
    recorded, every ``.cls`` a class index (every ``.json`` a COCO record), and (``decode``) every
    image decodable. Returns {"shards", "samples", "bad_images": ["shard.tar:key.ext (what)", ...]}
    (the samples training skips); raises ValueError naming the first shard that does not match."""
    return check_split(index_file, decode)[0]


def build_dataset(root: str | os.PathLike | None, split: str, transform: Callable | None):
    """``botnet.data.folder.build_dataset`` that also opens shards: ``ROOT/{split}.wids.json``
    when it exists (a ``ShardImageDataset``), else the image folder ``ROOT/{split}/<class>/*``."""

    if root is not None and has_shards(root, split):
        return ShardImageDataset(index_path(root, split), transform=transform)
    return build_folder(root, split, transform)
