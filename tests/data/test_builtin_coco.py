"""The built-in COCO-format dataset: valid COCO json, masks that match bbox/area, sizes, determinism, cache."""

from __future__ import annotations

import numpy as np
import pytest
from faster_coco_eval import COCO
from PIL import Image

from botnet.data import BUILTIN_COCO_CLASSES, CocoDetection, build_coco_dataset, builtin_coco_root
from botnet.data import builtin_coco as gen

SMALL = dict(num_train=12, num_val=6)
NAME = "coco-shapes-v1-train12-val6"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return builtin_coco_root(tmp_path_factory.mktemp("cache"), **SMALL)


def _box(mask):
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]


def test_classes_and_names():
    assert BUILTIN_COCO_CLASSES == ("circle", "square", "triangle", "cross", "ring")
    assert gen.CATEGORY_IDS == (1, 3, 5, 7, 9)
    assert gen._root_name(1000, 200, 128, gen.SEED) == "coco-shapes-v1"
    assert gen._root_name(12, 6, 128, gen.SEED) == NAME
    assert gen._root_name(1000, 200, 64, 7) == "coco-shapes-v1-size64-seed7"


def test_layout(root):
    assert root.name == NAME and (root / "COMPLETE").is_file() and (root / "README.txt").is_file()
    for split, count in (("train", 12), ("val", 6)):
        files = sorted((root / split).glob("*.png"))
        assert len(files) == count
        with Image.open(files[0]) as img:
            assert img.mode == "RGB" and img.size == (128, 128)
        assert (root / "annotations" / f"instances_{split}.json").is_file()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' numpy 2 copy= warning
@pytest.mark.parametrize("split", ["train", "val"])
def test_json_is_valid_coco(root, split):
    from pycocotools.coco import COCO as PyCOCO

    ann_file = str(root / "annotations" / f"instances_{split}.json")
    ours, theirs = COCO(ann_file), PyCOCO(ann_file)
    assert set(ours.dataset) >= {"info", "images", "annotations", "categories"}
    assert [(c["id"], c["name"]) for c in ours.dataset["categories"]] == list(zip(gen.CATEGORY_IDS,
                                                                                    BUILTIN_COCO_CLASSES))
    assert all(set(c) == {"id", "name", "supercategory"} for c in ours.dataset["categories"])
    anns = ours.dataset["annotations"]
    assert len({a["id"] for a in anns}) == len(anns) > 0
    kinds = set()
    for ann in anns:
        assert set(ann) == {"id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation"}
        assert ann["iscrowd"] == 0 and ann["category_id"] in gen.CATEGORY_IDS
        kinds.add("polygon" if isinstance(ann["segmentation"], list) else "rle")
        mask = ours.annToMask(ann)
        np.testing.assert_array_equal(mask, theirs.annToMask(theirs.anns[ann["id"]]))
        assert mask.shape == (128, 128)
        assert ann["area"] == mask.sum() >= gen.MIN_AREA
        assert ann["bbox"] == _box(mask), ann["id"]
    assert kinds == {"polygon", "rle"}
    # the visible parts of the objects of an image do not overlap
    for image_id in ours.getImgIds():
        masks = [ours.annToMask(a) for a in ours.imgToAnns[image_id]]
        if masks:
            assert np.sum(masks, axis=0).max() <= 1


def test_opens_as_coco_detection(root):
    ds = build_coco_dataset(root, "val", None, train=False)
    assert isinstance(ds, CocoDetection) and len(ds) == 6
    assert ds.class_names == list(BUILTIN_COCO_CLASSES) and ds.label_to_cat == {1: 1, 2: 3, 3: 5, 4: 7, 5: 9}
    assert ds.stats["crowd"] == ds.stats["degenerate_box"] == ds.stats["empty_mask"] == 0
    for index in range(len(ds)):
        image, target = ds[index]
        anns = ds.coco.imgToAnns[target["image_id"]]
        assert [ds.label_to_cat[int(label)] for label in target["labels"]] == [a["category_id"] for a in anns]
        for mask, ann in zip(target["masks"], anns):
            np.testing.assert_array_equal(mask.numpy(), ds.coco.annToMask(ann))


def test_scene_statistics():
    areas, empty = [], 0
    for i in range(100):
        image, anns = gen.draw_scene(np.random.default_rng([5, 0, i]))
        assert image.size == (128, 128) and len(anns) <= gen.MAX_OBJECTS
        areas += [a["area"] for a in anns]
        empty += not anns
    areas = np.asarray(areas)
    # COCO's small / medium / large all occur
    assert (areas < 32 ** 2).sum() > 20 and ((areas >= 32 ** 2) & (areas <= 96 ** 2)).sum() > 20
    assert (areas > 96 ** 2).sum() >= 3
    assert 1 <= empty <= 10


def test_deterministic(tmp_path, root):
    other = builtin_coco_root(tmp_path, **SMALL)
    for rel in ("annotations/instances_train.json", "annotations/instances_val.json"):
        assert (root / rel).read_bytes() == (other / rel).read_bytes()
    files = sorted(p.relative_to(root) for p in root.rglob("*.png"))
    assert files == sorted(p.relative_to(other) for p in other.rglob("*.png"))
    for rel in files:
        assert np.array_equal(np.asarray(Image.open(root / rel)), np.asarray(Image.open(other / rel))), rel
    reseeded = builtin_coco_root(tmp_path, **SMALL, seed=1)
    assert reseeded.name == NAME + "-seed1"
    val = "annotations/instances_val.json"
    assert (reseeded / val).read_bytes() != (root / val).read_bytes()


def test_cache_reused_and_incomplete_regenerated(tmp_path, monkeypatch):
    root = builtin_coco_root(tmp_path, **SMALL)
    marker_mtime = (root / "COMPLETE").stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("regenerated")

    with monkeypatch.context() as patch:
        patch.setattr(gen, "_write_split", fail)
        assert builtin_coco_root(tmp_path, **SMALL) == root
    assert (root / "COMPLETE").stat().st_mtime_ns == marker_mtime

    (root / "COMPLETE").unlink()  # as left by an interrupted or foreign writer
    (root / "junk.txt").write_text("x")
    assert builtin_coco_root(tmp_path, **SMALL) == root
    assert (root / "COMPLETE").is_file() and not (root / "junk.txt").exists()
    assert len(list((root / "train").glob("*.png"))) == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".{NAME}.lock", NAME]


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(gen, "_write_split", fail)
    with pytest.raises(RuntimeError):
        builtin_coco_root(tmp_path, **SMALL)
    assert not (tmp_path / NAME).exists() and not list(tmp_path.glob(".*tmp-*"))


@pytest.mark.parametrize("kwargs", [dict(num_train=0), dict(num_val=-1), dict(img_size=16), dict(seed=-1),
                                    dict(img_size=128.0)])
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        builtin_coco_root(tmp_path, **kwargs)
