"""ImageFolderSafe, collate_skip_none and build_dataset on tiny folders written in tmp_path."""

from __future__ import annotations

import io
import re
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from botnet.data import ImageFolderSafe, build_dataset, build_transforms, collate_skip_none

RNG = np.random.default_rng(0)


def _noise(size=(16, 12)):
    return Image.fromarray(RNG.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


def _write_good(folder):
    """One image per awkward mode; returns {file name: expected RGB pixel (0, 0) or None}."""
    folder.mkdir(parents=True, exist_ok=True)
    _noise().save(folder / "rgb.png")
    Image.new("L", (10, 8), 77).save(folder / "gray.png")
    Image.new("RGBA", (10, 8), (10, 20, 30, 0)).save(folder / "rgba.png")
    Image.new("CMYK", (10, 8), (0, 0, 0, 0)).save(folder / "cmyk.jpg")
    Image.fromarray(np.full((8, 10), 65535, dtype=np.uint16)).save(folder / "deep16.png")
    palette = Image.new("RGB", (10, 8), (200, 0, 0)).convert("P", palette=Image.Palette.ADAPTIVE)
    palette.info["transparency"] = 0
    palette.save(folder / "palette.png", transparency=0)
    Image.new("RGB", (10, 8), (0, 0, 200)).convert("P").save(folder / "palette_plain.png")


def _write_bad(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "random.jpg").write_bytes(RNG.integers(0, 256, 500, dtype=np.uint8).tobytes())
    buf = io.BytesIO()
    _noise((64, 64)).save(buf, format="PNG")
    (folder / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (folder / "empty.png").write_bytes(b"")


@pytest.fixture
def tree(tmp_path):
    _write_good(tmp_path / "a")
    _write_bad(tmp_path / "b")
    _noise().save(tmp_path / "b" / "ok.png")
    (tmp_path / "b" / "notes.txt").write_text("not an image extension, ignored")
    return tmp_path


def test_modes_become_rgb8(tree):
    ds = ImageFolderSafe(tree)
    assert ds.classes == ["a", "b"]
    by_name = {path.rsplit("/", 1)[-1]: i for i, (path, _) in enumerate(ds.samples)}
    assert "notes.txt" not in by_name
    for name in ["rgb.png", "gray.png", "rgba.png", "cmyk.jpg", "deep16.png", "palette.png", "palette_plain.png"]:
        image, target = ds[by_name[name]]
        array = np.asarray(image)
        assert image.mode == "RGB" and array.dtype == np.uint8 and array.shape[2] == 3, name
        assert target == 0
    assert np.asarray(ds[by_name["deep16.png"]][0])[0, 0].tolist() == [255, 255, 255]  # rescaled, not clipped
    assert np.asarray(ds[by_name["gray.png"]][0])[0, 0].tolist() == [77, 77, 77]
    assert ds.num_skipped == 0


def test_sixteen_bit_is_rescaled(tmp_path):
    Image.fromarray(np.full((4, 4), 32896, dtype=np.uint16)).save(tmp_path / "mid.png")
    from botnet.data import load_rgb

    assert np.asarray(load_rgb(tmp_path / "mid.png"))[0, 0].tolist() == [128, 128, 128]


def test_unreadable_images_are_skipped_and_logged(tree, caplog):
    ds = ImageFolderSafe(tree)
    bad = [i for i, (path, _) in enumerate(ds.samples) if path.rsplit("/", 1)[-1] in
           ("random.jpg", "truncated.png", "empty.png")]
    assert len(bad) == 3
    with caplog.at_level(logging.WARNING, logger="botnet.data"):
        for i in bad + bad:  # each twice: counted twice, warned once
            assert ds[i] is None
    assert ds.num_skipped == 6
    records = [r for r in caplog.records if r.name == "botnet.data"]
    assert len(records) == 3
    for name in ("random.jpg", "truncated.png", "empty.png"):
        assert sum(name in r.getMessage() for r in records) == 1


def test_empty_folders_raise(tmp_path):
    with pytest.raises(ValueError, match=re.escape(str(tmp_path))):
        ImageFolderSafe(tmp_path)  # no class folders
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"<class>/\*\.jpg"):
        ImageFolderSafe(tmp_path)  # class folder without images
    with pytest.raises(FileNotFoundError, match="missing"):
        ImageFolderSafe(tmp_path / "missing")


def test_collate_mixed():
    sample = (torch.ones(3, 4, 4), 2)
    images, targets, skipped = collate_skip_none([None, sample, sample, None, None])
    assert images.shape == (2, 3, 4, 4) and images.dtype == torch.float32
    assert targets.tolist() == [2, 2] and targets.dtype == torch.long
    assert skipped == 3


def test_collate_all_none():
    images, targets, skipped = collate_skip_none([None, None])
    assert images.shape == (0,) and targets.shape == (0,) and targets.dtype == torch.long
    assert skipped == 2


def test_dataloader_two_workers(tree):
    ds = ImageFolderSafe(tree, transform=build_transforms(False, 8))
    loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate_skip_none)
    kept = skipped = 0
    for images, targets, n_skipped in loader:
        assert images.shape[0] == targets.shape[0]
        if images.numel():
            assert images.shape[1:] == (3, 8, 8)
        kept += targets.numel()
        skipped += n_skipped
    assert (kept, skipped) == (len(ds) - 3, 3)


def test_build_dataset(tmp_path):
    _write_good(tmp_path / "train" / "x")
    ds = build_dataset(tmp_path, "train", transform=None)
    assert isinstance(ds, ImageFolderSafe) and ds.classes == ["x"]
    with pytest.raises(FileNotFoundError, match=r"ROOT/train/<class>/.*ROOT/val/<class>/"):
        build_dataset(tmp_path, "val", transform=None)
    with pytest.raises(FileNotFoundError, match="val"):
        build_dataset(tmp_path / "nowhere", "val", transform=None)
    with pytest.raises(ValueError, match="split"):
        build_dataset(tmp_path, "test", transform=None)
