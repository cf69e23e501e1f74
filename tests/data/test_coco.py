"""COCO-format detection data: decoding, filtering, errors, image modes, collate, and the transforms."""

from __future__ import annotations

import json
import logging
import uuid

import numpy as np
import pytest
import torch
from faster_coco_eval.core import mask as mask_utils
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision import tv_tensors

from botnet.data import CocoDetection, build_coco_dataset, build_det_transforms, collate_detection
from botnet.data.coco import decode_segmentation

W, H = 20, 16
CATEGORIES = [{"id": 11, "name": "c"}, {"id": 2, "name": "a"}, {"id": 5, "name": "b"}]  # unsorted, gaps


def _rect(x0, y0, x1, y1, h=H, w=W):
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def _uncompressed_rle(mask):
    """COCO's uncompressed RLE: column-major run lengths, starting with a run of zeros."""
    flat = mask.flatten(order="F")
    counts, value, run = [], 0, 0
    for v in flat:
        if v != value:
            counts.append(run)
            value, run = v, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def _compressed_rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask))
    counts = rle["counts"]
    return {"size": list(mask.shape), "counts": counts.decode() if isinstance(counts, bytes) else counts}


def _bbox(mask):
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]


POLY_MASK = _rect(2, 3, 8, 7)  # polygon [2,3, 8,3, 8,7, 2,7] covers x 2..7, y 3..6
UNCOMPRESSED_MASK = _rect(10, 1, 13, 9)
COMPRESSED_MASK = _rect(1, 9, 6, 15) | _rect(14, 2, 18, 5)  # two parts


def _ann(ann_id, image_id, cat, bbox, segmentation, iscrowd=0):
    return {"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": bbox, "area": 1.0,
            "iscrowd": iscrowd, "segmentation": segmentation}


def _write(folder, images, annotations, categories=CATEGORIES, name="instances.json"):
    path = folder / name
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def _image(image_id, file_name, w=W, h=H):
    return {"id": image_id, "file_name": file_name, "width": w, "height": h}


@pytest.fixture()
def tiny(tmp_path):
    """Images 1 (RGB, all mask formats and filtering cases), 2-5 (other modes), 6 (no annotation)."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    Image.fromarray(rng.integers(0, 256, (H, W), dtype=np.uint8)).convert("L").save(tmp_path / "gray.png")
    Image.new("CMYK", (W, H), (10, 20, 30, 40)).save(tmp_path / "cmyk.jpg")
    Image.new("RGBA", (W, H), (200, 100, 50, 0)).save(tmp_path / "rgba.png")
    Image.fromarray(np.full((H, W), 65535, dtype=np.uint16)).save(tmp_path / "deep.png")
    Image.new("RGB", (W, H)).save(tmp_path / "empty.png")
    files = ["rgb.png", "gray.png", "cmyk.jpg", "rgba.png", "deep.png", "empty.png"]
    images = [_image(i, name) for i, name in enumerate(files, start=1)]
    whole = [[0, 0, W, 0, W, H, 0, H]]
    annotations = [
        _ann(1, 1, 2, [2, 3, 6, 4], [[2, 3, 8, 3, 8, 7, 2, 7]]),
        _ann(2, 1, 5, _bbox(UNCOMPRESSED_MASK), _uncompressed_rle(UNCOMPRESSED_MASK)),
        _ann(3, 1, 11, _bbox(COMPRESSED_MASK), _compressed_rle(COMPRESSED_MASK)),
        _ann(4, 1, 2, [0, 0, 10, 10], _compressed_rle(_rect(0, 0, 10, 10)), iscrowd=1),
        _ann(5, 1, 5, [15, 10, 10, 10], [[15, 10, 25, 10, 25, 20, 15, 20]]),  # out of the image: clipped
        _ann(6, 1, 5, [5, 5, 0, 3], [[5, 5, 6, 5, 6, 8]]),  # zero width: dropped
        _ann(7, 1, 11, [4, 4, 5, 5], [[4, 4, 9, 9]]),  # 2-point "polygon": empty mask
        *[_ann(10 + i, i, 2, [0, 0, W, H], whole) for i in range(2, 6)],
    ]
    return tmp_path, images, annotations


def _dataset(tiny, **kwargs):
    folder, images, annotations = tiny
    return CocoDetection(folder, _write(folder, images, annotations), **kwargs)


def _sample(ds, image_id):
    return ds[ds.ids.index(image_id)]


def test_label_category_mapping(tiny):
    ds = _dataset(tiny, train=False)
    assert ds.cat_ids == [2, 5, 11] and ds.class_names == ["a", "b", "c"]
    assert ds.label_to_cat == {1: 2, 2: 5, 3: 11} and ds.cat_to_label == {2: 1, 5: 2, 11: 3}
    assert ds.num_classes == 4


def test_masks_boxes_labels(tiny):
    ds = _dataset(tiny, train=False)
    image, target = _sample(ds, 1)
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8 and image.shape == (3, H, W)
    assert isinstance(target["boxes"], tv_tensors.BoundingBoxes) and target["boxes"].format.value == "XYXY"
    assert target["boxes"].dtype == torch.float32 and tuple(target["boxes"].canvas_size) == (H, W)
    assert isinstance(target["masks"], tv_tensors.Mask) and target["masks"].dtype == torch.uint8
    assert target["image_id"] == 1 and target["orig_size"].tolist() == [H, W]
    assert target["orig_size"].dtype == torch.int64
    # kept: polygon, uncompressed RLE, compressed RLE, clipped box; not crowd, zero-width, empty mask
    assert target["labels"].tolist() == [1, 2, 3, 2]
    assert target["boxes"].tolist() == [[2, 3, 8, 7], [10, 1, 13, 9], [1, 2, 18, 15], [15, 10, 20, 16]]
    masks = target["masks"].numpy()
    assert masks.shape == (4, H, W)
    np.testing.assert_array_equal(masks[0], POLY_MASK)
    np.testing.assert_array_equal(masks[1], UNCOMPRESSED_MASK)
    np.testing.assert_array_equal(masks[2], COMPRESSED_MASK)
    np.testing.assert_array_equal(masks[3], _rect(15, 10, 20, 16))


def test_decode_segmentation_formats():
    np.testing.assert_array_equal(decode_segmentation([[2, 3, 8, 3, 8, 7, 2, 7]], H, W), POLY_MASK)
    np.testing.assert_array_equal(decode_segmentation(_uncompressed_rle(UNCOMPRESSED_MASK), H, W), UNCOMPRESSED_MASK)
    np.testing.assert_array_equal(decode_segmentation(_compressed_rle(COMPRESSED_MASK), H, W), COMPRESSED_MASK)
    assert decode_segmentation([], H, W).sum() == 0 and decode_segmentation([[1, 1, 5, 5]], H, W).sum() == 0
    with pytest.raises(ValueError, match="RLE size"):
        decode_segmentation(_compressed_rle(COMPRESSED_MASK), H + 1, W)


def test_stats(tiny):
    stats = _dataset(tiny, train=True, remove_empty=True).stats
    assert stats == {"images": 6, "images_kept": 5, "images_without_annotations": 1, "annotations": 11,
                     "annotations_kept": 8, "crowd": 1, "degenerate_box": 1, "empty_mask": 1, "unreadable": 0}
    boxes_only = _dataset(tiny, train=True, masks=False)
    assert boxes_only.stats["empty_mask"] == 0 and boxes_only.stats["annotations_kept"] == 9
    image, target = _sample(boxes_only, 1)
    assert "masks" not in target and target["labels"].tolist() == [1, 2, 3, 2, 3]


def test_empty_image_kept_for_train_and_eval_unless_removed(tiny):
    """The TPU code trains on images without boxes (create_coco_tf_record.py writes them all)."""
    assert 6 in _dataset(tiny, train=True).ids
    assert 6 not in _dataset(tiny, train=True, remove_empty=True).ids
    ds = _dataset(tiny, train=False)
    assert ds.ids == [1, 2, 3, 4, 5, 6]
    image, target = _sample(ds, 6)
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,) and target["masks"].shape == (0, H, W)


def test_image_modes_load_as_rgb(tiny):
    ds = _dataset(tiny, train=False)
    for image_id in (2, 3, 4, 5):
        image, _ = _sample(ds, image_id)
        assert image.shape == (3, H, W) and image.dtype == torch.uint8, image_id
    assert int(_sample(ds, 5)[0].min()) == 255  # 16-bit full scale -> 255, not clipped garbage


def test_unknown_category(tiny):
    folder, images, annotations = tiny
    annotations.append(_ann(99, 1, 7, [0, 0, 5, 5], []))
    with pytest.raises(ValueError, match=r"instances\.json.*annotation 99.*unknown category_id 7"):
        _dataset(tiny, train=True)


def test_missing_image_file(tiny):
    folder, images, annotations = tiny
    images.append(_image(7, "nowhere.png"))
    annotations.append(_ann(70, 7, 2, [0, 0, 5, 5], [[0, 0, 5, 0, 5, 5]]))
    with pytest.raises(ValueError, match=r"1 of the 7 images .* missing .*nowhere\.png"):
        _dataset(tiny, train=True)


def test_size_mismatch(tiny):
    folder, images, annotations = tiny
    images[0]["width"] = W + 2
    ds = _dataset(tiny, train=False, masks=False)
    with pytest.raises(ValueError, match=r"rgb\.png is 20x16"):
        _sample(ds, 1)


def test_corrupt_image_skipped(tiny, caplog):
    folder, images, annotations = tiny
    data = (folder / "gray.png").read_bytes()
    (folder / "gray.png").write_bytes(data[: len(data) // 2])
    ds = _dataset(tiny, train=False, transforms=build_det_transforms(False, 32))
    with caplog.at_level(logging.WARNING, logger="botnet.data"):
        batch = [ds[i] for i in range(3)]
    assert batch[1] is None and "gray.png" in caplog.text
    images_out, targets, skipped = collate_detection(batch)
    assert skipped == 1 and len(images_out) == len(targets) == 2
    assert [t["image_id"] for t in targets] == [1, 3]
    assert images_out[0].dtype == torch.float32 and images_out[0].shape == (3, H, W)
    assert ds.stats["unreadable"] == 1
    assert collate_detection([None]) == ([], [], 1)


def test_build_coco_dataset_layout(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        build_coco_dataset(tmp_path, "val", None, train=False)
    assert str(tmp_path / "val") in str(err.value)
    assert str(tmp_path / "annotations" / "instances_val.json") in str(err.value)
    (tmp_path / "val").mkdir()
    (tmp_path / "annotations").mkdir()
    Image.new("RGB", (W, H)).save(tmp_path / "val" / "a.png")
    _write(tmp_path / "annotations", [_image(1, "a.png")], [], name="instances_val.json")
    ds = build_coco_dataset(tmp_path, "val", None, train=False)
    assert len(ds) == 1 and ds.num_classes == 4


# ------------------------------------------------------------------------------------ transforms
def _synthetic(h, w, rects, labels=None):
    """An (image, target) pair with boxes equal to the boxes of rectangular masks."""
    masks = np.stack([_rect(*r, h=h, w=w) for r in rects]) if rects else np.zeros((0, h, w), np.uint8)
    boxes = [[x0, y0, x1, y1] for x0, y0, x1, y1 in rects]
    image = tv_tensors.Image(torch.randint(0, 256, (3, h, w), dtype=torch.uint8))
    target = {
        "boxes": tv_tensors.BoundingBoxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), format="XYXY",
                                          canvas_size=(h, w)),
        "labels": torch.tensor(labels if labels is not None else list(range(1, len(rects) + 1)), dtype=torch.int64),
        "masks": tv_tensors.Mask(torch.from_numpy(masks)),
        "image_id": 3,
        "orig_size": torch.tensor([h, w]),
    }
    return image, target


def _mask_box(mask):
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


@pytest.mark.parametrize("h,w", [(40, 100), (300, 200), (64, 64)])
def test_train_output_fits_the_square_and_is_aligned(h, w):
    """At most size x size (cropped when the jittered image is larger, never padded: the model pads
    after normalising), the aspect ratio kept up to rounding, boxes and masks on the image."""
    size = 64
    rects = [(w // 10, h // 10, w // 2, h // 2), (w // 3, h // 4, w - 2, h - 1), (0, h // 2, w // 4, h)]
    for seed in range(6):
        torch.manual_seed(seed)
        tf = build_det_transforms(True, size, scale_range=(0.5, 2.0), hflip=0.5 if seed % 2 else 1.0)
        image, target = tf(*_synthetic(h, w, rects))
        oh, ow = image.shape[-2:]
        assert image.shape[0] == 3 and oh <= size and ow <= size and image.dtype == torch.float32
        if oh < size and ow < size:  # not cropped: the whole image, aspect ratio kept
            assert abs(oh / ow - h / w) <= (1 / ow + 1 / oh) * h / w + 1e-6
        assert 0 <= image.min() and image.max() <= 1
        boxes, masks, labels = target["boxes"], target["masks"], target["labels"]
        assert masks.shape[1:] == (oh, ow) and masks.dtype == torch.uint8
        assert len(boxes) == len(masks) == len(labels)
        assert tuple(boxes.canvas_size) == (oh, ow)
        assert (boxes >= 0).all() and (boxes[:, 0::2] <= ow).all() and (boxes[:, 1::2] <= oh).all()
        assert ((boxes[:, 2:] - boxes[:, :2]) >= 1).all()
        assert target["image_id"] == 3 and target["orig_size"].tolist() == [h, w]
        for box, mask in zip(boxes.tolist(), masks):
            assert mask.any()
            assert np.allclose(_mask_box(mask), box, atol=1.0), (seed, box, _mask_box(mask))


def test_train_elongated_image_at_small_scale():
    # the 7 px side at scale 0.1 of 32 would round to 0 px; it is kept at 1 px
    tf = build_det_transforms(True, 32, scale_range=(0.1, 0.1))
    image, target = tf(*_synthetic(31, 7, [(1, 1, 6, 30)]))
    assert image.shape == (3, 3, 1) and len(target["boxes"]) == len(target["masks"]) == len(target["labels"])


def test_sanitize_drops_labels_and_masks_together():
    size = 32
    tf = build_det_transforms(True, size, scale_range=(1.0, 1.0), hflip=0.0)  # identity geometry
    image, target = _synthetic(size, size, [(2, 2, 10, 10), (5, 5, 5, 9), (20, 4, 28, 30)], labels=[3, 1, 2])
    target["boxes"][1] = torch.tensor([5.0, 5.0, 5.5, 9.0])  # half a pixel wide
    out_image, out = tf(image, target)
    assert out["labels"].tolist() == [3, 2]
    assert out["boxes"].tolist() == [[2, 2, 10, 10], [20, 4, 28, 30]]
    assert len(out["masks"]) == 2
    assert torch.equal(out["masks"][1], torch.from_numpy(_rect(20, 4, 28, 30, size, size)))
    assert torch.allclose(out_image, image.float() / 255)


def test_eval_transform_keeps_size_and_target():
    image, target = _synthetic(30, 50, [(2, 2, 10, 10)])
    out_image, out = build_det_transforms(False, 64)(image, target)
    assert out_image.shape == (3, 30, 50) and out_image.dtype == torch.float32
    assert torch.equal(out["boxes"], target["boxes"]) and torch.equal(out["masks"], target["masks"])


@pytest.mark.parametrize("size,match", [(100, "got 100; nearest valid sizes: 96, 128"), (0, "nearest valid sizes: 32$"),
                                        (-64, "got -64"), (33.5, "got 33.5"), (True, "got True"),
                                        ("128", "got '128'")])
def test_invalid_size(size, match):
    with pytest.raises(ValueError, match=match):
        build_det_transforms(True, size)


@pytest.mark.parametrize("kwargs", [dict(scale_range=(0.0, 1.0)), dict(scale_range=(1.5, 1.0)),
                                    dict(scale_range=(1.0,)), dict(hflip=1.5)])
def test_invalid_jitter(kwargs):
    with pytest.raises(ValueError):
        build_det_transforms(True, 64, **kwargs)


# ----------------------------------------------------------------------------------------- fuzz
@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(1)
    for w, h in ((12, 9), (40, 24), (7, 31), (64, 3)):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{w}x{h}.png")
    return folder


# geometry in units of the image side: partly or fully outside, tiny, zero, negative, huge
inside = st.floats(0, 0.8)
coord = st.one_of(inside, inside, st.floats(-1.2, 1.2), st.sampled_from([0.0, 0.01, 0.99, 1.0]))
span = st.floats(0.15, 1.0)
extent = st.one_of(span, span, span, st.floats(0, 1.5), st.sampled_from([0.0, 0.01, 0.03, -0.2, 50.0]))
annotation = st.tuples(coord, coord, extent, extent, st.sampled_from([2, 5, 11]), st.sampled_from([0, 0, 0, 1]),
                       st.sampled_from(["box_polygon", "box_polygon", "rle", "empty", "tiny_polygon"]))


@settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.sampled_from([(12, 9), (40, 24), (7, 31), (64, 3)]), anns=st.lists(annotation, max_size=5),
       anchor=st.tuples(inside, inside, span, span), masks=st.booleans(), seed=st.integers(0, 2**16))
def test_fuzz_dataset_and_train_transform(fuzz_dir, size, anns, anchor, masks, seed):
    w, h = size
    anns = [(*anchor, 5, 0, "box_polygon"), *anns]  # one ordinary object among the odd ones
    annotations = []
    for k, (x, y, bw, bh, cat, crowd, kind) in enumerate(anns, start=1):
        x, y, bw, bh = x * w, y * h, bw * w, bh * h
        if kind == "box_polygon":
            segm = [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]
        elif kind == "rle":
            xs, ys = sorted(np.clip([x, x + bw], 0, w).astype(int)), sorted(np.clip([y, y + bh], 0, h).astype(int))
            segm = _compressed_rle(_rect(xs[0], ys[0], xs[1], ys[1], h, w))
        elif kind == "tiny_polygon":
            segm = [[x, y, x + 0.1, y, x, y + 0.1]]
        else:
            segm = []
        annotations.append(_ann(k, 1, cat, [x, y, bw, bh], segm, iscrowd=crowd))
    path = _write(fuzz_dir, [_image(1, f"{w}x{h}.png", w, h)], annotations, name=f"{uuid.uuid4().hex}.json")
    out = 32
    ds = CocoDetection(fuzz_dir, path, build_det_transforms(True, out, scale_range=(0.1, 2.0)), train=True,
                       remove_empty=False, masks=masks)
    torch.manual_seed(seed)
    image, target = ds[0]
    boxes, labels = target["boxes"], target["labels"]
    assert image.shape[0] == 3 and max(image.shape[1:]) <= out
    assert torch.isfinite(boxes).all() and (boxes >= 0).all() and (boxes <= out).all()
    assert len(labels) == len(boxes) and labels.dtype == torch.int64
    assert ((labels >= 1) & (labels <= 3)).all()
    if masks:
        assert target["masks"].shape == (len(boxes), *image.shape[1:])
    stats = ds.stats
    assert stats["annotations"] == len(anns)
    assert stats["annotations_kept"] + stats["crowd"] + stats["degenerate_box"] + stats["empty_mask"] == len(anns)
    path.unlink()
