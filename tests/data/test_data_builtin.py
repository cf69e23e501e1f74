"""The built-in shapes dataset: layout, determinism, reuse, and atomic regeneration."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from botnet.data import BUILTIN_CLASSES, build_dataset, builtin_dataset_root
from botnet.data import builtin as builtin_mod

SMALL = dict(per_class_train=3, per_class_val=2)
NAME = "shapes-v2-train3-val2"


def _pngs(root):
    return sorted(p.relative_to(root) for p in root.rglob("*.png"))


def test_classes():
    assert len(BUILTIN_CLASSES) == 10
    assert list(BUILTIN_CLASSES) == sorted(BUILTIN_CLASSES)
    assert len(set(BUILTIN_CLASSES)) == 10


def test_root_names_encode_sizes():
    assert builtin_mod._root_name(600, 100) == "shapes-v2"
    assert builtin_mod._root_name(3, 2) == NAME


def test_layout_marker_readme(tmp_path):
    root = builtin_dataset_root(tmp_path, **SMALL)
    assert root == tmp_path / NAME
    assert (root / "COMPLETE").is_file()
    readme = (root / "README.txt").read_text()
    assert f"version {builtin_mod.GENERATOR_VERSION}" in readme and all(name in readme for name in BUILTIN_CLASSES)
    for split, count in (("train", 3), ("val", 2)):
        assert sorted(p.name for p in (root / split).iterdir()) == list(BUILTIN_CLASSES)
        for name in BUILTIN_CLASSES:
            files = sorted((root / split / name).glob("*.png"))
            assert len(files) == count
    with Image.open(files[0]) as img:
        assert img.mode == "RGB" and img.size == (64, 64)
    assert not list(tmp_path.glob(".*tmp-*"))


def test_deterministic(tmp_path):
    a = builtin_dataset_root(tmp_path / "a", **SMALL)
    b = builtin_dataset_root(tmp_path / "b", **SMALL)
    files = _pngs(a)
    assert files == _pngs(b) and len(files) == 50
    for rel in files:
        assert np.array_equal(np.asarray(Image.open(a / rel)), np.asarray(Image.open(b / rel))), rel
    # images differ from one another (seeds are per image)
    first, second = (np.asarray(Image.open(a / rel)) for rel in files[:2])
    assert not np.array_equal(first, second)


def test_reuse_does_not_regenerate(tmp_path, monkeypatch):
    root = builtin_dataset_root(tmp_path, **SMALL)
    marker_mtime = (root / "COMPLETE").stat().st_mtime_ns
    image = next(root.rglob("*.png"))
    image_mtime = image.stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("regenerated")

    monkeypatch.setattr(builtin_mod, "_write_tree", fail)
    assert builtin_dataset_root(tmp_path, **SMALL) == root
    assert (root / "COMPLETE").stat().st_mtime_ns == marker_mtime
    assert image.stat().st_mtime_ns == image_mtime


def test_env_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("BOTNET_CACHE", str(tmp_path / "cache"))
    assert builtin_dataset_root(**SMALL) == tmp_path / "cache" / NAME


def test_interrupted_generation_is_replaced(tmp_path):
    # A tree without the marker (e.g. from an interrupted or foreign writer) and a stale temp dir.
    partial = tmp_path / NAME / "train" / "circle"
    partial.mkdir(parents=True)
    (partial / "junk.png").write_bytes(b"half")
    stale = tmp_path / f".{NAME}.tmp-dead"
    (stale / "train").mkdir(parents=True)
    root = builtin_dataset_root(tmp_path, **SMALL)
    assert (root / "COMPLETE").is_file()
    assert not (partial / "junk.png").exists()
    assert len(_pngs(root)) == 50
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".{NAME}.lock", NAME]


def test_wrong_marker_is_not_trusted(tmp_path):
    root = builtin_dataset_root(tmp_path, **SMALL)
    (root / "COMPLETE").write_text("something else\n")
    (root / "extra.txt").write_text("x")
    builtin_dataset_root(tmp_path, **SMALL)
    assert not (root / "extra.txt").exists()


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def draw(name, rng, size):
        calls.append(name)
        if len(calls) > 5:
            raise RuntimeError("interrupted")
        return Image.new("RGB", (size, size))

    monkeypatch.setattr(builtin_mod, "draw_shape_image", draw)
    with pytest.raises(RuntimeError):
        builtin_dataset_root(tmp_path, **SMALL)
    assert not (tmp_path / NAME).exists()
    assert not list(tmp_path.glob(".*tmp-*"))


def test_bad_sizes(tmp_path):
    with pytest.raises(ValueError, match="per_class"):
        builtin_dataset_root(tmp_path, per_class_train=0)


def test_build_dataset_builtin(tmp_path, monkeypatch):
    import botnet.data.folder as folder_mod

    monkeypatch.setattr(folder_mod, "builtin_dataset_root", lambda: builtin_dataset_root(tmp_path, **SMALL))
    ds = build_dataset(None, "val", transform=None)
    assert ds.classes == list(BUILTIN_CLASSES) and len(ds) == 20
    image, target = ds[0]
    assert image.mode == "RGB" and target == 0
